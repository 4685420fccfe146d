/**
 * Composition of the daemon: config → state directory and token → rig
 * (simulated or hardware) → boot switch → appliance → HTTP server. Returns a
 * handle tests and the `dpsrd` entry point both use.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { openBootSwitch, BootSwitchEmitter, type AlertEvent, type Bay } from '../../src/bootswitch/index.ts';
import { SmartctlSource } from '../../src/sata-bridge/index.ts';
import { writeFileDurably } from '../../src/durable-file.ts';
import { DeviceError } from '../../src/errors.ts';
import { validateDaemonConfig, parseListen, type DaemonConfig } from './config.ts';
import { EventBus } from './events.ts';
import { Metrics } from './metrics.ts';
import { JobRunner } from './jobs.ts';
import { HealthMonitor } from './health.ts';
import { SimRig } from './sim-rig.ts';
import { Appliance, type DriveBays } from './appliance.ts';
import { buildRoutes, createApiServer } from './api.ts';
import { wirePanel } from './panel-wiring.ts';

export interface DaemonOptions {
  stateDir: string;
  /** HOST:PORT; port 0 picks a free port. */
  listen?: string;
  /** A validated config, or raw config to validate; absent: the simulated rig with defaults. */
  config?: DaemonConfig | unknown;
  /** pino destination; defaults to stdout. */
  logStream?: NodeJS.WritableStream;
  logLevel?: string;
}

export interface Daemon {
  readonly url: string;
  readonly token: string;
  readonly tokenFile: string;
  readonly stateDir: string;
  readonly app: Appliance;
  readonly log: Logger;
  close(): Promise<void>;
}

export const DEFAULT_LISTEN = '127.0.0.1:8750';

/** The API token: generated on first start, mode 0600, kept across restarts. */
export function ensureToken(stateDir: string, log?: Logger): { token: string; file: string } {
  const file = join(stateDir, 'api-token');
  if (existsSync(file)) {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) {
      chmodSync(file, 0o600);
      log?.warn({ file, mode: mode.toString(8) }, 'the API token file was readable by others: mode set to 0600');
    }
    const token = readFileSync(file, 'utf8').trim();
    if (token.length >= 16) return { token, file };
    log?.warn({ file }, 'the API token file is empty or too short: a new token is generated');
  }
  const token = randomBytes(32).toString('base64url');
  writeFileDurably(file, `${token}\n`, 0o600);
  return { token, file };
}

