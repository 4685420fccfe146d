/**
 * The daemon: config → state directory and token → event bus → the
 * controller (controller.ts builds the rig, the boot switch and the parts)
 * → HTTP server. Returns a handle tests and the `dpsrd` entry point both use.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import pino, { type Logger } from 'pino';
import { ensureSpaceReserve, writeFileDurably } from '../../src/durable-file.ts';
import { acquireStateDirLock, type Lock } from '../../src/sync/index.ts';
import { DeviceError } from '../../src/errors.ts';
import { validateDaemonConfig, parseListen, type DaemonConfig } from './config.ts';
import { EventBus } from './events.ts';
import { Metrics } from './metrics.ts';
import { Controller } from './controller.ts';
import type { ServiceManager } from './inline.ts';
import { buildRoutes } from './api.ts';
import { createApiServer } from './http-server.ts';
import { ConsoleSessions } from './console-auth.ts';
import { consoleRoutes, type ConsoleInfo } from './console-server.ts';
import { ensureTlsCertificate } from './tls-cert.ts';

export interface DaemonOptions {
  stateDir: string;
  /** HOST:PORT; port 0 picks a free port. */
  listen?: string;
  /** A validated config, or raw config to validate; absent: the simulated rig with defaults. */
  config?: DaemonConfig | unknown;
  /** pino destination; defaults to stdout. */
  logStream?: NodeJS.WritableStream;
  logLevel?: string;
  /** Where the export units of config inline.daemon systemd run (default: this machine's systemd). */
  serviceManager?: ServiceManager;
}

export interface Daemon {
  readonly url: string;
  /** The HTTPS address of the API and console, when api.httpsListen is set. */
  readonly httpsUrl: string | null;
  /** The console's admin password file. */
  readonly adminPasswordFile: string;
  /** What the console's settings page shows; dpsrd adds Node-RED's address once it runs. */
  readonly consoleInfo: ConsoleInfo;
  readonly token: string;
  readonly tokenFile: string;
  readonly stateDir: string;
  readonly app: Controller;
  readonly log: Logger;
  close(): Promise<void>;
}

export const DEFAULT_LISTEN = '127.0.0.1:8750';

/** The API token: generated on first start, mode 0600, kept across restarts. */
export function ensureToken(stateDir: string, log?: Logger): { token: string; file: string } {
  return ensureSecret(stateDir, 'api-token', log);
}

/** A secret file of the state directory (the API token, the console's admin password): generated on first start, mode 0600, kept across restarts. */
export function ensureSecret(stateDir: string, name: string, log?: Logger): { token: string; file: string } {
  const file = join(stateDir, name);
  if (existsSync(file)) {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) {
      chmodSync(file, 0o600);
      log?.warn({ file, mode: mode.toString(8) }, `${name} was readable by others: mode set to 0600`);
    }
    const token = readFileSync(file, 'utf8').trim();
    if (token.length >= 16) return { token, file };
    log?.warn({ file }, `${name} is empty or too short: a new one is generated`);
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
  // Checked before the state directory is created: bad input changes nothing.
  const listen = parseListen(opts.listen ?? config.listen ?? DEFAULT_LISTEN, opts.listen ? '--listen' : 'listen');
  const stateDir = resolve(opts.stateDir);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new DeviceError(`cannot create the state directory ${stateDir}: ${(e as Error).message}`, { hint: 'pass a writable --state-dir or set DPSR_STATE_DIR' });
  }
  // One daemon per state directory (rule 9): a second one would drive the same relays and take the first one's jobs for dead.
  const dirLock = await acquireStateDirLock(stateDir);
  try {
    return await startLocked(opts, config, stateDir, dirLock, listen);
  } catch (e) {
    dirLock.release();
    throw e;
  }
}

