/**
 * Where two buffers differ, in runs of whole sub-blocks. The whole chunk is
 * compared first (Buffer.equals runs at memory speed), then 64 KiB pieces,
 * then the sub-blocks of the pieces that differ.
 */
import type { ByteRange } from './ranges.ts';

const COARSE = 64 * 1024;

/** Runs (offsets within the buffers) of `subBlock`-sized pieces that differ, merged when adjacent. */
export function differingRuns(a: Buffer, b: Buffer, length: number, subBlock: number): ByteRange[] {
  const runs: { start: number; length: number }[] = [];
  if (a.subarray(0, length).equals(b.subarray(0, length))) return runs;
  const push = (start: number, len: number) => {
    const last = runs[runs.length - 1];
    if (last && last.start + last.length === start) last.length += len;
    else runs.push({ start, length: len });
  };
  for (let coarse = 0; coarse < length; coarse += COARSE) {
    const coarseEnd = Math.min(length, coarse + COARSE);
    if (a.subarray(coarse, coarseEnd).equals(b.subarray(coarse, coarseEnd))) continue;
    for (let off = coarse; off < coarseEnd; off += subBlock) {
      const end = Math.min(coarseEnd, off + subBlock);
      if (!a.subarray(off, end).equals(b.subarray(off, end))) push(off, end - off);
    }
  }
  return runs;
}

/** Removes the parts of `runs` that overlap any of `holes` (both relative to the same origin). */
export function subtractRanges(runs: readonly ByteRange[], holes: readonly ByteRange[]): ByteRange[] {
  if (holes.length === 0) return [...runs];
  const out: ByteRange[] = [];
  for (const run of runs) {
    let pieces: ByteRange[] = [run];
    for (const h of holes) {
      const next: ByteRange[] = [];
      for (const p of pieces) {
        const pEnd = p.start + p.length;
        const hEnd = h.start + h.length;
        if (hEnd <= p.start || h.start >= pEnd) {
          next.push(p);
          continue;
        }
        if (h.start > p.start) next.push({ start: p.start, length: h.start - p.start });
        if (hEnd < pEnd) next.push({ start: hEnd, length: pEnd - hEnd });
      }
      pieces = next;
    }
    out.push(...pieces);
  }
  return out;
}
