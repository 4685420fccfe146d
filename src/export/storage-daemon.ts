/**
 * qemu-storage-daemon as a supervised child process: the data path of inline
 * mode. It builds the block graph over the active drive, exports the top
 * node to the host over NBD (a unix socket, or TCP on a configured address
 * with TLS from a pre-shared key), and restarts the daemon with the same
 * graph and export when it crashes, so a host sees an I/O pause, not a
 * changed disk.
 *
 * The graph (node names are part of the contract with src/snapshot):
 *
 *     drive-file (file / host_device over the raw drive)
 *       └─ "active": raw, or qcow2 whose external data file is the raw drive
 *            └─ "top": raw                      ← the host export sits here
 *
 * Dirty bitmaps live on "active". "top" exists so that part 2 can slide a
 * copy-before-write filter between "top" and "active" with
 * `blockdev-reopen` while the host export stays where it is. With a
 * `metadata` file, "active" is a qcow2 node whose data file is the raw drive
 * (`data-file-raw`): the drive stays a plain raw disk that boots as is in
 * switched mode, and the qcow2 file only holds persistent dirty bitmaps,
 * written at a clean stop and loaded at the next start.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { EventEmitter } from 'node:events';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BadInputError, DeviceError } from '../errors.ts';
import { QmpClient } from './qmp.ts';

const execFileAsync = promisify(execFile);

/**
 * glibc's malloc tunables for the daemon. Its NBD server allocates a buffer
 * per request (up to 32 MiB) and frees it after: above glibc's mmap threshold
 * every request maps fresh pages and faults them in while the socket is read,
 * which measured 0.7 CPU-seconds per GiB of host writes against 0.2 with the
 * buffers kept on the heap (mmap threshold at glibc's 32 MiB maximum, the
 * heap not trimmed below 256 MiB). On the board's small cores that is the
 * difference between the export and the drive setting the host's speed.
 */
export const DAEMON_MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456';

/** Node names of the graph; src/snapshot puts bitmaps on ACTIVE_NODE. */
export const ACTIVE_NODE = 'active';
export const TOP_NODE = 'top';
export const HOST_EXPORT_ID = 'host';

/** Where the NBD server listens: one server per daemon, shared by the host's export and dpsr's own. */
export type NbdListen =
  | { readonly unix: string }
  | {
      readonly tcp: {
        readonly host: string;
        readonly port: number;
        /** A directory holding `keys.psk` (`USERNAME:HEXKEY` lines, qemu's tls-creds-psk); TLS is required when given. */
        readonly tlsPskDir?: string;
        /** The user of keys.psk that dpsr's own client connects as (default: the file's first). */
        readonly tlsUser?: string;
      };
    };

export interface StorageDaemonOptions {
  /** The active drive: a raw image file or a block device. */
  readonly drive: string;
  /** Where the QMP socket (and nothing else) goes; created if missing. */
  readonly runDir: string;
  readonly listen: NbdListen;
  /** Export name the host connects to (default `active`). */
  readonly exportName?: string;
  /** A qcow2 metadata file (created if missing) that keeps dirty bitmaps across clean restarts; the drive stays raw. */
  readonly metadata?: string;
  readonly binary?: string;
  /** Delay before a restart after a crash: starts here and doubles up to `maxRestartDelayMs`. */
  readonly restartDelayMs?: number;
  readonly maxRestartDelayMs?: number;
  /** Open the drive with O_DIRECT (`cache.direct`): host writes bypass the board's page cache. */
  readonly directIo?: boolean;
  /** Extra lines of the daemon's stderr kept for error messages. */
  readonly stderrLines?: number;
}

export interface StorageDaemonEvents {
  /** The daemon runs and the host export is up; `generation` counts starts (1, 2, …). */
  ready: [generation: number];
  /** The daemon died without being asked to; a restart follows. */
  crashed: [info: { code: number | null; signal: NodeJS.Signals | null; stderr: string }];
  /** A restart failed; the next try follows after the delay. */
  'restart-failed': [error: Error];
}

