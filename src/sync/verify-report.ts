/**
 * The one-line outcome of a verify, for the CLI, alerts and logs. Counts are
 * exact (bytes and logical sectors): an operator decides on them.
 */
import type { VerifyReport } from './operations.ts';
import { formatExactBytes as exact } from '../disk-layout/index.ts';
import { formatBytes } from './ranges.ts';

export function verifyHeadline(r: Pick<VerifyReport, 'identical' | 'source' | 'target' | 'bytesCompared' | 'seconds' | 'differenceCount' | 'differingBytes' | 'unreadableSectors' | 'sectorSize'>): string {
  if (r.identical) return `identical: ${r.source} and ${r.target} (${formatBytes(r.bytesCompared)} compared in ${r.seconds.toFixed(1)} s)`;
  const unreadable = r.unreadableSectors > 0 ? `${exact(r.unreadableSectors * r.sectorSize, r.sectorSize)} of the source could not be read, so they were not compared` : '';
  if (r.differenceCount === 0) return `INCOMPLETE: ${unreadable}; everything else compared equal`;
  const differs = `DIFFERENT: ${r.differenceCount} range${r.differenceCount === 1 ? '' : 's'}, ${exact(r.differingBytes, r.sectorSize)} differ`;
  return unreadable ? `${differs}; also ${unreadable}` : differs;
}

/** A differing range in logical sectors: `LBA 2048–2055 (8 sectors)`. */
export function formatSectorRange(range: { start: number; length: number }, sector: number): string {
  const first = range.start / sector;
  const count = range.length / sector;
  return count === 1 ? `LBA ${first} (1 sector)` : `LBA ${first}–${first + count - 1} (${count} sectors)`;
}
