/**
 * The standby's manifest: an xxh3 hash per block, kept in the state
 * directory, so a routine sync reads only the source and touches the standby
 * just where the hashes differ. It is trusted only while it is known to
 * describe the standby: same drive, size and generation, a whole checksum,
 * and not left dirty by an interrupted sync.
 *
 * File: a 4 KiB JSON header, then one u64 per block. Hash 0 means unknown.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { BlockHasher } from './hash.ts';
import { normalizeRanges, type ByteRange } from './ranges.ts';

const HEADER_BYTES = 4096;
export const MANIFEST_BLOCK = 32 * 1024;

export interface ManifestHeader {
  format: 'dpsr-manifest-1';
  state: 'valid' | 'dirty';
  targetKey: string;
  targetSize: number;
  blockSize: number;
  generation: number;
  coverage: ByteRange[];
  /** xxh3 of the hash table, as a decimal string. */
  bodyChecksum: string;
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
export function manifestStaleness(header: Pick<ManifestHeader, 'format' | 'state' | 'targetKey' | 'targetSize' | 'generation'>, expect: ManifestExpectation): string | undefined {
  if (header.format !== 'dpsr-manifest-1') return 'the manifest has an unknown format';
  if (header.state !== 'valid') return 'the last sync was interrupted, so the standby may differ from its manifest';
  if (header.targetKey !== expect.targetKey) return 'the standby is another drive than the manifest describes';
  if (header.targetSize !== expect.targetSize) return 'the standby changed size';
  if (header.generation !== expect.generation) return `the manifest is stale: it describes generation ${header.generation} of the standby, which holds generation ${expect.generation} now`;
  return undefined;
}

export interface ManifestExpectation {
  readonly targetKey: string;
  readonly targetSize: number;
  readonly generation: number;
}

export class Manifest {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private header: ManifestHeader,
  ) {}

  get blockSize(): number {
    return this.header.blockSize;
  }

  /**
   * Opens the manifest. `usable` says whether it may stand in for reading the
   * standby; when not, `reason` says why (the caller falls back to compare
   * mode and says so). An unusable manifest is reset and rebuilt by the sync.
   */
  static async open(path: string, expect: ManifestExpectation): Promise<{ manifest: Manifest; usable: boolean; reason?: string }> {
    const fresh = (): ManifestHeader => ({
      format: 'dpsr-manifest-1',
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
      return { manifest: new Manifest(path, handle, fresh()), usable: false, reason: 'there is no manifest of the standby yet' };
    }
    const handle = await open(path, 'r+');
    let reason: string | undefined;
    let header: ManifestHeader | undefined;
    try {
      const buf = Buffer.alloc(HEADER_BYTES);
      await handle.read(buf, 0, HEADER_BYTES, 0);
      header = JSON.parse(buf.toString('utf8').replace(/\0+$/, '').trim()) as ManifestHeader;
    } catch {
      reason = 'the manifest header is unreadable';
    }
    if (header && !reason) {
      reason = manifestStaleness(header, expect);
      if (!reason && (await checksumBody(handle, header)) !== header.bodyChecksum) reason = 'the manifest fails its checksum';
    }
    if (reason || !header) {
      await handle.truncate(0);
      return { manifest: new Manifest(path, handle, fresh()), usable: false, reason };
    }
    return { manifest: new Manifest(path, handle, header), usable: true };
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

  async readHashes(firstBlock: number, count: number): Promise<BigUint64Array> {
    const out = new BigUint64Array(count);
    const { bytesRead } = await this.handle.read(new Uint8Array(out.buffer), 0, count * 8, HEADER_BYTES + firstBlock * 8);
    if (bytesRead < count * 8) out.fill(0n, Math.floor(bytesRead / 8));
    return out;
  }

  async writeHashes(firstBlock: number, hashes: BigUint64Array): Promise<void> {
    await this.handle.write(new Uint8Array(hashes.buffer, hashes.byteOffset, hashes.byteLength), 0, hashes.byteLength, HEADER_BYTES + firstBlock * 8);
  }

  /** The sync finished: record what the table now covers and seal it with a checksum. */
  async seal(generation: number, synced: readonly ByteRange[]): Promise<void> {
    this.header.coverage = normalizeRanges([...this.header.coverage, ...synced]);
    this.header.generation = generation;
    this.header.bodyChecksum = await checksumBody(this.handle, this.header);
    this.header.state = 'valid';
    await this.handle.datasync();
    await this.writeHeader();
    await this.handle.datasync();
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

async function checksumBody(handle: FileHandle, header: ManifestHeader): Promise<string> {
  const blocks = Math.ceil(header.targetSize / header.blockSize);
  const hasher = new BlockHasher();
  const state = hasher;
  const buf = Buffer.alloc(1 << 20);
  // Hash piece by piece, then hash the list of piece hashes: bounded memory for any table size.
  const pieceHashes: bigint[] = [];
  for (let off = 0; off < blocks * 8; off += buf.byteLength) {
    const len = Math.min(buf.byteLength, blocks * 8 - off);
    const { bytesRead } = await handle.read(buf, 0, len, HEADER_BYTES + off);
    if (bytesRead < len) buf.fill(0, bytesRead, len);
    pieceHashes.push(state.hash(buf.subarray(0, len)));
  }
  const all = new BigUint64Array(pieceHashes);
  return state.hash(new Uint8Array(all.buffer)).toString();
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
