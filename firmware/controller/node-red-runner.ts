/**
 * Node-RED beside dpsrd: a child process started with the appliance settings
 * of the flows package (firmware/flows/appliance/settings.js, handed to
 * Node-RED as a file, not imported) and restarted with back-off when it dies.
 * It is a separate process so that a flow that throws, leaks or spins cannot
 * take the controller down; the flows reach the daemon over its HTTP API.
 * Supervising it is the controller's job, like every child it runs, so the
 * code lives here; Node-RED itself is the daemon's dependency, not the node
 * package's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { BadInputError } from '../../src/errors.ts';
import type { Daemon } from './daemon.ts';

/** The flows package's Node-RED settings for the appliance. */
export const NODE_RED_SETTINGS = fileURLToPath(new URL('../flows/appliance/settings.js', import.meta.url));

export interface NodeRedHandle {
  stop(graceMs?: number): Promise<void>;
}

export interface SuperviseOptions {
  /** The daemon's state directory: Node-RED keeps its flows and secrets in `<stateDir>/node-red`. */
  stateDir: string;
  /** The daemon's API, for the flows. */
  url?: string;
  tokenFile?: string;
  /** HOST:PORT of the editor (port 0 = any free port). */
  listen?: string;
  env?: Record<string, string | undefined>;
  log?: (level: 'info' | 'warn' | 'error', message: string, extra?: object) => void;
  /** Every line Node-RED prints. */
  output?: (line: string) => void;
  /** First restart delay; it doubles per failure up to `maxDelayMs`. */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** A child that ran this long was healthy: the next crash starts the back-off over. */
  stableMs?: number;
  /**
   * Starts tried again when the editor's port is taken (a Node-RED of the
   * last run may still be exiting) before the supervisor gives up and says so.
   */
  portRetries?: number;
}

interface SupervisorEvents {
  spawn: [{ pid: number | undefined }];
  ready: [{ url: string; pid: number | undefined }];
  'flows-started': [{ url: string | undefined; pid: number | undefined }];
  exit: [{ code: number | null; signal: NodeJS.Signals | null; pid: number | undefined }];
  /** Node-RED is left stopped, with the reason in words: reported once, not retried forever. */
  'gave-up': [{ reason: 'port-in-use'; message: string }];
}

/**
 * Node-RED repeats some lines on a timer (an MQTT broker that is down: one
 * "Connection failed" every 5 s). A line equal to an earlier one (its
 * timestamp aside) within `windowMs` is held back; the first line after the
 * window says how often it came meanwhile. Other lines pass unchanged.
 */
export class RepeatedLines {
  readonly #seen = new Map<string, { since: number; count: number }>();
  constructor(private readonly windowMs = 10 * 60_000) {}

  /** The line to show now, or null to hold it back. */
  pass(line: string, now: number): string | null {
    // Node-RED's lines start with "29 Nov 09:16:11 - ".
    const key = line.replace(/^\d{1,2} \w{3} \d{2}:\d{2}:\d{2} - /, '');
    const seen = this.#seen.get(key);
    if (seen && now - seen.since < this.windowMs) {
      seen.count++;
      return null;
    }
    this.#seen.set(key, { since: now, count: 0 });
    if (this.#seen.size > 1000) this.#seen.delete(this.#seen.keys().next().value!);
    return seen?.count ? `${line} (also ${seen.count} times in the ${Math.round((now - seen.since) / 1000)} s before)` : line;
  }
}

export class NodeRedSupervisor extends EventEmitter<SupervisorEvents> implements NodeRedHandle {
  #child: ChildProcess | null = null;
  #stopping = false;
  #failures = 0;
  #restartTimer: ReturnType<typeof setTimeout> | null = null;
  #restarts = 0;
  #portFailures = 0;
  readonly #repeats = new RepeatedLines();
  readonly #env: NodeJS.ProcessEnv;
  readonly #red: string;

  constructor(private readonly opts: SuperviseOptions) {
    super();
    if (!opts?.stateDir) throw new BadInputError('Node-RED needs the state directory (it keeps its flows and secrets there)');
    this.#red = createRequire(import.meta.url).resolve('node-red/red.js');
    this.#env = {
      ...process.env,
      ...opts.env,
      DPSR_STATE_DIR: resolve(opts.stateDir),
      ...(opts.url ? { DPSR_URL: opts.url } : {}),
      ...(opts.tokenFile ? { DPSR_TOKEN_FILE: opts.tokenFile } : {}),
      ...(opts.listen ? { DPSR_NODE_RED_LISTEN: opts.listen } : {}),
    };
    this.#start();
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get restarts(): number {
    return this.#restarts;
  }

  #log(level: 'info' | 'warn' | 'error', message: string, extra?: object): void {
    if (this.opts.log) this.opts.log(level, message, extra);
    else console[level === 'info' ? 'log' : level](`[node-red supervisor] ${message}`, extra ?? '');
  }

