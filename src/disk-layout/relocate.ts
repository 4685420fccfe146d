/**
 * After a whole-drive copy onto a larger drive, the GPT's backup header and
 * table sit where the source ended, in the middle of the target. Firmware and
 * tools then call the disk damaged and nothing can use the extra space. This
 * moves the backup to the target's end, fixes the primary header to point at
 * it, and zeroes the stale header so nothing finds two backups.
 * A restore from the larger standby runs the same fix-up the other way: the
 * backup goes back to the (smaller) active drive's end.
 */
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';
import { BadInputError, DeviceError, RefusedError } from '../errors.ts';
import { hasGptSignature, parseEntries, parseGptHeader, patchHeader, readGpt, readGptCopy, tableSectors, type GptCopy, type GptHeader } from './gpt.ts';
import { GPT_PROTECTIVE_TYPE, parseMbrSector } from './mbr.ts';
import type { DiskLayout } from './layout.ts';
import { formatExactBytes } from './format.ts';

/**
 * The GPT fix-up a whole or partition copy onto a larger drive needs, decided
 * from the source's layout before anything is written. LBAs are the target's.
 */
export interface GptRelocationPlan {
  readonly type: 'gpt-backup-relocation';
  /** The source's GPT copy the new backup is built from: its primary, or its backup when the primary is damaged. */
  readonly from: 'primary' | 'backup';
  /** Where that copy's header sits on the source, and so on the copy (1, or the source's backup LBA). */
  readonly fromLba: number;
  readonly sourceSizeBytes: number;
  readonly newBackupLba: number;
  readonly newEntriesLba: number;
  readonly newLastUsableLba: number;
}

export interface RelocationRefusal {
  readonly reason: string;
  readonly hint: string;
}

/**
 * Decides, from the source's layout alone, whether a copy onto a drive of
 * `targetSizeBytes` needs its backup GPT moved and whether that is possible.
 * Pure: no I/O. Returns no plan for MBR disks, no table, or equal sizes; a
 * refusal (about the source) when the source's GPT cannot be the basis of a
 * backup at the target's end: both copies damaged, written for another
 * sector size, or describing a disk larger than the source.
 */
export function planGptRelocation(layout: DiskLayout, targetSizeBytes: number): { plan?: GptRelocationPlan; refusal?: RelocationRefusal } {
  const sector = layout.sectorSize;
  const sourceSize = layout.diskSizeBytes;
  if (targetSizeBytes === sourceSize) return {};
  if (targetSizeBytes < sourceSize) return planGptShrink(layout, targetSizeBytes);
  const exactSource = formatExactBytes(sourceSize, sector);
  if (layout.foreignSectorSize) {
    return {
      refusal: {
        reason: `the source's GPT was written for ${layout.foreignSectorSize}-byte sectors, but the source now reports ${sector}-byte sectors (a USB bridge that translates sector sizes): its backup GPT cannot be moved to the end of a larger standby through this view`,
        hint: `connect the source so that it reports ${layout.foreignSectorSize}-byte sectors, as when it was partitioned, or copy onto a standby of exactly its size (${exactSource}), which needs no table rewritten; do not let a partitioning tool "repair" the source through this bridge`,
      },
    };
  }
  if (layout.scheme !== 'gpt' || !layout.gpt) return {};
  const g = layout.gpt;
  if (!g.usedCopy) {
    return {
      refusal: {
        reason: `neither GPT copy on the source is valid (${g.problems.join('; ') || 'no valid header'}), so no backup GPT can be built at the end of the larger standby`,
        hint: `check the source with \`dpsr inspect\`; a copy onto a standby of exactly its size (${exactSource}) needs no table rewritten`,
      },
    };
  }
  const total = Math.floor(targetSizeBytes / sector);
  const sourceTotal = Math.floor(sourceSize / sector);
  const fromLba = g.usedCopy === 'primary' ? 1 : g.backupLba;
  if (fromLba === undefined || fromLba >= sourceTotal) return { refusal: { reason: 'the source\'s valid GPT copy lies outside the source', hint: 'check the source with `dpsr inspect`' } };
  const ts = tableSectors(g.entryCount, g.entrySize, sector);
  const newBackupLba = total - 1;
  const newEntriesLba = newBackupLba - ts;
  const newLastUsableLba = newEntriesLba - 1;
  if (g.lastUsableLba >= sourceTotal || newLastUsableLba < g.lastUsableLba) {
    return {
      refusal: {
        reason: `the source's GPT has its usable area end at LBA ${g.lastUsableLba}, which does not fit a backup GPT at the end of the standby (last LBA ${newBackupLba})`,
        hint: 'check the source with `dpsr inspect`',
      },
    };
  }
  return { plan: { type: 'gpt-backup-relocation', from: g.usedCopy, fromLba, sourceSizeBytes: sourceSize, newBackupLba, newEntriesLba, newLastUsableLba } };
}

