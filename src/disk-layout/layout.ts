/**
 * One view of a drive's partitioning, whatever the scheme: what `inspect`
 * prints, what partition-selective sync chooses from, what bad-sector reports
 * map LBAs through. Reading never throws over damaged tables: damage becomes
 * `problems`, only I/O failures are errors.
 */
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';
import { BadInputError } from '../errors.ts';
import { ATTR_LEGACY_BIOS_BOOTABLE, hasGptSignature, readGpt, tableSectors, type GptScan } from './gpt.ts';
import { gptTypeName } from './guid.ts';
import { GPT_PROTECTIVE_TYPE, mbrTypeCode, mbrTypeName, parseMbrSector, scanMbr } from './mbr.ts';
import { SNIFF_BYTES, sniffFilesystem } from './filesystem.ts';

export interface Partition {
  /** Linux numbering: GPT slot number; MBR 1–4 primary, 5… logical. */
  readonly number: number;
  readonly startByte: number;
  readonly sizeBytes: number;
  readonly firstLba: number;
  readonly lastLba: number;
  /** GPT type GUID, or the MBR type byte as `0x83`. */
  readonly type: string;
  readonly typeName: string;
  /** GPT partition name. */
  readonly name?: string;
  /** GPT unique partition GUID. */
  readonly guid?: string;
  /** MBR active flag, or GPT attribute bit 2 (LegacyBIOSBootable). */
  readonly bootable: boolean;
  /** blkid-style type when recognised: ext4, vfat, ntfs, swap, … */
  readonly filesystem?: string;
  /** GPT attribute bits, as a decimal string (JSON has no 64-bit integers). */
  readonly attributes?: string;
  /** MBR: the extended partition that holds logical partitions. */
  readonly extended?: boolean;
  /** MBR: a logical partition inside the extended one. */
  readonly logical?: boolean;
}

export interface GptInfo {
  /** Primary header and its table both pass every check. */
  readonly primaryValid: boolean;
  readonly backupValid: boolean;
  /** The valid backup header sits at the disk's last LBA. */
  readonly backupAtEnd: boolean;
  /** Where the primary header says the backup is (or where the backup says it is when the primary is gone). */
  readonly alternateLba: number;
  readonly firstUsableLba: number;
  readonly lastUsableLba: number;
  readonly primaryEntriesLba: number;
  /** Where the backup header was found, when it was. */
  readonly backupLba?: number;
  /** Where the backup table starts: from the backup header, or inferred from the primary. */
  readonly backupEntriesLba: number;
  readonly entryCount: number;
  readonly entrySize: number;
  /** Which copy partitions were read from. */
  readonly usedCopy?: 'primary' | 'backup';
  readonly problems: string[];
}

export interface MbrInfo {
  readonly diskSignature: number;
  /** LBAs of the EBRs that chain the logical partitions. */
  readonly ebrLbas: number[];
  /** A protective (or hybrid) MBR in front of a GPT. */
  readonly protective: boolean;
  readonly hybrid: boolean;
}

export interface DiskLayout {
  readonly scheme: 'gpt' | 'mbr' | 'none';
  readonly sectorSize: number;
  readonly diskSizeBytes: number;
  /** GPT disk GUID, `0x1234abcd` MBR disk signature, or '' without a table. */
  readonly diskId: string;
  /** In table order (GPT slot, MBR primaries then logicals). */
  readonly partitions: Partition[];
  readonly gpt?: GptInfo;
  readonly mbr?: MbrInfo;
  /** A filesystem directly on the drive, without a partition table. */
  readonly wholeDiskFilesystem?: string;
  /** Everything wrong that was found, GPT problems included. */
  readonly problems: string[];
  /**
   * The sector size the GPT was written for, when it is not the one the drive
   * reports (a 512-byte GPT seen through a bridge that translates to 4096-byte
   * sectors, or the reverse): the table cannot be read or rewritten this way.
   */
  readonly foreignSectorSize?: number;
}

export interface ReadLayoutOptions {
  /** Look for filesystems at partition starts (a few KiB read each). Default true. */
  readonly sniff?: boolean;
}

async function sniffAt(dev: BlockDevice, startByte: number, sizeBytes: number): Promise<string | undefined> {
  const len = Math.max(SNIFF_BYTES, dev.logicalSectorSize);
  if (sizeBytes < len || startByte + len > dev.size || startByte % dev.logicalSectorSize !== 0) return undefined;
  try {
    const buf = allocAligned(len);
    await dev.read(buf, startByte, len);
    return sniffFilesystem(buf);
  } catch {
    // An unreadable partition start is the copy engine's business to report; a guess just stays empty.
    return undefined;
  }
}

