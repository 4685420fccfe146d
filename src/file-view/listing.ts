/**
 * Parses `fls -m` output (TSK's body format, one entry a line:
 * `MD5|name|inode|mode|UID|GID|size|atime|mtime|ctime|crtime`, times in
 * seconds since 1970 UTC) into entries, leaving out what is TSK's own view
 * rather than a file the operator made: virtual files (`$MBR`, `$FAT1`,
 * `$OrphanFiles`), FAT volume labels, NTFS `$FILE_NAME` attributes,
 * alternate data streams and metadata files, exFAT's allocation bitmap and
 * up-case table.
 */
import type { TskFsType } from './tsk.ts';

export type EntryType = 'file' | 'directory' | 'symlink' | 'char-device' | 'block-device' | 'fifo' | 'socket' | 'other';

/** One directory entry as the filesystem holds it. */
export interface FileEntry {
  readonly name: string;
  readonly type: EntryType;
  /** Bytes. */
  readonly size: number;
  /** Modification time, seconds since 1970 UTC (FAT: 2-second steps, local time as written). */
  readonly mtime: number;
  /** The inode or MFT entry number; hard links share it. */
  readonly inode: number;
  /** TSK's address of the content (`12`, or for NTFS `68-128-2`). */
  readonly address: string;
  /** The entry was deleted; its content may be gone or reused. */
  readonly deleted: boolean;
  /** A symbolic link's target. */
  readonly linkTarget?: string;
  /** Permission bits (0o7777) as the filesystem gives them (FAT, exFAT and NTFS: TSK's fixed ones). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/** One line of a recursive listing: the entry and its path from the partition's root (`/dir/name`). */
export interface TreeEntry {
  readonly path: string;
  readonly entry: FileEntry;
}

const TYPES: Record<string, EntryType> = { r: 'file', d: 'directory', l: 'symlink', c: 'char-device', b: 'block-device', p: 'fifo', s: 'socket' };
const EXFAT_META = new Set(['$ALLOC_BITMAP', '$UPCASE_TABLE', '$VOLUME_GUID', '$TEXFAT', '$ACT']);
// NTFS MFT entries 0–15 are the metafiles ($MFT … $Extend and reserved ones); 16–23 are reserved too.
const NTFS_FIRST_USER_ENTRY = 24;

/** `rwxr-xr-x` (with s, S, t, T) → permission bits. */
export function parsePermissions(text: string): number {
  let bits = 0;
  for (let i = 0; i < 9; i++) {
    const c = text[i];
    if (c !== '-' && c !== undefined && c !== 'S' && c !== 'T') bits |= 1 << (8 - i);
  }
  if (text[2] === 's' || text[2] === 'S') bits |= 0o4000;
  if (text[5] === 's' || text[5] === 'S') bits |= 0o2000;
  if (text[8] === 't' || text[8] === 'T') bits |= 0o1000;
  return bits;
}

const DELETED = ' (deleted)';
const DELETED_REALLOC = ' (deleted-realloc)';

/**
 * Parses one `fls -m PREFIX` line into its path and entry, or null for a
 * line that is no operator's file wherever it lies (virtual entries, NTFS
 * `$FILE_NAME` attributes and alternate data streams, FAT volume labels).
 * Written for speed (a listing parses tens of thousands of lines): fields are
 * found from both ends of the line, with no split of the whole of it.
 */
export function parseBodyLine(line: string, fsType: TskFsType): TreeEntry | null {
  // The name may hold '|': the fixed fields are the first one and the last nine.
  const first = line.indexOf('|');
  if (first < 0) return null;
  // Separators from the end: b1 before crtime, b2 before ctime, … b9 before the address (the name's end).
  const b1 = line.lastIndexOf('|');
  const b2 = line.lastIndexOf('|', b1 - 1);
  const b3 = line.lastIndexOf('|', b2 - 1);
  const b4 = line.lastIndexOf('|', b3 - 1);
  const b5 = line.lastIndexOf('|', b4 - 1);
  const b6 = line.lastIndexOf('|', b5 - 1);
  const b7 = line.lastIndexOf('|', b6 - 1);
  const b8 = line.lastIndexOf('|', b7 - 1);
  const b9 = line.lastIndexOf('|', b8 - 1);
  if (b9 <= first) return null;
  const address = line.slice(b9 + 1, b8);
  const mode = line.slice(b8 + 1, b7);
  if (address === '' || mode === '') return null;
  const nameType = mode[0];
  const metaType = mode[2];
  if (nameType === 'v' || nameType === 'V' || metaType === 'v' || metaType === 'V') return null;
  let name = line.slice(first + 1, b9);
  let deleted = false;
  if (name.endsWith(')')) {
    if (name.endsWith(DELETED)) {
      name = name.slice(0, -DELETED.length);
      deleted = true;
    }
    if (name.endsWith(DELETED_REALLOC)) {
      name = name.slice(0, -DELETED_REALLOC.length);
      deleted = true;
    }
    if (name.endsWith(' ($FILE_NAME)') || name.endsWith(' (Volume Label Entry)')) return null;
  }
  const type = TYPES[metaType !== '-' ? metaType! : nameType!] ?? 'other';
  let linkTarget: string | undefined;
  if (type === 'symlink') {
    const arrow = name.indexOf(' -> ');
    if (arrow >= 0) {
      linkTarget = name.slice(arrow + 4);
      name = name.slice(0, arrow);
    }
  }
  const path = name;
  name = name.slice(name.lastIndexOf('/') + 1);
  if (fsType === 'ntfs' && name.includes(':')) return null; // an alternate data stream, not a file
  if (name === '' || name === '.' || name === '..') return null;
  const size = Number(line.slice(b5 + 1, b4));
  const mtime = Number(line.slice(b3 + 1, b2));
  const inode = Number.parseInt(address, 10);
  const bits = parsePermissions(mode.slice(3));
  const uid = Number(line.slice(b7 + 1, b6));
  const gid = Number(line.slice(b6 + 1, b5));
  // Two literal shapes rather than a spread: one hidden class each, no object made and thrown away per line.
  const entry: FileEntry = linkTarget === undefined
    ? { name, type, size, mtime, inode, address, deleted, mode: bits, uid, gid }
    : { name, type, size, mtime, inode, address, deleted, linkTarget, mode: bits, uid, gid };
  return { path, entry };
}

/** Whether a root entry is the filesystem's own metadata (NTFS metafiles, exFAT's bitmap and up-case table), not an operator's file. */
export function isRootMetadata(entry: FileEntry, fsType: TskFsType): boolean {
  if (fsType === 'ntfs') return entry.inode < NTFS_FIRST_USER_ENTRY;
  if (fsType === 'exfat') return EXFAT_META.has(entry.name);
  return false;
}

/** Parses one directory's `fls -m /` lines; `atRoot` enables the filters for metafiles that live in the root. */
export function parseBody(text: string, fsType: TskFsType, atRoot: boolean): FileEntry[] {
  const entries: FileEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const parsed = parseBodyLine(line, fsType);
    if (!parsed || (atRoot && isRootMetadata(parsed.entry, fsType))) continue;
    entries.push(parsed.entry);
  }
  return entries;
}

/**
 * Which of several live entries a folder lists under one name are stale,
 * given whether each one's metadata entry is allocated: TSK 4.11 lists an
 * NTFS index entry that ntfs-3g's rename over an existing name left behind
 * (pointing at the replaced file's MFT entry, freed, its sequence number
 * unchanged) as a live entry beside the real one, with the old file's size,
 * times and clusters. The allocated ones stay; when all or none are, nothing
 * can be told and all stay (indexes of `group`).
 */
export function staleOfSameName(allocated: readonly boolean[]): number[] {
  const live = allocated.filter(Boolean).length;
  if (live === 0 || live === allocated.length) return [];
  return allocated.flatMap((a, i) => (a ? [] : [i]));
}
