export { ChangedBlockTracker, DIRTY_GRANULARITY, type DirtyRange, type DirtyRangeReader, type Epoch, type BitmapInfo, type TrackerOptions } from './changed-blocks.ts';
export {
  decideQuiescence,
  checkQuiescencePolicy,
  waitForQuiescence,
  removeQuietBitmaps,
  DEFAULT_QUIESCENCE,
  QUIET_BITMAPS,
  type QuiescencePolicy,
  type QuiescenceFallback,
  type QuiescenceObservation,
  type QuiescenceDecision,
  type QuiescenceResult,
} from './quiescence.ts';
export { LiveSnapshot, cacheBudget, checkSnapshotCacheConfig, CACHE_FILE, CBW_NODE, SNAPSHOT_NODE, SNAPSHOT_EXPORT_ID, type SnapshotOptions, type SnapshotCacheConfig } from './live-snapshot.ts';
export { runHook, checkHook, DEFAULT_HOOK_TIMEOUT_MS, type HookSpec, type SnapshotHooks } from './hooks.ts';
export { liveSync, cleanupLiveSync, SnapshotBrokenError, type LiveSyncOptions, type LiveSyncResult } from './live-sync.ts';
