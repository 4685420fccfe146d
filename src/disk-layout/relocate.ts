/**
 * After a whole-drive copy onto a larger drive, the GPT's backup header and
 * table sit where the source ended, in the middle of the target. Firmware and
 * tools then call the disk damaged and nothing can use the extra space. This
 * moves the backup to the target's end, fixes the primary header to point at
 * it, and zeroes the stale header so nothing finds two backups.
 */
import type { BlockDevice } from '../sata-bridge/index.ts';
import { BadInputError, DeviceError, RefusedError } from '../errors.ts';
import { hasGptSignature, parseGptHeader, patchHeader, readGpt, tableSectors, type GptHeader } from './gpt.ts';
import { GPT_PROTECTIVE_TYPE, parseMbrSector } from './mbr.ts';

export interface RelocationResult {
  /** Something was written. False for MBR disks, equal sizes, or an already relocated GPT. */
  readonly changed: boolean;
  /** What was done or why nothing was, for logs and the CLI. */
  readonly summary: string;
  readonly oldBackupLba?: number;
  readonly newBackupLba?: number;
  readonly lastUsableLba?: number;
  /** LBAs where a stale backup header was zeroed. */
  readonly zeroedLbas: number[];
  /** The protective MBR entry was grown to cover the larger disk. */
  readonly protectiveMbrUpdated: boolean;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/**
 * Idempotent: a second run finds everything in place and writes nothing. The
 * steps run in an order that leaves a valid GPT after each one, so a power
 * loss in between is harmless and a rerun finishes the job.
 */
export async function relocateGptBackup(target: BlockDevice, sourceSizeBytes: number): Promise<RelocationResult> {
  const sector = target.logicalSectorSize;
  if (!Number.isSafeInteger(sourceSizeBytes) || sourceSizeBytes <= 0 || sourceSizeBytes % sector !== 0) {
    throw new BadInputError(`source size ${sourceSizeBytes} is not a positive whole number of ${sector}-byte sectors`);
  }
  if (sourceSizeBytes > target.size) {
    throw new BadInputError(`the source (${sourceSizeBytes} bytes) is larger than the target ${target.path} (${target.size} bytes)`, { hint: 'a GPT can only be moved to the end of a drive at least as large as the source' });
  }
  const none = (summary: string): RelocationResult => ({ changed: false, summary, zeroedLbas: [], protectiveMbrUpdated: false });
  const total = Math.floor(target.size / sector);
  if (total < 3) return none('the target is too small to hold a GPT');

  const lba0 = Buffer.alloc(sector);
  await target.read(lba0, 0, sector);
  const mbr = parseMbrSector(lba0);
  const protective = mbr.hasSignature && mbr.entries.some((e) => e.type === GPT_PROTECTIVE_TYPE);
  const gpt = await readGpt(target);
  const isGpt = protective || gpt.primary.signature;
  if (!isGpt) return none('not a GPT disk: nothing to relocate');
  if (sourceSizeBytes === target.size) return none('source and target are the same size: the backup GPT is already at the end');

  const primary = gpt.primary;
  if (!primary.valid || !primary.header || !primary.headerSector || !primary.table) {
    throw new RefusedError(`the primary GPT on ${target.path} is damaged (${primary.problems.join('; ')}); refusing to build a backup from it`, {
      hint: 'repair the source drive\'s partition table (gdisk, sgdisk -e) and copy again',
    });
  }
  const h: GptHeader = primary.header;
  const newLast = total - 1;
  const ts = tableSectors(h.entryCount, h.entrySize, sector);
  const newEntriesLba = newLast - ts;
  const newLastUsable = newEntriesLba - 1;
  if (newLastUsable < h.lastUsableLba) {
    throw new RefusedError(`moving the backup GPT to the end of ${target.path} would cut the usable area below LBA ${h.lastUsableLba}`);
  }
  const oldBackupLbas = [...new Set([h.alternateLba, sourceSizeBytes / sector - 1])].filter((l) => l > 1 && l < newLast);

  const needsWrite = (): void => {
    if (!target.writable) throw new DeviceError(`${target.path} was opened read-only; the GPT backup cannot be relocated`);
  };
  let wrote = false;

  // 1. The backup table and header at the end, unless an identical one is there.
  const backupSector = Buffer.from(primary.headerSector);
  patchHeader(backupSector, { myLba: newLast, alternateLba: 1, lastUsableLba: newLastUsable, entriesLba: newEntriesLba });
  const table = Buffer.alloc(ts * sector);
  table.set(primary.table);
  const atEnd = Buffer.alloc(sector);
  await target.read(atEnd, newLast * sector, sector);
  const atEndTable = Buffer.alloc(ts * sector);
  if (ts > 0) await target.read(atEndTable, newEntriesLba * sector, ts * sector);
  if (!sameBytes(atEnd, backupSector) || !sameBytes(atEndTable, table)) {
    needsWrite();
    await target.write(table, newEntriesLba * sector);
    await target.write(backupSector, newLast * sector);
    await target.flush();
    wrote = true;
  }

  // 2. The primary header: AlternateLBA and LastUsableLBA; its table and table CRC stay as they are.
  const primarySector = Buffer.from(primary.headerSector);
  patchHeader(primarySector, { myLba: 1, alternateLba: newLast, lastUsableLba: newLastUsable, entriesLba: h.entriesLba });
  if (!sameBytes(primarySector, primary.headerSector)) {
    needsWrite();
    await target.write(primarySector, sector);
    await target.flush();
    wrote = true;
  }

  // 3. A pure protective MBR covers the whole disk (capped at 2^32-1 sectors), as sgdisk -e leaves it.
  let protectiveMbrUpdated = false;
  const only = mbr.entries.length === 1 ? mbr.entries[0] : undefined;
  if (only && only.type === GPT_PROTECTIVE_TYPE && only.firstLba === 1) {
    const want = Math.min(newLast, 0xffffffff);
    if (only.sectors !== want) {
      needsWrite();
      const o = 446 + (only.index - 1) * 16 + 12;
      new DataView(lba0.buffer, lba0.byteOffset, lba0.byteLength).setUint32(o, want, true);
      await target.write(lba0, 0, sector);
      protectiveMbrUpdated = true;
      wrote = true;
    }
  }

  // 4. Stale backup headers where the source ended: only sectors that really hold a GPT header are zeroed.
  const zeroedLbas: number[] = [];
  const probe = Buffer.alloc(sector);
  for (const lba of oldBackupLbas) {
    await target.read(probe, lba * sector, sector);
    if (!hasGptSignature(probe)) continue;
    const parsed = parseGptHeader(probe, lba, 'backup', total, sector);
    const claimsHere = parsed.header?.myLba === lba || new DataView(probe.buffer, probe.byteOffset).getBigUint64(24, true) === BigInt(lba);
    if (!claimsHere) continue;
    needsWrite();
    await target.write(Buffer.alloc(sector), lba * sector);
    zeroedLbas.push(lba);
    wrote = true;
  }
  if (wrote) await target.flush();

  const check = await readGpt(target);
  if (!check.primary.valid || !check.backup?.valid || check.backup.lba !== newLast) {
    throw new DeviceError(`the relocated GPT on ${target.path} does not read back as valid: ${check.problems.join('; ')}`);
  }
  return {
    changed: wrote,
    summary: wrote
      ? `moved the backup GPT from LBA ${oldBackupLbas.join(', ') || h.alternateLba} to LBA ${newLast} (last usable LBA now ${newLastUsable})`
      : 'the backup GPT is already at the end of the target',
    oldBackupLba: h.alternateLba,
    newBackupLba: newLast,
    lastUsableLba: newLastUsable,
    zeroedLbas,
    protectiveMbrUpdated,
  };
}