/** The last LBA a partition may end at on a disk of `total` sectors: before the backup GPT's table, if the layout is GPT. */
function lastFittingLba(layout: DiskLayout, total: number): number {
  return layout.gpt ? total - 2 - tableSectors(layout.gpt.entryCount, layout.gpt.entrySize, layout.sectorSize) : total - 1;
}

/**
 * The reverse fix-up, for a restore from a larger standby onto the active
 * drive (of `targetSizeBytes`, the size recorded for it at pairing): the
 * standby's GPT, relocated to its end by the clone, is put back at the active
 * drive's end. Pure. No plan for MBR disks or no table; a refusal when a
 * partition ends past the active drive (it was grown on the standby) or when
 * the standby's primary GPT is damaged (its valid backup lies past the active
 * drive, so nothing copied can be the basis).
 */
function planGptShrink(layout: DiskLayout, targetSizeBytes: number): { plan?: GptRelocationPlan; refusal?: RelocationRefusal } {
  const sector = layout.sectorSize;
  const total = Math.floor(targetSizeBytes / sector);
  const beyond = layout.partitions.filter((p) => p.lastLba >= total);
  const exactTarget = formatExactBytes(targetSizeBytes, sector);
  if (beyond.length) {
    return {
      refusal: {
        reason: `partition${beyond.length > 1 ? 's' : ''} ${beyond.map((p) => p.number).join(', ')} of the source end${beyond.length > 1 ? '' : 's'} at LBA ${Math.max(...beyond.map((p) => p.lastLba))}, past the end of the target, which has ${exactTarget} (last LBA ${total - 1}): a copy would cut ${beyond.length > 1 ? 'them' : 'it'} off`,
        // A partition copy takes the source's partition table along, which still describes the partition: --partition does not help.
        hint: `shrink the partition on the source so that it ends by LBA ${lastFittingLba(layout, total)}, then copy again; a copy of only the other partitions carries the same partition table and is refused the same way`,
      },
    };
  }
  if (layout.scheme !== 'gpt' || !layout.gpt) return {};
  const g = layout.gpt;
  if (layout.foreignSectorSize || g.usedCopy !== 'primary') {
    return {
      refusal: {
        reason: layout.foreignSectorSize
          ? `the source's GPT was written for ${layout.foreignSectorSize}-byte sectors, but the source now reports ${sector}-byte sectors: its backup GPT cannot be put back at the end of the target (${exactTarget}) through this view`
          : `the source's primary GPT is not valid (${g.problems.join('; ') || 'no valid header'}), and its backup lies past the end of the target (${exactTarget}), so no GPT can be built at the target's end`,
        hint: 'check the source with `dpsr inspect`',
      },
    };
  }
  const ts = tableSectors(g.entryCount, g.entrySize, sector);
  const newBackupLba = total - 1;
  const newEntriesLba = newBackupLba - ts;
  const newLastUsableLba = newEntriesLba - 1;
  if (newLastUsableLba < g.firstUsableLba) return { refusal: { reason: `the target (${exactTarget}) is too small for the source's GPT`, hint: 'check the source with `dpsr inspect`' } };
  // A partition that ends inside the target's last sectors fits the disk but not beside the backup GPT, which goes there.
  const intoTable = layout.partitions.filter((p) => p.lastLba > newLastUsableLba);
  if (intoTable.length) {
    return {
      refusal: {
        reason: `partition${intoTable.length > 1 ? 's' : ''} ${intoTable.map((p) => p.number).join(', ')} of the source end${intoTable.length > 1 ? '' : 's'} at LBA ${Math.max(...intoTable.map((p) => p.lastLba))}, inside the last ${ts + 1} sectors of the target (LBA ${newEntriesLba}–${newBackupLba}), which its backup GPT needs: on the target, which has ${exactTarget}, the usable area ends at LBA ${newLastUsableLba}`,
        hint: `shrink the partition on the source so that it ends by LBA ${newLastUsableLba}, then copy again; a copy of only the other partitions carries the same partition table and is refused the same way`,
      },
    };
  }
  return { plan: { type: 'gpt-backup-relocation', from: 'primary', fromLba: 1, sourceSizeBytes: layout.diskSizeBytes, newBackupLba, newEntriesLba, newLastUsableLba } };
}

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
export async function relocateGptBackup(target: BlockDevice, sourceSizeBytes: number, planned?: Pick<GptRelocationPlan, 'from' | 'fromLba'>): Promise<RelocationResult> {
  const sector = target.logicalSectorSize;
  if (!Number.isSafeInteger(sourceSizeBytes) || sourceSizeBytes <= 0 || sourceSizeBytes % sector !== 0) {
    throw new BadInputError(`source size ${sourceSizeBytes} is not a positive whole number of ${sector}-byte sectors`);
  }
  if (sourceSizeBytes > target.size && planned?.from !== 'primary') {
    throw new BadInputError(`the source (${sourceSizeBytes} bytes) is larger than the target ${target.path} (${target.size} bytes)`, { hint: 'a GPT can only be moved to the end of a drive at least as large as the source' });
  }
  const none = (summary: string): RelocationResult => ({ changed: false, summary, zeroedLbas: [], protectiveMbrUpdated: false });
  const total = Math.floor(target.size / sector);
  if (total < 3) return none('the target is too small to hold a GPT');

  const lba0 = allocAligned(sector);
  await target.read(lba0, 0, sector);
  const mbr = parseMbrSector(lba0);
  const protective = mbr.hasSignature && mbr.entries.some((e) => e.type === GPT_PROTECTIVE_TYPE);
  const gpt = await readGpt(target);
  // Planned from the source's backup, the copy is a GPT disk by that backup, whatever its start holds (a damaged or unreadable primary, kept as it was).
  const isGpt = planned?.from === 'backup' || protective || gpt.primary.signature;
  if (!isGpt) return none('not a GPT disk: nothing to relocate');
  if (sourceSizeBytes === target.size) return none('source and target are the same size: the backup GPT is already at the end');

  // The copy the new backup is built from: the primary, or (when the plan says the source's primary is damaged) the copied backup.
  const fromBackup = planned?.from === 'backup';
  const primary = gpt.primary;
  const basis: GptCopy = fromBackup ? await readGptCopy(target, planned.fromLba, 'backup') : primary;
  if (!basis.valid || !basis.header || !basis.headerSector || !basis.table) {
    if (fromBackup) throw new DeviceError(`the backup GPT copied to LBA ${planned.fromLba} of ${target.path} does not read back as valid (${basis.problems.join('; ')})`);
    throw new RefusedError(`the primary GPT on ${target.path} is damaged (${primary.problems.join('; ')}); refusing to build a backup from it`, {
      hint: 'a copy plans this from the source\'s layout before writing: run the copy again, which builds the backup from the source\'s valid GPT copy or refuses up front',
    });
  }
  const h: GptHeader = basis.header;
  const damagedTablePrimary = fromBackup && primary.header && primary.headerSector ? { header: primary.header, headerSector: primary.headerSector } : undefined;
  const plan = relocatedGpt({ lba0, header: h, headerSector: basis.headerSector, table: basis.table, damagedTablePrimary }, target.size, sector);
  const newLast = plan.backupLba;
  const newEntriesLba = plan.backupEntriesLba;
  const newLastUsable = plan.lastUsableLba;
  const ts = plan.backupTable.byteLength / sector;
  const oldBackupLbas = [...new Set([...(fromBackup ? [planned.fromLba] : []), ...staleBackupCandidates(h, sourceSizeBytes, target.size, sector)])].filter((l) => l > 1 && l < newLast);

  const needsWrite = (): void => {
    if (!target.writable) throw new DeviceError(`${target.path} was opened read-only; the GPT backup cannot be relocated`);
  };
  let wrote = false;

  // 1. The backup table and header at the end, unless an identical one is there.
  const atEnd = allocAligned(sector);
  await target.read(atEnd, newLast * sector, sector);
  const atEndTable = ts > 0 ? allocAligned(ts * sector) : Buffer.alloc(0);
  if (ts > 0) await target.read(atEndTable, newEntriesLba * sector, ts * sector);
  if (!sameBytes(atEnd, plan.backupHeader) || !sameBytes(atEndTable, plan.backupTable)) {
    needsWrite();
    await target.write(plan.backupTable, newEntriesLba * sector);
    await target.write(plan.backupHeader, newLast * sector);
    await target.flush();
    wrote = true;
  }

  // 2. The primary header: AlternateLBA and LastUsableLBA; its table and table CRC stay as they are.
  // A damaged primary header stays as the source has it: the valid backup at the end is what firmware and gdisk
  // rebuild it from. A sound primary header over a damaged table is patched all the same: tools trust the header
  // and look for the backup where it points, which would be the zeroed old backup in the middle of the disk.
  const primaryHeader = fromBackup ? plan.damagedTablePrimaryHeader : plan.primaryHeader;
  if (primaryHeader && !sameBytes(primaryHeader, primary.headerSector!)) {
    needsWrite();
    await target.write(primaryHeader, sector);
    await target.flush();
    wrote = true;
  }

  // 3. A pure protective MBR covers the whole disk (capped at 2^32-1 sectors), as sgdisk -e leaves it.
  let protectiveMbrUpdated = false;
  if (!sameBytes(plan.lba0, lba0)) {
    needsWrite();
    await target.write(plan.lba0, 0, sector);
    protectiveMbrUpdated = true;
    wrote = true;
  }

  // 4. Stale backup headers where the source ended: only sectors that really hold a GPT header are zeroed.
  const zeroedLbas: number[] = [];
  const probe = allocAligned(sector);
  for (const lba of oldBackupLbas) {
    await target.read(probe, lba * sector, sector);
    if (!isStaleBackupHeader(probe, lba, total, sector)) continue;
    needsWrite();
    await target.write(allocAligned(sector), lba * sector);
    zeroedLbas.push(lba);
    wrote = true;
  }
  if (wrote) await target.flush();

  const check = await readGpt(target);
  if ((!fromBackup && !check.primary.valid) || !check.backup?.valid || check.backup.lba !== newLast) {
    throw new DeviceError(`the relocated GPT on ${target.path} does not read back as valid: ${check.problems.join('; ')}`);
  }
  return {
    changed: wrote,
    summary: wrote
      ? `moved the backup GPT from LBA ${oldBackupLbas.join(', ') || h.alternateLba} to LBA ${newLast} (last usable LBA now ${newLastUsable})`
      : 'the backup GPT is already at the end of the target',
    oldBackupLba: fromBackup ? planned.fromLba : h.alternateLba,
    newBackupLba: newLast,
    lastUsableLba: newLastUsable,
    zeroedLbas,
    protectiveMbrUpdated,
  };
}

