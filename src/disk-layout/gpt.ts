/**
 * GPT: primary header at LBA 1 with its entry table, a backup header at the
 * disk's last LBA (pointed to by the primary's AlternateLBA) with its table
 * just before it. Both copies are checked (signature, CRCs, self-location,
 * bounds) so a damaged primary falls back to the backup, as firmware does.
 */
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';
import { crc32 } from './crc32.ts';
import { formatGuid, isZeroGuid } from './guid.ts';

export const GPT_SIGNATURE = 'EFI PART';
export const GPT_HEADER_MIN = 92;
/** Larger tables exist in no real tool; beyond this the header is garbage. */
export const GPT_MAX_TABLE_BYTES = 4 * 1024 * 1024;
export const ATTR_REQUIRED = 1n << 0n;
export const ATTR_NO_BLOCK_IO = 1n << 1n;
export const ATTR_LEGACY_BIOS_BOOTABLE = 1n << 2n;

export interface GptHeader {
  readonly revision: number;
  readonly headerSize: number;
  readonly headerCrc: number;
  readonly myLba: number;
  readonly alternateLba: number;
  readonly firstUsableLba: number;
  readonly lastUsableLba: number;
  readonly diskGuid: string;
  readonly entriesLba: number;
  readonly entryCount: number;
  readonly entrySize: number;
  readonly entriesCrc: number;
}

export interface GptEntry {
  /** 1-based slot in the table, which is the Linux partition number. */
  readonly slot: number;
  readonly typeGuid: string;
  readonly uniqueGuid: string;
  readonly firstLba: number;
  readonly lastLba: number;
  readonly attributes: bigint;
  readonly name: string;
}

export interface GptCopy {
  readonly which: 'primary' | 'backup';
  readonly lba: number;
  /** "EFI PART" is there, whatever else is wrong. */
  readonly signature: boolean;
  /** Present when the header itself passed every check. */
  readonly header?: GptHeader;
  /** The raw header sector, for rewriting. */
  readonly headerSector?: Uint8Array;
  /** Header and table both good. */
  readonly valid: boolean;
  /** The table bytes (entryCount × entrySize) when they were read. */
  readonly table?: Uint8Array;
  readonly problems: string[];
}

export interface GptScan {
  readonly primary: GptCopy;
  /** Undefined when no backup location could even be guessed. */
  readonly backup?: GptCopy;
  /** The copy partitions were taken from. */
  readonly used?: 'primary' | 'backup';
  readonly header?: GptHeader;
  readonly entries: GptEntry[];
  readonly problems: string[];
}

