/**
 * Changed-block tracking on qemu-storage-daemon's dirty bitmaps, in epochs.
 *
 * One bitmap on the "active" node records every write (the live epoch). At
 * each sync start, one QMP `transaction` disables it (it is now frozen) and
 * adds the next epoch's bitmap, so no write falls between the two. The
 * frozen bitmap is then exported read-only over NBD and its
 * `qemu:dirty-bitmap:NAME` metadata context read as byte ranges. A sync that
 * succeeds deletes the frozen bitmap; one that fails or is cancelled merges
 * it back into the live one, so the next sync still sees those writes.
 *
 * Trust: the dirty ranges describe what changed since the last completed
 * sync only if the frozen bitmap was born at that sync's start and recorded
 * every write since. That is the `baseline` kept in a durable state file. A
 * bitmap born any other way (first start, or after bitmaps were lost) is
 * not trusted: the sync then copies the whole drive (manifest mode) and
 * says why, and the epoch it started becomes the next baseline.
 *
 * Bitmaps on a raw node live in memory only: a daemon restart loses them. With
 * the daemon's qcow2 metadata file (StorageDaemonOptions.metadata) they are
 * persistent: written at a clean stop, loaded at the next start; after a
 * crash qemu marks them inconsistent, and they are dropped here.
 */
import { DeviceError } from '../errors.ts';
import { readJsonChecked, writeJsonDurably, CorruptFileError } from '../durable-file.ts';
import { ACTIVE_NODE, type StorageDaemon } from '../export/index.ts';

/** Bytes `[start, start+length)` of the drive. */
export interface DirtyRange {
  readonly start: number;
  readonly length: number;
}

/**
 * Reads the dirty ranges of a frozen bitmap from an NBD export: the URI and
 * the metadata context `qemu:dirty-bitmap:NAME`. The composition root builds
 * it on the NBD client drive (src/sata-bridge), which this room may not import.
 */
export type DirtyRangeReader = (uri: string, context: string) => Promise<DirtyRange[]>;

export interface BitmapInfo {
  readonly name: string;
  readonly recording: boolean;
  readonly persistent: boolean;
  readonly busy: boolean;
  readonly granularity: number;
  /** Dirty bytes. */
  readonly count: number;
  readonly inconsistent?: boolean;
}

interface TrackerState {
  format: 'dpsr-cbt-1';
  /** Next epoch number. */
  next: number;
  /** The live bitmap that has recorded every write since the last completed sync, if there is one. */
  baseline: string | null;
  /** The live bitmap as last seen (trusted or not). */
  live: string | null;
  /** Why the live bitmap is not a baseline, for the operator. */
  reason?: string;
}

/** A frozen epoch handed to a sync. */
export interface Epoch {
  /** The frozen bitmap. */
  readonly frozen: string;
  /** The bitmap that now records writes. */
  readonly live: string;
  /** Dirty ranges of the frozen bitmap (only when trusted). */
  readonly ranges: DirtyRange[] | null;
  readonly trusted: boolean;
  /** Why the ranges cannot be used, when not trusted (the sync says it in its result). */
  readonly reason?: string;
  /** Dirty bytes of the frozen bitmap. */
  readonly dirtyBytes: number;
}

export interface TrackerOptions {
  readonly daemon: StorageDaemon;
  /** Durable state file (baseline, epoch counter), in the pair's state directory. */
  readonly stateFile: string;
  readonly readRanges: DirtyRangeReader;
  /** Bitmaps persist in the daemon's qcow2 metadata file (its `metadata` option is set). */
  readonly persistent?: boolean;
}

/**
 * Bytes per bit of dpsr's dirty bitmaps, set explicitly rather than left to
 * qemu's default (the node's cluster size, at least 64 KiB). 64 KiB is where
 * a drive behind a USB bridge stops being bound by the number of requests
 * and starts being bound by bytes (≈ 0.2 ms per request, ≈ 70 KiB at
 * 350 MB/s): finer granules multiply the extents and requests of a sync for
 * little less data (the engine writes only the 4 KiB sub-blocks that differ
 * anyway), coarser ones read more than changed. A 1 TB drive's bitmap is then
 * 2 MiB of the daemon's memory (32 MiB at 4 KiB).
 */
export const DIRTY_GRANULARITY = 64 * 1024;

const PREFIX = 'dpsr-epoch-';
const CRASHED = 'qemu-storage-daemon stopped without saving its dirty bitmap (a crash or power loss)';

export class ChangedBlockTracker {
  private state: TrackerState;
  private readonly daemon: StorageDaemon;