/** One NBD export added besides the host's (dpsr's own reads: bitmaps, snapshots). */
export interface ExportSpec {
  readonly id: string;
  readonly nodeName: string;
  readonly name: string;
  readonly writable?: boolean;
  /** Dirty bitmaps of the node to offer as `qemu:dirty-bitmap:NAME` (they must be disabled). */
  readonly bitmaps?: readonly string[];
}

/** Live (not zombie) qemu-storage-daemon processes whose command line names this QMP socket. */
function leftoverPids(qmpSocket: string): number[] {
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

export class StorageDaemon extends EventEmitter<StorageDaemonEvents> {
  private child: ChildProcess | null = null;
  private client: QmpClient | null = null;
  private stopping = false;
  private generationCount = 0;
  private stderrTail: string[] = [];
  private restartTimer: NodeJS.Timeout | null = null;
  private delay: number;
  /** Exports dpsr added besides the host's: re-added after a restart only by their owners. */
  readonly exportName: string;
  readonly qmpSocket: string;

  constructor(readonly options: StorageDaemonOptions) {
    super();
    this.exportName = options.exportName ?? 'active';
    this.qmpSocket = join(options.runDir, 'qmp.sock');
    this.delay = options.restartDelayMs ?? 200;
    if ('tcp' in options.listen) {
      const { port } = options.listen.tcp;
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new BadInputError(`NBD port ${port} is not a TCP port`, { hint: 'use 1–65535 (10809 is NBD\'s own)' });
      if (options.listen.tcp.tlsPskDir && !existsSync(join(options.listen.tcp.tlsPskDir, 'keys.psk'))) {
        throw new BadInputError(`${options.listen.tcp.tlsPskDir} has no keys.psk`, { hint: 'write USERNAME:HEXKEY lines into keys.psk (qemu tls-creds-psk), e.g. with psktool' });
      }
    }
  }

  /** The QMP client of the running daemon. Throws DeviceError while it is down. */
  get qmp(): QmpClient {
    if (!this.client || this.client.closed) throw new DeviceError('qemu-storage-daemon is not running', { fault: 'transport', hint: 'it is restarted automatically after a crash; try again shortly' });
    return this.client;
  }

  get running(): boolean {
    return this.client !== null && !this.client.closed;
  }

  /** How many times the daemon was started: a change means bitmaps in memory were lost. */
  get generation(): number {
    return this.generationCount;
  }

  /**
   * The URI a client (the host, or dpsr) uses for an export of this daemon's
   * NBD server; with TLS `nbds://USER@HOST:PORT/NAME?tls-psk-file=…/keys.psk`
   * (libnbd's form, which dpsr's NBD drive reads too).
   */
  uriFor(exportName: string): string {
    const l = this.options.listen;
    if ('unix' in l) return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${l.unix}`;
    const host = l.tcp.host.includes(':') ? `[${l.tcp.host}]` : l.tcp.host;
    const name = encodeURIComponent(exportName);
    if (!l.tcp.tlsPskDir) return `nbd://${host}:${l.tcp.port}/${name}`;
    const keys = join(l.tcp.tlsPskDir, 'keys.psk');
    const user = l.tcp.tlsUser ?? /^([^:\n]+):/m.exec(readFileSync(keys, 'utf8'))?.[1] ?? '';
    return `nbds://${encodeURIComponent(user)}@${host}:${l.tcp.port}/${name}?tls-psk-file=${keys}`;
  }

  /** The host's export. */
  get hostUri(): string {
    return this.uriFor(this.exportName);
  }

  /** Starts the daemon, builds the graph and the host export. Throws DeviceError naming what failed. */
  async start(): Promise<void> {
    this.stopping = false;
    await this.launch();
  }

  private async launch(): Promise<void> {
    mkdirSync(this.options.runDir, { recursive: true });
    await this.quitLeftover();
    for (const s of [this.qmpSocket, 'unix' in this.options.listen ? this.options.listen.unix : '']) {
      if (s && existsSync(s)) unlinkSync(s); // left by a crashed daemon
    }
    if (this.options.metadata && !existsSync(this.options.metadata)) await this.createMetadata();
    const binary = this.options.binary ?? 'qemu-storage-daemon';
    const tunables = [process.env.GLIBC_TUNABLES, DAEMON_MALLOC_TUNABLES].filter(Boolean).join(':');
    const child = spawn(binary, ['--chardev', `socket,id=qmp,path=${this.qmpSocket},server=on,wait=off`, '--monitor', 'chardev=qmp'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, GLIBC_TUNABLES: tunables } });
    this.child = child;
    this.stderrTail = [];
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      this.stderrTail.push(...d.split('\n').filter(Boolean));
      this.stderrTail.splice(0, Math.max(0, this.stderrTail.length - (this.options.stderrLines ?? 20)));
    });
    const spawned = new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (e) => reject(new DeviceError(`cannot start ${binary}: ${e.message}`, { hint: 'install qemu-system-common (scripts/install-tools.sh)', cause: e })));
    });
    child.once('exit', (code, signal) => this.onExit(child, code, signal));
    await spawned;
    try {
      this.client = await this.connectQmp(child);
      await this.buildGraph(this.client);
    } catch (e) {
      child.kill('SIGKILL');
      const tail = this.stderrTail.join('\n');
      throw new DeviceError(`qemu-storage-daemon did not come up: ${(e as Error).message}${tail ? `\n${tail}` : ''}`, { cause: e });
    }
    this.generationCount++;
    this.delay = this.options.restartDelayMs ?? 200;
    this.emit('ready', this.generationCount);
  }

  /**
   * A controller that died hard (SIGKILL, a crash) leaves its daemon
   * running: it still serves the host and holds the drive's lock, so a new
   * one could not open the drive. It answers on the QMP socket: it is asked
   * to `quit` (a clean stop, which also saves persistent bitmaps), and
   * waited for until it has exited.
   */
  private async quitLeftover(): Promise<void> {
    if (!existsSync(this.qmpSocket)) return;
    let old: QmpClient;
    try {
      old = await QmpClient.connect(this.qmpSocket, 2000);
    } catch {
      return; // a socket file nobody listens on: the daemon that made it is gone
    }
    const gone = new Promise<void>((r) => old.onClose(() => r()));
    await old.execute('quit').catch(() => undefined);
    await gone;
    for (let i = 0; i < 400 && leftoverPids(this.qmpSocket).length > 0; i++) await sleep(25);
    const still = leftoverPids(this.qmpSocket);
    if (still.length) throw new DeviceError(`qemu-storage-daemon ${still.join(', ')} left by an earlier start did not exit after quit`, { hint: `stop it (kill ${still.join(' ')}), then start again` });
  }

  /** The QMP socket file appears at bind(), before the daemon listens: retry until it answers or the child exits. */
  private async connectQmp(child: ChildProcess): Promise<QmpClient> {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null || child.signalCode !== null) throw new DeviceError(`qemu-storage-daemon exited (${child.exitCode ?? child.signalCode}) before its QMP socket answered`);
      if (existsSync(this.qmpSocket)) {
        try {
          return await QmpClient.connect(this.qmpSocket);
        } catch (e) {
          if (i >= 400) throw e;
        }
      } else if (i >= 400) throw new DeviceError(`qemu-storage-daemon did not create its QMP socket ${this.qmpSocket} within 10 s`);
      await sleep(25);
    }
  }

  private async createMetadata(): Promise<void> {
    const size = await this.driveSize();
    const meta = this.options.metadata!;
    // `qemu-img create -o data_file=F` creates F as a new file: over the drive it would truncate it to nothing.
    // The qcow2 file is made against a placeholder in a folder of its own; the graph names the real data file
    // when it opens it (`data-file`), so the placeholder's name in the header is never used.
    const scratch = mkdtempSync(join(dirname(meta), '.bitmaps-'));
    try {
      // data_file_raw: the data file stays a plain raw disk, readable and bootable without the qcow2 file.
      await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(scratch, 'placeholder.raw')},data_file_raw=on`, join(scratch, 'bitmaps.qcow2'), String(size)]);
      renameSync(join(scratch, 'bitmaps.qcow2'), meta);
    } catch (e) {
      throw new DeviceError(`cannot create the bitmap metadata file ${meta}: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`, { cause: e });
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }


  private async driveSize(): Promise<number> {
    const st = statSync(this.options.drive);
    if (st.isFile()) return st.size;
    const { stdout } = await execFileAsync('blockdev', ['--getsize64', this.options.drive]);
    return Number(stdout.trim());
  }

  private async buildGraph(qmp: QmpClient): Promise<void> {
    const o = this.options;
    const isBlock = statSync(o.drive).isBlockDevice();
    await qmp.execute('blockdev-add', { 'node-name': 'drive-file', driver: isBlock ? 'host_device' : 'file', filename: o.drive, discard: 'unmap', ...(o.directIo ? { cache: { direct: true }, aio: 'native' } : {}) });
    if (o.metadata) {
      await qmp.execute('blockdev-add', { 'node-name': 'meta-file', driver: 'file', filename: o.metadata });
      await qmp.execute('blockdev-add', { 'node-name': ACTIVE_NODE, driver: 'qcow2', file: 'meta-file', 'data-file': 'drive-file' });
    } else {
      await qmp.execute('blockdev-add', { 'node-name': ACTIVE_NODE, driver: 'raw', file: 'drive-file' });
    }
    await qmp.execute('blockdev-add', { 'node-name': TOP_NODE, driver: 'raw', file: ACTIVE_NODE });
    const l = o.listen;
    if ('unix' in l) {
      await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: l.unix } } });
    } else {
      if (l.tcp.tlsPskDir) await qmp.execute('object-add', { 'qom-type': 'tls-creds-psk', id: 'tls0', endpoint: 'server', dir: l.tcp.tlsPskDir });
      await qmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host: l.tcp.host, port: String(l.tcp.port) } }, ...(l.tcp.tlsPskDir ? { 'tls-creds': 'tls0' } : {}) });
    }
    await qmp.execute('block-export-add', { type: 'nbd', id: HOST_EXPORT_ID, 'node-name': TOP_NODE, name: this.exportName, writable: true });
  }

  /** Adds an NBD export on this daemon's server and returns its URI. */
  async addExport(spec: ExportSpec): Promise<string> {
    await this.qmp.execute('block-export-add', {
      type: 'nbd',
      id: spec.id,
      'node-name': spec.nodeName,
      name: spec.name,
      writable: spec.writable ?? false,
      ...(spec.bitmaps ? { bitmaps: [...spec.bitmaps] } : {}),
    });
    return this.uriFor(spec.name);
  }

  /** Removes an export: clients are disconnected, and it is gone when this resolves. */
  async removeExport(id: string): Promise<void> {
    const qmp = this.qmp;
    const gone = qmp.waitEvent('BLOCK_EXPORT_DELETED', (e) => e.data.id === id, 10_000);
    await qmp.execute('block-export-del', { id, mode: 'hard' });
    await gone;
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child) return;
    this.client?.close();
    this.client = null;
    this.child = null;
    if (this.stopping) return;
    this.emit('crashed', { code, signal, stderr: this.stderrTail.join('\n') });
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopping) return;
      this.launch().catch((e: Error) => {
        this.child?.kill('SIGKILL');
        this.emit('restart-failed', e);
        this.delay = Math.min(this.delay * 2, this.options.maxRestartDelayMs ?? 5000);
        if (!this.child) this.scheduleRestart();
      });
    }, this.delay);
  }

  /**
   * A clean stop: `quit` over QMP, so qemu flushes the drive and writes
   * persistent bitmaps into the metadata file. Falls back to SIGTERM, then
   * SIGKILL, after `timeoutMs`.
   */
  async stop(timeoutMs = 10_000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
    try {
      await this.client?.execute('quit');
    } catch {
      child.kill('SIGTERM');
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  }

  /** Kills the daemon as a crash would (tests, and a hung daemon). The supervisor restarts it. */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.child?.kill(signal);
  }
}