function dv(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function u64(view: DataView, offset: number): number {
  const v = view.getBigUint64(offset, true);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

export function hasGptSignature(buf: Uint8Array, offset = 0): boolean {
  return Buffer.from(buf.buffer, buf.byteOffset + offset, 8).toString('latin1') === GPT_SIGNATURE;
}

/** CRC of a header sector's first headerSize bytes with the CRC field taken as zero. */
export function headerCrcOf(sector: Uint8Array, headerSize: number): number {
  const copy = Buffer.from(sector.subarray(0, headerSize));
  copy.fill(0, 16, 20);
  return crc32(copy);
}

export function tableSectors(entryCount: number, entrySize: number, sectorSize: number): number {
  return Math.ceil((entryCount * entrySize) / sectorSize);
}

/**
 * Checks one header sector as found at `lba`. Problems name the copy so the
 * operator can tell primary from backup.
 */
export function parseGptHeader(sector: Uint8Array, lba: number, which: 'primary' | 'backup', totalSectors: number, sectorSize: number): { header?: GptHeader; signature: boolean; problems: string[] } {
  const problems: string[] = [];
  const label = `${which} GPT header (LBA ${lba})`;
  if (!hasGptSignature(sector)) return { signature: false, problems: [`${label}: no "EFI PART" signature`] };
  const view = dv(sector);
  const headerSize = view.getUint32(12, true);
  if (headerSize < GPT_HEADER_MIN || headerSize > sectorSize) return { signature: true, problems: [`${label}: header size ${headerSize} is out of range (${GPT_HEADER_MIN}–${sectorSize})`] };
  const headerCrc = view.getUint32(16, true);
  const computed = headerCrcOf(sector, headerSize);
  if (computed !== headerCrc) return { signature: true, problems: [`${label}: header CRC mismatch (stored 0x${hex(headerCrc)}, computed 0x${hex(computed)})`] };
  const header: GptHeader = {
    revision: view.getUint32(8, true),
    headerSize,
    headerCrc,
    myLba: u64(view, 24),
    alternateLba: u64(view, 32),
    firstUsableLba: u64(view, 40),
    lastUsableLba: u64(view, 48),
    diskGuid: formatGuid(sector, 56),
    entriesLba: u64(view, 72),
    entryCount: view.getUint32(80, true),
    entrySize: view.getUint32(84, true),
    entriesCrc: view.getUint32(88, true),
  };
  if (header.myLba !== lba) problems.push(`${label}: claims to be at LBA ${header.myLba}`);
  if (header.entrySize < 128 || (header.entrySize & (header.entrySize - 1)) !== 0) problems.push(`${label}: entry size ${header.entrySize} is not 128 × 2^n`);
  const tableBytes = header.entryCount * header.entrySize;
  if (tableBytes > GPT_MAX_TABLE_BYTES) problems.push(`${label}: a table of ${header.entryCount} × ${header.entrySize} bytes is implausibly large`);
  if (header.firstUsableLba > header.lastUsableLba + 1) problems.push(`${label}: first usable LBA ${header.firstUsableLba} is beyond last usable LBA ${header.lastUsableLba}`);
  // A GPT for a larger disk stays readable: a truncated image, or a USB bridge that caps the size, should still show its partitions.
  const warnings: string[] = [];
  if (header.lastUsableLba >= totalSectors || header.alternateLba >= totalSectors) {
    warnings.push(`${label}: describes a disk of at least ${Math.max(header.lastUsableLba, header.alternateLba) + 1} sectors, but this one has ${totalSectors} (truncated copy, or a USB bridge that misreports the size?)`);
  }
  if (problems.length === 0) {
    const n = tableSectors(header.entryCount, header.entrySize, sectorSize);
    if (header.entriesLba < 2 || header.entriesLba + n > totalSectors) problems.push(`${label}: entry table at LBA ${header.entriesLba} (${n} sectors) lies outside the disk`);
    else if (which === 'primary' && header.entriesLba + n > header.firstUsableLba) problems.push(`${label}: entry table overlaps the usable area (first usable LBA ${header.firstUsableLba})`);
    else if (which === 'backup' && header.entriesLba <= header.lastUsableLba) problems.push(`${label}: entry table overlaps the usable area (last usable LBA ${header.lastUsableLba})`);
  }
  if (problems.length) return { signature: true, problems };
  return { header, signature: true, problems: warnings };
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}

export async function readGptCopy(dev: BlockDevice, lba: number, which: 'primary' | 'backup'): Promise<GptCopy> {
  const sector = dev.logicalSectorSize;
  const total = Math.floor(dev.size / sector);
  if (lba < 1 || lba >= total) return { which, lba, signature: false, valid: false, problems: [`${which} GPT header: LBA ${lba} is outside the disk`] };
  const headerSector = allocAligned(sector);
  await dev.read(headerSector, lba * sector, sector);
  const parsed = parseGptHeader(headerSector, lba, which, total, sector);
  if (!parsed.header) return { which, lba, signature: parsed.signature, valid: false, headerSector, problems: parsed.problems };
  const h = parsed.header;
  const n = tableSectors(h.entryCount, h.entrySize, sector);
  const raw = n > 0 ? allocAligned(n * sector) : Buffer.alloc(0);
  if (n > 0) await dev.read(raw, h.entriesLba * sector, n * sector);
  const table = raw.subarray(0, h.entryCount * h.entrySize);
  const crc = crc32(table);
  if (crc !== h.entriesCrc) {
    return {
      which,
      lba,
      signature: true,
      header: h,
      headerSector,
      valid: false,
      table,
      problems: [...parsed.problems, `${which} GPT entry table (LBA ${h.entriesLba}): CRC mismatch (stored 0x${hex(h.entriesCrc)}, computed 0x${hex(crc)})`],
    };
  }
  return { which, lba, signature: true, header: h, headerSector, valid: true, table, problems: parsed.problems };
}

export function parseEntries(header: GptHeader, table: Uint8Array): GptEntry[] {
  const entries: GptEntry[] = [];
  const view = dv(table);
  for (let i = 0; i < header.entryCount; i++) {
    const o = i * header.entrySize;
    if (o + 128 > table.byteLength) break;
    if (isZeroGuid(table, o)) continue;
    const nameBytes = Buffer.from(table.buffer, table.byteOffset + o + 56, 72);
    let name = nameBytes.toString('utf16le');
    const nul = name.indexOf('\u0000');
    if (nul >= 0) name = name.slice(0, nul);
    entries.push({
      slot: i + 1,
      typeGuid: formatGuid(table, o),
      uniqueGuid: formatGuid(table, o + 16),
      firstLba: u64(view, o + 32),
      lastLba: u64(view, o + 40),
      attributes: view.getBigUint64(o + 48, true),
      name,
    });
  }
  return entries;
}

function sameShape(a: GptHeader, b: GptHeader): string[] {
  const diffs: string[] = [];
  if (a.diskGuid !== b.diskGuid) diffs.push('disk GUID');
  if (a.firstUsableLba !== b.firstUsableLba) diffs.push('first usable LBA');
  if (a.lastUsableLba !== b.lastUsableLba) diffs.push('last usable LBA');
  if (a.entryCount !== b.entryCount || a.entrySize !== b.entrySize) diffs.push('table size');
  if (a.entriesCrc !== b.entriesCrc) diffs.push('partition entries');
  return diffs;
}

/**
 * Reads both copies. The backup is looked for where the primary says it is
 * and, failing that, at the disk's last LBA (where it must be when the primary
 * is unreadable).
 */
export async function readGpt(dev: BlockDevice): Promise<GptScan> {
  const sector = dev.logicalSectorSize;
  const total = Math.floor(dev.size / sector);
  const lastLba = total - 1;
  const problems: string[] = [];
  let primary: GptCopy;
  let primaryError: unknown;
  try {
    primary = await readGptCopy(dev, 1, 'primary');
  } catch (e) {
    // An unreadable primary (a bad sector at the drive's start) is damage like a corrupt one when the backup is valid:
    // the backup is what firmware and gdisk then use. With no valid backup either, the read error is what is known.
    if ((e as { fault?: string }).fault !== 'media') throw e;
    primaryError = e;
    primary = { which: 'primary', lba: 1, signature: false, valid: false, problems: [`primary GPT (LBA 1) could not be read: ${(e as Error).message}`] };
  }
  problems.push(...primary.problems);

  const candidates: number[] = [];
  if (primary.header && primary.header.alternateLba > 1 && primary.header.alternateLba < total) candidates.push(primary.header.alternateLba);
  if (!candidates.includes(lastLba) && lastLba > 1) candidates.push(lastLba);
  let backup: GptCopy | undefined;
  const backupProblems: string[] = [];
  for (const lba of candidates) {
    let copy: GptCopy;
    try {
      copy = await readGptCopy(dev, lba, 'backup');
    } catch (e) {
      // With a valid primary, an unreadable backup is damage to report (a failing end of the drive), not a reason to know nothing.
      if (!primary.valid) throw e;
      backupProblems.push(`backup GPT (LBA ${lba}) could not be read: ${(e as Error).message}`);
      continue;
    }
    if (!backup || copy.valid || (copy.signature && !backup.signature)) backup = copy;
    if (copy.valid) break;
    // A missing signature at the last LBA is only news when nothing better turned up.
    backupProblems.push(...copy.problems);
  }
  if (primaryError !== undefined && !backup?.valid) throw primaryError;
  if (backup?.valid) {
    problems.push(...backup.problems);
    if (primary.header && backup.lba !== primary.header.alternateLba) {
      problems.push(`the primary GPT header points to its backup at LBA ${primary.header.alternateLba}, but the valid backup is at LBA ${backup.lba}`);
    }
  } else if (primary.signature || backup?.signature || backupProblems.length) {
    problems.push(...backupProblems);
  }
  if (backup?.valid && backup.header && backup.lba !== lastLba) {
    problems.push(`the backup GPT header is at LBA ${backup.lba}, not at the disk's last LBA ${lastLba}: the disk looks copied onto a larger one (relocate the backup, as sgdisk -e does)`);
  }

  let used: 'primary' | 'backup' | undefined;
  let header: GptHeader | undefined;
  let entries: GptEntry[] = [];
  if (primary.valid && primary.header && primary.table) {
    used = 'primary';
    header = primary.header;
    entries = parseEntries(primary.header, primary.table);
    if (backup?.valid && backup.header) {
      const diffs = sameShape(primary.header, backup.header);
      if (diffs.length) problems.push(`the primary and backup GPT differ in ${diffs.join(', ')}; the primary is used`);
    }
  } else if (backup?.valid && backup.header && backup.table) {
    used = 'backup';
    header = backup.header;
    entries = parseEntries(backup.header, backup.table);
    problems.push('the primary GPT is damaged; partitions are taken from the backup GPT');
  }

  if (header) {
    const sorted = [...entries].sort((a, b) => a.firstLba - b.firstLba);
    for (const e of entries) {
      if (e.firstLba > e.lastLba) problems.push(`GPT partition ${e.slot}: first LBA ${e.firstLba} is after last LBA ${e.lastLba}`);
      else if (e.firstLba < header.firstUsableLba || e.lastLba > header.lastUsableLba) {
        problems.push(`GPT partition ${e.slot} (LBA ${e.firstLba}–${e.lastLba}) lies outside the usable area (LBA ${header.firstUsableLba}–${header.lastUsableLba})`);
      }
      if (e.lastLba >= total) problems.push(`GPT partition ${e.slot} ends at LBA ${e.lastLba}, past the end of the disk (last LBA ${lastLba})`);
    }
    for (let i = 1; i < sorted.length; i++) {
      const a = sorted[i - 1]!;
      const b = sorted[i]!;
      if (b.firstLba <= a.lastLba) problems.push(`GPT partitions ${a.slot} and ${b.slot} overlap`);
    }
  }
  return { primary, backup, used, header, entries, problems };
}

/** Writes the fields relocation changes and recomputes the header CRC, in place. */
export function patchHeader(sector: Uint8Array, fields: { myLba: number; alternateLba: number; lastUsableLba: number; entriesLba: number }): void {
  const view = dv(sector);
  view.setBigUint64(24, BigInt(fields.myLba), true);
  view.setBigUint64(32, BigInt(fields.alternateLba), true);
  view.setBigUint64(48, BigInt(fields.lastUsableLba), true);
  view.setBigUint64(72, BigInt(fields.entriesLba), true);
  const headerSize = view.getUint32(12, true);
  view.setUint32(16, 0, true);
  view.setUint32(16, headerCrcOf(sector, headerSize), true);
}