async function startLocked(opts: DaemonOptions, config: DaemonConfig, stateDir: string, dirLock: Lock, listen: ReturnType<typeof parseListen>): Promise<Daemon> {
  const log = pino({ level: opts.logLevel ?? config.log.level, base: { svc: 'dpsrd' } }, (opts.logStream ?? pino.destination({ dest: 1, sync: true })) as pino.DestinationStream);
  const { token, file: tokenFile } = ensureToken(stateDir, log);
  const { token: adminPassword, file: adminPasswordFile } = ensureSecret(stateDir, 'admin-password', log);
  const httpsListen = config.api.httpsListen ? parseListen(config.api.httpsListen, 'api.httpsListen') : null;
  const tls = httpsListen ? ensureTlsCertificate(stateDir, httpsListen.host) : null;
  if (tls?.created) log.info({ cert: tls.certFile }, 'made a self-signed HTTPS certificate');
  // Room for a recovery's records when the state directory fills up later.
  if (!ensureSpaceReserve(stateDir)) log.warn({ stateDir }, 'no room for the space reserve: a recovery on a full state directory may fail');

  // The addresses are taken before the controller starts: a port in use must refuse the start before a job is resumed
  // or recorded, a relay moved or the host shut down (they answer 503 until the routes are served).
  const listenOn = async (server: Server, where: { host: string; port: number }, scheme: string, flag: string) => {
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolveListen, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new DeviceError(`cannot listen on ${where.host}:${where.port}: ${e.message}`, { hint: e.code === 'EADDRINUSE' ? `another dpsrd runs there? pass ${flag}` : undefined })),
      );
      server.listen(where.port, where.host, () => resolveListen());
    });
    const addr = server.address() as AddressInfo;
    return `${scheme}://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  };
  const api = createApiServer();
  const httpsApi = tls ? createApiServer(tls) : null;
  const closeServers = async () => {
    for (const s of [api.server, httpsApi?.server]) {
      if (!s?.listening) continue;
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  };
  let url: string;
  let httpsUrl: string | null = null;
  try {
    url = await listenOn(api.server, listen, 'http', '--listen HOST:PORT');
    if (httpsApi) httpsUrl = await listenOn(httpsApi.server, httpsListen!, 'https', 'another api.httpsListen');
  } catch (e) {
    await closeServers();
    throw e;
  }
  dirLock.owner.url = url;

  const bus = new EventBus(join(stateDir, 'events.jsonl'), { replay: config.api.sseReplay, logMaxBytes: config.eventLog.maxBytes }, (e) => log.warn({ err: e }, 'event log write failed'));
  const metrics = new Metrics();

  let app: Controller;
  try {
    app = await Controller.open(config, stateDir, bus, metrics, log, opts.serviceManager);
  } catch (e) {
    await closeServers();
    throw e;
  }
  try {
    await app.start();
  } catch (e) {
    await closeServers();
    throw e;
  }

  // Signs the device cookies of browsers that logged in: kept, so they stay known across restarts (removing the file forgets them all).
  const sessions = new ConsoleSessions(adminPassword, { deviceKey: ensureSecret(stateDir, 'console-device-key', log).token });
  const consoleInfo: ConsoleInfo = {
    config,
    files: { stateDir, apiToken: tokenFile, adminPassword: adminPasswordFile, nodeRedPassword: join(stateDir, 'node-red', 'admin-password') },
    urls: { http: '', https: null, nodeRed: null },
  };
  const routes = buildRoutes(app, { metricsText: () => metrics.text(), console: consoleRoutes(sessions, log, consoleInfo) });
  const serverOptions = {
    token,
    sessions,
    bodyLimitBytes: config.api.bodyLimitBytes,
    missing: (path: string) => (path.startsWith('/api/sim/') && config.rig !== 'sim' ? 'the simulated rig is not running: rig controls exist only with rig "sim"' : null),
    metrics,
    log,
  };
  api.serve(routes, serverOptions);
  httpsApi?.serve(routes, serverOptions);
  app.keeper.setUrl(url);
  consoleInfo.urls.http = url;
  consoleInfo.urls.https = httpsUrl;
  bus.publish('daemon.started', { url, rig: config.rig, pid: process.pid, config: config.source });
  log.info({ url, httpsUrl, tokenFile, adminPasswordFile, stateDir, rig: config.rig, config: config.source }, 'dpsrd listening');

  let closed = false;
  return {
    url,
    httpsUrl,
    adminPasswordFile,
    consoleInfo,
    token,
    tokenFile,
    stateDir,
    app,
    log,
    async close() {
      if (closed) return;
      closed = true;
      bus.publish('daemon.stopping', {});
      await app.stop(closeServers);
      dirLock.release();
    },
  };
}