/** What the relocation writes, computed from the source's LBA 0, primary GPT header and table. */
export interface RelocatedGpt {
  /** LBA 0 afterwards: a pure protective MBR's entry grown to the disk, anything else (boot code, a hybrid MBR) as it was. */
  readonly lba0: Buffer;
  /** LBA 1 afterwards: AlternateLBA and LastUsableLBA changed, header CRC recomputed. */
  readonly primaryHeader: Buffer;
  /**
   * Built from the backup, with a primary header that is sound but whose table
   * is not (`damagedTablePrimary`): LBA 1 afterwards, that header pointing at
   * the new backup, its own table fields (and so its table's CRC mismatch) kept.
   */
  readonly damagedTablePrimaryHeader?: Buffer;
  readonly backupEntriesLba: number;
  /** The backup table, whole sectors (the primary's entries, zero-padded). */
  readonly backupTable: Buffer;
  /** The target's last LBA. */
  readonly backupLba: number;
  readonly backupHeader: Buffer;
  readonly lastUsableLba: number;
}

/**
 * The exact sectors a GPT relocation leaves on a target of `targetSizeBytes`,
 * from the (valid) primary GPT of the source: what relocation writes and what
 * verify expects to read (UEFI 2.10 §5.3.2: the backup header at the last LBA,
 * its table just before it). Pure. Throws RefusedError when the target's end
 * would cut into the usable area.
 */
