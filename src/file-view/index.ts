/** Read-only files on a drive's partitions (The Sleuth Kit): listings, content, side-by-side diffs, sector → file maps. */
export { FileView, type ListOptions, type FileAtSector } from './view.ts';
export { diffFolder, type DiffRow, type DiffPage, type DiffOptions, type Difference } from './diff.ts';
export { type FileEntry, type EntryType } from './listing.ts';
export { splitPath, joinPath } from './path.ts';
export { type TskSource, type TskFsType } from './tsk.ts';
