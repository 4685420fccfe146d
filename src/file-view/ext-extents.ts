/**
 * The runs of ext4 files read from their inodes' extent trees on the drive
 * (ext4 disk layout: "The Super Block", "Block Group Descriptors", "Inode
 * Table", "Extent Tree"), by positional reads from the image or device
 * opened read-only.
 *
 * Why not a tool: the runs came from `debugfs -c` in batches, and on a loaded
 * two-core board every process start blocked the daemon for ~100 ms (a fork
 * of a large process, then waiting for its exec), more than the reading of a
 * batch of small files. An extent tree is a few fixed-size records; the
 * listing stays TSK's, and whatever this reader is not sure of (no extent
 * tree, inline data, encryption, an inode that does not match the listing,
 * a record that does not check) is left to TSK as before.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { DeviceError } from '../errors.ts';
import type { DataRun } from './content.ts';
import type { TskSource } from './tsk.ts';

/** An extent tree leaf: `length` blocks from logical block `logical` at physical block `physical`; unwritten ones read as zeros. */
export interface ExtentLeaf {
  readonly logical: number;
  readonly physical: number;
  readonly length: number;
  readonly uninit: boolean;
}

/**
 * A file's runs from its extent tree's leaves: gaps between them and
 * unwritten extents read as zeros (as the kernel gives them), the last run
 * padded with a hole up to the file's `size` bytes. Null when leaves overlap.
 */
export function runsFromLeaves(leaves: readonly ExtentLeaf[], size: number, unit: number): DataRun[] | null {
  const blocks = Math.ceil(size / unit);
  const runs: DataRun[] = [];
  let at = 0;
  for (const e of [...leaves].sort((a, b) => a.logical - b.logical)) {
    if (at >= blocks) break;
    if (e.logical < at) return null;
    if (e.logical > at) runs.push({ start: null, length: e.logical - at });
    runs.push({ start: e.uninit ? null : e.physical, length: e.length });
    at = e.logical + e.length;
  }
  if (at < blocks) runs.push({ start: null, length: blocks - at });
  return runs;
}

/** What of the superblock the inodes are found with. */
interface Geometry {
  readonly blockSize: number;
  readonly blocksCount: number;
  readonly inodesCount: number;
  readonly inodesPerGroup: number;
  readonly inodeSize: number;
  /** Byte of the first group descriptor (the block after the superblock's). */
  readonly gdtAt: number;
  readonly descSize: number;
  readonly is64: boolean;
}

const INCOMPAT_META_BG = 0x10;
const INCOMPAT_64BIT = 0x80;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const ROOT_INODE = 2;
const EXTENTS_FL = 0x80000;
const INLINE_DATA_FL = 0x10000000;
const ENCRYPT_FL = 0x800;
const CASEFOLD_FL = 0x40000000;
const EXTENT_MAGIC = 0xf30a;
const BG_INODE_UNINIT = 0x1;
/** The kernel's limit on an extent tree's depth (ext4_ext_check's). */
const MAX_DEPTH = 5;
/** Files asked about in one turn that are read together. */
const BATCH = 512;

/**
 * Reads `length` bytes at `position` in full.
 * @throws Error the drive ends before (a record pointing past it).
 */
async function readAt(fh: FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  for (let got = 0; got < length; ) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) throw new Error(`the drive ends at byte ${position + got}, inside the ext filesystem's metadata`);
    got += bytesRead;
  }
  return buf;
}

/**
 * The runs of many ext files by inode number, read straight from the
 * filesystem's metadata. Requests made in the same turn (an archive
 * preparing its next files) are answered together: their group descriptors
 * and inodes are read in one read per stretch of the inode table. Nothing is
 * kept between batches but the superblock's geometry, so a drive written
 * between two requests is read as it is then.
 */
interface Pending {
  readonly inode: number;
  readonly size: number;
  resolve(r: DataRun[] | null): void;
  reject(e: Error): void;
}

