/**
 * The standby's manifest: an xxh3 hash per block, kept in the state
 * directory, so a routine sync reads only the source and touches the standby
 * just where the hashes differ. It is trusted only while it is known to
 * describe the standby: same drive, size and generation, a whole checksum,
 * and not left dirty by an interrupted sync.
 *
 * File: a 4 KiB JSON header, then one u64 per block. Hash 0 means unknown.
 *
 * The header's checksum covers the table and is kept up to date page by
 * page, so a sync that changes a few blocks reads and writes only their
 * part of the table: the table is cut into pages of 512 entries (4 KiB, the
 * last one shorter), and the checksum is the sum, modulo 2^64, over the
 * pages of xxh3(page number as u64 little-endian ‖ the page's bytes); a page
 * of unknown entries only (zeros) adds nothing, so a new table sums to 0. A
 * write takes out what the page it changes added, as read from the file, so
 * a page damaged on disk keeps the sum wrong until the whole table is
 * checked again (manifest mode and the spot check, which consult the table,
 * check it when they open it). Crash safety does not rest on the sum: the
 * header says "dirty", durably, before the first table write of a copy, and
 * "valid" only after the table is on disk.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { BlockHasher } from './hash.ts';
import { normalizeRanges, type ByteRange } from './ranges.ts';

const HEADER_BYTES = 4096;
export const MANIFEST_BLOCK = 32 * 1024;

const FORMAT = 'dpsr-manifest-2';

export interface ManifestHeader {
  format: typeof FORMAT;
  state: 'valid' | 'dirty';
  targetKey: string;
  targetSize: number;
  blockSize: number;
  generation: number;
  coverage: ByteRange[];
  /** The table's checksum (see the file's comment), as a decimal string. */
  bodyChecksum: string;
  /** The standby's write stamp when the manifest was sealed (`writeStampOf`); absent where none can be read. */
  writeStamp?: string;
}

/**
 * Why a manifest's header cannot stand in for reading the standby, or
 * undefined when it can (its table's checksum is checked apart, with I/O).
 * Pure. A manifest is stale when it does not describe the standby's current
 * generation: a standby back from off-site that was synced since the
 * manifest was sealed, or that became active (failover) and moved on, gets a
 * full compare; one that only sat on a shelf keeps its generation and its
 * manifest.
 */
export function manifestStaleness(header: Pick<ManifestHeader, 'format' | 'state' | 'targetKey' | 'targetSize' | 'generation' | 'writeStamp'>, expect: ManifestExpectation): string | undefined {
  if ((header.format as string) === 'dpsr-manifest-1') return 'the manifest has an earlier format, without a checksum a sync can keep up to date';
  if (header.format !== FORMAT) return 'the manifest has an unknown format';
  if (header.state !== 'valid') return 'the last sync was interrupted, so the standby may differ from its manifest';
  if (header.targetKey !== expect.targetKey) return 'the standby is another drive than the manifest describes';
  if (header.targetSize !== expect.targetSize) return 'the standby changed size';
  if (header.generation !== expect.generation) return `the manifest is stale: it describes generation ${header.generation} of the standby, which holds generation ${expect.generation} now`;
  // Same generation, but written since by something else (mounted read-write, a tool): its hashes may not be its content.
  if (writtenSince(header, expect.writeStamp)) return `${WRITTEN_SINCE}, so it may differ from its manifest`;
  return undefined;
}

/** The header block: JSON padded with NULs to HEADER_BYTES. Throws SyntaxError when it is not. */
const parseHeader = (buf: Buffer): ManifestHeader => JSON.parse(buf.toString('utf8').replace(/\0+$/, '').trim()) as ManifestHeader;

const WRITTEN_SINCE = 'the standby was written since its last sync (mounted, or by a tool)';
const writtenSince = (header: Pick<ManifestHeader, 'writeStamp'>, stampNow: string | undefined) => header.writeStamp !== undefined && stampNow !== undefined && header.writeStamp !== stampNow;

/**
 * Why the standby may not hold its last sync any more, read from the sealed
 * manifest at `path` alone (no table read): its write stamp now (`stampNow`,
 * writeStampOf) is not the one the last sync sealed. Undefined when the
 * stamps agree, either is unknown, or there is no sealed manifest (an
 * interrupted sync, or none yet: the caller's other checks decide then).
 */
