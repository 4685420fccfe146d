/**
 * A read-only view of the files on one partition of a drive (image file or
 * block device), through The Sleuth Kit. Nothing here opens the drive for
 * writing or mounts it.
 */
import { openSync, readSync, closeSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { xxh3 } from '@node-rs/xxhash';
import { openDrive } from '../sata-bridge/index.ts';
import { readLayout, type Partition } from '../disk-layout/index.ts';
import { BadInputError, NotFoundError } from '../errors.ts';
import { addressOf, icatStream, isAllocated, runTsk, type TskFsType, type TskSource } from './tsk.ts';
import { parseBody, staleOfSameName, type FileEntry } from './listing.ts';
import { runsOf, runsStream, type DataRun, type DriveFile } from './content.ts';
import { ExtentReader } from './ext-extents.ts';
import { TskReader, tskReaderRuns } from './tsk-reader.ts';
import { joinPath, splitPath } from './path.ts';
import type { CacheScope, ListingCache } from './listing-cache.ts';

/** blkid-style names (disk-layout's sniffing) → TSK's `-f` types. */
const FS_TYPES: Record<string, TskFsType> = { ext2: 'ext', ext3: 'ext', ext4: 'ext', vfat: 'fat', exfat: 'exfat', ntfs: 'ntfs' };

/** Whether names compare without case on this filesystem (as Windows and Linux's drivers do). */
const CASELESS: Record<TskFsType, boolean> = { ext: false, fat: true, exfat: true, ntfs: true };

export interface ListOptions {
  /** Also list deleted entries (default true). */
  readonly deleted?: boolean;
}

/** Files up to this size are read by icat (off ext, or ext without extents): one process either way, and no run list to ask for first. */
const SMALL_FILE = 64 * 1024;
/**
 * Files up to this size are read by TSK in the batch process without asking for runs first: NTFS keeps content of up to
 * a few hundred bytes in the file's 1 KiB MFT record (resident), which has no runs; larger files are read from their runs.
 */
const RESIDENT_MAX = 1024;

/** Where a drive byte lies in the partition's files: the file's path, or none for free space and metadata. */
export interface FileAtSector {
  /** The drive's LBA asked about. */
  readonly lba: number;
  readonly path?: string;
  readonly inode?: number;
}

/** A stream's XXH3-64 as 16 hex digits. */
export async function hashStream(stream: Readable): Promise<string> {
  const h = xxh3.Xxh3.withSeed();
  for await (const chunk of stream) h.update(chunk as Buffer);
  return h.digest().toString(16).padStart(16, '0');
}

/** By name (code-unit order), live before deleted of the same name. */
const byName = (a: FileEntry, b: FileEntry) => (a.name < b.name ? -1 : a.name > b.name ? 1 : Number(a.deleted) - Number(b.deleted));

export class FileView {
  #unitSize: Promise<number> | null = null;
  #extents: ExtentReader | null = null;
  #cache: CacheScope | null = null;

  constructor(
    readonly source: TskSource,
    /** The partition as disk-layout read it (numbers, bytes), when opened from a drive. */
    readonly partition?: Partition,
  ) {}

  /**
   * Opens partition `number` of the drive at `path` (image file or block
   * device), reading its table with disk-layout.
   * @throws NotFoundError no such partition; BadInputError a filesystem file-view does not read (ext2/3/4, FAT, exFAT, NTFS are read).
   */
  static async open(path: string, number: number, options: { imageSectorSize?: number } = {}): Promise<FileView> {
    if (!Number.isSafeInteger(number) || number < 1) throw new BadInputError(`partition must be a number from 1, not ${JSON.stringify(number)}`);
    const dev = await openDrive(path, { imageSectorSize: options.imageSectorSize });
    try {
      const layout = await readLayout(dev);
      const part = layout.partitions.find((p) => p.number === number && !p.extended);
      if (!part) throw new NotFoundError(`${path} has no partition ${number}`, { hint: `partitions: ${layout.partitions.map((p) => p.number).join(', ') || 'none'}` });
      const fsType = FS_TYPES[part.filesystem ?? ''];
      if (!fsType) throw new BadInputError(`partition ${number} of ${path} holds ${part.filesystem ?? 'no filesystem dpsr recognises'}: files can be read on ext2/3/4, FAT, exFAT and NTFS`);
      const sectorSize = dev.logicalSectorSize;
      return new FileView({ path: dev.path, offsetSectors: part.startByte / sectorSize, sectorSize, fsType }, part);
    } finally {
      await dev.close();
    }
  }

  /**
   * The entries of a folder, sorted by name (live ones before deleted ones of the same name).
   * @throws BadInputError bad path or not a folder; NotFoundError no such folder; DeviceError the reader failed.
   */
  async list(path: string, options: ListOptions = {}): Promise<FileEntry[]> {
    const all = await this.#listAll(splitPath(path));
    return options.deleted === false ? all.filter((e) => !e.deleted) : [...all];
  }

  /**
   * Keeps this view's folder listings in `cache` under `scope` (the owner's
   * name for the drive and its state, see listing-cache.ts), so pages of a
   * folder and the folders on the way to it are read once. Returns the view.
   */
  cached(cache: ListingCache, scope: string): this {
    this.#cache = { cache, scope };
    return this;
  }

  /** A folder's entries, deleted ones included, sorted; from the cache when it holds them. */
  async #listAll(parts: string[]): Promise<readonly FileEntry[]> {
    const c = this.#cache;
    const { path: source, offsetSectors, sectorSize, fsType } = this.source;
    const key = c ? [c.scope, source, offsetSectors, sectorSize, fsType, joinPath(parts)].join('\0') : '';
    const kept = c?.cache.get(key);
    if (kept) return kept;
    // Read before the drive is: a listing read while the generation moved is not kept.
    const generation = c?.cache.generation ?? 0;
    let trailing: string[] = [];
    if (parts.length > 0) {
      // On ext the folder is found by reading the folders on the way (no process): each fls listing the way cost a process
      // start, 0.3 s with its libraries out of the page cache. Anything not plainly there is asked of TSK, as elsewhere.
      const inode = this.source.fsType === 'ext' ? await this.#extFolder(parts) : null;
      if (inode !== null) trailing = [String(inode)];
      else {
        const dir = await this.stat(joinPath(parts));
        if (dir.type !== 'directory') throw new BadInputError(`${joinPath(parts)} is a ${dir.type}, not a folder`);
        trailing = [dir.address];
      }
    }
    const body = await runTsk('fls', this.source, ['-m', '/'], trailing);
    const entries = await this.#withoutStale(parseBody(body, fsType, parts.length === 0).sort(byName));
    c?.cache.set(key, entries, generation);
    return entries;
  }

  /**
   * A sorted listing with the stale ones of several live entries of one name
   * marked deleted (see `staleOfSameName`): one `istat` per entry of such a
   * name, which a sound folder never has.
   */
  async #withoutStale(entries: FileEntry[]): Promise<FileEntry[]> {
    let changed = false;
    for (let i = 0; i < entries.length; ) {
      let j = i + 1;
      while (j < entries.length && entries[j]!.name === entries[i]!.name && !entries[j]!.deleted) j++;
      if (j - i > 1 && !entries[i]!.deleted) {
        const group = entries.slice(i, j);
        const allocated = await Promise.all(group.map((e) => isAllocated(this.source, e.address)));
        for (const k of staleOfSameName(allocated)) entries[i + k] = { ...group[k]!, deleted: true };
        changed = true;
      }
      i = j;
    }
    return changed ? entries.sort(byName) : entries;
  }

  /**
   * One entry by path: the live one, or a deleted one when `deleted` is set and no live one has the name.
   * @throws BadInputError bad path; NotFoundError no such entry.
   */
  async stat(path: string, options: { deleted?: boolean } = {}): Promise<FileEntry> {
    const parts = splitPath(path);
    if (parts.length === 0) {
      const root = await addressOf(this.source, '/');
      return { name: '', type: 'directory', size: 0, mtime: 0, inode: Number.parseInt(root, 10), address: root, deleted: false, mode: 0o755, uid: 0, gid: 0 };
    }
    const name = parts[parts.length - 1]!;
    const siblings = await this.list(joinPath(parts.slice(0, -1)), { deleted: options.deleted === true });
    const fold = CASELESS[this.source.fsType];
    const match = (e: FileEntry) => e.name === name || (fold && e.name.toLowerCase() === name.toLowerCase());
    const found = siblings.find((e) => match(e) && !e.deleted) ?? siblings.find((e) => match(e));
    if (!found) throw new NotFoundError(`no ${joinPath(parts)} on this partition`, { hint: 'list the folder above it to see what is there' });
    return found;
  }

  /**
   * A regular file's content as a stream.
   * @throws BadInputError not a regular file; NotFoundError no such file.
   */
  async read(path: string, options: { deleted?: boolean } = {}): Promise<{ entry: FileEntry; stream: Readable }> {
    const entry = await this.stat(path, options);
    if (entry.type !== 'file') throw new BadInputError(`${joinPath(splitPath(path))} is a ${entry.type}, not a file: only files have content to read`);
    return { entry, stream: await this.content(entry) };
  }

  /**
   * The content of a regular file's entry (from a listing of this view) as a
   * stream: live files read straight from their data runs (every ext file
   * with an extent tree, from its inode: ext-extents.ts; large files
   * elsewhere, through istat: content.ts), the rest by `icat` (a deleted entry's with `-r`);
   * with `batch` (from batchReader) live files are read through that one
   * process instead (tiny ones by TSK, larger ones from the runs it gives,
   * tsk-reader.ts), except on ext, where every file with an extent map is
   * read from it and only the rest (inline data, block maps) through the
   * process; in the order of the calls: consume the streams in that order.
   * `drive` (an archive's) is the one open handle those direct reads share.
   * @throws DeviceError the reader fails (also as the stream's error, half-way).
   */
  async content(entry: FileEntry, signal?: AbortSignal, batch?: TskReader | null, drive?: DriveFile): Promise<Readable> {
    const ext = this.source.fsType === 'ext';
    if (ext && !entry.deleted) {
      // On ext every live file with an extent map is read from it (ext-extents.ts: no process at all; requests made in the
      // same turn share their metadata reads). What has none (inline data, ext2/3 block maps) goes to TSK.
      const runs = await this.#extentsOf(entry);
      if (runs) return runsStream(this.source, runs.runs, entry.size, runs.unit, drive);
      if (batch) return batch.content(entry.address, entry.size);
    }
    if (batch && !entry.deleted && !ext) {
      // Tiny files are read by TSK in the batch process; larger ones from the runs it gives where they read as TSK reads
      // (the process answers 0.05 ms a file with runs, but TSK reads content a data unit at a time).
      if (entry.size <= RESIDENT_MAX) return batch.content(entry.address, entry.size);
      const got = await batch.read(entry.address, entry.size);
      return got.runs ? runsStream(this.source, got.runs, entry.size, got.unit, drive) : got.stream;
    }
    if (entry.deleted || entry.size === 0) return icatStream(this.source, entry.address, entry.deleted);
    if (entry.size <= SMALL_FILE) return icatStream(this.source, entry.address);
    this.#unitSize ??= this.dataUnitSize();
    const unit = await this.#unitSize.catch((e: unknown) => {
      this.#unitSize = null;
      throw e;
    });
    const runs = await runsOf(this.source, entry.address, entry.size, unit, signal);
    return runs ? runsStream(this.source, runs, entry.size, unit) : icatStream(this.source, entry.address);
  }

  /** The inode of the live ext folder at `parts`, or null to ask TSK (see ExtentReader.folderInode). */
  async #extFolder(parts: readonly string[]): Promise<number | null> {
    this.#unitSize ??= this.dataUnitSize();
    const unit = await this.#unitSize.catch((e: unknown) => {
      this.#unitSize = null;
      throw e;
    });
    this.#extents ??= new ExtentReader(this.source, unit);
    return this.#extents.folderInode(parts);
  }

  async #extentsOf(entry: FileEntry): Promise<{ runs: DataRun[]; unit: number } | null> {
    this.#unitSize ??= this.dataUnitSize();
    const unit = await this.#unitSize.catch((e: unknown) => {
      this.#unitSize = null;
      throw e;
    });
    this.#extents ??= new ExtentReader(this.source, unit);
    const runs = await this.#extents.runs(entry.inode, entry.size);
    return runs && { runs, unit };
  }

  /**
   * How many files an archive prepares ahead: many on ext (their inodes are read together, a stretch of the inode table
   * in one read), some with a batch reader, few where each costs a process.
   */
  contentLookahead(batch?: TskReader | null): number {
    return this.source.fsType === 'ext' ? 512 : batch ? 32 : 4;
  }

  /**
   * One reader process for the content of many files read in turn (an
   * archive's: tsk-reader.ts), to hand to `content`; the caller closes it.
   * Null where the reader cannot run (no python3-tsk: files are then read
   * as before, from ext extents, by `istat` and `icat`).
   */
  async batchReader(): Promise<TskReader | null> {
    // On ext the process serves only files without an extent map: it starts with the first (most folders never pay its start).
    if (this.source.fsType === 'ext') return (await tskReaderRuns()) ? new TskReader(this.source, { lazy: true }) : null;
    const reader = new TskReader(this.source);
    if (await reader.ready) return reader;
    reader.close();
    return null;
  }

  /** Streams a file's content through XXH3-64; the hash as 16 hex digits. */
  async hash(path: string): Promise<string> {
    const { stream } = await this.read(path);
    return hashStream(stream);
  }
  /** Bytes per data unit TSK addresses (`ifind -d`): ext's block, NTFS's cluster, a FAT or exFAT sector. */
  async dataUnitSize(signal?: AbortSignal): Promise<number> {
    const { fsType } = this.source;
    if (fsType === 'fat' || fsType === 'exfat' || fsType === 'ext') {
      // Read from the boot sector or superblock, not fsstat: TSK 4.11's fsstat loops on some exFAT volumes, and on ext
      // a process start costs more than the read.
      const fd = openSync(this.source.path, 'r');
      try {
        const boot = Buffer.alloc(2048);
        readSync(fd, boot, 0, 2048, this.source.offsetSectors * this.source.sectorSize);
        if (fsType === 'ext') {
          // The superblock at byte 1024: s_magic 0xEF53 at +56, s_log_block_size at +24 (block = 1024 << it).
          if (boot.readUInt16LE(1024 + 56) !== 0xef53) throw new BadInputError('this partition holds no ext2/3/4 superblock (magic 0xEF53 missing at byte 1080)');
          return 1024 << boot.readUInt32LE(1024 + 24);
        }
        return fsType === 'fat' ? boot.readUInt16LE(11) : 1 << boot[108]!;
      } finally {
        closeSync(fd);
      }
    }
    const stat = await runTsk('fsstat', this.source, [], [], signal);
    const m = stat.match(/^Cluster Size:\s*(\d+)/m);
    if (!m) throw new BadInputError('fsstat gave no cluster size for this partition');
    return Number(m[1]);
  }

  /**
   * The files the given drive LBAs belong to (`ifind -d` on each data unit,
   * then `ffind` for its path), one answer per distinct data unit, at most
   * `limit` of them. LBAs outside the partition are left out.
   */
  async filesAt(lbas: readonly number[], options: { limit?: number; signal?: AbortSignal } = {}): Promise<FileAtSector[]> {
    const { sectorSize, offsetSectors } = this.source;
    const end = this.partition ? offsetSectors + this.partition.sizeBytes / sectorSize : Infinity;
    const unit = await this.dataUnitSize(options.signal);
    const byUnit = new Map<number, number>();
    for (const lba of lbas) {
      if (lba < offsetSectors || lba >= end) continue;
      const du = Math.floor(((lba - offsetSectors) * sectorSize) / unit);
      if (!byUnit.has(du)) byUnit.set(du, lba);
      if (byUnit.size >= (options.limit ?? 1000)) break;
    }
    const out: FileAtSector[] = [];
    for (const [du, lba] of byUnit) {
      const inodeText = (await runTsk('ifind', this.source, ['-d', String(du)], [], options.signal)).trim();
      const inode = Number.parseInt(inodeText, 10);
      if (!Number.isSafeInteger(inode)) {
        out.push({ lba });
        continue;
      }
      const paths = (await runTsk('ffind', this.source, [], [inodeText.split('\n')[0]!], options.signal)).trim();
      const path = paths.split('\n')[0]?.replace(/^\* /, '');
      out.push({ lba, inode, ...(path && !/not found/i.test(path) ? { path } : {}) });
    }
    return out;
  }
}