export class ExtentReader {
  #pending: Pending[] = [];
  #scheduled = false;
  #geometry: Promise<Geometry | null> | null = null;
  /** Batches answer in the order asked (a caller hands files without extents to a reader whose streams go in the archive's order). */
  #answered: Promise<void> = Promise.resolve();
  readonly #base: number;

  constructor(
    private readonly src: TskSource,
    private readonly unit: number,
  ) {
    this.#base = src.offsetSectors * src.sectorSize;
  }

  /**
   * The runs of inode `inode` of `size` bytes (the listing's), or null when
   * they must come from elsewhere (TSK): no extent tree, inline data,
   * encrypted, not a live regular file of that size, a record that does not check.
   * @throws DeviceError the image or device cannot be read (or ends inside the metadata).
   */
  runs(inode: number, size: number): Promise<DataRun[] | null> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ inode, size, resolve, reject });
      if (this.#pending.length >= BATCH) this.#flush();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#pending.splice(0);
    if (batch.length === 0) return;
    this.#answered = this.#answered.then(() =>
      this.#answer(batch).catch((e: unknown) => {
        const error = new DeviceError(`could not read the ext filesystem's inodes at sector ${this.src.offsetSectors} of ${this.src.path}: ${(e as Error).message}`, { cause: e });
        for (const p of batch) p.reject(error);
      }),
    );
  }

  /**
   * The superblock's geometry, read once and kept, or null when this reader
   * does not follow the layout or its block size is not the listing's unit.
   * A failed read is not kept: the next call reads the superblock again.
   */
  async #usableGeometry(fh: FileHandle): Promise<Geometry | null> {
    this.#geometry ??= this.#readGeometry(fh);
    const g = await this.#geometry.catch((e: unknown) => {
      this.#geometry = null;
      throw e;
    });
    return g && g.blockSize === this.unit ? g : null;
  }

  async #answer(batch: Pending[]): Promise<void> {
    const fh = await open(this.src.path, 'r');
    try {
      const g = await this.#usableGeometry(fh);
      if (!g) {
        for (const p of batch) p.resolve(null);
        return;
      }
      const inodes = await this.#readInodes(fh, g, [...new Set(batch.map((p) => p.inode))]);
      for (const p of batch) {
        const raw = inodes.get(p.inode);
        p.resolve(raw ? await this.#runsOf(fh, g, raw, p.size) : null);
      }
    } finally {
      await fh.close();
    }
  }

  /** The superblock's geometry, or null for a layout this reader does not follow (meta_bg: descriptors spread over the groups). */
  async #readGeometry(fh: FileHandle): Promise<Geometry | null> {
    const sb = await readAt(fh, 1024, this.#base + 1024);
    if (sb.readUInt16LE(0x38) !== 0xef53) return null;
    const incompat = sb.readUInt32LE(0x60);
    if (incompat & INCOMPAT_META_BG) return null;
    const is64 = (incompat & INCOMPAT_64BIT) !== 0;
    const blockSize = 1024 << sb.readUInt32LE(0x18);
    const firstDataBlock = sb.readUInt32LE(0x14);
    const descSize = is64 ? sb.readUInt16LE(0xfe) : 32;
    const inodeSize = sb.readUInt32LE(0x4c) === 0 ? 128 : sb.readUInt16LE(0x58);
    const inodesPerGroup = sb.readUInt32LE(0x28);
    if (descSize < 32 || inodeSize < 128 || inodesPerGroup === 0) return null;
    return {
      blockSize,
      blocksCount: sb.readUInt32LE(0x4) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0),
      inodesCount: sb.readUInt32LE(0x0),
      inodesPerGroup,
      inodeSize,
      gdtAt: (firstDataBlock + 1) * blockSize,
      descSize,
      is64,
    };
  }

  /**
   * The raw records of `inodes` (those in initialised inode tables), read in
   * one read per group's descriptors and per stretch of neighbouring inodes.
   */
  async #readInodes(fh: FileHandle, g: Geometry, inodes: number[]): Promise<Map<number, Buffer>> {
    const valid = inodes.filter((i) => Number.isSafeInteger(i) && i >= 1 && i <= g.inodesCount).sort((a, b) => a - b);
    const groups = [...new Set(valid.map((i) => Math.floor((i - 1) / g.inodesPerGroup)))];
    // Group descriptors: one read over the span of groups asked about (a batch is usually one or two neighbouring groups).
    const tables = new Map<number, number>();
    if (groups.length > 0) {
      const first = groups[0]!;
      const last = groups[groups.length - 1]!;
      const gdt = await readAt(fh, (last - first + 1) * g.descSize, this.#base + g.gdtAt + first * g.descSize);
      for (const group of groups) {
        const d = gdt.subarray((group - first) * g.descSize);
        if (d.readUInt16LE(0x12) & BG_INODE_UNINIT) continue;
        tables.set(group, d.readUInt32LE(0x8) + (g.is64 && g.descSize >= 64 ? d.readUInt32LE(0x28) * 2 ** 32 : 0));
      }
    }
    const byteOf = (i: number) => {
      const group = Math.floor((i - 1) / g.inodesPerGroup);
      const table = tables.get(group);
      return table === undefined ? null : this.#base + table * g.blockSize + ((i - 1) % g.inodesPerGroup) * g.inodeSize;
    };
    const out = new Map<number, Buffer>();
    // Neighbouring inodes (a folder's files, written together) are read as one stretch of up to 256 KiB.
    for (let k = 0; k < valid.length; ) {
      const start = byteOf(valid[k]!);
      if (start === null) {
        k++;
        continue;
      }
      let j = k + 1;
      while (j < valid.length) {
        const at = byteOf(valid[j]!);
        if (at === null || at < start || at + g.inodeSize - start > 256 * 1024 || at - (byteOf(valid[j - 1]!) ?? at) > 16 * g.inodeSize) break;
        j++;
      }
      const end = byteOf(valid[j - 1]!)! + g.inodeSize;
      const buf = await readAt(fh, end - start, start);
      for (let m = k; m < j; m++) out.set(valid[m]!, buf.subarray(byteOf(valid[m]!)! - start, byteOf(valid[m]!)! - start + g.inodeSize));
      k = j;
    }
    return out;
  }

  /** The runs of one inode's record, or null (see `runs`). */
  async #runsOf(fh: FileHandle, g: Geometry, inode: Buffer, size: number, type = S_IFREG): Promise<DataRun[] | null> {
    const mode = inode.readUInt16LE(0x0);
    const flags = inode.readUInt32LE(0x20);
    const inodeSize = inode.readUInt32LE(0x4) + inode.readUInt32LE(0x6c) * 2 ** 32;
    if ((mode & S_IFMT) !== type || inode.readUInt16LE(0x1a) === 0 || inode.readUInt32LE(0x14) !== 0) return null;
    if (!(flags & EXTENTS_FL) || flags & (INLINE_DATA_FL | ENCRYPT_FL | CASEFOLD_FL) || inodeSize !== size) return null;
    const leaves: ExtentLeaf[] = [];
    if (!(await this.#walk(fh, g, inode.subarray(0x28, 0x28 + 60), -1, leaves, { blocks: 0 }))) return null;
    return runsFromLeaves(leaves, size, g.blockSize);
  }

  /**
   * The inode number of the live folder at `parts` (names from the root,
   * compared as UTF-8 bytes), found by reading each folder on the way
   * (ext4 disk layout "Directory Entries": linear entries; a hash-indexed
   * folder keeps every entry in such blocks too, its index blocks read as
   * empty entries). Null when any step is not plainly there: a name not
   * found, not a folder, a folder without an extent tree, encrypted or
   * case-folded, an entry that does not check. The caller then asks TSK,
   * which also gives the errors.
   * @throws DeviceError the image or device cannot be read.
   */
  async folderInode(parts: readonly string[]): Promise<number | null> {
    const fh = await open(this.src.path, 'r');
    try {
      const g = await this.#usableGeometry(fh);
      if (!g) return null;
      let at = ROOT_INODE;
      for (const part of parts) {
        const raw = (await this.#readInodes(fh, g, [at])).get(at);
        if (!raw) return null;
        const size = raw.readUInt32LE(0x4) + raw.readUInt32LE(0x6c) * 2 ** 32;
        const runs = await this.#runsOf(fh, g, raw, size, S_IFDIR);
        if (!runs) return null;
        const child = await this.#entryIn(fh, g, runs, Buffer.from(part, 'utf8'));
        if (child === null) return null;
        at = child;
      }
      const raw = (await this.#readInodes(fh, g, [at])).get(at);
      return raw && (raw.readUInt16LE(0) & S_IFMT) === S_IFDIR && raw.readUInt16LE(0x1a) > 0 ? at : null;
    } catch (e) {
      throw new DeviceError(`could not read the ext filesystem's folders at sector ${this.src.offsetSectors} of ${this.src.path}: ${(e as Error).message}`, { cause: e });
    } finally {
      await fh.close();
    }
  }

  /** The inode of the live entry named `name` in a folder's blocks (`runs`), or null (not there, or a block that does not check). */
  async #entryIn(fh: FileHandle, g: Geometry, runs: readonly DataRun[], name: Buffer): Promise<number | null> {
    for (const run of runs) {
      if (run.start === null) continue;
      for (let b = 0; b < run.length; b++) {
        const block = await readAt(fh, g.blockSize, this.#base + (run.start + b) * g.blockSize);
        for (let off = 0; off < g.blockSize; ) {
          const inode = block.readUInt32LE(off);
          const recLen = block.readUInt16LE(off + 4);
          const nameLen = block[off + 6]!;
          if (recLen < 12 || recLen % 4 !== 0 || off + recLen > g.blockSize || 8 + nameLen > recLen) return null;
          if (inode !== 0 && nameLen === name.length && block.subarray(off + 8, off + 8 + nameLen).equals(name)) return inode;
          off += recLen;
        }
      }
    }
    return null;
  }

  /**
   * Collects the leaves under one extent tree node (`node`: the inode's
   * i_block or a tree block), checking each header. `depth` is the depth its
   * parent said it has (-1 at the root). False when a record does not check.
   */
  async #walk(fh: FileHandle, g: Geometry, node: Buffer, depth: number, leaves: ExtentLeaf[], budget: { blocks: number }): Promise<boolean> {
    if (node.readUInt16LE(0) !== EXTENT_MAGIC) return false;
    const entries = node.readUInt16LE(2);
    const max = node.readUInt16LE(4);
    const d = node.readUInt16LE(6);
    if (entries > max || 12 + max * 12 > node.length || d > MAX_DEPTH || (depth >= 0 && d !== depth)) return false;
    for (let k = 0; k < entries; k++) {
      const e = node.subarray(12 + k * 12, 24 + k * 12);
      if (d === 0) {
        const raw = e.readUInt16LE(4);
        const uninit = raw > 32768;
        const length = uninit ? raw - 32768 : raw;
        const physical = e.readUInt16LE(6) * 2 ** 32 + e.readUInt32LE(8);
        if (length === 0 || physical + length > g.blocksCount) return false;
        leaves.push({ logical: e.readUInt32LE(0), physical, length, uninit });
      } else {
        const child = e.readUInt16LE(8) * 2 ** 32 + e.readUInt32LE(4);
        // A loop in a damaged tree must end: no file needs more tree blocks than the filesystem has.
        if (child >= g.blocksCount || ++budget.blocks > 65536) return false;
        const block = await readAt(fh, g.blockSize, this.#base + child * g.blockSize);
        if (!(await this.#walk(fh, g, block, d - 1, leaves, budget))) return false;
      }
    }
    return true;
  }
}
