/**
 * Moving one partition to another drive: where it goes on the target (a
 * chosen offset or the first free aligned gap that fits) and the entry that
 * describes it in the target's table, decided from both layouts before
 * anything is written; then the entry written into the target's table (GPT:
 * both copies, UEFI spec 2.10 §5.3; MBR: a free primary slot).
 *
 * The new entry keeps the partition's type, attributes (GPT) or boot flag
 * (MBR) and name, and gets a new unique partition GUID: the source partition
 * still exists, and two partitions with one GUID confuse every tool that
 * mounts by PARTUUID.
 */
import { randomUUID } from 'node:crypto';
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';
import { crc32 } from './crc32.ts';
import { headerCrcOf, readGpt, tableSectors } from './gpt.ts';
import { parseGuid } from './guid.ts';
import { EXTENDED_TYPES } from './mbr.ts';
import { formatExactBytes } from './format.ts';
import type { DiskLayout, Partition } from './layout.ts';

/** Partitions start on 1 MiB boundaries, as every partitioning tool places them by default. */
export const PARTITION_ALIGNMENT = 1024 * 1024;

export interface PartitionMoveRequest {
  readonly source: DiskLayout;
  /** The partition's number on the source, as `dpsr inspect` lists it. */
  readonly partition: number;
  readonly target: DiskLayout;
  /** Byte offset on the target; undefined for the first free aligned gap that fits. */
  readonly at?: number;
  /** For messages. */
  readonly sourcePath: string;
  readonly targetPath: string;
}

export interface PartitionMoveRefusal {
  /** bad-input: the request names what is not there or not aligned (exit 2); refused: it does not fit (exit 3). */
  readonly error: 'bad-input' | 'refused';
  readonly reason: string;
  readonly hint: string;
}

export type NewEntry =
  | { readonly scheme: 'gpt'; readonly slot: number; readonly typeGuid: string; readonly uniqueGuid: string; readonly attributes: string; readonly name: string; readonly firstLba: number; readonly lastLba: number }
  | { readonly scheme: 'mbr'; readonly slot: number; readonly type: number; readonly bootable: boolean; readonly firstLba: number; readonly sectors: number };

export interface PartitionMovePlan {
  /** Bytes on the source. */
  readonly sourceStart: number;
  readonly length: number;
  /** Byte offset on the target. */
  readonly targetStart: number;
  readonly entry: NewEntry;
}

const refuse = (reason: string, hint: string, error: PartitionMoveRefusal['error'] = 'refused') => ({ refusal: { error, reason, hint } });

interface Span {
  readonly first: number;
  readonly last: number;
  readonly what: string;
}

/**
 * Decides where partition `partition` of the source goes on the target and
 * the target's new entry. Pure: the new GUID comes from `newGuid` (random by
 * default). Refuses (before anything is opened for writing) a partition that
 * is not there or is an extended container, another sector size, a target
 * without a usable table or without a free entry, an offset not on a 1 MiB
 * boundary, a place that overlaps a partition or the table, and a target too
 * small or too full.
 */
