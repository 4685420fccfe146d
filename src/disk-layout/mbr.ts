/**
 * The MBR: four primary entries in sector 0, logical partitions in a chain of
 * EBRs inside an extended partition. Used for plain MBR disks and to spot the
 * protective MBR of a GPT disk.
 */
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';

export const MBR_SIGNATURE_OFFSET = 510;
/** Linux numbers logical partitions from 5 whatever the primaries are. */
export const FIRST_LOGICAL = 5;
/** A chain longer than this is a loop or garbage; Linux stops far earlier. */
const MAX_LOGICALS = 256;

export interface MbrEntry {
  /** 1..4 for primaries. */
  readonly index: number;
  readonly bootIndicator: number;
  readonly type: number;
  readonly firstLba: number;
  readonly sectors: number;
}

export interface MbrSector {
  readonly hasSignature: boolean;
  readonly diskSignature: number;
  /** Non-empty entries only (type ≠ 0 and sectors ≠ 0). */
  readonly entries: MbrEntry[];
}

export interface MbrPartition {
  readonly number: number;
  readonly firstLba: number;
  readonly sectors: number;
  readonly type: number;
  readonly bootable: boolean;
  readonly extended: boolean;
  readonly logical: boolean;
}

export interface MbrScan {
  readonly diskSignature: number;
  readonly partitions: MbrPartition[];
  /** LBAs of every EBR in the chain, in chain order. */
  readonly ebrLbas: number[];
  readonly problems: string[];
}

export const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
export const GPT_PROTECTIVE_TYPE = 0xee;

const MBR_TYPE_NAMES: Record<number, string> = {
  0x01: 'FAT12',
  0x04: 'FAT16 <32M',
  0x05: 'Extended',
  0x06: 'FAT16',
  0x07: 'HPFS/NTFS/exFAT',
  0x0b: 'W95 FAT32',
  0x0c: 'W95 FAT32 (LBA)',
  0x0e: 'W95 FAT16 (LBA)',
  0x0f: 'W95 Extended (LBA)',
  0x11: 'Hidden FAT12',
  0x12: 'Compaq diagnostics',
  0x14: 'Hidden FAT16 <32M',
  0x16: 'Hidden FAT16',
  0x17: 'Hidden HPFS/NTFS',
  0x1b: 'Hidden W95 FAT32',
  0x1c: 'Hidden W95 FAT32 (LBA)',
  0x1e: 'Hidden W95 FAT16 (LBA)',
  0x27: 'Hidden NTFS WinRE',
  0x42: 'Windows dynamic (SFS)',
  0x82: 'Linux swap',
  0x83: 'Linux',
  0x85: 'Linux extended',
  0x8e: 'Linux LVM',
  0xa5: 'FreeBSD',
  0xa6: 'OpenBSD',
  0xa8: 'Darwin UFS',
  0xa9: 'NetBSD',
  0xaf: 'HFS / HFS+',
  0xee: 'GPT protective',
  0xef: 'EFI (FAT-12/16/32)',
  0xfd: 'Linux raid autodetect',
};

export function mbrTypeName(type: number): string {
  return MBR_TYPE_NAMES[type] ?? 'Unknown';
}

export function mbrTypeCode(type: number): string {
  return `0x${type.toString(16).padStart(2, '0')}`;
}

function dv(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Parses the 512-byte MBR layout found at the start of any sector size. */
export function parseMbrSector(sector: Uint8Array): MbrSector {
  if (sector.byteLength < 512) throw new RangeError(`an MBR sector needs 512 bytes, got ${sector.byteLength}`);
  const view = dv(sector);
  const hasSignature = sector[510] === 0x55 && sector[511] === 0xaa;
  const entries: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const o = 446 + i * 16;
    const type = sector[o + 4]!;
    const firstLba = view.getUint32(o + 8, true);
    const sectors = view.getUint32(o + 12, true);
    if (type === 0 || sectors === 0) continue;
    entries.push({ index: i + 1, bootIndicator: sector[o]!, type, firstLba, sectors });
  }
  return { hasSignature, diskSignature: view.getUint32(440, true), entries };
}