export function relocatedGpt(
  parts: {
    readonly lba0: Uint8Array;
    readonly header: GptHeader;
    readonly headerSector: Uint8Array;
    readonly table: Uint8Array;
    /** With a basis that is the backup: the primary header, when it is sound itself and only its table is damaged. */
    readonly damagedTablePrimary?: { readonly header: GptHeader; readonly headerSector: Uint8Array };
  },
  targetSizeBytes: number,
  sector: number,
): RelocatedGpt {
  const h = parts.header;
  const total = Math.floor(targetSizeBytes / sector);
  const newLast = total - 1;
  const ts = tableSectors(h.entryCount, h.entrySize, sector);
  const newEntriesLba = newLast - ts;
  const newLastUsable = newEntriesLba - 1;
  // A smaller target (a restore from a larger standby) is fine as long as every partition still ends in the usable area.
  const cutOff = newLastUsable < h.lastUsableLba && parseEntries(h, parts.table).some((e) => e.lastLba > newLastUsable);
  if (cutOff || newLastUsable < h.firstUsableLba) {
    throw new RefusedError(`moving the backup GPT to the end of a ${targetSizeBytes}-byte target would cut the usable area below LBA ${h.lastUsableLba}`);
  }
  // Page-aligned, so the writes also work on a drive opened with O_DIRECT.
  const backupHeader = alignedCopy(parts.headerSector);
  patchHeader(backupHeader, { myLba: newLast, alternateLba: 1, lastUsableLba: newLastUsable, entriesLba: newEntriesLba });
  const backupTable = ts > 0 ? allocAligned(ts * sector) : Buffer.alloc(0);
  backupTable.set(parts.table.subarray(0, Math.min(parts.table.byteLength, backupTable.byteLength)));
  const primaryHeader = alignedCopy(parts.headerSector);
  patchHeader(primaryHeader, { myLba: 1, alternateLba: newLast, lastUsableLba: newLastUsable, entriesLba: h.entriesLba });
  let damagedTablePrimaryHeader: Buffer | undefined;
  // Only the source's own header (the same disk GUID): a standby's old header left where the source's LBA 1 was unreadable is not patched.
  if (parts.damagedTablePrimary && parts.damagedTablePrimary.header.diskGuid === h.diskGuid) {
    damagedTablePrimaryHeader = alignedCopy(parts.damagedTablePrimary.headerSector);
    patchHeader(damagedTablePrimaryHeader, { myLba: 1, alternateLba: newLast, lastUsableLba: newLastUsable, entriesLba: parts.damagedTablePrimary.header.entriesLba });
  }
  const lba0 = alignedCopy(parts.lba0);
  const mbr = parseMbrSector(lba0);
  const only = mbr.entries.length === 1 ? mbr.entries[0] : undefined;
  if (only && only.type === GPT_PROTECTIVE_TYPE && only.firstLba === 1) {
    const o = 446 + (only.index - 1) * 16 + 12;
    new DataView(lba0.buffer, lba0.byteOffset, lba0.byteLength).setUint32(o, Math.min(newLast, 0xffffffff), true);
  }
  return { lba0, primaryHeader, damagedTablePrimaryHeader, backupEntriesLba: newEntriesLba, backupTable, backupLba: newLast, backupHeader, lastUsableLba: newLastUsable };
}