export function planPartitionMove(req: PartitionMoveRequest, newGuid: () => string = () => randomUUID().toUpperCase()): { plan?: PartitionMovePlan; refusal?: PartitionMoveRefusal } {
  const { source, target } = req;
  const part = source.partitions.find((p) => p.number === req.partition);
  if (!part) {
    const have = source.partitions.map((p) => p.number);
    return refuse(`${req.sourcePath} has no partition ${req.partition}`, have.length ? `its partitions are ${have.join(', ')} (\`dpsr inspect ${req.sourcePath}\`)` : `it has no partitions (\`dpsr inspect ${req.sourcePath}\`)`, 'bad-input');
  }
  if (part.extended) return refuse(`partition ${part.number} of ${req.sourcePath} is an extended partition, a container of logical ones`, 'move the logical partitions one by one (numbers 5 and up)', 'bad-input');
  if (source.sectorSize !== target.sectorSize) {
    return refuse(`${req.targetPath} has ${target.sectorSize}-byte logical sectors, ${req.sourcePath} ${source.sectorSize}-byte ones`, 'a filesystem moved between sector sizes may not mount; use a target with the same logical sector size');
  }
  const s = target.sectorSize;
  const total = Math.floor(target.diskSizeBytes / s);
  const sectors = part.lastLba - part.firstLba + 1;
  const size = formatExactBytes(sectors * s, s);
  if (target.scheme === 'none') {
    return refuse(`${req.targetPath} has no partition table`, `create one first (\`sgdisk -o ${req.targetPath}\` for GPT, \`echo 'label: dos' | sfdisk ${req.targetPath}\` for MBR), then migrate`);
  }
  if (target.problems.length) {
    return refuse(`the partition table of ${req.targetPath} has problems: ${target.problems.join('; ')}`, `repair it first (\`sgdisk -v\`, \`sfdisk -V\`); a new entry is written only into a sound table`);
  }

  // The usable area and what already lies in it.
  let usableFirst: number;
  let usableLast: number;
  const taken: Span[] = [];
  let slot: number | undefined;
  if (target.scheme === 'gpt') {
    const g = target.gpt!;
    usableFirst = g.firstUsableLba;
    usableLast = g.lastUsableLba;
    const used = new Set(target.partitions.map((p) => p.number));
    for (let i = 1; i <= g.entryCount; i++) if (!used.has(i)) { slot = i; break; }
    if (slot === undefined) return refuse(`the GPT of ${req.targetPath} has no free entry (all ${g.entryCount} are used)`, 'remove a partition from it first');
  } else {
    usableFirst = 1;
    // An MBR entry holds 32-bit LBAs.
    usableLast = Math.min(total - 1, 0xffffffff - 1);
    const used = new Set(target.partitions.filter((p) => !p.logical).map((p) => p.number));
    for (let i = 1; i <= 4; i++) if (!used.has(i)) { slot = i; break; }
    if (slot === undefined) return refuse(`the MBR of ${req.targetPath} has all four primary entries in use`, 'free a primary entry first, or use a GPT target');
    for (const ebr of target.mbr?.ebrLbas ?? []) taken.push({ first: ebr, last: ebr, what: `the EBR at LBA ${ebr}` });
  }
  for (const p of target.partitions) taken.push({ first: p.firstLba, last: p.lastLba, what: `partition ${p.number}` });
  taken.sort((a, b) => a.first - b.first);

  const align = Math.max(1, PARTITION_ALIGNMENT / s);
  let first: number;
  if (req.at !== undefined) {
    if (!Number.isSafeInteger(req.at) || req.at < 0 || req.at % PARTITION_ALIGNMENT !== 0) {
      return refuse(`--at ${req.at} is not on a 1 MiB boundary`, `give a multiple of 1 MiB (1048576 bytes), e.g. --at ${Math.max(1, Math.ceil(Math.max(0, req.at) / PARTITION_ALIGNMENT))}M, or leave --at out for the first free gap that fits`, 'bad-input');
    }
    first = req.at / s;
    const last = first + sectors - 1;
    if (first < usableFirst) return refuse(`--at ${req.at} lies in the partition table area of ${req.targetPath} (the first usable LBA is ${usableFirst})`, 'choose a later offset, or leave --at out');
    if (last > usableLast) {
      return refuse(`partition ${part.number} (${size}) placed at byte ${req.at} would end at LBA ${last}, past the last usable LBA ${usableLast} of ${req.targetPath}`, 'choose an earlier offset or a larger target, or leave --at out for the first gap that fits');
    }
    const hit = taken.find((t) => t.first <= last && t.last >= first);
    if (hit) return refuse(`partition ${part.number} (${size}) placed at byte ${req.at} (LBA ${first}–${last}) would overlap ${hit.what} (LBA ${hit.first}–${hit.last}) of ${req.targetPath}`, 'choose a free place (`dpsr inspect` lists the partitions), or leave --at out for the first gap that fits');
  } else {
    let candidate = Math.ceil(usableFirst / align) * align;
    let found: number | undefined;
    for (const t of [...taken, { first: usableLast + 1, last: usableLast + 1, what: 'end' }]) {
      if (candidate + sectors - 1 < t.first && candidate + sectors - 1 <= usableLast) {
        found = candidate;
        break;
      }
      candidate = Math.max(candidate, Math.ceil((t.last + 1) / align) * align);
    }
    if (found === undefined) {
      const usable = formatExactBytes((usableLast - usableFirst + 1) * s, s);
      const why = taken.length ? `no free gap on ${req.targetPath} holds it on a 1 MiB boundary` : `${req.targetPath} is too small: its usable area is ${usable}`;
      return refuse(`partition ${part.number} of ${req.sourcePath} needs ${size}, but ${why}`, 'use a larger target, or free space on it');
    }
    first = found;
  }

  const entry: NewEntry =
    target.scheme === 'gpt'
      ? { scheme: 'gpt', slot, typeGuid: gptType(part, source), uniqueGuid: newGuid(), attributes: part.attributes ?? '0', name: part.name ?? '', firstLba: first, lastLba: first + sectors - 1 }
      : { scheme: 'mbr', slot, type: mbrType(part), bootable: part.bootable, firstLba: first, sectors };
  return { plan: { sourceStart: part.firstLba * source.sectorSize, length: sectors * s, targetStart: first * s, entry } };
}

