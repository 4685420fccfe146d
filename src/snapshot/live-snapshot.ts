/**
 * The frozen picture of a live drive: a copy-before-write snapshot on
 * qemu-storage-daemon (QEMU's "fleecing": docs/interop/live-block-operations
 * and the copy-before-write / snapshot-access drivers of qapi/block-core.json).
 *
 *     host export ── "top" ── dpsr-cbw (copy-before-write) ── "active" ── drive
 *                                 │ target                    ▲
 *                                 └── dpsr-cache (qcow2) ── dpsr-cache-limit (raw, size = budget) ── cache file
 *     dpsr's read-only export ── dpsr-snap (snapshot-access over dpsr-cbw)
 *
 * A host write to a block the snapshot has not saved yet first copies the
 * old block into the cache, then goes to the drive; the snapshot export
 * reads the cache where it holds a block and the drive elsewhere. The host
 * never waits for the backup beyond `cbw-timeout`, and never fails because
 * of it: `on-cbw-error=break-snapshot` turns a failed or slow copy into a
 * broken snapshot (every later read of it fails with EACCES) while the host
 * write goes on. The cache's budget is enforced by qemu itself: the raw node
 * under the qcow2 cache has `size` = budget, and a cache write past it fails
 * with ENOSPC, which breaks the snapshot.
 *
 * QEMU 7.2 has no event for a broken snapshot (the filter only records the
 * error and fails later snapshot reads), so `check()` reads one sector of the
 * snapshot export: a read refused with "Permission denied" (EACCES, which the
 * NBD server reports as EINVAL with that text) means broken. The NBD read is
 * handed in (`probe`): this room does not import src/sata-bridge.
 *
 * Teardown is idempotent and is also the clean-up after a crash: `cleanup()`
 * removes whatever of this graph exists (export, nodes, the filter from the
 * host's path) and the cache file; a restarted daemon builds its graph
 * without the filter, so after a daemon crash only the cache file is left.
 */
import { execFile } from 'node:child_process';
import { existsSync, statfsSync, statSync, truncateSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BadInputError, DeviceError, NoSpaceError } from '../errors.ts';
import { ACTIVE_NODE, TOP_NODE, type StorageDaemon } from '../export/index.ts';

const execFileAsync = promisify(execFile);

export const CBW_NODE = 'dpsr-cbw';
export const SNAPSHOT_NODE = 'dpsr-snap';
export const SNAPSHOT_EXPORT_ID = 'dpsr-snapshot';
const CACHE_NODE = 'dpsr-cache';
const CACHE_LIMIT_NODE = 'dpsr-cache-limit';
const CACHE_FILE_NODE = 'dpsr-cache-file';
/** The cache file's name in the cache directory: fixed, so a restart finds what a crash left. */
export const CACHE_FILE = 'snapshot-cache.qcow2';

/** The smallest cache worth starting a snapshot with: qcow2's own metadata needs a few clusters. */
const MIN_BUDGET = 16 * 1024 * 1024;

export interface SnapshotCacheConfig {
  /** The cache's budget in bytes; when absent, `budgetFraction` of the cache directory's free space. */
  readonly budgetBytes?: number;
  /** Share of the free space of the cache directory's filesystem (default 0.25). */
  readonly budgetFraction?: number;
  /** Seconds a host write may wait for its copy into the cache before the snapshot breaks instead (default 5). */
  readonly cbwTimeoutS?: number;
}

export interface SnapshotOptions extends SnapshotCacheConfig {
  readonly daemon: StorageDaemon;
  /** Where the cache file goes: the pair's state directory. */
  readonly cacheDir: string;
  /**
   * Reads one sector at byte 0 of an NBD export (the composition root builds
   * it on src/sata-bridge's NbdDrive); rejects with the server's error.
   */
  readonly probe: (uri: string) => Promise<void>;
}

/** Checks the cache settings; throws BadInputError naming the wrong one. */
export function checkSnapshotCacheConfig(c: SnapshotCacheConfig): SnapshotCacheConfig {
  if (c.budgetBytes !== undefined && !(Number.isSafeInteger(c.budgetBytes) && c.budgetBytes >= MIN_BUDGET)) {
    throw new BadInputError(`snapshot cache budget ${c.budgetBytes} is not a byte count of at least ${MIN_BUDGET}`, { hint: 'give budgetBytes as bytes (e.g. 4294967296 for 4 GiB), or budgetFraction of the free space' });
  }
  if (c.budgetFraction !== undefined && !(c.budgetFraction > 0 && c.budgetFraction <= 0.9)) {
    throw new BadInputError(`snapshot cache budgetFraction ${c.budgetFraction} is not between 0 and 0.9`, { hint: 'the rest of the state directory holds the undo journal and the state files' });
  }
  if (c.cbwTimeoutS !== undefined && !(Number.isInteger(c.cbwTimeoutS) && c.cbwTimeoutS >= 1 && c.cbwTimeoutS <= 3600)) {
    throw new BadInputError(`snapshot cbwTimeoutS ${c.cbwTimeoutS} is not a whole number of seconds from 1 to 3600`, { hint: 'qemu takes cbw-timeout in whole seconds; 0 (no limit) could stall the host' });
  }
  return c;
}

