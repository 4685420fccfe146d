/** Pair records for the copy plan's table tests. */
import { pairIdFor, type PairRecord } from '../../../src/sync/pair-state.ts';

const MiB = 1024 * 1024;
const S = 512;

/** A pair A (active) → B (standby) after one completed sync, both 64 MiB. */
export function pair(over: Partial<PairRecord> = {}, sizes: { A?: number; B?: number; sectorB?: number } = {}): PairRecord {
  return {
    id: pairIdFor('A', 'B'),
    createdAt: '2026-01-01T00:00:00Z',
    activeKey: 'A',
    standbyKey: 'B',
    drives: {
      A: { key: 'A', sizeBytes: sizes.A ?? 64 * MiB, logicalSectorSize: S, lastPath: '/dev/a', generation: 2, lineage: [1, 2] },
      B: { key: 'B', sizeBytes: sizes.B ?? 64 * MiB, logicalSectorSize: sizes.sectorB ?? S, lastPath: '/dev/b', generation: 2, lineage: [1, 2] },
    },
    counter: 2,
    standbyState: 'consistent',
    ...over,
  };
}
