/**
 * A live sync's sequence around the copy, in inline mode: quiescence → the
 * pre-snapshot hook → the copy-before-write snapshot and the dirty-bitmap
 * epoch → the post-snapshot hook → the copy from the frozen picture → commit
 * the epoch → teardown. The copy itself (src/sync) and the rollback (the
 * undo journal's `recover`) are handed in: this room does not import them.
 *
 * Every path tears the snapshot down. A failed, cancelled or broken copy
 * merges the frozen bitmap back (so the next run copies those blocks again)
 * and rolls the standby back: a later run reads another instant, and a
 * standby holding parts of two instants would be consistent with neither.
 */
import { DeviceError } from '../errors.ts';
import type { StorageDaemon } from '../export/index.ts';
import type { ChangedBlockTracker, Epoch } from './changed-blocks.ts';
import { checkHook, runHook, type SnapshotHooks } from './hooks.ts';
import { LiveSnapshot, type SnapshotCacheConfig } from './live-snapshot.ts';
import { DEFAULT_QUIESCENCE, removeQuietBitmaps, waitForQuiescence, type QuiescencePolicy, type QuiescenceResult } from './quiescence.ts';

/** The snapshot broke while the copy read it (cache budget or cbw-timeout), or the daemon restarted under it. */
export class SnapshotBrokenError extends DeviceError {
  constructor(
    message: string,
    /** Whether the standby was rolled back to the previous backup. */
    readonly rolledBack: boolean,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(message, options);
  }
}

export interface LiveSyncOptions<R> {
  readonly daemon: StorageDaemon;
  readonly tracker: ChangedBlockTracker;
  /** The pair's state directory: the snapshot cache goes here. */
  readonly cacheDir: string;
  readonly cache?: SnapshotCacheConfig;
  readonly quiescence?: QuiescencePolicy;
  readonly hooks?: SnapshotHooks;
  /** Reads one sector of an NBD export (LiveSnapshot's probe). */
  readonly probe: (uri: string) => Promise<void>;
  /** Copies from `source` (the snapshot export's URI) onto the standby; `epoch` carries the dirty ranges. */
  readonly copy: (source: string, epoch: Epoch, signal?: AbortSignal) => Promise<R>;
  /**
   * Rolls the standby back to the previous backup (the undo journal). Absent:
   * the caller rolls back after any failure (a cancel included).
   */
  readonly rollback?: () => Promise<void>;
  /** Whether a copy that returned covered its whole epoch (default yes); no: the bitmap is merged back, not committed (a resumed copy, unreadable sectors). */
  readonly complete?: (report: R) => boolean;
  readonly signal?: AbortSignal;
  /** Progress notes for the job's log and result. */
  readonly onNote?: (note: string) => void;
}

export type LiveSyncResult<R> =
  | {
      readonly outcome: 'done';
      readonly report: R;
      readonly quiescence: QuiescenceResult;
      /** `application`: the pre-snapshot hook ran; `quiet` / `crash-consistent`: from the wait. */
      readonly consistency: 'application' | 'quiet' | 'crash-consistent';
      /** Bytes the cache held at the end (old blocks the host overwrote during the copy). */
      readonly cacheBytes: number;
      readonly notes: string[];
    }
  | { readonly outcome: 'skipped'; readonly reason: string; readonly quiescence: QuiescenceResult; readonly notes: string[] };

/**
 * Removes what an interrupted live sync left in the daemon and the state
 * directory (snapshot export and nodes, the filter, the cache file, the
 * quiescence bitmaps); frozen epoch bitmaps are merged back by the
 * tracker's next `reconcile`. Call it after dpsr or the daemon restarts.
 */
export async function cleanupLiveSync(daemon: StorageDaemon, cacheDir: string): Promise<void> {
  await LiveSnapshot.cleanup(daemon, cacheDir);
  if (daemon.running) await removeQuietBitmaps(daemon);
}

