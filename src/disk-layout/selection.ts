/**
 * Partition-selective sync: which byte ranges to copy for chosen partitions,
 * and which partition a byte belongs to (for bad-sector reports). The
 * partition tables always travel whole, so the target's table matches the
 * source's even when only some partitions' contents are copied.
 */
import { BadInputError } from '../errors.ts';
import type { DiskLayout, Partition } from './layout.ts';

export interface CopyRange {
  /** Byte offset, a multiple of the sector size. */
  start: number;
  /** Bytes, a multiple of the sector size. */
  length: number;
  /** What the range holds, for progress and reports. */
  what: string;
}

/**
 * GRUB keeps its core image in the gap between an MBR and the first
 * partition; copying up to 1 MiB of that gap keeps a BIOS-booted copy bootable
 * without dragging along a huge unpartitioned start.
 */
const MBR_BOOT_GAP_MAX = 1024 * 1024;

function describe(p: Partition): string {
  const label = p.name ? ` "${p.name}"` : '';
  return `partition ${p.number} (${p.typeName}${label})`;
}

export function listNumbers(layout: DiskLayout): string {
  if (layout.partitions.length === 0) return 'the drive has no partitions';
  return `partitions on the drive: ${layout.partitions.map((p) => p.number).join(', ')}`;
}

function tableRanges(layout: DiskLayout): CopyRange[] {
  const s = layout.sectorSize;
  const ranges: CopyRange[] = [];
  if (layout.scheme === 'gpt') {
    const g = layout.gpt!;
    const first = Math.max(g.firstUsableLba, 2);
    ranges.push({ start: 0, length: first * s, what: 'protective MBR, primary GPT header and table' });
    const backupStart = Math.min(g.backupEntriesLba, g.alternateLba);
    if (g.alternateLba > 1 && backupStart > 1) {
      ranges.push({ start: backupStart * s, length: (g.alternateLba - backupStart + 1) * s, what: 'backup GPT table and header' });
    }
  } else if (layout.scheme === 'mbr') {
    const starts = [...layout.partitions.map((p) => p.firstLba), ...(layout.mbr?.ebrLbas ?? [])].filter((l) => l > 0);
    const firstStart = starts.length ? Math.min(...starts) : 1;
    const gapSectors = Math.max(1, Math.min(firstStart, Math.floor(MBR_BOOT_GAP_MAX / s)));
    ranges.push({ start: 0, length: gapSectors * s, what: gapSectors > 1 ? 'MBR and boot area before the first partition' : 'MBR' });
    for (const lba of layout.mbr?.ebrLbas ?? []) ranges.push({ start: lba * s, length: s, what: `EBR at LBA ${lba}` });
  }
  return ranges;
}

/**
 * Byte ranges to copy for a partition-selective sync, sorted and with
 * overlaps merged. Throws BadInputError for unknown numbers, a drive without a
 * partition table, or a range that runs past `deviceSize`.
 */
export function regionsToCopy(layout: DiskLayout, partitionNumbers: number[], deviceSize: number): { ranges: CopyRange[] } {
  if (layout.scheme === 'none') throw new BadInputError('the drive has no partition table, so no partition can be chosen', { hint: 'sync the whole drive instead' });
  if (!Array.isArray(partitionNumbers) || partitionNumbers.length === 0) throw new BadInputError('no partition chosen', { hint: listNumbers(layout) });
  if (layout.scheme === 'gpt' && !layout.gpt?.usedCopy) throw new BadInputError('neither GPT copy on the drive is valid, so its partitions cannot be trusted', { hint: 'repair the partition table or sync the whole drive' });
  const chosen = new Map<number, Partition>();
  for (const n of partitionNumbers) {
    const p = Number.isInteger(n) ? layout.partitions.find((q) => q.number === n) : undefined;
    if (!p) throw new BadInputError(`there is no partition ${String(n)} on the drive`, { hint: listNumbers(layout) });
    chosen.set(n, p);
  }
  const ranges = tableRanges(layout);
  for (const p of chosen.values()) ranges.push({ start: p.startByte, length: p.sizeBytes, what: describe(p) });
  for (const r of ranges) {
    if (r.length <= 0) throw new BadInputError(`${r.what} is empty or malformed (${r.length} bytes at ${r.start})`);
    if (r.start + r.length > deviceSize) {
      throw new BadInputError(`${r.what} ends at byte ${r.start + r.length}, past the end of the drive (${deviceSize} bytes)`, { hint: 'the partition table does not fit this drive; check it with `dpsr inspect`' });
    }
  }
  ranges.sort((a, b) => a.start - b.start || b.length - a.length);
  const merged: CopyRange[] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r.start < last.start + last.length) {
      const end = Math.max(last.start + last.length, r.start + r.length);
      last.length = end - last.start;
      last.what = `${last.what} + ${r.what}`;
    } else merged.push({ ...r });
  }
  return { ranges: merged };
}

/**
 * The partition holding a byte, the innermost one when they nest (a logical
 * partition inside its extended one), or undefined for unpartitioned space.
 */
export function partitionAt(layout: DiskLayout, byteOffset: number): Partition | undefined {
  let best: Partition | undefined;
  for (const p of layout.partitions) {
    if (byteOffset >= p.startByte && byteOffset < p.startByte + p.sizeBytes) {
      if (!best || p.sizeBytes < best.sizeBytes) best = p;
    }
  }
  return best;
}

/**
 * The partition-table structure a byte outside every partition belongs to, for
 * reports: "the MBR", "the primary GPT", "the backup GPT", "an extended boot
 * record"; undefined for a gap that holds none.
 */
export function tableAreaAt(layout: DiskLayout, byteOffset: number): string | undefined {
  const s = layout.sectorSize;
  const lba = Math.floor(byteOffset / s);
  const g = layout.gpt;
  if (lba === 0) return layout.scheme === 'gpt' ? 'the protective MBR' : 'the MBR';
  if (g) {
    const ts = Math.ceil((g.entryCount * g.entrySize) / s);
    if (lba === 1 || (lba >= g.primaryEntriesLba && lba < g.primaryEntriesLba + ts)) return 'the primary GPT';
    const backupHeader = g.backupLba ?? g.alternateLba;
    if (lba === backupHeader || (lba >= g.backupEntriesLba && lba < g.backupEntriesLba + ts)) return 'the backup GPT';
  }
  if (layout.mbr?.ebrLbas.includes(lba)) return 'an extended boot record';
  return undefined;
}
