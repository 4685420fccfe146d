/**
 * The controller's HTTP API: the route table (method, path, body schema,
 * handler) the server dispatches and the OpenAPI document is built from.
 * The rig adds its own routes (the simulator's controls).
 */
import { confirmField } from './confirmations.ts';
import { BadInputError } from '../../src/errors.ts';
import type { Bay } from '../../src/bootswitch/index.ts';
import { array, bool, int, obj, oneOf, opt, withoutKey } from './schema.ts';
import { serveEvents, EVENT_TYPES } from './events.ts';
import { summary } from './jobs.ts';
import type { Controller } from './controller.ts';
import type { Route } from './http-server.ts';
import { buildOpenApi } from './openapi.ts';
import { pairRoutes } from './pair-routes.ts';

// An empty list is refused: it is what a client with an empty selection sends, and "the whole drive" is asked by leaving the key out.
const partitions = array(int(1, 128), { minItems: 1, maxItems: 128, unique: true, description: 'partition numbers, at least one; absent: the whole drive' });

export const bodies = {
  sync: obj({ partitions: opt(partitions), mode: opt(oneOf(['compare', 'manifest', 'changed'] as const, 'compare reads both drives; manifest reads the active drive and the standby\'s hash map; changed copies only the blocks the host wrote since the last sync (inline mode; else manifest mode, and the job says why); default config sync.mode')), forceGeneration: opt(bool('copy even when the standby holds changes the active drive does not descend from (split brain)')), window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  verify: obj({ partitions: opt(partitions), window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  clone: obj({ force: opt(bool('clone again over a standby that holds a consistent backup')), addStandby: opt(bool('the active drive has a standby already (in another pair): make the drive in the standby bay one more standby of it (rotation)')), window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  restore: obj({ confirm: confirmField('restore', 'the active drive is overwritten with the backup'), iMeanRestore: opt(bool('the older form of the confirmation: when given it must be true; "confirm" is required')), window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  reprotect: obj({ confirm: confirmField('reprotect', 'the drive in the standby bay is overwritten with the active drive'), window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  empty: obj({}),
  cancel: obj({ rollback: opt(bool('roll the standby back to the previous backup after stopping (default: config recovery.rollbackOnCancel)')) }),
  failover: obj({ confirm: confirmField('failover', 'the host is shut down and boots the standby'), hardOff: opt(bool('force the host off when it ignores the shutdown request')) }),
  bootselect: withoutKey(obj({ bay: oneOf(['A', 'B'] as const), powerOn: opt(bool('power the host on afterwards')) }), 'force', 'the boot selection never changes under a powered host, and nothing waives that: shut the host down first (POST /api/host/shutdown), then select the bay'),
  shutdown: obj({ hardOff: opt(bool('hold the power button to force the host off when it ignores the shutdown request')) }),
  heartbeat: obj({ bay: opt(oneOf(['A', 'B'] as const, 'the bay the host believes it booted from')) }),
  button: obj({ holdMs: int(1, 60_000, 'how long the button is held') }),
  hostPower: obj({ power: oneOf(['on', 'off'] as const) }),
  hostWrite: obj({ mib: int(1, 4096, 'MiB of random writes the simulated OS makes to its drive') }),
  insert: obj({ replacement: opt(bool('insert a new blank drive instead of the pulled one')) }),
  readErrors: obj({ lbas: array(int(0, Number.MAX_SAFE_INTEGER), { maxItems: 10_000, unique: true, description: 'sectors whose reads fail; an empty list clears them' }) }),
};

export function buildRoutes(app: Controller, opts: { metricsText: () => Promise<string>; console?: Route[] }): Route[] {
  const sse = app.config.api;
  // Many clients poll the status: it is built once per event (or per second) and served as text to all of them.
  let cached: { seq: number; at: number; text: string } | null = null;
  const statusText = () => {
    const now = performance.now();
    if (!cached || cached.seq !== app.bus.seq || now - cached.at > 1000) cached = { seq: app.bus.seq, at: now, text: JSON.stringify(app.status.status()) };
    return cached.text;
  };
  const routes: Route[] = [
    {
      method: 'GET', path: '/api/health', tag: 'daemon', auth: false, summary: 'Liveness: the daemon answers (no token needed)',
      responses: { 200: 'the daemon runs' },
      handler: () => ({ status: 200, body: { ok: true, rig: app.config.rig, uptimeSeconds: Math.round((Date.now() - app.status.startedAt) / 1000) } }),
    },
    {
      method: 'GET', path: '/api/status', tag: 'daemon', summary: 'Roles, standby state, generations, job, relays, host, health, last sync',
      responses: { 200: 'the status' },
      handler: () => ({ status: 200, body: null, json: statusText() }),
    },
    ...pairRoutes(app, bodies),
    {
      method: 'GET', path: '/api/jobs', tag: 'jobs', summary: 'The kept job history, newest first (without logs)',
      responses: { 200: '{ jobs: [...] }' },
      handler: () => ({ status: 200, body: { jobs: app.jobs.list().map(summary) } }),
    },
    {
      method: 'GET', path: '/api/jobs/:id', tag: 'jobs', summary: 'One job with its options, progress, result, timings and log',
      responses: { 200: 'the job', 404: 'no such job' },
      handler: ({ params }) => ({ status: 200, body: app.jobs.get(params.id!) }),
    },
    {
      method: 'POST', path: '/api/jobs/:id/cancel', tag: 'jobs', summary: 'Cancel the running job', body: bodies.cancel,
      responses: { 202: 'cancel requested; the job ends as cancelled, or as done (cancel.late, with a note in its log) when its work had completed before the cancel reached it', 404: 'no such job', 409: 'the job is not running' },
      handler: ({ params, body }) => {
        const b = body as { rollback?: boolean };
        const job = app.jobs.cancel(params.id!, b.rollback ?? app.config.recovery.rollbackOnCancel);
        return { status: 202, body: { id: job.id, job: summary(job) } };
      },
    },
    {
      method: 'POST', path: '/api/failover/reset', tag: 'boot', summary: 'Clear failed-bay marks and a halt of the failover state machine', body: bodies.empty,
      responses: { 200: 'cleared' },
      handler: async () => {
        await app.boot.resetFailover();
        return { status: 200, body: { failover: app.bs.failover.state } };
      },
    },
    {
      method: 'POST', path: '/api/bootselect', tag: 'boot', summary: 'Maintenance: connect a bay to the host (roles unchanged), only with the host off: no key waives that (the former "force" is refused)', body: bodies.bootselect,
      responses: { 200: 'moved (or already there); the move report', 409: 'the host is powered (shut it down first: POST /api/host/shutdown), a job runs, or powerOn is asked while a job that uses the active drive with no window keeps the host off (the message names it)' },
      handler: async ({ body }) => {
        const b = body as { bay: Bay; powerOn?: boolean };
        return { status: 200, body: await app.boot.bootselect(b.bay, b) };
      },
    },
    {
      method: 'POST', path: '/api/host/shutdown', tag: 'boot', summary: 'Shut the host down through the ATX power relay (ACPI request; hardOff forces it off when ignored)', body: bodies.shutdown,
      responses: { 200: '{ how: was-off|acpi|hard-off }', 409: 'the host stayed on (and hardOff not set), or a failover or move runs' },
      handler: async ({ body }) => ({ status: 200, body: await app.boot.shutdownHost(body as { hardOff?: boolean }) }),
    },
    {
      method: 'POST', path: '/api/host/heartbeat', tag: 'boot', summary: "The host's boot-good confirmation", body: bodies.heartbeat,
      responses: { 200: 'recorded' },
      handler: async ({ body }) => {
        await app.host.heartbeat('api', (body as { bay?: Bay }).bay ?? null);
        return { status: 200, body: { ok: true } };
      },
    },
    {
      method: 'POST', path: '/api/host/shutting-down', tag: 'boot', summary: "The host's agent says its OS is shutting down cleanly (sent from its stop hook: a systemd unit's ExecStop, or on SIGTERM): the power-off that follows is not a failed boot, even before the first heartbeat. A power cut sends none and still counts", body: bodies.heartbeat,
      responses: { 200: 'recorded' },
      handler: async ({ body }) => {
        await app.host.shuttingDown('api', (body as { bay?: Bay }).bay ?? null);
        return { status: 200, body: { ok: true } };
      },
    },
    {
      method: 'GET', path: '/api/events', tag: 'events', summary: 'Server-sent events (Last-Event-ID resumes)',
      query: { types: 'comma-separated event types or prefixes ending in "." (e.g. job.,alert)', since: 'an event id to resume after (like Last-Event-ID)' },
      responses: { 200: `text/event-stream; event names: ${Object.keys(EVENT_TYPES).join(', ')}` },
      handler: ({ req, res, query }) => {
        const types = query.get('types')?.split(',').map((t) => t.trim()).filter(Boolean);
        const lastEventId = (req.headers['last-event-id'] as string | undefined) ?? query.get('since') ?? undefined;
        app.metrics.eventClients.inc();
        res.on('close', () => app.metrics.eventClients.dec());
        serveEvents(req, res, app.bus, { heartbeatSeconds: sse.sseHeartbeatSeconds, types, lastEventId });
        return { status: 200, body: null, raw: true };
      },
    },
    {
      method: 'GET', path: '/api/events/log', tag: 'events', summary: 'The persisted operator event log, oldest first',
      query: { limit: 'at most this many entries (default 200, at most 10000)', types: 'comma-separated types or prefixes' },
      responses: { 200: '{ events: [...] }' },
      handler: async ({ res, query }) => {
        const limitText = query.get('limit') ?? '200';
        const limit = Number(limitText);
        if (!/^\d+$/.test(limitText) || limit < 1 || limit > 10000) throw new BadInputError(`query limit is ${JSON.stringify(limitText)}; allowed: an integer from 1 to 10000`);
        const types = query.get('types')?.split(',').map((t) => t.trim()).filter(Boolean);
        // A filtered scan may walk the whole log: once the client is gone nobody reads the answer, so the scan stops.
        const gone = new AbortController();
        const onClose = () => gone.abort();
        res.once('close', onClose);
        // Gone already, while the request was being authenticated and routed: 'close' was heard by nobody.
        if (res.closed) gone.abort();
        try {
          const events = await app.bus.readLog(limit, types, { signal: gone.signal, onRead: (n) => app.metrics.eventLogReadBytes.inc(n) });
          app.metrics.eventLogScans.inc({ result: 'done' });
          return { status: 200, body: { events } };
        } catch (e) {
          if (!gone.signal.aborted) throw e;
          app.metrics.eventLogScans.inc({ result: 'stopped' });
          // 499 (nginx's "client closed request") for the request counter; nothing is sent, the connection is gone.
          return { status: 499, body: null, raw: true };
        } finally {
          res.off('close', onClose);
        }
      },
    },
    {
      method: 'GET', path: '/metrics', tag: 'daemon', summary: "Prometheus metrics (text format): dpsr's own dpsr_ prefixed, the standard process_* and nodejs_* ones, dpsr_build_info",
      responses: { 200: 'text/plain; version=0.0.4' },
      handler: async ({ res }) => {
        app.metrics.observeStatus(app.status.core());
        const text = await opts.metricsText();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(text);
        return { status: 200, body: null, raw: true };
      },
    },
    {
      method: 'GET', path: '/api/openapi.json', tag: 'daemon', summary: 'This description',
      responses: { 200: 'OpenAPI 3.1 document' },
      handler: () => ({ status: 200, body: buildOpenApi(routes) }),
    },
    ...app.browser.routes(),
    ...app.files.routes(),
    ...(opts.console ?? []),
    ...app.rig.routes(app),
  ];
  return routes;
}