/** LBAs where a backup header may be left behind by a copy onto a larger target: where the primary points, and the source's last LBA. */
export function staleBackupCandidates(h: GptHeader, sourceSizeBytes: number, targetSizeBytes: number, sector: number): number[] {
  const newLast = Math.floor(targetSizeBytes / sector) - 1;
  return [...new Set([h.alternateLba, sourceSizeBytes / sector - 1])].filter((l) => l > 1 && l < newLast);
}

/** A sector at `lba` that holds a GPT header claiming to be at `lba`: a backup header the relocation zeroes. */
export function isStaleBackupHeader(sectorBytes: Uint8Array, lba: number, totalSectors: number, sector: number): boolean {
  if (!hasGptSignature(sectorBytes)) return false;
  const parsed = parseGptHeader(sectorBytes, lba, 'backup', totalSectors, sector);
  return parsed.header?.myLba === lba || new DataView(sectorBytes.buffer, sectorBytes.byteOffset).getBigUint64(24, true) === BigInt(lba);
}

/**
 * LBA 0 and the valid GPT copy of a drive (the primary, else the backup), the
 * input of `relocatedGpt`; undefined when neither copy is valid. An unreadable
 * LBA 0 is given as zeros with `lba0Readable` false: what a copy leaves there
 * is then not known.
 */
