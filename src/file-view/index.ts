/** Read-only files on a drive's partitions (The Sleuth Kit): listings, content, side-by-side diffs, sector → file maps. */
export { FileView, type ListOptions, type FileAtSector } from './view.ts';
export { ListingCache, type ListingCacheOptions } from './listing-cache.ts';
export { diffFolder, type DiffRow, type DiffPage, type DiffOptions, type Difference } from './diff.ts';
export { type FileEntry, type EntryType } from './listing.ts';
export { splitPath, joinPath } from './path.ts';
export { type TskSource, type TskFsType } from './tsk.ts';
export { archiveFolder, type ArchiveFormat, type ArchiveOptions } from './archive.ts';
export { walkTree, type WalkOptions } from './walk.ts';
export { type TreeEntry } from './listing.ts';
export { writeBack, writeBackPossible, checkFilesystem, releaseWriteBack, findRestoreLeftovers, removeRestoreLeftovers, type WriteBackTarget, type Released, type WriteBackReport, type WriteBackOptions, type WriteBackProgress, type OverwrittenEntry, type WriteDriver } from './write-back.ts';
export { diffTree, type TreeDifference, type TreeDiffOptions, type TreeDiffSummary } from './diff-tree.ts';
export { filesInRanges, type DriveRange, type RangeFiles, type MapOptions } from './sector-map.ts';
export { ChangedFolders, markFolders, walkCovers, type FolderContents, type WalkMarks } from './folder-marks.ts';