/** The cache budget for a directory, in bytes: the configured one, or the fraction of its filesystem's free space. */
export function cacheBudget(cacheDir: string, c: SnapshotCacheConfig): number {
  if (c.budgetBytes !== undefined) return c.budgetBytes;
  const fs = statfsSync(cacheDir);
  const free = Number(fs.bavail) * Number(fs.bsize);
  // Whole MiB: qemu's raw `size` and qcow2 clusters both like round numbers.
  return Math.floor((free * (c.budgetFraction ?? 0.25)) / 2 ** 20) * 2 ** 20;
}

interface NodeInfo {
  'node-name'?: string;
  image?: { 'virtual-size'?: number };
}

async function nodeNames(daemon: StorageDaemon): Promise<Map<string, NodeInfo>> {
  const nodes = await daemon.qmp.execute<NodeInfo[]>('query-named-block-nodes', { flat: true });
  return new Map(nodes.filter((n) => n['node-name']).map((n) => [n['node-name']!, n]));
}

export class LiveSnapshot {
  private frozenGeneration = 0;
  private exported: string | null = null;
  private closed = false;

  private constructor(
    private readonly options: SnapshotOptions,
    /** The cache's budget in bytes. */
    readonly budgetBytes: number,
    /** Bytes of the drive (the snapshot's size). */
    readonly sizeBytes: number,
  ) {}

  get cacheFile(): string {
    return join(this.options.cacheDir, CACHE_FILE);
  }

  /**
   * Removes every part of a snapshot that exists: the read-only export, the
   * snapshot-access node, the filter from the host's path (`top` back onto
   * `active`), the cache nodes and the cache file. Safe to call at any
   * time, also with nothing to remove and with the daemon down (then only
   * the file goes: a restarted daemon has no filter).
   */
  static async cleanup(daemon: StorageDaemon, cacheDir: string): Promise<void> {
    if (daemon.running) {
      const qmp = daemon.qmp;
      const exports = await qmp.execute<{ id: string }[]>('query-block-exports');
      if (exports.some((e) => e.id === SNAPSHOT_EXPORT_ID)) await daemon.removeExport(SNAPSHOT_EXPORT_ID);
      let nodes = await nodeNames(daemon);
      if (nodes.has(SNAPSHOT_NODE)) await qmp.execute('blockdev-del', { 'node-name': SNAPSHOT_NODE });
      // Reopening "top" onto "active" is harmless when it already is: no need to find out first.
      if (nodes.has(CBW_NODE)) await qmp.execute('blockdev-reopen', { options: [{ 'node-name': TOP_NODE, driver: 'raw', file: ACTIVE_NODE }] });
      nodes = await nodeNames(daemon);
      for (const n of [CBW_NODE, CACHE_NODE, CACHE_LIMIT_NODE, CACHE_FILE_NODE]) {
        if (nodes.has(n)) await qmp.execute('blockdev-del', { 'node-name': n });
      }
    }
    const file = join(cacheDir, CACHE_FILE);
    if (existsSync(file)) unlinkSync(file);
  }

  /**
   * Builds the cache and the filter beside the host's path (not in it yet).
   * Throws NoSpaceError when the budget is below 16 MiB, DeviceError when
   * qemu refuses a step (then nothing is left behind).
   */
  static async prepare(options: SnapshotOptions): Promise<LiveSnapshot> {
    checkSnapshotCacheConfig(options);
    const { daemon, cacheDir } = options;
    await LiveSnapshot.cleanup(daemon, cacheDir);
    const budget = cacheBudget(cacheDir, options);
    if (budget < MIN_BUDGET) {
      throw new NoSpaceError(`the snapshot cache would get ${Math.round(budget / 2 ** 20)} MiB in ${cacheDir}, less than the ${MIN_BUDGET / 2 ** 20} MiB it needs`, { hint: 'free space in the state directory, or set the cache budget in bytes' });
    }
    const size = (await nodeNames(daemon)).get(ACTIVE_NODE)?.image?.['virtual-size'];
    if (!size) throw new DeviceError(`qemu-storage-daemon has no "${ACTIVE_NODE}" node with a size`);
    const snap = new LiveSnapshot(options, budget, size);
    try {
      await snap.build();
    } catch (e) {
      await LiveSnapshot.cleanup(daemon, cacheDir).catch(() => undefined);
      throw e;
    }
    return snap;
  }

