/**
 * The HTTP API on node:http: a route table (method, path, body schema,
 * handler) that the server dispatches and the OpenAPI document is built
 * from. Bearer-token auth on everything but GET /api/health; bodies are
 * size-limited JSON checked against their schema; errors map to statuses
 * through httpStatusFor, in one place.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual, createHash } from 'node:crypto';
import { BadInputError, NotFoundError, RefusedError, errorData, httpStatusFor, isDpsrError, DpsrError } from '../../src/errors.ts';
import type { Bay } from '../../src/bootswitch/index.ts';
import { array, bool, check, int, obj, oneOf, opt, show, type Schema } from './schema.ts';
import { serveEvents, EVENT_TYPES } from './events.ts';
import { summary } from './jobs.ts';
import type { Appliance, SyncOptions } from './appliance.ts';
import { buildOpenApi } from './openapi.ts';

export class PayloadTooLargeError extends DpsrError {
  readonly kind = 'bad-input' as const;
}

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
}

export interface Reply {
  status: number;
  body: unknown;
  /** Already written (event stream, metrics text). */
  raw?: boolean;
  /** The body already serialized. */
  json?: string;
}

export interface Route {
  method: 'GET' | 'POST';
  path: string;
  summary: string;
  tag: string;
  /** False only for the health check. */
  auth?: boolean;
  /** Only on the simulated rig. */
  sim?: boolean;
  body?: Schema<unknown>;
  query?: Record<string, string>;
  responses: Record<number, string>;
  handler(ctx: RequestContext): Promise<Reply> | Reply;
}

const bayParam = (v: string): Bay => {
  if (v !== 'A' && v !== 'B') throw new BadInputError(`path parameter bay is ${JSON.stringify(v)}; allowed: "A", "B"`);
  return v;
};

const partitions = array(int(1, 128), { maxItems: 128, unique: true, description: 'partition numbers; absent or empty: the whole drive' });