function isValidated(c: unknown): c is DaemonConfig {
  return typeof c === 'object' && c !== null && 'source' in c && 'bootswitch' in c && typeof (c as DaemonConfig).bootswitch === 'object' && 'channels' in ((c as DaemonConfig).bootswitch as object);
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const config = isValidated(opts.config) ? opts.config : validateDaemonConfig(opts.config ?? {}, opts.config ? '(given)' : '(built-in defaults: simulated rig)');
  const stateDir = resolve(opts.stateDir);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new DeviceError(`cannot create the state directory ${stateDir}: ${(e as Error).message}`, { hint: 'pass a writable --state-dir or set DPSR_STATE_DIR' });
  }
  const log = pino({ level: opts.logLevel ?? config.log.level, base: { svc: 'dpsrd' } }, (opts.logStream ?? pino.destination({ dest: 1, sync: true })) as pino.DestinationStream);
  const listen = parseListen(opts.listen ?? config.listen ?? DEFAULT_LISTEN, opts.listen ? '--listen' : 'listen');
  const { token, file: tokenFile } = ensureToken(stateDir, log);

  const bus = new EventBus(join(stateDir, 'events.jsonl'), { replay: config.api.sseReplay, logMaxBytes: config.eventLog.maxBytes }, (e) => log.warn({ err: e }, 'event log write failed'));
  const metrics = new Metrics();

  const rig =
    config.rig === 'sim'
      ? new SimRig({
          stateDir,
          driveSizeMiB: config.sim.driveSizeMiB,
          bridgeMiBps: config.sim.bridgeMiBps,
          hostBootMs: config.sim.hostBootMs,
          hostShutdownMs: config.sim.hostShutdownMs,
          heartbeatMs: config.sim.heartbeatMs,
          driveTemperatureC: config.sim.driveTemperatureC,
          host: config.sim.host,
          systemImage: config.sim.systemImage,
        })
      : null;
  if (rig?.created) {
    const what = config.sim.systemImage ? `a copy of ${config.sim.systemImage}` : 'system drive (GPT, FAT EFI, ext4 root and data)';
    log.info({ dir: rig.dir, sizeMiB: config.sim.driveSizeMiB, host: config.sim.host }, `simulated rig created: ${what} in bay A, blank drive in bay B`);
  }

  const bays: DriveBays = rig
    ? { path: (bay) => rig.drivePath(bay), openDevice: rig.openDevice }
    : { path: (bay) => (existsSync(config.drives![bay]) ? config.drives![bay] : null) };

  // Alerts raised while the boot switch starts (adopted relays, an interrupted move) reach the bus after it is wired.
  const emitter = new BootSwitchEmitter();
  const early: AlertEvent[] = [];
  const onEarly = (a: AlertEvent) => early.push(a);
  emitter.on('alert', onEarly);
  const bs = await openBootSwitch({ config: config.bootswitch, stateDir: join(stateDir, 'bootswitch'), sim: rig?.board, logger: log.child({ room: 'bootswitch' }), events: emitter });
  emitter.off('alert', onEarly);

  const health = new HealthMonitor(
    rig ? rig.smart : new SmartctlSource(config.health.smartctl),
    (bay: Bay) => (rig ? (rig.present(bay) ? rig.smartDevice(bay) : null) : bays.path(bay)),
    config.health,
    bus,
    metrics,
  );
  let app: Appliance | undefined;
  const jobs = new JobRunner(stateDir, config.jobs, bus, () => app?.blockedBy() ?? null);
  app = new Appliance(config, stateDir, bus, metrics, jobs, bs, bays, health, log, rig);
  const appliance = app;
  bus.subscribe((e) => {
    if (e.type === 'job.done' || e.type === 'job.failed' || e.type === 'job.cancelled') {
      const id = (e.data as { job: { id: string } }).job.id;
      appliance.jobFinished(jobs.get(id));
      const j = jobs.get(id);
      log[j.state === 'failed' ? 'error' : 'info']({ job: j.id, kind: j.kind, state: j.state, seconds: j.seconds, error: j.error?.message }, `job ${j.kind} ${j.state}`);
    } else if (e.type === 'job.started') {
      const j = (e.data as { job: { id: string; kind: string; trigger: string } }).job;
      log.info({ job: j.id, kind: j.kind, trigger: j.trigger }, `job ${j.kind} started`);
    } else if (e.type === 'alert') {
      const a = e.data as AlertEvent;
      log[a.level === 'critical' ? 'error' : a.level === 'warning' ? 'warn' : 'info']({ code: a.code }, a.message);
    } else if (e.type === 'job.progress') {
      const p = e.data as { progress: { percent: number } };
      metrics.jobProgress.set(p.progress.percent / 100);
    }
  });
  appliance.attachBootSwitch();
  for (const a of early) bus.publish('alert', a);
  if (rig?.host) rig.host.on('heartbeat', (bay) => void appliance.heartbeat('sim-host', bay).catch(() => {}));

  await appliance.startup();
  if (rig?.created && config.sim.initialClone && !jobs.current) appliance.startClone({}, 'first-start');
  if (rig?.host && config.sim.hostPoweredAtStart && !rig.host.powered) rig.host.powerOn();
  health.start();
  // Relay energised = drive power cut (DESIGN: de-energised is the safe default, both drives powered).
  const panel = await wirePanel({ config, bus, app: appliance, rig, bootSwitchEvents: emitter, powered: (bay) => !bs.bootSwitch.record.relays[bay === 'A' ? 'pwrA' : 'pwrB'] });

  const routes = buildRoutes(appliance, { metricsText: () => metrics.text() });
  const server = createApiServer(appliance, routes, token);
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new DeviceError(`cannot listen on ${listen.host}:${listen.port}: ${e.message}`, { hint: e.code === 'EADDRINUSE' ? 'another dpsrd runs there? pass --listen HOST:PORT' : undefined })),
    );
    server.listen(listen.port, listen.host, () => resolveListen());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  bus.publish('daemon.started', { url, rig: config.rig, pid: process.pid, config: config.source });
  log.info({ url, tokenFile, stateDir, rig: config.rig, config: config.source }, 'dpsrd listening');

  let closed = false;
  return {
    url,
    token,
    tokenFile,
    stateDir,
    app: appliance,
    log,
    async close() {
      if (closed) return;
      closed = true;
      bus.publish('daemon.stopping', {});
      health.stop();
      await panel?.stop();
      const cur = jobs.current;
      // Stopping leaves an interrupted copy to resume at the next start, not a rolled-back one.
      if (cur) jobs.cancel(cur.id, false);
      await jobs.idle();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await bs.close();
      await rig?.close();
    },
  };
}