export function standbyWrittenSinceSeal(path: string, stampNow: string | undefined): string | undefined {
  let header: ManifestHeader;
  try {
    const buf = Buffer.alloc(HEADER_BYTES);
    const fd = openSync(path, 'r');
    try {
      readSync(fd, buf, 0, HEADER_BYTES, 0);
    } finally {
      closeSync(fd);
    }
    header = parseHeader(buf);
  } catch {
    return undefined;
  }
  return header.state === 'valid' && writtenSince(header, stampNow) ? WRITTEN_SINCE : undefined;
}

export interface ManifestExpectation {
  readonly targetKey: string;
  readonly targetSize: number;
  readonly generation: number;
  /** The standby's write stamp now; undefined where none can be read (then only the other fields decide). */
  readonly writeStamp?: string;
}

/** Pending table writes are applied once they hold this many entries (bounded memory for any drive). */
const PENDING_ENTRIES = 128 * 1024;

export class Manifest {
  /** Hashes given to writeHashes and not yet in the file, in call order. */
  private pending: { first: number; hashes: BigUint64Array }[] = [];
  private pendingEntries = 0;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private header: ManifestHeader,
    /** The checksum of the table as this manifest has written it. */
    private sum: bigint,
    /** The whole table was checked against the header's checksum: its hashes may be consulted. */
    private readonly tableChecked: boolean,
    private readonly pendingLimit = PENDING_ENTRIES,
  ) {}

  get blockSize(): number {
    return this.header.blockSize;
  }

  /**
   * Opens the manifest. `usable` says whether it may stand in for reading the
   * standby; when not, `reason` says why (the caller falls back to compare
   * mode and says so). An unusable manifest is reset and rebuilt by the sync.
   *
   * `checkTable: false` (a copy that only writes the table: compare and
   * changed mode) skips reading the whole table for its checksum, so the
   * cost of the manifest follows the change; such a manifest's hashes cannot
   * be read (readHashes throws), and damage to its table is found by the
   * next open that checks it. `pendingEntries`: hashes held before they are
   * written (default 128 Ki entries, 1 MiB).
   */
  static async open(path: string, expect: ManifestExpectation, options: { checkTable?: boolean; pendingEntries?: number } = {}): Promise<{ manifest: Manifest; usable: boolean; reason?: string }> {
    const checkTable = options.checkTable ?? true;
    const fresh = (): ManifestHeader => ({
      format: FORMAT,
      state: 'dirty',
      targetKey: expect.targetKey,
      targetSize: expect.targetSize,
      blockSize: MANIFEST_BLOCK,
      generation: expect.generation,
      coverage: [],
      bodyChecksum: '0',
    });
    if (!existsSync(path)) {
      const handle = await open(path, 'w+', 0o600);
      return { manifest: new Manifest(path, handle, fresh(), 0n, true, options.pendingEntries), usable: false, reason: 'there is no manifest of the standby yet' };
    }
    const handle = await open(path, 'r+');
    let reason: string | undefined;
    let header: ManifestHeader | undefined;
    let sum = 0n;
    try {
      const buf = Buffer.alloc(HEADER_BYTES);
      await handle.read(buf, 0, HEADER_BYTES, 0);
      header = parseHeader(buf);
      sum = BigInt(header.bodyChecksum);
      if (sum < 0n || sum >= 1n << 64n) throw new RangeError('checksum out of range');
    } catch {
      reason = 'the manifest header is unreadable';
    }
    if (header && !reason) {
      reason = manifestStaleness(header, expect);
      if (!reason && checkTable && (await checksumTable(handle, header)) !== sum) reason = 'the manifest fails its checksum';
    }
    if (reason || !header) {
      await handle.truncate(0);
      return { manifest: new Manifest(path, handle, fresh(), 0n, true, options.pendingEntries), usable: false, reason };
    }
    return { manifest: new Manifest(path, handle, header, sum, checkTable, options.pendingEntries), usable: true };
  }

  /** The byte ranges of the standby whose hashes the table holds. */
  get coverage(): ByteRange[] {
    return normalizeRanges(this.header.coverage);
  }

  /** True when every byte of `ranges` has a trusted hash. */
  covers(ranges: readonly ByteRange[]): boolean {
    const cov = normalizeRanges(this.header.coverage);
    return normalizeRanges(ranges).every((r) => cov.some((c) => c.start <= r.start && c.start + c.length >= r.start + r.length));
  }

  /** From now on the standby may differ from the table: say so durably before the first write. */
  async markDirty(): Promise<void> {
    this.header.state = 'dirty';
    await this.writeHeader();
    await this.handle.datasync();
  }

  /** Stored hashes of `count` blocks from `firstBlock` (0: unknown), hashes given to writeHashes included. */
  async readHashes(firstBlock: number, count: number): Promise<BigUint64Array> {
    if (!this.tableChecked) throw new Error('the manifest was opened without checking its table: its hashes cannot be consulted');
    const out = new BigUint64Array(count);
    const { bytesRead } = await this.handle.read(new Uint8Array(out.buffer), 0, count * 8, HEADER_BYTES + firstBlock * 8);
    if (bytesRead < count * 8) out.fill(0n, Math.floor(bytesRead / 8));
    for (const p of this.pending) {
      const lo = Math.max(firstBlock, p.first);
      const hi = Math.min(firstBlock + count, p.first + p.hashes.length);
      for (let i = lo; i < hi; i++) out[i - firstBlock] = p.hashes[i - p.first]!;
    }
    return out;
  }

  /**
   * Records the hashes of `hashes.length` blocks from `firstBlock` (0:
   * unknown). They reach the file in batches, together with the checksum's
   * update, by seal() at the latest; until then readHashes sees them.
   */
  async writeHashes(firstBlock: number, hashes: BigUint64Array): Promise<void> {
    if (hashes.length === 0) return;
    this.pending.push({ first: firstBlock, hashes: hashes.slice() });
    this.pendingEntries += hashes.length;
    if (this.pendingEntries >= this.pendingLimit) await this.applyPending();
  }

  /**
   * Writes the pending hashes: runs close together are read as one window,
   * each entry's old contribution to the checksum taken out and the new one
   * added, and the window written back.
   */
  private applyPending(): Promise<void> {
    // One at a time: two interleaved read-modify-writes of one window would lose an update and break the sum.
    const run = this.applying.then(() => this.applyPendingNow());
    this.applying = run.catch(() => undefined);
    return run;
  }
  private applying: Promise<void> = Promise.resolve();

  private async applyPendingNow(): Promise<void> {
    const runs = this.pending.map((p, order) => ({ ...p, order })).sort((x, y) => x.first - y.first);
    this.pending = [];
    this.pendingEntries = 0;
    const blocks = this.blockCount;
    const page = new PageSum();
    for (let i = 0; i < runs.length; ) {
      // A window: whole pages, from the first run's page to the last page of the runs that fall in or next to it.
      const fromPage = Math.floor(runs[i]!.first / PAGE_ENTRIES);
      let endPage = Math.ceil((runs[i]!.first + runs[i]!.hashes.length) / PAGE_ENTRIES);
      let j = i + 1;
      while (j < runs.length && Math.floor(runs[j]!.first / PAGE_ENTRIES) <= endPage) {
        const runEnd = Math.ceil((runs[j]!.first + runs[j]!.hashes.length) / PAGE_ENTRIES);
        if (Math.max(endPage, runEnd) - fromPage > WINDOW_PAGES) break;
        endPage = Math.max(endPage, runEnd);
        j++;
      }
      const from = fromPage * PAGE_ENTRIES;
      const to = Math.min(blocks, endPage * PAGE_ENTRIES);
      const table = new BigUint64Array(to - from);
      const bytes = new Uint8Array(table.buffer);
      const { bytesRead } = await this.handle.read(bytes, 0, bytes.byteLength, HEADER_BYTES + from * 8);
      // Past the end of the file the table is unknown (zeros).
      if (bytesRead < bytes.byteLength) bytes.fill(0, bytesRead);
      for (let p = fromPage; p < endPage; p++) this.sum -= page.of(p, bytes, (p - fromPage) * PAGE_ENTRIES * 8, Math.min(to - from, (p - fromPage + 1) * PAGE_ENTRIES) * 8);
      // Later calls win where runs overlap: the window's runs go in in call order.
      for (const run of runs.slice(i, j).sort((x, y) => x.order - y.order)) {
        const n = Math.min(run.hashes.length, to - run.first);
        if (n <= 0) continue;
        table.set(n === run.hashes.length ? run.hashes : run.hashes.subarray(0, n), run.first - from);
      }
      for (let p = fromPage; p < endPage; p++) this.sum += page.of(p, bytes, (p - fromPage) * PAGE_ENTRIES * 8, Math.min(to - from, (p - fromPage + 1) * PAGE_ENTRIES) * 8);
      this.sum &= MASK64;
      await this.handle.write(bytes, 0, bytes.byteLength, HEADER_BYTES + from * 8);
      this.tableWrites++;
      i = j;
    }
  }

  private get blockCount(): number {
    return Math.ceil(this.header.targetSize / this.header.blockSize);
  }

  /**
   * Puts every hash given so far into the file and makes the table durable;
   * the header still says dirty. A copy starts it before recording its end,
   * so the two wait for the disk side by side; seal() waits for it.
   */
  flushTable(): Promise<void> {
    this.flushing ??= (async () => {
      await this.applyPending();
      const upTo = this.tableWrites;
      await this.handle.datasync();
      this.durableWrites = upTo;
    })().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }
  private flushing: Promise<void> | undefined;
  /** Table writes so far, and how many of them a datasync made durable. */
  private tableWrites = 0;
  private durableWrites = 0;

  /**
   * The sync finished: record what the table now covers and seal it with its
   * checksum. The header says valid only once the table is durable; the
   * header itself is left to the next sync's markDirty or the kernel's
   * writeback: lost in a power cut, it still says dirty, and the next sync
   * compares instead.
   */
  async seal(generation: number, synced: readonly ByteRange[], writeStamp?: string): Promise<void> {
    if (this.flushing) await this.flushing;
    // Hashes given, or written, after a flush had started are not durable yet.
    if (this.pending.length > 0 || this.durableWrites !== this.tableWrites) await this.flushTable();
    this.header.coverage = normalizeRanges([...this.header.coverage, ...synced]);
    this.header.generation = generation;
    this.header.writeStamp = writeStamp;
    this.header.bodyChecksum = this.sum.toString();
    this.header.state = 'valid';
    await this.writeHeader();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }

  private async writeHeader(): Promise<void> {
    const text = JSON.stringify(this.header);
    if (text.length >= HEADER_BYTES) {
      // Very fragmented coverage: keep the header bounded by forgetting coverage (safe: only costs a compare).
      this.header.coverage = [];
    }
    const buf = Buffer.alloc(HEADER_BYTES);
    buf.write(JSON.stringify(this.header), 'utf8');
    await this.handle.write(buf, 0, HEADER_BYTES, 0);
  }
}

