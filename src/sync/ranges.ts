/** Byte ranges of a drive and the chunks the engine walks them in. */

export interface ByteRange {
  readonly start: number;
  readonly length: number;
}

export interface Chunk {
  /** Position of the chunk in the walk: the sync map's bit number. */
  readonly index: number;
  readonly start: number;
  readonly length: number;
}

/** Sorts, merges overlapping or touching ranges, drops empty ones. */
export function normalizeRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = ranges.filter((r) => r.length > 0).map((r) => ({ start: r.start, length: r.length })).sort((a, b) => a.start - b.start);
  const out: { start: number; length: number }[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.start + last.length) {
      last.length = Math.max(last.length, r.start + r.length - last.start);
    } else out.push({ ...r });
  }
  return out;
}

export function totalBytes(ranges: readonly ByteRange[]): number {
  return ranges.reduce((n, r) => n + r.length, 0);
}

/** Cuts ranges into chunks of at most `chunkSize` bytes, aligned to `chunkSize` on the drive. */
export function chunksOf(ranges: readonly ByteRange[], chunkSize: number): Chunk[] {
  const out: Chunk[] = [];
  for (const r of normalizeRanges(ranges)) {
    let pos = r.start;
    const end = r.start + r.length;
    while (pos < end) {
      const next = Math.min(end, (Math.floor(pos / chunkSize) + 1) * chunkSize);
      out.push({ index: out.length, start: pos, length: next - pos });
      pos = next;
    }
  }
  return out;
}

/** Byte counts for people: one formatter for the whole project, the one `dpsr inspect` uses. */
export { formatSize as formatBytes } from '../disk-layout/index.ts';