export async function readGptForRelocation(
  dev: BlockDevice,
): Promise<
  | {
      lba0: Buffer;
      lba0Readable: boolean;
      header: GptHeader;
      headerSector: Uint8Array;
      table: Uint8Array;
      from: 'primary' | 'backup';
      fromLba: number;
      damagedTablePrimary?: { header: GptHeader; headerSector: Uint8Array };
    }
  | undefined
> {
  const sector = dev.logicalSectorSize;
  if (Math.floor(dev.size / sector) < 3) return undefined;
  const gpt = await readGpt(dev);
  // A damaged primary with a valid backup: the relocation builds the new backup from that backup (as planGptRelocation decides).
  const p = gpt.primary.valid ? gpt.primary : gpt.backup?.valid ? gpt.backup : undefined;
  if (!p || !p.header || !p.headerSector || !p.table) return undefined;
  const lba0 = allocAligned(sector);
  let lba0Readable = true;
  try {
    await dev.read(lba0, 0, sector);
  } catch (e) {
    if ((e as { fault?: string }).fault !== 'media') throw e;
    lba0.fill(0);
    lba0Readable = false;
  }
  const damagedTablePrimary = p.which === 'backup' ? await soundPrimaryHeader(dev) : undefined;
  return { lba0, lba0Readable, header: p.header, headerSector: p.headerSector, table: p.table, from: p.which, fromLba: p.lba, damagedTablePrimary };
}

/** LBA 1 when it holds a sound GPT header (its own CRC right), whatever its table holds or whether that can be read. */
async function soundPrimaryHeader(dev: BlockDevice): Promise<{ header: GptHeader; headerSector: Uint8Array } | undefined> {
  const sector = dev.logicalSectorSize;
  const headerSector = allocAligned(sector);
  try {
    await dev.read(headerSector, sector, sector);
  } catch (e) {
    if ((e as { fault?: string }).fault !== 'media') throw e;
    return undefined;
  }
  const parsed = parseGptHeader(headerSector, 1, 'primary', Math.floor(dev.size / sector), sector);
  return parsed.header ? { header: parsed.header, headerSector } : undefined;
}

function alignedCopy(b: Uint8Array): Buffer {
  const out = allocAligned(b.byteLength);
  out.set(b);
  return out;
}