const MASK64 = (1n << 64n) - 1n;
/** Entries per page of the checksum. */
const PAGE_ENTRIES = 512;
/** Pages read and written back as one piece at most. */
const WINDOW_PAGES = 256;

/** What one page of the table adds to the checksum. */
class PageSum {
  private readonly hasher = new BlockHasher();
  private readonly number = new BigUint64Array(1);
  private readonly numberBytes = new Uint8Array(this.number.buffer);
  private readonly zeros = Buffer.alloc(PAGE_ENTRIES * 8);

  /** Page `page`, whose bytes are `bytes[start, end)`. */
  of(page: number, bytes: Uint8Array, start: number, end: number): bigint {
    const body = bytes.subarray(start, end);
    if (Buffer.from(body.buffer, body.byteOffset, body.byteLength).equals(this.zeros.subarray(0, body.byteLength))) return 0n;
    this.number[0] = BigInt(page);
    return this.hasher.hash(this.numberBytes, body);
  }
}

/** The checksum of the whole table, read a window at a time (bounded memory for any table size). */
async function checksumTable(handle: FileHandle, header: ManifestHeader): Promise<bigint> {
  const blocks = Math.ceil(header.targetSize / header.blockSize);
  const page = new PageSum();
  const bytes = new Uint8Array(WINDOW_PAGES * PAGE_ENTRIES * 8);
  let sum = 0n;
  for (let first = 0; first < blocks; first += WINDOW_PAGES * PAGE_ENTRIES) {
    const count = Math.min(WINDOW_PAGES * PAGE_ENTRIES, blocks - first);
    const { bytesRead } = await handle.read(bytes, 0, count * 8, HEADER_BYTES + first * 8);
    if (bytesRead < count * 8) bytes.fill(0, bytesRead, count * 8);
    for (let at = 0; at < count; at += PAGE_ENTRIES) sum += page.of((first + at) / PAGE_ENTRIES, bytes, at * 8, Math.min(count, at + PAGE_ENTRIES) * 8);
  }
  return sum & MASK64;
}

/** Hashes of each manifest block of `data` (which starts at a block boundary). */
export function hashBlocks(hasher: BlockHasher, data: Buffer, length: number, blockSize: number): BigUint64Array {
  const count = Math.ceil(length / blockSize);
  const out = new BigUint64Array(count);
  for (let i = 0; i < count; i++) {
    const h = hasher.hash(data.subarray(i * blockSize, Math.min(length, (i + 1) * blockSize)));
    out[i] = h === 0n ? 1n : h; // 0 is reserved for "unknown"
  }
  return out;
}
