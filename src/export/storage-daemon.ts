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
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { EventEmitter } from 'node:events';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BadInputError, DeviceError } from '../errors.ts';
import { QmpClient } from './qmp.ts';
import { ChildDaemonProcess, type DaemonProcess } from './daemon-process.ts';

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

/**
 * deploy/dpsr-nbd-listen's settings for a TCP export: it listens on the
 * address with TCP_NODELAY (accepted sockets inherit it; qemu 7.2's NBD
 * server does not set it, and its small replies then wait for delayed ACKs)
 * and starts the daemon's NBD server on that socket, with TLS when
 * `tlsPskDir` is given. Empty for a unix export (started over QMP).
 */
export function nbdListenEnv(listen: NbdListen): Record<string, string> {
  if ('unix' in listen) return {};
  const { host, port, tlsPskDir } = listen.tcp;
  return { DPSR_NBD_HOST: host, DPSR_NBD_PORT: String(port), ...(tlsPskDir ? { DPSR_NBD_TLS_PSK_DIR: tlsPskDir } : {}) };
}

export interface StorageDaemonOptions {
  /** The active drive: a raw image file or a block device. */
  readonly drive: string;
  /** Where a child's QMP socket (and nothing else) goes; created if missing. */
  readonly runDir: string;
  /** How the daemon runs (default: a child process with its QMP socket in `runDir`; on the board a SystemdDaemonProcess). */
  readonly process?: DaemonProcess;
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

export class StorageDaemon extends EventEmitter<StorageDaemonEvents> {
  readonly process: DaemonProcess;
  private client: QmpClient | null = null;
  private stopping = false;
  private generationCount = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private delay: number;
  /** Exports dpsr added besides the host's: re-added after a restart only by their owners. */
  readonly exportName: string;
  readonly qmpSocket: string;

  constructor(readonly options: StorageDaemonOptions) {
    super();
    this.exportName = options.exportName ?? 'active';
    this.process = options.process ?? new ChildDaemonProcess(join(options.runDir, 'qmp.sock'), { binary: options.binary, stderrLines: options.stderrLines });
    this.qmpSocket = this.process.qmpSocket;
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
    const proc = this.process;
    // A blank daemon on the socket is systemd's restart of a crashed one: it is built on, not quit.
    const fresh = await this.quitLeftover();
    // The unit's QMP socket is its own (a restart by systemd may be binding it right now): never removed here.
    const stale = [fresh || proc.restartsItself ? '' : this.qmpSocket, 'unix' in this.options.listen ? this.options.listen.unix : ''];
    for (const s of stale) if (s && existsSync(s)) unlinkSync(s); // left by a crashed daemon
    if (this.options.metadata && !existsSync(this.options.metadata)) await this.createMetadata();
    // On a unit already running (systemd's restart) start only learns its process, so its exit is told apart from the last one's.
    await proc.start({ GLIBC_TUNABLES: [process.env.GLIBC_TUNABLES, DAEMON_MALLOC_TUNABLES].filter(Boolean).join(':'), ...nbdListenEnv(this.options.listen) });
    let client: QmpClient | null = fresh;
    try {
      client ??= await this.connectQmp();
      await this.buildGraph(client);
    } catch (e) {
      client?.close();
      const tail = await proc.stderrTail();
      await proc.kill('SIGKILL').catch(() => undefined);
      throw new DeviceError(`qemu-storage-daemon did not come up: ${(e as Error).message}${tail ? `\n${tail}` : ''}`, { cause: e });
    }
    this.client = client;
    client.onClose(() => void this.onQmpLost(client).catch((e: Error) => this.emit('restart-failed', e)));
    this.generationCount++;
    this.delay = this.options.restartDelayMs ?? 200;
    this.emit('ready', this.generationCount);
  }

  /**
   * A controller that died hard (SIGKILL, a crash) leaves its daemon
   * running: it still serves the host and holds the drive's lock, so a new
   * one could not open the drive. It answers on the QMP socket: it is asked
   * to `quit` (a clean stop, which also saves persistent bitmaps), and
   * waited for until it has exited. A daemon with no block node is instead
   * returned, connected, when something else restarts the daemon (systemd):
   * it is that restart.
   */
  private async quitLeftover(): Promise<QmpClient | null> {
    if (!existsSync(this.qmpSocket)) return null;
    let old: QmpClient;
    try {
      old = await QmpClient.connect(this.qmpSocket, 2000);
    } catch {
      return null; // a socket file nobody listens on: the daemon that made it is gone
    }
    if (this.process.restartsItself) {
      const nodes = await old.execute<unknown[]>('query-named-block-nodes', { flat: true }).catch(() => null);
      if (nodes && nodes.length === 0) return old;
    }
    const gone = new Promise<void>((r) => old.onClose(() => r()));
    await old.execute('quit').catch(() => undefined);
    await gone;
    await this.process.leftoverGone();
    return null;
  }

  /** The QMP socket file appears at bind(), before the daemon listens: retry until it answers or the process exits. */
  private async connectQmp(): Promise<QmpClient> {
    for (let i = 0; ; i++) {
      if (this.process.ended) throw new DeviceError(`qemu-storage-daemon exited before its QMP socket answered`);
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
    // A TCP server was started on the command line, on deploy/dpsr-nbd-listen's socket (nbdListenEnv).
    if ('unix' in o.listen) await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: o.listen.unix } } });
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

  /** QMP dropped without a stop: the daemon died (or must be made to). Its bitmaps in memory are gone; a restart follows. */
  private async onQmpLost(client: QmpClient): Promise<void> {
    if (client !== this.client) return;
    this.client = null;
    if (this.stopping) return;
    let info: { code: number | null; signal: NodeJS.Signals | null; stderr: string };
    try {
      let ended = await this.process.exited(10_000);
      if (!ended) {
        await this.process.kill('SIGKILL').catch(() => undefined);
        ended = await this.process.exited(5000);
      }
      info = ended ?? { code: null, signal: null, stderr: await this.process.stderrTail() };
    } catch (e) {
      // The service manager could not say how the daemon ended (systemctl failed): still a crash, restarted like one.
      info = { code: null, signal: null, stderr: `how qemu-storage-daemon ended is not known: ${(e as Error).message}` };
    }
    if (this.stopping) return;
    this.emit('crashed', info);
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    const delay = Math.max(this.delay, this.process.restartGraceMs);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopping) return;
      this.launch().catch((e: Error) => {
        if (this.stopping) return;
        this.emit('restart-failed', e);
        this.delay = Math.min(this.delay * 2, this.options.maxRestartDelayMs ?? 5000);
        this.scheduleRestart();
      });
    }, delay);
  }

  /**
   * A clean stop: `quit` over QMP, so qemu flushes the drive and writes
   * persistent bitmaps into the metadata file. Falls back to SIGTERM, then
   * SIGKILL, after `timeoutMs`.
   */
  async stop(timeoutMs = 10_000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const client = this.client;
    this.client = null;
    let asked = false;
    if (client && !client.closed) {
      try {
        await client.execute('quit');
        asked = true;
      } catch {
        /* terminated below */
      }
    }
    await this.process.stop(asked, timeoutMs);
    client?.close();
  }

  /** Kills the daemon as a crash would (tests, and a hung daemon). The supervisor restarts it (systemd does, for a unit). */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.process.kill(signal);
  }
}