/** The type a GPT entry gets: the source's GUID, or for an MBR source the GPT type of its MBR type byte. */
function gptType(p: Partition, source: DiskLayout): string {
  if (source.scheme === 'gpt') return p.type;
  const byte = Number.parseInt(p.type, 16);
  return MBR_TO_GPT[byte] ?? '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
}

/** The type an MBR entry gets: the source's type byte, or for a GPT source the MBR byte of its GPT type. */
function mbrType(p: Partition): number {
  if (p.type.startsWith('0x')) {
    const t = Number.parseInt(p.type, 16);
    return EXTENDED_TYPES.has(t) ? 0x83 : t;
  }
  const back = Object.entries(MBR_TO_GPT).find(([, g]) => g === p.type.toUpperCase());
  return back ? Number(back[0]) : 0x83;
}

/** The usual correspondences (fdisk's and sgdisk's), for a move between schemes. */
const MBR_TO_GPT: Record<number, string> = {
  0x07: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  0x0b: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  0x0c: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  0x82: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  0x83: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  0x8e: 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
  0xef: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  0xfd: 'A19D880F-05FC-4D3B-A006-743F0F84911E',
};

/**
 * Writes the planned entry into the target's table: for GPT the backup copy
 * first (entry, table CRC, header CRC), then the primary, so an interruption
 * leaves one consistent copy of the old or new table; for MBR the one
 * 16-byte slot of LBA 0. Writes through `dev` (a journaled device in a
 * migration, so a rollback undoes them). Throws when the table no longer is
 * what the plan was made from (the slot is taken).
 */
export async function writePartitionEntry(dev: BlockDevice, entry: NewEntry): Promise<void> {
  const s = dev.logicalSectorSize;
  if (entry.scheme === 'mbr') {
    const lba0 = allocAligned(s);
    await dev.read(lba0, 0, s);
    const o = 446 + (entry.slot - 1) * 16;
    if (lba0[o + 4] !== 0) throw new Error(`MBR entry ${entry.slot} of ${dev.path} was taken meanwhile`);
    const view = new DataView(lba0.buffer, lba0.byteOffset, lba0.byteLength);
    lba0[o] = entry.bootable ? 0x80 : 0;
    // CHS fields as sfdisk writes them for LBA-addressed partitions beyond CHS reach.
    lba0.set([0xfe, 0xff, 0xff], o + 1);
    lba0[o + 4] = entry.type;
    lba0.set([0xfe, 0xff, 0xff], o + 5);
    view.setUint32(o + 8, entry.firstLba, true);
    view.setUint32(o + 12, entry.sectors, true);
    await dev.write(lba0, 0, s);
    await dev.flush();
    return;
  }
  const gpt = await readGpt(dev);
  for (const copy of [gpt.backup, gpt.primary]) {
    if (!copy?.valid || !copy.header || !copy.headerSector || !copy.table) throw new Error(`the ${copy?.which ?? 'backup'} GPT of ${dev.path} is not valid`);
    const h = copy.header;
    const n = tableSectors(h.entryCount, h.entrySize, s);
    const raw = allocAligned(n * s);
    await dev.read(raw, h.entriesLba * s, n * s);
    const o = (entry.slot - 1) * h.entrySize;
    if (raw.subarray(o, o + 16).some((b) => b !== 0)) throw new Error(`GPT entry ${entry.slot} of ${dev.path} was taken meanwhile`);
    raw.fill(0, o, o + h.entrySize);
    raw.set(parseGuid(entry.typeGuid), o);
    raw.set(parseGuid(entry.uniqueGuid), o + 16);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    view.setBigUint64(o + 32, BigInt(entry.firstLba), true);
    view.setBigUint64(o + 40, BigInt(entry.lastLba), true);
    view.setBigUint64(o + 48, BigInt(entry.attributes), true);
    Buffer.from(raw.buffer, raw.byteOffset + o + 56, 72).write(entry.name.slice(0, 36), 'utf16le');
    const header = Buffer.from(copy.headerSector);
    header.writeUInt32LE(crc32(raw.subarray(0, h.entryCount * h.entrySize)), 88);
    header.writeUInt32LE(0, 16);
    header.writeUInt32LE(headerCrcOf(header, h.headerSize), 16);
    const headerBuf = allocAligned(s);
    headerBuf.set(header.subarray(0, s));
    await dev.write(raw, h.entriesLba * s, n * s);
    await dev.write(headerBuf, h.myLba * s, s);
    await dev.flush();
  }
}