  #start(): void {
    const started = Date.now();
    // The IPC channel lets the child notice when this process dies without stopping it (settings.js exits on 'disconnect').
    const c = spawn(process.execPath, [this.#red, '--settings', NODE_RED_SETTINGS], { env: this.#env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    this.#child = c;
    let url: string | undefined;
    let portInUse: string | null = null;
    const output = this.opts.output ?? ((line: string) => process.stdout.write(`[node-red] ${line}\n`));
    const lines = (stream: Readable) => {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          // A taken port is reported once, in words, when the child exits; Node-RED's two lines per attempt are not repeated.
          const taken = /Unable to listen on (\S+)/.exec(line);
          if (taken) {
            portInUse = taken[1]!;
            continue;
          }
          if (/Error: port in use/.test(line)) {
            portInUse ??= this.#env.DPSR_NODE_RED_LISTEN ?? '127.0.0.1:1880';
            continue;
          }
          const shown = this.#repeats.pass(line, Date.now());
          if (shown !== null) output(shown);
          const m = /Server now running at (\S+)/.exec(line);
          if (m) {
            url = m[1].replace(/\/$/, '');
            this.emit('ready', { url, pid: c.pid });
          }
          if (/Started flows/.test(line)) this.emit('flows-started', { url, pid: c.pid });
        }
      });
    };
    lines(c.stdout!);
    lines(c.stderr!);
    c.on('error', (e) => this.#log('error', `cannot start Node-RED: ${e.message}`));
    c.on('exit', (code, signal) => {
      this.#child = null;
      this.emit('exit', { code, signal, pid: c.pid });
      if (this.#stopping) return;
      if (portInUse !== null) {
        if (this.#portFailures++ >= (this.opts.portRetries ?? 2)) {
          const listen = this.#env.DPSR_NODE_RED_LISTEN ?? '127.0.0.1:1880';
          const message =
            `Node-RED cannot listen on ${listen} (${portInUse}): another program holds that port. ` +
            'Set DPSR_NODE_RED_LISTEN=HOST:PORT to a free port (under systemd: systemctl edit dpsrd, then ' +
            '[Service] Environment=DPSR_NODE_RED_LISTEN=127.0.0.1:1881) and restart dpsrd; until then Node-RED stays stopped and dpsrd runs on without it.';
          // Said once: by whoever listens (dpsrd raises an alert), else in the supervisor's log.
          if (!this.emit('gave-up', { reason: 'port-in-use', message })) this.#log('error', message, { listen });
          return;
        }
      } else this.#portFailures = 0;
      this.#failures = Date.now() - started > (this.opts.stableMs ?? 60_000) ? 1 : this.#failures + 1;
      const delay = Math.min(this.opts.maxDelayMs ?? 60_000, (this.opts.minDelayMs ?? 1000) * 2 ** (this.#failures - 1));
      this.#log(portInUse === null ? 'warn' : 'info', `Node-RED (pid ${c.pid}) exited with ${signal ?? `code ${code}`}${portInUse === null ? '' : ' (its port is taken)'}; restarting in ${delay} ms`, { failures: this.#failures });
      this.#restartTimer = setTimeout(() => {
        this.#restartTimer = null;
        this.#restarts++;
        this.#start();
      }, delay);
    });
    this.emit('spawn', { pid: c.pid });
    this.#log('info', `Node-RED started (pid ${c.pid}) with ${NODE_RED_SETTINGS}`);
  }

  /** Stops Node-RED for good: SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs = 10_000): Promise<void> {
    this.#stopping = true;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    const c = this.#child;
    if (!c) return Promise.resolve();
    return new Promise((done) => {
      const kill = setTimeout(() => c.kill('SIGKILL'), graceMs);
      c.once('exit', () => {
        clearTimeout(kill);
        done();
      });
      c.kill('SIGTERM');
    });
  }
}

export function startNodeRed(daemon: Daemon, opts: { listen?: string; banner?: (line: string) => void } = {}): NodeRedHandle {
  const log = daemon.log.child({ component: 'node-red' });
  const sup = new NodeRedSupervisor({
    stateDir: daemon.stateDir,
    url: daemon.url,
    tokenFile: daemon.tokenFile,
    listen: opts.listen ?? process.env.DPSR_NODE_RED_LISTEN,
    log: (level, message, extra) => log[level](extra ?? {}, message),
    // Node-RED's own lines, at their level, so journald filters them like the daemon's.
    output: (line) => {
      if (!line.trim()) return;
      const level = /- \[(error|warn)\]/.exec(line)?.[1] as 'error' | 'warn' | undefined;
      log[level ?? 'info']({ child: true }, line);
    },
  });
  // Said once, as an alert: dpsrd's log (one line), the event log and the front panel's alert line.
  sup.on('gave-up', ({ message }) => daemon.app.bus.publish('alert', { level: 'warning', code: 'node-red-port-in-use', message }));
  sup.on('ready', ({ url }) => {
    daemon.consoleInfo.urls.nodeRed = url;
    opts.banner?.(`Node-RED editor at ${url} (user admin, password in ${join(daemon.stateDir, 'node-red', 'admin-password')})`);
  });
  return sup;
}