export async function readLayout(dev: BlockDevice, options: ReadLayoutOptions = {}): Promise<DiskLayout> {
  const sector = dev.logicalSectorSize;
  if (!Number.isInteger(sector) || sector < 512 || (sector & (sector - 1)) !== 0) {
    throw new BadInputError(`${dev.path} reports a logical sector size of ${sector} bytes`, { hint: 'a drive has 512- or 4096-byte logical sectors' });
  }
  const total = Math.floor(dev.size / sector);
  const base = { sectorSize: sector, diskSizeBytes: dev.size };
  if (total < 1) return { ...base, scheme: 'none', diskId: '', partitions: [], problems: [`the drive is ${dev.size} bytes: too small to hold a partition table`] };

  const problems: string[] = [];
  const lba0 = allocAligned(sector);
  try {
    await dev.read(lba0, 0, sector);
  } catch (e) {
    // A bad sector at LBA 0 hides the MBR, not a GPT: read on as a drive without an MBR, saying why.
    if ((e as { fault?: string }).fault !== 'media') throw e;
    lba0.fill(0);
    problems.push(`LBA 0 (the MBR) could not be read: ${(e as Error).message}`);
  }
  const mbr = parseMbrSector(lba0);
  let foreignSectorSize: number | undefined;
  const protectiveEntry = mbr.hasSignature ? mbr.entries.find((e) => e.type === GPT_PROTECTIVE_TYPE) : undefined;

  let gpt: GptScan | undefined;
  if (total >= 3) gpt = await readGpt(dev);
  const gptFound = !!gpt && (gpt.primary.signature || !!gpt.backup?.signature);
  const gptUsable = !!gpt?.header;

  // The same disk seen with the wrong sector size: say so rather than "no partitions".
  if (!gptFound && (protectiveEntry || !mbr.hasSignature)) {
    if (sector === 4096 && hasGptSignature(lba0, 512)) {
      foreignSectorSize = 512;
      problems.push('a GPT header sits at byte 512: the disk was partitioned with 512-byte sectors but reports 4096-byte sectors (a USB bridge that translates sector sizes?)');
    } else if (sector === 512 && total > 8) {
      const probe = allocAligned(512);
      await dev.read(probe, 4096, 512);
      if (hasGptSignature(probe)) {
        foreignSectorSize = 4096;
        problems.push('a GPT header sits at byte 4096: the disk was partitioned with 4096-byte sectors but reports 512-byte sectors (a USB bridge that translates sector sizes?)');
      }
    }
  }

  const foreign = foreignSectorSize ? { foreignSectorSize } : {};
  if (gpt && (protectiveEntry || (gptUsable && !mbr.hasSignature))) {
    return { ...(await gptLayout(dev, gpt, mbr.hasSignature ? { diskSignature: mbr.diskSignature, entries: mbr.entries.length, protectiveEntry } : undefined, problems, options)), ...foreign };
  }

  if (mbr.hasSignature && mbr.entries.length > 0 && !looksLikeBootSector(lba0)) {
    if (gptUsable) problems.push('a valid GPT is present but the MBR is not protective (a stale GPT left behind?); the MBR is used, as Linux does');
    return mbrLayout(dev, mbr, problems, options);
  }

  const whole = options.sniff === false ? undefined : await sniffAt(dev, 0, dev.size);
  if (mbr.hasSignature && !whole) {
    // An MBR with no entries: a freshly labelled disk.
    return { ...base, scheme: 'mbr', diskId: mbrId(mbr.diskSignature), partitions: [], mbr: { diskSignature: mbr.diskSignature, ebrLbas: [], protective: false, hybrid: false }, problems };
  }
  if (gptFound && gpt) problems.push(...gpt.problems);
  return { ...base, scheme: 'none', diskId: '', partitions: [], ...(whole ? { wholeDiskFilesystem: whole } : {}), problems, ...foreign };
}

/** A FAT/NTFS volume boot record also ends in 0x55AA; its "entries" are code. */
function looksLikeBootSector(lba0: Uint8Array): boolean {
  const s = sniffFilesystem(lba0.byteLength >= 512 ? lba0 : new Uint8Array(0));
  return s === 'vfat' || s === 'ntfs' || s === 'exfat';
}

function mbrId(sig: number): string {
  return `0x${sig.toString(16).padStart(8, '0')}`;
}

