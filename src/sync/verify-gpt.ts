/**
 * Verify on a standby whose GPT was relocated: the copy rewrote a few fields
 * of LBA 0 and LBA 1, zeroed the source's old backup header and wrote a new
 * backup at the target's end. Those sectors are not skipped: each is compared
 * with exactly what the relocation leaves there, computed from the source's
 * primary GPT, so a standby without boot code, without a primary header or
 * with a wrong backup is reported different. A source whose primary GPT is
 * damaged is relocated from its valid backup, and checked the same way.
 */
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';
import { isStaleBackupHeader, readGptForRelocation, relocatedGpt, staleBackupCandidates } from '../disk-layout/index.ts';
import type { ByteRange } from './ranges.ts';

/** One target sector and the bytes it must hold. */
export interface SectorExpectation {
  readonly lba: number;
  readonly expected: Buffer;
  /** For the report: "LBA 1 (primary GPT header)". */
  readonly what: string;
}

export interface RelocatedExpectations {
  /** Sectors compared one by one instead of with the source's bytes. */
  readonly sectors: SectorExpectation[];
  /** The same sectors as byte ranges, to leave out of the straight comparison. */
  readonly holes: ByteRange[];
}

/**
 * What a larger target must hold where the relocation wrote, or undefined
 * when no relocation applies (not GPT, not larger, or a source whose primary
 * GPT cannot be relocated: then everything is compared straight).
 */
export async function relocatedExpectations(source: BlockDevice, targetSize: number): Promise<RelocatedExpectations | undefined> {
  if (targetSize <= source.size) return undefined;
  const s = source.logicalSectorSize;
  const parts = await readGptForRelocation(source);
  if (!parts) return undefined;
  let plan;
  try {
    plan = relocatedGpt(parts, targetSize, s);
  } catch {
    return undefined;
  }
  // In the order the relocation writes, so a later write wins where two meet (a target only a few sectors larger).
  const byLba = new Map<number, SectorExpectation>();
  const put = (lba: number, expected: Buffer, what: string) => byLba.set(lba, { lba, expected, what });
  const tableSectors = plan.backupTable.byteLength / s;
  for (let i = 0; i < tableSectors; i++) put(plan.backupEntriesLba + i, plan.backupTable.subarray(i * s, (i + 1) * s), `LBA ${plan.backupEntriesLba + i} (backup GPT table)`);
  put(plan.backupLba, plan.backupHeader, `LBA ${plan.backupLba} (backup GPT header)`);
  // A damaged primary header is left as the source has it, so LBA 1 is compared straight then; a sound one over a damaged table points at the new backup.
  if (parts.from === 'primary') put(1, plan.primaryHeader, 'LBA 1 (primary GPT header)');
  else if (plan.damagedTablePrimaryHeader) put(1, plan.damagedTablePrimaryHeader, 'LBA 1 (primary GPT header, over its damaged table)');
  // An unreadable LBA 0 kept the standby's old bytes there: it is compared straight, and reported unreadable.
  if (parts.lba0Readable) put(0, plan.lba0, 'LBA 0 (protective MBR and boot code)');
  const total = Math.floor(targetSize / s);
  const stale = new Set([...(parts.from === 'backup' ? [parts.fromLba] : []), ...staleBackupCandidates(parts.header, source.size, targetSize, s)]);
  for (const lba of stale) {
    let current = byLba.get(lba)?.expected;
    if (!current && lba * s < source.size) {
      current = allocAligned(s);
      try {
        await source.read(current, lba * s, s);
      } catch (e) {
        // Unreadable on the source: the copy kept the standby's old bytes there, which nothing predicts. Compared
        // straight, the sector is reported unreadable, as every other one the source cannot give.
        if ((e as { fault?: string }).fault !== 'media') throw e;
        continue;
      }
    }
    if (current && isStaleBackupHeader(current, lba, total, s)) put(lba, Buffer.alloc(s), `LBA ${lba} (the source's backup GPT header, zeroed by the relocation)`);
  }
  const sectors = [...byLba.values()].sort((a, b) => a.lba - b.lba);
  return { sectors, holes: sectors.map((e) => ({ start: e.lba * s, length: s })) };
}

/** Reads each expected sector of the target; returns those that differ. */
export async function checkExpectations(target: BlockDevice, sectors: readonly SectorExpectation[]): Promise<SectorExpectation[]> {
  const s = target.logicalSectorSize;
  const buf = allocAligned(s);
  const differing: SectorExpectation[] = [];
  for (const e of sectors) {
    await target.read(buf, e.lba * s, s);
    if (!buf.equals(e.expected)) differing.push(e);
  }
  return differing;
}