export const bodies = {
  sync: obj({ partitions: opt(partitions), mode: opt(oneOf(['compare', 'manifest'] as const)), forceGeneration: opt(bool('copy even when the standby holds changes the active drive does not descend from (split brain)')), window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  verify: obj({ partitions: opt(partitions), window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  clone: obj({ force: opt(bool('clone again over a standby that holds a consistent backup')), window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  reprotect: obj({ window: opt(bool('run the copy in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)')) }),
  empty: obj({}),
  cancel: obj({ rollback: opt(bool('roll the standby back to the previous backup after stopping (default: config recovery.rollbackOnCancel)')) }),
  failover: obj({ hardOff: opt(bool('force the host off when it ignores the shutdown request')) }),
  bootselect: obj({ bay: oneOf(['A', 'B'] as const), force: opt(bool('move even with the host powered (it may crash)')), powerOn: opt(bool('power the host on afterwards')) }),
  shutdown: obj({ hardOff: opt(bool('hold the power button to force the host off when it ignores the shutdown request')) }),
  heartbeat: obj({ bay: opt(oneOf(['A', 'B'] as const, 'the bay the host believes it booted from')) }),
  button: obj({ holdMs: int(1, 60_000, 'how long the button is held') }),
  hostPower: obj({ power: oneOf(['on', 'off'] as const) }),
  hostWrite: obj({ mib: int(1, 4096, 'MiB of random writes the simulated OS makes to its drive') }),
  insert: obj({ replacement: opt(bool('insert a new blank drive instead of the pulled one')) }),
  readErrors: obj({ lbas: array(int(0, Number.MAX_SAFE_INTEGER), { maxItems: 10_000, unique: true, description: 'sectors whose reads fail; an empty list clears them' }) }),
  smart: obj({
    temperatureC: opt(int(0, 120)),
    reallocatedSectors: opt(int(0, 1_000_000)),
    pendingSectors: opt(int(0, 1_000_000)),
    overall: opt(oneOf(['passed', 'failed'] as const)),
  }),
};

function jobReply(job: ReturnType<Appliance['startSync']>): Reply {
  return { status: 202, body: { id: job.id, job: summary(job) } };
}

export function buildRoutes(app: Appliance, opts: { metricsText: () => Promise<string> }): Route[] {
  const sse = app.config.api;
  const rig = () => {
    if (!app.rig) throw new NotFoundError('the simulated rig is not running: rig controls exist only with rig "sim"');
    return app.rig;
  };
  // Many clients poll the status: it is built once per event (or per second) and served as text to all of them.
  let cached: { seq: number; at: number; text: string } | null = null;
  const statusText = () => {
    const now = performance.now();
    if (!cached || cached.seq !== app.bus.seq || now - cached.at > 1000) cached = { seq: app.bus.seq, at: now, text: JSON.stringify(app.status()) };
    return cached.text;
  };
  const routes: Route[] = [
    {
      method: 'GET', path: '/api/health', tag: 'daemon', auth: false, summary: 'Liveness: the daemon answers (no token needed)',
      responses: { 200: 'the daemon runs' },
      handler: () => ({ status: 200, body: { ok: true, rig: app.config.rig, uptimeSeconds: Math.round((Date.now() - app.startedAt) / 1000) } }),
    },
    {
      method: 'GET', path: '/api/status', tag: 'daemon', summary: 'Roles, standby state, generations, job, relays, host, health, last sync',
      responses: { 200: 'the status' },
      handler: () => ({ status: 200, body: null, json: statusText() }),
    },
    {
      method: 'POST', path: '/api/sync', tag: 'jobs', summary: 'Start a sync of the active drive onto the standby', body: bodies.sync,
      responses: { 202: 'the job started; { id, job }', 409: 'another job runs, a failover moves the drives, or the sync is refused to protect data' },
      handler: ({ body }) => jobReply(app.startSync(body as SyncOptions)),
    },
    {
      method: 'POST', path: '/api/verify', tag: 'jobs', summary: 'Start comparing both drives', body: bodies.verify,
      responses: { 202: 'the job started', 409: 'another job runs' },
      handler: ({ body }) => jobReply(app.startVerify(body as { partitions?: number[]; window?: boolean })),
    },
    {
      method: 'POST', path: '/api/clone', tag: 'jobs', summary: 'Start the first full copy, which pairs the drives', body: bodies.clone,
      responses: { 202: 'the job started', 409: 'another job runs, or the standby already holds a consistent backup' },
      handler: ({ body }) => jobReply(app.startClone(body as { force?: boolean; window?: boolean })),
    },
    {
      method: 'POST', path: '/api/recover', tag: 'jobs', summary: 'Roll an interrupted sync back: the standby becomes the previous backup again', body: bodies.empty,
      responses: { 202: 'the job started', 409: 'another job runs, or nothing can be rolled back' },
      handler: () => jobReply(app.startRecover()),
    },
    {
      method: 'POST', path: '/api/reprotect', tag: 'jobs', summary: 'Make the drive in the standby bay a backup again (after a failover or a drive replacement)', body: bodies.reprotect,
      responses: { 202: 'the job started', 409: 'another job runs, or refused' },
      handler: ({ body }) => jobReply(app.startReprotect('api', body as { window?: boolean })),
    },
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
      responses: { 202: 'cancel requested; the job ends as cancelled', 404: 'no such job', 409: 'the job is not running' },
      handler: ({ params, body }) => {
        const b = body as { rollback?: boolean };
        const job = app.jobs.cancel(params.id!, b.rollback ?? app.config.recovery.rollbackOnCancel);
        return { status: 202, body: { id: job.id, job: summary(job) } };
      },
    },
    {
      method: 'POST', path: '/api/failover', tag: 'boot', summary: 'Boot the standby: host shut down, boot selection moved, host powered on, roles swapped', body: bodies.failover,
      responses: { 202: 'the failover started; watch the failover and switched events', 409: 'the standby is not consistent, a job runs, or failover is halted' },
      handler: async ({ body }) => ({ status: 202, body: await app.failover(body as { hardOff?: boolean }) }),
    },
    {
      method: 'POST', path: '/api/failover/reset', tag: 'boot', summary: 'Clear failed-bay marks and a halt of the failover state machine', body: bodies.empty,
      responses: { 200: 'cleared' },
      handler: async () => {
        await app.resetFailover();
        return { status: 200, body: { failover: app.bs.failover.state } };
      },
    },
    {
      method: 'POST', path: '/api/bootselect', tag: 'boot', summary: 'Maintenance: connect a bay to the host (roles unchanged)', body: bodies.bootselect,
      responses: { 200: 'moved (or already there); the move report', 409: 'the host is powered (and force not set), or a job runs' },
      handler: async ({ body }) => {
        const b = body as { bay: Bay; force?: boolean; powerOn?: boolean };
        return { status: 200, body: await app.bootselect(b.bay, b) };
      },
    },
    {
      method: 'POST', path: '/api/host/shutdown', tag: 'boot', summary: 'Shut the host down through the ATX power relay (ACPI request; hardOff forces it off when ignored)', body: bodies.shutdown,
      responses: { 200: '{ how: was-off|acpi|hard-off }', 409: 'the host stayed on (and hardOff not set), or a failover or move runs' },
      handler: async ({ body }) => ({ status: 200, body: await app.shutdownHost(body as { hardOff?: boolean }) }),
    },
    {
      method: 'POST', path: '/api/host/heartbeat', tag: 'boot', summary: "The host's boot-good confirmation", body: bodies.heartbeat,
      responses: { 200: 'recorded' },
      handler: async ({ body }) => {
        await app.heartbeat('api', (body as { bay?: Bay }).bay ?? null);
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
      handler: async ({ query }) => {
        const limitText = query.get('limit') ?? '200';
        const limit = Number(limitText);
        if (!/^\d+$/.test(limitText) || limit < 1 || limit > 10000) throw new BadInputError(`query limit is ${JSON.stringify(limitText)}; allowed: an integer from 1 to 10000`);
        const types = query.get('types')?.split(',').map((t) => t.trim()).filter(Boolean);
        return { status: 200, body: { events: await app.bus.readLog(limit, types) } };
      },
    },
    {
      method: 'GET', path: '/metrics', tag: 'daemon', summary: "Prometheus metrics (text format): dpsr's own dpsr_ prefixed, the standard process_* and nodejs_* ones, dpsr_build_info",
      responses: { 200: 'text/plain; version=0.0.4' },
      handler: async ({ res }) => {
        app.metrics.observeStatus(app.statusCore());
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
    // ---- simulated rig ----
    {
      method: 'POST', path: '/api/sim/button', tag: 'sim', sim: true, summary: 'Press the failover button for holdMs', body: bodies.button,
      responses: { 200: 'pressed; released after holdMs', 404: 'not the simulated rig' },
      handler: ({ body }) => {
        const ms = (body as { holdMs: number }).holdMs;
        rig().board.holdButton(ms);
        return { status: 200, body: { pressed: true, holdMs: ms } };
      },
    },
    {
      method: 'POST', path: '/api/sim/host/power', tag: 'sim', sim: true,
      summary: 'Power the simulated host on, or cut its power; with an external host (sim.host "external") only its power-LED input is set',
      body: bodies.hostPower,
      responses: { 200: 'done', 404: 'not the simulated rig' },
      handler: ({ body }) => {
        const r = rig();
        const on = (body as { power: string }).power === 'on';
        if (!r.host) {
          r.setHostPowerLed(on);
          return { status: 200, body: { state: 'external', powerLed: on } };
        }
        if (on) r.host.powerOn();
        else r.host.forceOff();
        return { status: 200, body: { state: r.host.state } };
      },
    },
    {
      method: 'POST', path: '/api/sim/host/crash', tag: 'sim', sim: true, summary: 'The simulated OS hangs: no heartbeats, no ACPI', body: bodies.empty,
      responses: { 200: 'hung', 404: 'not the simulated rig', 409: 'the host is external' },
      handler: () => {
        const r = rig();
        if (!r.host) throw new RefusedError('the host is external: hang it on its side', { hint: 'this route drives the simulated host only (sim.host "simulated")' });
        r.host.hang();
        return { status: 200, body: { state: r.host.state } };
      },
    },
    {
      method: 'POST', path: '/api/sim/host/write', tag: 'sim', sim: true, summary: 'The simulated OS writes random data to the active drive', body: bodies.hostWrite,
      responses: { 200: '{ bay, bytes }', 404: 'not the simulated rig', 409: 'the bay is empty' },
      handler: async ({ body }) => {
        const bay = app.statusCore().active;
        const bytes = await rig().hostWrite(bay, (body as { mib: number }).mib * 1024 * 1024);
        return { status: 200, body: { bay, bytes } };
      },
    },
    {
      method: 'POST', path: '/api/sim/drive/:bay/pull', tag: 'sim', sim: true, summary: 'Pull the drive out of a bay (running I/O fails)', body: bodies.empty,
      responses: { 200: 'pulled', 404: 'not the simulated rig', 409: 'the bay is empty' },
      handler: async ({ params }) => {
        const bay = bayParam(params.bay!);
        rig().pull(bay);
        app.invalidate();
        app.bus.publish('drive', { bay, action: 'pulled' });
        void app.health.check();
        return { status: 200, body: { bay, present: false } };
      },
    },
    {
      method: 'POST', path: '/api/sim/drive/:bay/insert', tag: 'sim', sim: true, summary: 'Put the pulled drive back, or a new blank one', body: bodies.insert,
      responses: { 200: 'inserted', 404: 'not the simulated rig', 409: 'the bay holds a drive' },
      handler: async ({ params, body }) => {
        const bay = bayParam(params.bay!);
        const replacement = (body as { replacement?: boolean }).replacement === true;
        const path = rig().insert(bay, replacement);
        app.invalidate();
        app.bus.publish('drive', { bay, action: replacement ? 'replaced' : 'inserted', path });
        void app.health.check();
        app.publishStatusChange();
        return { status: 200, body: { bay, present: true, path, replacement } };
      },
    },
    {
      method: 'POST', path: '/api/sim/drive/:bay/read-errors', tag: 'sim', sim: true, summary: 'Make sectors of a drive unreadable (an empty list heals it)', body: bodies.readErrors,
      responses: { 200: 'set', 400: 'an LBA beyond the drive', 404: 'not the simulated rig' },
      handler: async ({ params, body }) => {
        const bay = bayParam(params.bay!);
        const r = rig();
        const lbas = (body as { lbas: number[] }).lbas;
        const max = r.sectors(bay);
        lbas.forEach((l, i) => {
          if (l >= max) throw new BadInputError(`lbas[${i}] is ${l}; allowed: a sector number below ${max} (the drive's size)`);
        });
        r.setReadErrors(bay, lbas);
        void app.health.check();
        return { status: 200, body: { bay, lbas: r.readErrors(bay) } };
      },
    },
    {
      method: 'POST', path: '/api/sim/drive/:bay/smart', tag: 'sim', sim: true, summary: 'Set the simulated SMART values of a drive', body: bodies.smart,
      responses: { 200: 'set; health re-read', 404: 'not the simulated rig' },
      handler: async ({ params, body }) => {
        const bay = bayParam(params.bay!);
        const r = rig();
        r.smart.set(r.smartDevice(bay), body as object);
        await app.health.check();
        return { status: 200, body: { bay, health: app.health.drives[bay] } };
      },
    },
  ];
  return routes.filter((r) => !r.sim || app.rig);
}

interface Compiled {
  route: Route;
  re: RegExp;
  names: string[];
}

function compile(routes: Route[]): Compiled[] {
  return routes.map((route) => {
    const names: string[] = [];
    const re = new RegExp(`^${route.path.replace(/:([a-z]+)/g, (_m, n: string) => (names.push(n), '([^/]+)'))}$`);
    return { route, re, names };
  });
}

export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m) return false;
  // Hashing both sides gives equal lengths, which timingSafeEqual needs.
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

/**
 * The request body as text, at most `limit` bytes. A larger body, declared
 * (Content-Length) or streamed (chunked), rejects with PayloadTooLargeError;
 * the rest of it is read and dropped so that the 413 reaches the client.
 */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      reject(new PayloadTooLargeError(`request body of ${declared} bytes is larger than the limit of ${limit} bytes`, { hint: 'send a smaller body; nothing was changed' }));
      req.resume();
      return;
    }
    let size = 0;
    let over = false;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        reject(new PayloadTooLargeError(`request body is larger than the limit of ${limit} bytes`, { hint: 'send a smaller body; nothing was changed' }));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    // The client went away mid-body: its request is incomplete, not our failure.
    req.on('error', (e) => reject(new BadInputError(`the request body was cut short: ${e.message}`, { hint: 'send the whole body; nothing was changed' })));
  });
}

/** Deepest nesting a request body may have; ours have two levels. Deeper JSON would overflow the stack of whatever walks it. */
export const MAX_JSON_DEPTH = 32;

/** Whether JSON text nests arrays and objects deeper than `max` (strings are skipped; the text need not be valid). */
export function jsonNestsDeeper(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * The path and query of a request target: origin-form ("/api/x?y") or
 * absolute-form ("http://host/api/x", RFC 9112 section 3.2.2). Anything else
 * (asterisk-form, an unparsable URL) is bad input.
 */
export function parseTarget(target: string | undefined): { pathname: string; query: URLSearchParams } {
  let rest = target ?? '';
  if (!rest.startsWith('/')) {
    let u: URL | null = null;
    try {
      u = new URL(rest);
    } catch {
      /* reported below */
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) {
      throw new BadInputError(`the request target ${show(rest)} is neither a path nor an http URL`, { hint: 'request a path such as /api/status' });
    }
    rest = u.pathname + u.search;
  }
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  return { pathname: q < 0 ? rest : rest.slice(0, q), query: new URLSearchParams(q < 0 ? '' : rest.slice(q + 1)) };
}

/** A percent-decoded path parameter; a malformed escape is bad input, not a server error. */
function decodeParam(name: string, raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new BadInputError(`path parameter ${name} is ${show(raw)}, which holds a malformed percent-escape`, { hint: 'encode the value with encodeURIComponent' });
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendText(res, status, JSON.stringify(body), headers);
}

function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export function errorBody(e: unknown) {
  return { error: errorData(e) };
}

export function createApiServer(app: Appliance, routes: Route[], token: string): Server {
  const compiled = compile(routes);
  const limit = app.config.api.bodyLimitBytes;
  return createServer(async (req, res) => {
    const started = performance.now();
    let routeName = 'unmatched';
    let status = 500;
    try {
      let target: ReturnType<typeof parseTarget> | null = null;
      let targetError: unknown = null;
      try {
        target = parseTarget(req.url);
      } catch (e) {
        targetError = e;
      }
      // Authentication comes first: without the token nothing but the public routes is told apart, not even which routes exist.
      const isPublic = target !== null && compiled.some((c) => c.route.auth === false && c.route.method === req.method && c.re.test(target.pathname));
      if (!isPublic && !tokenMatches(req.headers.authorization, token)) {
        status = 401;
        req.resume();
        send(res, 401, { error: { kind: 'unauthorized', message: req.headers.authorization ? 'the bearer token is wrong' : 'this route needs "Authorization: Bearer <token>"', hint: "the token is in the file api-token of the daemon's state directory" } }, { 'www-authenticate': 'Bearer realm="dpsr"' });
        return;
      }
      if (!target) throw targetError;
      const { pathname, query } = target;
      const matching = compiled.filter((c) => c.re.test(pathname));
      const hit = matching.find((c) => c.route.method === req.method);
      if (!hit) {
        req.resume();
        if (matching.length) {
          status = 405;
          send(res, 405, { error: { kind: 'bad-input', message: `${req.method} is not allowed on ${pathname}; allowed: ${matching.map((m) => m.route.method).join(', ')}` } }, { allow: matching.map((m) => m.route.method).join(', ') });
        } else {
          status = 404;
          const sim = pathname.startsWith('/api/sim/') && !app.rig;
          send(res, 404, { error: { kind: 'not-found', message: sim ? 'the simulated rig is not running: rig controls exist only with rig "sim"' : `no route ${req.method} ${show(pathname)}`, hint: 'GET /api/openapi.json lists the routes' } });
        }
        return;
      }
      const { route } = hit;
      routeName = `${route.method} ${route.path}`;
      const params: Record<string, string> = {};
      const m = hit.re.exec(pathname)!;
      hit.names.forEach((n, i) => (params[n] = decodeParam(n, m[i + 1]!)));
      let body: unknown = undefined;
      if (req.method === 'POST') {
        const text = await readBody(req, limit);
        const ctype = req.headers['content-type'] ?? '';
        if (text.trim() === '') body = {};
        else {
          if (ctype && !/^application\/json\b/i.test(ctype)) {
            status = 415;
            send(res, 415, { error: { kind: 'bad-input', message: `request body has content-type ${show(ctype)}; allowed: application/json` } });
            return;
          }
          if (jsonNestsDeeper(text, MAX_JSON_DEPTH)) throw new BadInputError(`request body nests arrays or objects deeper than ${MAX_JSON_DEPTH} levels`, { hint: 'send the flat JSON object the route describes (GET /api/openapi.json)' });
          try {
            body = JSON.parse(text);
          } catch (e) {
            throw new BadInputError(`request body is not valid JSON: ${(e as Error).message}`, { hint: 'send a JSON object, e.g. {}' });
          }
        }
        if (route.body) body = check(route.body, body, 'request body');
      }
      const reply = await route.handler({ req, res, params, query, body });
      status = reply.status;
      if (reply.json !== undefined) sendText(res, reply.status, reply.json);
      else if (!reply.raw) send(res, reply.status, reply.body);
    } catch (e) {
      const tooLarge = e instanceof PayloadTooLargeError;
      status = tooLarge ? 413 : httpStatusFor(e);
      if (status === 500) app.log.error({ err: e, url: req.url }, 'request failed');
      // A body cut short leaves bytes on the connection: the answer closes it.
      if (!res.headersSent) send(res, status, errorBody(e), tooLarge ? { connection: 'close' } : {});
      else res.end();
    } finally {
      app.metrics.httpRequests.inc({ route: routeName, status: String(status) });
      if (routeName !== 'GET /api/status' && routeName !== 'GET /metrics') app.log.debug({ route: routeName, status, ms: Math.round(performance.now() - started) }, 'request');
    }
  });
}