async function mbrLayout(dev: BlockDevice, mbr: ReturnType<typeof parseMbrSector>, problems: string[], options: ReadLayoutOptions): Promise<DiskLayout> {
  const sector = dev.logicalSectorSize;
  const total = Math.floor(dev.size / sector);
  const scan = await scanMbr(dev, mbr);
  problems.push(...scan.problems);
  const partitions: Partition[] = [];
  for (const p of scan.partitions) {
    if (p.firstLba === 0) problems.push(`MBR partition ${p.number} starts at LBA 0, on top of the MBR itself`);
    if (p.firstLba + p.sectors > total) problems.push(`MBR partition ${p.number} (LBA ${p.firstLba}–${p.firstLba + p.sectors - 1}) runs past the end of the disk (last LBA ${total - 1})`);
    const startByte = p.firstLba * sector;
    const sizeBytes = p.sectors * sector;
    const filesystem = options.sniff === false || p.extended ? undefined : await sniffAt(dev, startByte, sizeBytes);
    partitions.push({
      number: p.number,
      startByte,
      sizeBytes,
      firstLba: p.firstLba,
      lastLba: p.firstLba + p.sectors - 1,
      type: mbrTypeCode(p.type),
      typeName: mbrTypeName(p.type),
      bootable: p.bootable,
      ...(filesystem ? { filesystem } : {}),
      ...(p.extended ? { extended: true } : {}),
      ...(p.logical ? { logical: true } : {}),
    });
  }
  const primaries = partitions.filter((p) => !p.logical && !p.extended).sort((a, b) => a.firstLba - b.firstLba);
  for (let i = 1; i < primaries.length; i++) {
    if (primaries[i]!.firstLba <= primaries[i - 1]!.lastLba) problems.push(`MBR partitions ${primaries[i - 1]!.number} and ${primaries[i]!.number} overlap`);
  }
  return {
    scheme: 'mbr',
    sectorSize: sector,
    diskSizeBytes: dev.size,
    diskId: mbrId(mbr.diskSignature),
    partitions,
    mbr: { diskSignature: mbr.diskSignature, ebrLbas: scan.ebrLbas, protective: false, hybrid: false },
    problems,
  };
}

async function gptLayout(
  dev: BlockDevice,
  gpt: GptScan,
  mbr: { diskSignature: number; entries: number; protectiveEntry?: { firstLba: number; sectors: number } } | undefined,
  problems: string[],
  options: ReadLayoutOptions,
): Promise<DiskLayout> {
  const sector = dev.logicalSectorSize;
  const total = Math.floor(dev.size / sector);
  if (!mbr) problems.push('no protective MBR in front of the GPT (LBA 0 has no 0x55AA signature); Linux ignores such a GPT unless told to');
  const hybrid = !!mbr && mbr.entries > 1;
  if (hybrid) problems.push('hybrid MBR: the MBR lists other partitions next to the GPT protective entry');
  if (mbr?.protectiveEntry && mbr.protectiveEntry.firstLba !== 1) problems.push(`the protective MBR entry starts at LBA ${mbr.protectiveEntry.firstLba}, not 1`);
  problems.push(...gpt.problems);

  const h = gpt.header;
  const partitions: Partition[] = [];
  for (const e of gpt.entries) {
    const startByte = e.firstLba * sector;
    const sizeBytes = e.lastLba >= e.firstLba ? (e.lastLba - e.firstLba + 1) * sector : 0;
    const filesystem = options.sniff === false ? undefined : await sniffAt(dev, startByte, sizeBytes);
    partitions.push({
      number: e.slot,
      startByte,
      sizeBytes,
      firstLba: e.firstLba,
      lastLba: e.lastLba,
      type: e.typeGuid,
      typeName: gptTypeName(e.typeGuid),
      ...(e.name ? { name: e.name } : {}),
      guid: e.uniqueGuid,
      bootable: (e.attributes & ATTR_LEGACY_BIOS_BOOTABLE) !== 0n,
      ...(filesystem ? { filesystem } : {}),
      attributes: e.attributes.toString(),
    });
  }

  const primaryH = gpt.primary.header;
  const backupH = gpt.backup?.header;
  const ref = h ?? primaryH ?? backupH;
  const alternateLba = primaryH?.alternateLba ?? backupH?.myLba ?? total - 1;
  const ts = ref ? tableSectors(ref.entryCount, ref.entrySize, sector) : 0;
  const info: GptInfo = {
    primaryValid: gpt.primary.valid,
    backupValid: !!gpt.backup?.valid,
    backupAtEnd: !!gpt.backup?.valid && gpt.backup.lba === total - 1,
    alternateLba,
    firstUsableLba: ref?.firstUsableLba ?? 0,
    lastUsableLba: ref?.lastUsableLba ?? 0,
    primaryEntriesLba: primaryH?.entriesLba ?? 2,
    ...(gpt.backup?.signature ? { backupLba: gpt.backup.lba } : {}),
    backupEntriesLba: backupH?.entriesLba ?? alternateLba - ts,
    entryCount: ref?.entryCount ?? 0,
    entrySize: ref?.entrySize ?? 0,
    ...(gpt.used ? { usedCopy: gpt.used } : {}),
    problems: [...gpt.problems],
  };
  if (!h) problems.push('neither the primary nor the backup GPT is valid: no partitions can be trusted');
  return { scheme: 'gpt', sectorSize: sector, diskSizeBytes: dev.size, diskId: h?.diskGuid ?? ref?.diskGuid ?? '', partitions, gpt: info, ...(mbr ? { mbr: { diskSignature: mbr.diskSignature, ebrLbas: [], protective: true, hybrid } } : {}), problems };
}

