/**
 * Where two buffers differ, in runs of whole sub-blocks. The whole chunk is
 * compared first (Buffer.equals runs at memory speed), then 64 KiB pieces,
 * then the sub-blocks of the pieces that differ.
 */
import { appendRange, type ByteRange } from './ranges.ts';

const COARSE = 64 * 1024;

/** Runs (offsets within the buffers) of `subBlock`-sized pieces that differ, merged when adjacent. */
export function differingRuns(a: Buffer, b: Buffer, length: number, subBlock: number): ByteRange[] {
  const runs: { start: number; length: number }[] = [];
  // compare() with ranges: no view object per piece (a changed-block sync compares thousands of small ones).
  const same = (from: number, to: number) => b.compare(a, from, to, from, to) === 0;
  if (same(0, length)) return runs;
  for (let coarse = 0; coarse < length; coarse += COARSE) {
    const coarseEnd = Math.min(length, coarse + COARSE);
    if (same(coarse, coarseEnd)) continue;
    for (let off = coarse; off < coarseEnd; off += subBlock) {
      const end = Math.min(coarseEnd, off + subBlock);
      if (!same(off, end)) appendRange(runs, off, end - off);
    }
  }
  return runs;
}
