/**
 * How qemu-storage-daemon runs, under `StorageDaemon` (which builds its
 * graph and exports over QMP, notices a crash when QMP drops, and rebuilds
 * after a restart): a child process of dpsrd (`ChildDaemonProcess`, the
 * simulated rig and tests), or a systemd unit (`SystemdDaemonProcess`, the
 * board: deploy/dpsr-export@.service, which sets PR_SET_IO_FLUSHER through
 * deploy/dpsr-io-flusher and restarts a crashed daemon itself). Either way
 * the daemon starts with only a QMP monitor on the process's `qmpSocket`,
 * through deploy/dpsr-nbd-listen: for a TCP export that makes the NBD
 * server's listening socket with TCP_NODELAY and hands it to the daemon
 * (settings in `nbdListenEnv`'s variables: a child's environment, the unit's
 * EnvironmentFile).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants } from 'node:os';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { DeviceError } from '../errors.ts';

const execFileAsync = promisify(execFile);

const HERE = dirname(fileURLToPath(import.meta.url));
/** deploy/dpsr-nbd-listen from src/export (sources) and from dist/src/export (the build). */
export const NBD_LISTEN_SCRIPT = [join(HERE, '..', '..', 'deploy', 'dpsr-nbd-listen'), join(HERE, '..', '..', '..', 'deploy', 'dpsr-nbd-listen')].find((p) => existsSync(p)) ?? join(HERE, '..', '..', 'deploy', 'dpsr-nbd-listen');

/** The environment variables deploy/dpsr-nbd-listen reads (the rest of a start's environment is the daemon's own). */
const LISTEN_VARS = ['DPSR_NBD_HOST', 'DPSR_NBD_PORT', 'DPSR_NBD_TLS_PSK_DIR'] as const;

/** How a daemon ended: exit code or signal (both null when the runner could not tell), and the last lines it wrote to stderr. */
export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

export interface DaemonProcess {
  readonly kind: 'child' | 'systemd';
  /** The QMP socket as dpsr reaches it. */
  readonly qmpSocket: string;
  /**
   * True when something other than dpsr restarts a crashed daemon (systemd):
   * a daemon answering on the socket with no block node is then that fresh
   * start, to be built on, not a leftover to quit.
   */
  readonly restartsItself: boolean;
  /** How long the supervisor leaves a restart after a crash to the service manager before starting the daemon itself (0: no manager). */
  readonly restartGraceMs: number;
  /**
   * Starts the daemon unless it runs (environment `env` for a child; a unit
   * has its own), and takes the running process as the one `exited` and
   * `stop` are about; resolves once it runs. Throws DeviceError naming why not.
   */
  start(env: Record<string, string>): Promise<void>;
  /** True once the process `start` ran is known to have exited. */
  readonly ended: boolean;
  /** How the process `start` ran ended, once it has; null when it still runs after `timeoutMs`. */
  exited(timeoutMs: number): Promise<ExitInfo | null>;
  /**
   * Ends the daemon and waits for it: `asked` when it was told to quit over
   * QMP (it exits by itself), else it is terminated (SIGTERM, `systemctl
   * stop`); killed after `timeoutMs`. A unit is left stopped, not restarting.
   */
  stop(asked: boolean, timeoutMs: number): Promise<void>;
  /** Sends `signal` to the daemon, as a crash would (tests; a hung daemon). */
  kill(signal: NodeJS.Signals): Promise<void>;
  /** After a leftover daemon on the socket was asked to quit: waits until its process is gone. Throws DeviceError when it stays. */
  leftoverGone(): Promise<void>;
  /** The daemon's last stderr lines (a child's pipe, or the unit's journal). */
  stderrTail(): Promise<string>;
}

/** Live (not zombie) processes whose command line names this QMP socket. */
function pidsNaming(qmpSocket: string): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const p of entries) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (!readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`path=${qmpSocket},`)) continue;
      // "pid (comm) S …": a zombie has exited and released its locks; nobody may reap it here.
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') out.push(Number(p));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** qemu-storage-daemon as a child process of dpsrd. */
export class ChildDaemonProcess implements DaemonProcess {
  readonly kind = 'child' as const;
  readonly restartsItself = false;
  readonly restartGraceMs = 0;
  #child: ChildProcess | null = null;
  #exit: Promise<ExitInfo> | null = null;
  #ended = false;
  #stderr: string[] = [];

  /** `command` runs before the binary (e.g. deploy/dpsr-io-flusher), `binary` default qemu-storage-daemon. */
  constructor(
    readonly qmpSocket: string,
    private readonly opts: { binary?: string; command?: readonly string[]; stderrLines?: number } = {},
  ) {}

  get ended(): boolean {
    return this.#ended;
  }