  constructor(private readonly options: TrackerOptions) {
    this.daemon = options.daemon;
    let loaded: TrackerState | undefined;
    try {
      loaded = readJsonChecked<TrackerState>(options.stateFile);
    } catch (e) {
      if (!(e instanceof CorruptFileError)) throw e;
    }
    this.state = loaded?.format === 'dpsr-cbt-1' ? loaded : { format: 'dpsr-cbt-1', next: 1, baseline: null, live: null, reason: 'changed-block tracking has not run a full sync yet' };
  }

  private save(): void {
    writeJsonDurably(this.options.stateFile, this.state);
  }

  /** dpsr's bitmaps on the active node. */
  async bitmaps(): Promise<BitmapInfo[]> {
    const nodes = await this.daemon.qmp.execute<{ 'node-name'?: string; 'dirty-bitmaps'?: BitmapInfo[] }[]>('query-named-block-nodes', { flat: true });
    const active = nodes.find((n) => n['node-name'] === ACTIVE_NODE);
    if (!active) throw new DeviceError(`qemu-storage-daemon has no "${ACTIVE_NODE}" node`);
    // Unnamed bitmaps belong to qemu (a copy-before-write filter keeps one on the node it copies from).
    return (active['dirty-bitmaps'] ?? []).filter((b) => b.name?.startsWith(PREFIX));
  }

  /**
   * Brings the daemon's bitmaps in line with the state file, after any start
   * or restart of the daemon or of dpsr: drops inconsistent bitmaps (a
   * crash), merges a frozen bitmap a crashed sync left back into the live
   * one, and adds a live bitmap when none records. Returns whether the live
   * bitmap is a trusted baseline, and why not.
   */
  async reconcile(): Promise<{ live: string; trusted: boolean; reason?: string }> {
    const qmp = this.daemon.qmp;
    let maps = await this.bitmaps();
    let lost: string | undefined;
    const broken = maps.filter((m) => m.inconsistent);
    for (const b of broken) {
      await qmp.execute('block-dirty-bitmap-remove', { node: ACTIVE_NODE, name: b.name });
      lost = CRASHED;
    }
    if (broken.length > 0) maps = await this.bitmaps();
    let live = maps.filter((m) => m.recording).sort((a, b) => epochOf(b.name) - epochOf(a.name))[0];
    if (!live) {
      live = await this.addLive();
      // A persistent bitmap reaches the metadata file only at a clean stop: one born since the last clean stop is simply missing after a crash.
      lost ??= this.state.live === null ? 'changed-block tracking has not run a full sync yet' : this.options.persistent ? CRASHED : 'qemu-storage-daemon restarted since the last sync, and its dirty bitmaps lived in memory only';
    }
    for (const b of maps.filter((m) => m.name !== live.name)) {
      // Frozen by a sync that never finished, or a second live bitmap: its writes go into the live one, then it goes.
      await qmp.execute('block-dirty-bitmap-merge', { node: ACTIVE_NODE, target: live.name, bitmaps: [b.name] });
      await qmp.execute('block-dirty-bitmap-remove', { node: ACTIVE_NODE, name: b.name });
      // The live bitmap started while the baseline recorded and now holds its writes too: it is the baseline.
      if (b.name === this.state.baseline && !lost) {
        this.state.baseline = live.name;
        this.save();
      }
    }
    if (lost || this.state.live !== live.name || this.state.baseline !== live.name) {
      if (this.state.baseline !== live.name) {
        this.state.baseline = null;
        this.state.reason = lost ?? this.state.reason ?? 'the dirty bitmap does not go back to the last sync';
      }
      this.state.live = live.name;
      this.save();
    }
    return this.state.baseline === live.name ? { live: live.name, trusted: true } : { live: live.name, trusted: false, reason: this.state.reason };
  }

  private async addLive(): Promise<BitmapInfo> {
    const name = `${PREFIX}${this.state.next++}`;
    this.save();
    await this.daemon.qmp.execute('block-dirty-bitmap-add', { node: ACTIVE_NODE, name, persistent: !!this.options.persistent, granularity: DIRTY_GRANULARITY });
    return { name, recording: true, persistent: !!this.options.persistent, busy: false, granularity: DIRTY_GRANULARITY, count: 0 };
  }

  /**
   * Forgets the baseline (a verify found a difference the bitmap did not
   * record: the tracker failed silently): the next epoch is not trusted and
   * gives `reason`, and the sync it starts is a full one.
   */
  forget(reason: string): void {
    this.state.baseline = null;
    this.state.reason = reason;
    this.save();
  }

  /** Dirty bytes recorded since the last sync started (the live bitmap). */
  async dirtyBytes(): Promise<number> {
    const live = (await this.bitmaps()).find((b) => b.recording);
    return live?.count ?? 0;
  }