export async function liveSync<R>(o: LiveSyncOptions<R>): Promise<LiveSyncResult<R>> {
  const notes: string[] = [];
  const note = (n: string) => {
    notes.push(n);
    o.onNote?.(n);
  };
  if (o.hooks?.pre) checkHook(o.hooks.pre, 'pre');
  if (o.hooks?.post) checkHook(o.hooks.post, 'post');
  const policy = o.quiescence ?? DEFAULT_QUIESCENCE;
  await cleanupLiveSync(o.daemon, o.cacheDir);

  const quiescence = await waitForQuiescence(o.daemon, policy, { signal: o.signal });
  note(quiescence.message);
  if (quiescence.outcome === 'skip') return { outcome: 'skipped', reason: quiescence.message, quiescence, notes };
  let consistency: 'application' | 'quiet' | 'crash-consistent' = quiescence.outcome;

  // The post hook runs once after the snapshot instant (also without a pre hook), or already after a failed pre hook.
  let postDue = !!o.hooks?.post;
  if (o.hooks?.pre) {
    try {
      await runHook(o.hooks.pre, 'pre');
      consistency = 'application';
    } catch (e) {
      // The hook may have frozen part of the host before it failed: thaw anyway.
      if (o.hooks.post) await runHook(o.hooks.post, 'post').catch((t: Error) => note(`the post-snapshot hook after a failed pre-snapshot hook failed too: ${t.message}`));
      postDue = false;
      if (policy.fallback === 'skip') {
        const reason = `${(e as Error).message}: this run is skipped (quiescence fallback: skip)`;
        note(reason);
        return { outcome: 'skipped', reason, quiescence, notes };
      }
      note(`${(e as Error).message}: the snapshot is ${consistency === 'quiet' ? 'taken at a quiet moment' : 'crash-consistent'}, without the application's help`);
    }
  }

  let snapshot: LiveSnapshot | null = null;
  let epoch: Epoch | null = null;
  /** ISO times around the snapshot instant (the reopen), for the job's log. */
  const instant = { from: '', to: '' };
  try {
    try {
      snapshot = await LiveSnapshot.prepare({ ...(o.cache ?? {}), daemon: o.daemon, cacheDir: o.cacheDir, probe: o.probe });
      const s = snapshot;
      epoch = await o.tracker.beginEpoch({
        freeze: async () => {
          instant.from = new Date().toISOString();
          await s.freeze();
          instant.to = new Date().toISOString();
        },
      });
    } finally {
      if (postDue && o.hooks?.post) await runHook(o.hooks.post, 'post').catch((e: Error) => note(`${e.message} (the snapshot itself is taken)`));
    }
    // The instant lies within the reopen: writes the host saw completed before `from` are in the picture, none issued after `to` is.
    note(`snapshot taken between ${instant.from} and ${instant.to}; cache budget ${Math.round(snapshot.budgetBytes / 2 ** 20)} MiB in ${o.cacheDir}`);
    const source = await snapshot.export();
    let report: R;
    try {
      report = await o.copy(source, epoch, o.signal);
    } catch (e) {
      // A read of a broken snapshot is refused with EINVAL, not EIO: the engine stops on it rather than
      // taking it for an unreadable sector, so a copy that returned read only the picture.
      const broken = await snapshot.check().catch(() => null);
      await o.tracker.abort(epoch).catch((a: Error) => note(`merging the frozen dirty bitmap back failed: ${a.message}`));
      const rolledBack = o.rollback
        ? await o.rollback().then(
            () => true,
            (r: Error) => (note(`rolling the standby back failed: ${r.message}`), false),
          )
        : false;
      if (broken) {
        throw new SnapshotBrokenError(`${broken}; the sync stopped${rolledBack ? ' and the standby was rolled back to the previous backup' : ''}`, rolledBack, {
          cause: e,
          hint: rolledBack || !o.rollback ? 'the next sync tries again; give the snapshot cache a larger budget or run syncs at quieter times if this repeats' : 'run dpsr recover before the next sync',
        });
      }
      throw e;
    }
    if (o.complete?.(report) === false) await o.tracker.abort(epoch);
    else await o.tracker.commit(epoch);
    const cacheBytes = snapshot.cacheBytes();
    await snapshot.close();
    return { outcome: 'done', report, quiescence, consistency, cacheBytes, notes };
  } finally {
    // On the way out of a failure: tear down too, without hiding the failure behind a teardown error.
    await (snapshot ? snapshot.close() : LiveSnapshot.cleanup(o.daemon, o.cacheDir)).catch((e: Error) => note(`tearing the snapshot down failed: ${e.message}; it is removed at the next sync or restart`));
  }
}
