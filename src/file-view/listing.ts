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
}

const TYPES: Record<string, EntryType> = { r: 'file', d: 'directory', l: 'symlink', c: 'char-device', b: 'block-device', p: 'fifo', s: 'socket' };
const EXFAT_META = new Set(['$ALLOC_BITMAP', '$UPCASE_TABLE', '$VOLUME_GUID', '$TEXFAT', '$ACT']);
// NTFS MFT entries 0–15 are the metafiles ($MFT … $Extend and reserved ones); 16–23 are reserved too.
const NTFS_FIRST_USER_ENTRY = 24;

/** Parses one directory's `fls -m /` lines; `atRoot` enables the filters for metafiles that live in the root. */
export function parseBody(text: string, fsType: TskFsType, atRoot: boolean): FileEntry[] {
  const entries: FileEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const f = line.split('|');
    if (f.length < 11) continue;
    // The name may hold '|': the fixed fields are the first one and the last nine.
    let name = f.slice(1, f.length - 9).join('|');
    const [address, mode, , , size, , mtime] = f.slice(f.length - 9);
    if (!address || !mode) continue;
    const nameType = mode[0];
    const metaType = mode[2];
    if (nameType === 'v' || nameType === 'V' || metaType === 'v' || metaType === 'V') continue;
    let deleted = false;
    for (const suffix of [' (deleted)', ' (deleted-realloc)']) {
      if (name.endsWith(suffix)) {
        name = name.slice(0, -suffix.length);
        deleted = true;
      }
    }
    if (name.endsWith(' ($FILE_NAME)') || name.endsWith(' (Volume Label Entry)')) continue;
    const type = TYPES[metaType !== '-' ? metaType! : nameType!] ?? 'other';
    let linkTarget: string | undefined;
    if (type === 'symlink') {
      const arrow = name.indexOf(' -> ');
      if (arrow >= 0) {
        linkTarget = name.slice(arrow + 4);
        name = name.slice(0, arrow);
      }
    }
    name = name.slice(name.lastIndexOf('/') + 1);
    const inode = Number.parseInt(address, 10);
    if (fsType === 'ntfs') {
      if (name.includes(':')) continue; // an alternate data stream, not a file
      if (atRoot && inode < NTFS_FIRST_USER_ENTRY) continue;
    }
    if (fsType === 'exfat' && atRoot && EXFAT_META.has(name)) continue;
    if (name === '' || name === '.' || name === '..') continue;
    entries.push({ name, type, size: Number(size), mtime: Number(mtime), inode, address, deleted, ...(linkTarget === undefined ? {} : { linkTarget }) });
  }
  return entries;
}
