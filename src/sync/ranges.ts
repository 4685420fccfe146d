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

/**
 * Removes the parts of `ranges` that overlap any of `holes` (both relative to
 * the same origin, in bytes). Keeps the order of `ranges`; neither input needs
 * to be sorted or merged.
 */
export function subtractRanges(ranges: readonly ByteRange[], holes: readonly ByteRange[]): ByteRange[] {
  if (holes.length === 0) return [...ranges];
  const out: ByteRange[] = [];
  for (const r of ranges) {
    let pieces: ByteRange[] = [r];
    for (const h of holes) {
      const hEnd = h.start + h.length;
      pieces = pieces.flatMap((p) => {
        const pEnd = p.start + p.length;
        if (hEnd <= p.start || h.start >= pEnd) return [p];
        const parts: ByteRange[] = [];
        if (h.start > p.start) parts.push({ start: p.start, length: h.start - p.start });
        if (hEnd < pEnd) parts.push({ start: hEnd, length: pEnd - hEnd });
        return parts;
      });
    }
    out.push(...pieces);
  }
  return out;
}

/**
 * The parts of `ranges` that lie inside `within`, sorted and merged. Linear
 * in the inputs after sorting: a changed-block set has thousands of ranges.
 */
export function intersectRanges(ranges: readonly ByteRange[], within: readonly ByteRange[]): ByteRange[] {
  const a = normalizeRanges(ranges);
  const b = normalizeRanges(within);
  const out: { start: number; length: number }[] = [];
  let j = 0;
  for (const r of a) {
    const rEnd = r.start + r.length;
    while (j < b.length && b[j]!.start + b[j]!.length <= r.start) j++;
    for (let k = j; k < b.length && b[k]!.start < rEnd; k++) {
      const start = Math.max(r.start, b[k]!.start);
      const end = Math.min(rEnd, b[k]!.start + b[k]!.length);
      if (end > start) appendRange(out, start, end - start);
    }
  }
  return out;
}

/** Widens every range to whole units of `unit` bytes (sectors), merged. */
export function alignRangesOutward(ranges: readonly ByteRange[], unit: number): ByteRange[] {
  return normalizeRanges(ranges.map((r) => {
    const start = Math.floor(r.start / unit) * unit;
    return { start, length: Math.ceil((r.start + r.length) / unit) * unit - start };
  }));
}

/**
 * Appends `[start, start + length)` to `runs`, which are built in ascending
 * order: a range that starts where the last one ends extends it. Returns true
 * when a new range was added (false when the last one grew).
 */
export function appendRange(runs: { start: number; length: number }[], start: number, length: number): boolean {
  const last = runs[runs.length - 1];
  if (last && last.start + last.length === start) {
    last.length += length;
    return false;
  }
  runs.push({ start, length });
  return true;
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