/**
 * Primary partitions plus the logical ones found by walking the EBR chain.
 * Damage (bad boot flags, loops, EBRs outside the extended partition) is
 * reported in `problems`, never thrown: an operator inspecting a broken disk
 * needs to see what is there.
 */
export async function scanMbr(dev: BlockDevice, mbr: MbrSector): Promise<MbrScan> {
  const sector = dev.logicalSectorSize;
  const totalSectors = Math.floor(dev.size / sector);
  const problems: string[] = [];
  const partitions: MbrPartition[] = [];
  const ebrLbas: number[] = [];

  let extended: MbrEntry | undefined;
  for (const e of mbr.entries) {
    if (e.bootIndicator !== 0 && e.bootIndicator !== 0x80) problems.push(`MBR entry ${e.index} has an invalid boot flag 0x${e.bootIndicator.toString(16)}`);
    const isExt = EXTENDED_TYPES.has(e.type);
    if (isExt) {
      if (extended) problems.push(`MBR entry ${e.index} is a second extended partition; only the first one is followed`);
      else extended = e;
    }
    partitions.push({ number: e.index, firstLba: e.firstLba, sectors: e.sectors, type: e.type, bootable: e.bootIndicator === 0x80, extended: isExt, logical: false });
  }

  if (extended) {
    const extStart = extended.firstLba;
    const extEnd = extended.firstLba + extended.sectors; // exclusive
    const seen = new Set<number>();
    const buf = allocAligned(sector);
    let ebr = extStart;
    let number = FIRST_LOGICAL;
    while (true) {
      if (seen.has(ebr)) {
        problems.push(`the EBR chain loops back to LBA ${ebr}; stopped there`);
        break;
      }
      if (ebr < extStart || ebr >= extEnd) {
        problems.push(`an EBR link points to LBA ${ebr}, outside the extended partition (LBA ${extStart}–${extEnd - 1}); stopped there`);
        break;
      }
      if (ebr >= totalSectors) {
        problems.push(`an EBR at LBA ${ebr} lies past the end of the disk; stopped there`);
        break;
      }
      if (seen.size >= MAX_LOGICALS) {
        problems.push(`more than ${MAX_LOGICALS} logical partitions; stopped there`);
        break;
      }
      seen.add(ebr);
      await dev.read(buf, ebr * sector, sector);
      const rec = parseMbrSector(buf);
      if (!rec.hasSignature) {
        problems.push(`the EBR at LBA ${ebr} has no 0x55AA signature; logical partitions from there on are ignored`);
        break;
      }
      ebrLbas.push(ebr);
      // Entry 1 is the logical partition (relative to this EBR), entry 2 the next EBR (relative to the extended start).
      const view = dv(buf);
      const lType = buf[446 + 4]!;
      const lStart = view.getUint32(446 + 8, true);
      const lSectors = view.getUint32(446 + 12, true);
      const lBoot = buf[446]!;
      if (lType !== 0 && lSectors !== 0) {
        partitions.push({ number, firstLba: ebr + lStart, sectors: lSectors, type: lType, bootable: lBoot === 0x80, extended: false, logical: true });
        if (ebr + lStart + lSectors > extEnd) problems.push(`logical partition ${number} runs past the end of its extended partition`);
        number++;
      }
      const nType = buf[462 + 4]!;
      const nStart = view.getUint32(462 + 8, true);
      if (nType === 0 || nStart === 0) break;
      if (!EXTENDED_TYPES.has(nType)) problems.push(`the EBR at LBA ${ebr} links on with type ${mbrTypeCode(nType)} instead of an extended type`);
      ebr = extStart + nStart;
    }
  }

  return { diskSignature: mbr.diskSignature, partitions, ebrLbas, problems };
}