  /**
   * At a sync start: freezes the live bitmap and starts the next epoch in one
   * `transaction`, then, when the frozen bitmap is a trusted baseline, reads
   * its dirty ranges through a read-only NBD export of the active node.
   * Every sync calls it (also a full one), so the next sync has a baseline.
   *
   * `freeze`, for a live sync: starts the snapshot between the two epochs
   * (LiveSnapshot.freeze). When it throws, the epochs merge back (as in
   * `abort`) and its error is thrown.
   */
  async beginEpoch(options: { freeze?: () => Promise<void> } = {}): Promise<Epoch> {
    const { live, trusted, reason } = await this.reconcile();
    const qmp = this.daemon.qmp;
    const next = `${PREFIX}${this.state.next++}`;
    const add = { type: 'block-dirty-bitmap-add', data: { node: ACTIVE_NODE, name: next, persistent: !!this.options.persistent, granularity: DIRTY_GRANULARITY } };
    const disable = { type: 'block-dirty-bitmap-disable', data: { node: ACTIVE_NODE, name: live } };
    if (options.freeze) {
      // The snapshot instant (blockdev-reopen) cannot be a `transaction` action in QEMU 7.2, so the
      // epochs overlap around it: the next bitmap records before the instant, the frozen one until
      // after. Each is then a superset of its side of the instant; writes of those few milliseconds
      // are copied twice, none is missed.
      this.save();
      await qmp.execute('transaction', { actions: [add] });
      this.state.live = next;
      this.save();
      try {
        await options.freeze();
      } catch (e) {
        await qmp.execute('transaction', { actions: [disable] }).catch(() => undefined);
        await this.abort({ frozen: live, live: next, ranges: null, trusted, dirtyBytes: 0 }).catch(() => undefined);
        throw e;
      }
      await qmp.execute('transaction', { actions: [disable] });
    } else {
      // One durable save before the transaction, not one on each side of it: the epoch counter is on disk
      // before a bitmap takes its name. A crash before the transaction leaves the old live bitmap
      // recording and still the baseline, which reconcile takes back as the live one, trusted; a crash
      // after it leaves the frozen one beside the new live one, which reconcile merges into the new.
      this.state.live = next;
      this.save();
      try {
        await qmp.execute('transaction', { actions: [disable, add] });
      } catch (e) {
        this.state.live = live;
        throw e;
      }
    }
    if (!trusted) {
      const frozenInfo = (await this.bitmaps()).find((b) => b.name === live);
      return { frozen: live, live: next, ranges: null, trusted: false, reason, dirtyBytes: frozenInfo?.count ?? 0 };
    }
    const exportId = `dirty-${live}`;
    const uri = await this.daemon.addExport({ id: exportId, nodeName: ACTIVE_NODE, name: exportId, bitmaps: [live] });
    let ranges: DirtyRange[];
    try {
      ranges = await this.options.readRanges(uri, `qemu:dirty-bitmap:${live}`);
    } catch (e) {
      await this.daemon.removeExport(exportId).catch(() => undefined);
      await this.abort({ frozen: live, live: next, ranges: null, trusted, dirtyBytes: 0 });
      throw e;
    }
    await this.daemon.removeExport(exportId);
    // The dirty ranges are the frozen bitmap's bits: their bytes are its count, without one more query of the daemon.
    const dirtyBytes = ranges.reduce((n, r) => n + r.length, 0);
    return { frozen: live, live: next, ranges, trusted: true, dirtyBytes };
  }

  /**
   * The sync that started with `epoch` completed: the frozen bitmap goes,
   * and the live one (born at that sync's start) becomes the baseline.
   */
  async commit(epoch: Epoch): Promise<void> {
    await this.daemon.qmp.execute('block-dirty-bitmap-remove', { node: ACTIVE_NODE, name: epoch.frozen });
    this.state.baseline = epoch.live;
    this.state.reason = undefined;
    this.save();
  }

  /**
   * The sync failed or was cancelled: the frozen bitmap's writes go back into
   * the live one, so the next sync copies them too. The baseline stays what
   * it was (the live bitmap now holds everything since the last completed sync).
   */
  async abort(epoch: Epoch): Promise<void> {
    const qmp = this.daemon.qmp;
    await qmp.execute('block-dirty-bitmap-merge', { node: ACTIVE_NODE, target: epoch.live, bitmaps: [epoch.frozen] });
    await qmp.execute('block-dirty-bitmap-remove', { node: ACTIVE_NODE, name: epoch.frozen });
    const wasBaseline = this.state.baseline === epoch.frozen;
    this.state.baseline = wasBaseline ? epoch.live : null;
    this.save();
  }
}

function epochOf(name: string): number {
  return Number(name.slice(PREFIX.length)) || 0;
}
