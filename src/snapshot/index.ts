export { ChangedBlockTracker, type DirtyRange, type DirtyRangeReader, type Epoch, type BitmapInfo, type TrackerOptions } from './changed-blocks.ts';
