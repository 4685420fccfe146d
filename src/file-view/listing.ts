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
  for (let i = 0; i < 9; i++) if (text[i] !== '-' && text[i] !== undefined && text[i] !== 'S' && text[i] !== 'T') bits |= 1 << (8 - i);
  if (/[sS]/.test(text[2] ?? '')) bits |= 0o4000;
  if (/[sS]/.test(text[5] ?? '')) bits |= 0o2000;
  if (/[tT]/.test(text[8] ?? '')) bits |= 0o1000;
  return bits;
}

/**
 * Parses one `fls -m PREFIX` line into its path and entry, or null for a
 * line that is no operator's file wherever it lies (virtual entries, NTFS
 * `$FILE_NAME` attributes and alternate data streams, FAT volume labels).
 */
export function parseBodyLine(line: string, fsType: TskFsType): TreeEntry | null {
  const f = line.split('|');
  if (f.length < 11) return null;
  // The name may hold '|': the fixed fields are the first one and the last nine.
  let name = f.slice(1, f.length - 9).join('|');
  const [address, mode, uid, gid, size, , mtime] = f.slice(f.length - 9);
  if (!address || !mode) return null;
  const nameType = mode[0];
  const metaType = mode[2];
  if (nameType === 'v' || nameType === 'V' || metaType === 'v' || metaType === 'V') return null;
  let deleted = false;
  for (const suffix of [' (deleted)', ' (deleted-realloc)']) {
    if (name.endsWith(suffix)) {
      name = name.slice(0, -suffix.length);
      deleted = true;
    }
  }
  if (name.endsWith(' ($FILE_NAME)') || name.endsWith(' (Volume Label Entry)')) return null;
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
  const inode = Number.parseInt(address, 10);
  if (fsType === 'ntfs' && name.includes(':')) return null; // an alternate data stream, not a file
  if (name === '' || name === '.' || name === '..') return null;
  const entry: FileEntry = { name, type, size: Number(size), mtime: Number(mtime), inode, address, deleted, ...(linkTarget === undefined ? {} : { linkTarget }), mode: parsePermissions(mode.slice(3)), uid: Number(uid), gid: Number(gid) };
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