  async start(env: Record<string, string>): Promise<void> {
    const binary = this.opts.binary ?? 'qemu-storage-daemon';
    const argv = [...(this.opts.command ?? []), NBD_LISTEN_SCRIPT, binary, '--chardev', `socket,id=qmp,path=${this.qmpSocket},server=on,wait=off`, '--monitor', 'chardev=qmp'];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    this.#child = child;
    this.#ended = false;
    this.#stderr = [];
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      this.#stderr.push(...d.split('\n').filter(Boolean));
      this.#stderr.splice(0, Math.max(0, this.#stderr.length - (this.opts.stderrLines ?? 20)));
    });
    this.#exit = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.#ended = true;
        resolve({ code, signal, stderr: this.#stderr.join('\n') });
      }),
    );
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (e) => {
        this.#ended = true;
        reject(new DeviceError(`cannot start ${argv[0]}: ${e.message}`, { hint: 'install python3 and qemu-system-common (scripts/install-tools.sh)', cause: e }));
      });
    });
  }

  async exited(timeoutMs: number): Promise<ExitInfo | null> {
    if (!this.#exit) return null;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((r) => (timer = setTimeout(() => r(null), timeoutMs)));
    try {
      return await Promise.race([this.#exit, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(asked: boolean, timeoutMs: number): Promise<void> {
    const child = this.#child;
    if (!child || this.#ended) return;
    if (!asked) child.kill('SIGTERM');
    if (!(await this.exited(timeoutMs))) {
      child.kill('SIGKILL');
      await this.exited(5000);
    }
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    this.#child?.kill(signal);
  }

  async leftoverGone(): Promise<void> {
    for (let i = 0; i < 400 && pidsNaming(this.qmpSocket).length > 0; i++) await sleep(25);
    const still = pidsNaming(this.qmpSocket);
    if (still.length) throw new DeviceError(`qemu-storage-daemon ${still.join(', ')} left by an earlier start did not exit after quit`, { hint: `stop it (kill ${still.join(' ')}), then start again` });
  }

  async stderrTail(): Promise<string> {
    return this.#stderr.join('\n');
  }
}

export interface SystemdDaemonOptions {
  /** The unit, e.g. `dpsr-export@system.service` (deploy/dpsr-export@.service with the pair's id). */
  readonly unit: string;
  /** The QMP socket the unit's daemon listens on, as dpsr reaches it (the unit: `/run/dpsr-export/<id>/qmp.sock`). */
  readonly qmpSocket: string;
  /** The systemctl command (default `systemctl`); e.g. `nsenter -t PID -m -p systemctl` for a manager in another namespace. */
  readonly systemctl?: readonly string[];
  /** The journalctl command for the daemon's last lines (default `journalctl`); null: none. */
  readonly journalctl?: readonly string[] | null;
  /** The unit's EnvironmentFile for deploy/dpsr-nbd-listen, as dpsr reaches it (the unit: `/run/dpsr-export/<id>.env`, `unitEnvironmentFile`). Default: beside the QMP socket's folder, named after the unit's instance. */
  readonly environmentFile?: string;
}

/** `/run/dpsr-export/<id>/qmp.sock`: where deploy/dpsr-export@.service's daemon for instance `id` puts its QMP socket. */
export function unitQmpSocket(instance: string): string {
  return `/run/dpsr-export/${instance}/qmp.sock`;
}

/** `/run/dpsr-export/<id>.env`: the EnvironmentFile deploy/dpsr-export@.service reads for instance `id` (the NBD server's TCP address). */
export function unitEnvironmentFile(instance: string): string {
  return `/run/dpsr-export/${instance}.env`;
}

interface UnitState {
  ActiveState: string;
  SubState: string;
  MainPID: number;
  ExecMainPID: number;
  ExecMainCode: number;
  ExecMainStatus: number;
}

const signalName = (n: number): NodeJS.Signals | null => (Object.entries(constants.signals).find(([, v]) => v === n)?.[0] as NodeJS.Signals | undefined) ?? null;

/**
 * qemu-storage-daemon as a systemd unit: started and stopped with
 * systemctl; a crash is restarted by systemd (Restart=on-failure), and the
 * supervisor builds on the fresh daemon once it answers.
 */
export class SystemdDaemonProcess implements DaemonProcess {
  readonly kind = 'systemd' as const;
  readonly restartsItself = true;
  /** The unit's RestartSec (500 ms) and some: systemd restarts it, the supervisor builds on that start. */
  readonly restartGraceMs = 1000;
  readonly qmpSocket: string;
  #pid = 0;
  #ended = false;

  constructor(private readonly opts: SystemdDaemonOptions) {
    this.qmpSocket = opts.qmpSocket;
  }

  get ended(): boolean {
    return this.#ended;
  }

  async #systemctl(...args: string[]): Promise<string> {
    const [cmd, ...pre] = this.opts.systemctl ?? ['systemctl'];
    try {
      const { stdout } = await execFileAsync(cmd!, [...pre, ...args], { timeout: 30_000 });
      return stdout;
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new DeviceError(`systemctl ${args.join(' ')}: ${(err.stderr || err.message).trim()}`, { fault: 'transport', hint: `see journalctl -u ${this.opts.unit}; deploy/install.sh installs the unit`, cause: e });
    }
  }

  async #state(): Promise<UnitState> {
    const out = await this.#systemctl('show', this.opts.unit, '-p', 'ActiveState', '-p', 'SubState', '-p', 'MainPID', '-p', 'ExecMainPID', '-p', 'ExecMainCode', '-p', 'ExecMainStatus');
    const kv = Object.fromEntries(out.split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    return { ActiveState: kv.ActiveState ?? '', SubState: kv.SubState ?? '', MainPID: Number(kv.MainPID ?? 0), ExecMainPID: Number(kv.ExecMainPID ?? 0), ExecMainCode: Number(kv.ExecMainCode ?? 0), ExecMainStatus: Number(kv.ExecMainStatus ?? 0) };
  }

  /**
   * The unit has its own environment (Environment= in the unit file); of
   * `env` only deploy/dpsr-nbd-listen's settings are written to its
   * EnvironmentFile, read at each (re)start, so a restart by systemd listens
   * where dpsr's start did.
   */
  async start(env: Record<string, string>): Promise<void> {
    this.#writeEnvironment(env);
    // A failed unit stays failed until reset (only then: a reset also clears systemd's restart count).
    if ((await this.#state()).ActiveState === 'failed') await this.#systemctl('reset-failed', this.opts.unit).catch(() => undefined);
    await this.#systemctl('start', this.opts.unit);
    const s = await this.#state();
    if (s.ActiveState !== 'active' || !s.MainPID) throw new DeviceError(`${this.opts.unit} is ${s.ActiveState} (${s.SubState}) after systemctl start`, { hint: `journalctl -u ${this.opts.unit}` });
    this.#pid = s.MainPID;
    this.#ended = false;
  }

  #writeEnvironment(env: Record<string, string>): void {
    const instance = /@([^.]*)\./.exec(this.opts.unit)?.[1] ?? this.opts.unit;
    const file = this.opts.environmentFile ?? join(dirname(dirname(this.qmpSocket)), `${instance}.env`);
    // systemd's EnvironmentFile syntax: KEY="VALUE" with \ and " escaped.
    const text = LISTEN_VARS.filter((k) => env[k] !== undefined).map((k) => `${k}="${env[k]!.replace(/[\\"]/g, (c) => `\\${c}`)}"\n`).join('');
    try {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(`${file}.tmp`, text);
      renameSync(`${file}.tmp`, file);
    } catch (e) {
      throw new DeviceError(`cannot write ${file} for ${this.opts.unit}: ${(e as Error).message}`, { hint: 'dpsrd runs as root on the board (deploy/dpsrd.service)', cause: e });
    }
  }

  async exited(timeoutMs: number): Promise<ExitInfo | null> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.#state();
      if (s.MainPID !== this.#pid || s.ActiveState !== 'active') {
        this.#ended = true;
        // ExecMain* describe the last main process until systemd starts the next one (RestartSec later).
        const mine = s.ExecMainPID === this.#pid;
        const code = mine && s.ExecMainCode === 1 ? s.ExecMainStatus : null;
        const signal = mine && (s.ExecMainCode === 2 || s.ExecMainCode === 3) ? signalName(s.ExecMainStatus) : null;
        return { code, signal, stderr: await this.stderrTail() };
      }
      if (Date.now() >= until) return null;
      await sleep(100);
    }
  }

  async stop(asked: boolean, timeoutMs: number): Promise<void> {
    if (asked && (await this.exited(timeoutMs))) {
      // A clean quit exits 0, which Restart=on-failure leaves stopped; stop also cancels any restart under way.
      await this.#systemctl('stop', this.opts.unit);
      return;
    }
    // systemctl stop sends SIGTERM and SIGKILL after the unit's TimeoutStopSec.
    await this.#systemctl('stop', this.opts.unit);
    this.#ended = true;
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    await this.#systemctl('kill', '--kill-whom=main', '-s', signal, this.opts.unit);
  }

  async leftoverGone(): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const s = await this.#state();
      if (s.ActiveState !== 'active' && s.ActiveState !== 'deactivating') return;
      await sleep(100);
    }
    throw new DeviceError(`${this.opts.unit} still runs after its daemon was asked to quit`, { hint: `systemctl stop ${this.opts.unit}, then start dpsrd again` });
  }

  async stderrTail(): Promise<string> {
    const j = this.opts.journalctl === undefined ? ['journalctl'] : this.opts.journalctl;
    if (!j) return '';
    try {
      const { stdout } = await execFileAsync(j[0]!, [...j.slice(1), '-u', this.opts.unit, '-n', '20', '-o', 'cat', '--no-pager'], { timeout: 5000 });
      return stdout.trim();
    } catch {
      return '';
    }
  }
}