  private async build(): Promise<void> {
    const file = this.cacheFile;
    try {
      await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(this.sizeBytes)]);
    } catch (e) {
      throw new DeviceError(`cannot create the snapshot cache ${file}: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`, { cause: e });
    }
    // Sparse up to the budget: qemu's raw `size` may not exceed the file, and nothing is allocated until written.
    truncateSync(file, Math.max(this.budgetBytes, statSync(file).size));
    const qmp = this.options.daemon.qmp;
    // The cache is thrown away after the sync and never read after a crash: flushing it only delays host writes.
    const noFlush = { cache: { 'no-flush': true } };
    await qmp.execute('blockdev-add', { 'node-name': CACHE_FILE_NODE, driver: 'file', filename: file, ...noFlush });
    await qmp.execute('blockdev-add', { 'node-name': CACHE_LIMIT_NODE, driver: 'raw', file: CACHE_FILE_NODE, size: this.budgetBytes, ...noFlush });
    await qmp.execute('blockdev-add', { 'node-name': CACHE_NODE, driver: 'qcow2', file: CACHE_LIMIT_NODE, ...noFlush });
    await qmp.execute('blockdev-add', {
      'node-name': CBW_NODE,
      driver: 'copy-before-write',
      file: ACTIVE_NODE,
      target: CACHE_NODE,
      'on-cbw-error': 'break-snapshot',
      'cbw-timeout': this.options.cbwTimeoutS ?? 5,
    });
  }

  /**
   * The snapshot instant: the filter goes into the host's path
   * (`blockdev-reopen` drains the requests in flight first). Every write
   * that completed before belongs to the picture; every later one is copied
   * around.
   */
  async freeze(): Promise<void> {
    const daemon = this.options.daemon;
    this.frozenGeneration = daemon.generation;
    await daemon.qmp.execute('blockdev-reopen', { options: [{ 'node-name': TOP_NODE, driver: 'raw', file: CBW_NODE }] });
  }

  /** Exports the frozen picture read-only over NBD and returns its URI. */
  async export(): Promise<string> {
    if (!this.frozenGeneration) throw new Error('LiveSnapshot.export() before freeze()');
    const daemon = this.options.daemon;
    await daemon.qmp.execute('blockdev-add', { 'node-name': SNAPSHOT_NODE, driver: 'snapshot-access', file: CBW_NODE });
    this.exported = await daemon.addExport({ id: SNAPSHOT_EXPORT_ID, nodeName: SNAPSHOT_NODE, name: SNAPSHOT_EXPORT_ID });
    return this.exported;
  }

  get uri(): string | null {
    return this.exported;
  }

  /** Bytes the cache file holds on disk now (the old blocks saved so far, plus qcow2 metadata). */
  cacheBytes(): number {
    try {
      return statSync(this.cacheFile).blocks * 512;
    } catch {
      return 0;
    }
  }

  /**
   * Why the frozen picture is lost, or null when it is intact: the daemon
   * restarted (the filter and its cache are gone), or the filter broke the
   * snapshot (a cache write failed: budget reached, or slower than
   * `cbw-timeout`). A probe that fails for another reason is thrown.
   */
  async check(): Promise<string | null> {
    const daemon = this.options.daemon;
    if (!daemon.running || daemon.generation !== this.frozenGeneration) return 'qemu-storage-daemon restarted during the snapshot: the frozen picture is gone';
    if (!this.exported) return null;
    try {
      await this.options.probe(this.exported);
      return null;
    } catch (e) {
      if (/Permission denied|EACCES/.test((e as Error).message)) {
        return `the snapshot broke: a host write could not save the old block in the cache (the ${Math.round(this.budgetBytes / 2 ** 20)} MiB cache budget was reached, or the cache was slower than ${this.options.cbwTimeoutS ?? 5} s); the host's write went on`;
      }
      if (await this.daemonLost()) return 'qemu-storage-daemon restarted during the snapshot: the frozen picture is gone';
      throw e;
    }
  }

  /**
   * Whether the daemon that holds the picture is gone. A probe can fail on the
   * NBD socket before the QMP socket's close of the same crash is seen, so one
   * QMP round trip settles it: a dead daemon's QMP socket fails the command.
   */
  private async daemonLost(): Promise<boolean> {
    const daemon = this.options.daemon;
    if (!daemon.running || daemon.generation !== this.frozenGeneration) return true;
    try {
      await daemon.qmp.execute('query-version');
    } catch {
      return true;
    }
    return !daemon.running || daemon.generation !== this.frozenGeneration;
  }

  /** Tears the snapshot down (idempotent): see `cleanup`. */
  async close(): Promise<void> {
    if (this.closed) return;
    await LiveSnapshot.cleanup(this.options.daemon, this.options.cacheDir);
    this.closed = true;
  }
}
