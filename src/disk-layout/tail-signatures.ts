/**
 * Signatures anchored to a drive's end. Host tools look for some metadata at
 * fixed distances from the last byte: the backup GPT, md RAID superblocks 0.90
 * and 1.0, firmware RAID anchors (DDF, Intel IMSM and the older vendors),
 * DRBD's internal metadata, ZFS labels L2/L3, the backup superblocks of
 * bcachefs and nilfs2. After a copy onto a larger standby, what the standby's
 * previous life left there is still found by libblkid (blkid -p, wipefs),
 * mdadm --examine and sgdisk, so the standby looks like another disk than the
 * source. The positions and magics follow util-linux's libblkid probers
 * (libblkid/src/superblocks/*.c, partitions/gpt.c), mdadm's super0/super1/
 * super-ddf/super-intel and the UEFI 2.10 §5.3.2 GPT layout.
 *
 * Only the places those tools look at are read (the last 2 MiB, and the few
 * sectors an anchor points to), never the whole tail.
 */
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';
import { tableSectors } from './gpt.ts';
import type { DiskLayout } from './layout.ts';

export interface EndSignature {
  /** libblkid's TYPE for it (`gpt`, `linux_raid_member`, `ddf_raid_member`, `isw_raid_member`, `drbd`, `zfs_member`, …). */
  readonly type: string;
  /** What it is, for notes: "md superblock 1.0 at byte 100655104". */
  readonly what: string;
  /** Byte offset where the tools find its magic: it belongs to the tail when this lies in it. */
  readonly anchor: number;
  /** Bytes to zero to remove it: whole logical sectors. */
  readonly start: number;
  readonly length: number;
}

/** Everything libblkid and mdadm look for relative to the end lies within this distance of it (Promise's 3087 sectors are the farthest). */
const SCAN_BYTES = 2 * 1024 * 1024;
const MD_MAGIC = 0xa92b4efc;
const DDF_MAGIC = 0xde11de11;
const ISW_SIGNATURE = 'Intel Raid ISM Cfg Sig. ';
const ZFS_LABEL = 256 * 1024;
const ZFS_UBERBLOCK_MAGIC = 0x00bab10cn;
const BCACHEFS_MAGIC = Buffer.from('c68573f666ce90a9d96a60cf803df7ef', 'hex');
const PROMISE_SECTORS = [63, 255, 256, 16, 399, 591, 675, 735, 911, 974, 991, 951, 3087];
const PROMISE_SIGNATURE = 'Promise Technology, Inc.';

/** The end of a drive, read once, with reads by absolute byte offset. */
class EndWindow {
  constructor(
    readonly size: number,
    readonly start: number,
    private readonly buf: Buffer,
  ) {}
  has(offset: number, length: number): boolean {
    return offset >= this.start && offset + length <= this.size;
  }
  bytes(offset: number, length: number): Buffer | undefined {
    return this.has(offset, length) ? this.buf.subarray(offset - this.start, offset - this.start + length) : undefined;
  }
  u32le(offset: number): number | undefined {
    return this.bytes(offset, 4)?.readUInt32LE(0);
  }
  u32be(offset: number): number | undefined {
    return this.bytes(offset, 4)?.readUInt32BE(0);
  }
  ascii(offset: number, length: number): string | undefined {
    return this.bytes(offset, length)?.toString('latin1');
  }
}

function aligned(sector: number, start: number, length: number): { start: number; length: number } {
  const s = Math.floor(start / sector) * sector;
  const e = Math.ceil((start + length) / sector) * sector;
  return { start: s, length: e - s };
}

/**
 * Reads `buf` from `position`; sectors the drive cannot read (a failing end of
 * an old standby) stay zero: nothing is found there, and a tail the copy does
 * not need never stops the copy. Halves the piece size down to one logical
 * sector around a failure, as the copy engine's rescue does.
 */
async function readTolerant(dev: BlockDevice, buf: Buffer, position: number, piece = buf.byteLength): Promise<void> {
  const s = dev.logicalSectorSize;
  for (let off = 0; off < buf.byteLength; off += piece) {
    const len = Math.min(piece, buf.byteLength - off);
    const part = buf.subarray(off, off + len);
    try {
      await dev.read(part, position + off, len);
    } catch {
      part.fill(0);
      if (len > s) await readTolerant(dev, part, position + off, Math.max(s, Math.ceil(len / 2 / s) * s));
    }
  }
}

/**
 * Finds every end-anchored signature on `dev`, positioned for this drive's
 * size. Reads the last 2 MiB (and the sectors a found anchor points to);
 * unreadable parts count as holding nothing.
 */
export async function findEndSignatures(dev: BlockDevice): Promise<EndSignature[]> {
  const size = dev.size;
  const sector = dev.logicalSectorSize;
  const windowStart = Math.max(0, Math.floor((size - SCAN_BYTES) / sector) * sector);
  const buf = size > windowStart ? allocAligned(size - windowStart) : Buffer.alloc(0);
  if (buf.byteLength > 0) await readTolerant(dev, buf, windowStart);
  const w = new EndWindow(size, windowStart, buf);
  const found: EndSignature[] = [];
  const add = (type: string, what: string, anchor: number, start: number, length: number) => {
    const r = aligned(sector, Math.max(0, start), Math.min(size, start + length) - Math.max(0, start));
    found.push({ type, what, anchor, ...r });
  };
  const readSector = async (offset: number): Promise<Buffer | undefined> => {
    if (offset < 0 || offset + sector > size || offset % sector !== 0) return undefined;
    const inWindow = w.bytes(offset, sector);
    if (inWindow) return inWindow;
    const b = allocAligned(sector);
    try {
      await dev.read(b, offset, sector);
    } catch {
      return undefined;
    }
    return b;
  };

  // Backup GPT header at the last LBA, and the table it points to (UEFI 2.10 §5.3.2).
  const lastLba = Math.floor(size / sector) - 1;
  if (lastLba > 1 && w.ascii(lastLba * sector, 8) === 'EFI PART') {
    const h = w.bytes(lastLba * sector, sector)!;
    const entriesLba = Number(h.readBigUInt64LE(72));
    const tableBytes = h.readUInt32LE(80) * h.readUInt32LE(84);
    let what = `backup GPT header (LBA ${lastLba})`;
    add('gpt', what, lastLba * sector, lastLba * sector, sector);
    if (entriesLba > 1 && entriesLba < lastLba && tableBytes > 0 && tableBytes <= 4 * 1024 * 1024) {
      const tableSectors = Math.ceil(tableBytes / sector);
      what = `backup GPT partition table (LBA ${entriesLba}–${entriesLba + tableSectors - 1})`;
      add('gpt', what, lastLba * sector, entriesLba * sector, Math.min(tableSectors, lastLba - entriesLba) * sector);
    }
  }

  // md 0.90: 64 KiB-aligned, the last 64 KiB; either byte order (libblkid linux_raid.c probe_raid0, mdadm super0.c).
  if (size > 0x20000) {
    const off = Math.floor(size / 0x10000) * 0x10000 - 0x10000;
    if (w.u32le(off) === MD_MAGIC || w.u32be(off) === MD_MAGIC) add('linux_raid_member', `md superblock 0.90 at byte ${off}`, off, off, 4096);
  }
  // md 1.0: 4 KiB-aligned, at least 8 KiB from the end (probe_raid1, mdadm super1.c).
  if (size > 0x3000) {
    const off = Math.floor(size / 0x1000) * 0x1000 - 0x2000;
    if (w.u32le(off) === MD_MAGIC && w.u32le(off + 4) === 1) add('linux_raid_member', `md superblock 1.0 at byte ${off}`, off, off, 4096);
  }

  // SNIA DDF: the anchor in the last 512-byte sector (or 257 from the end), pointing to its primary and secondary headers.
  for (const back of [1, 257]) {
    const off = (Math.floor(size / 512) - back) * 512;
    if (w.u32be(off) !== DDF_MAGIC) continue;
    add('ddf_raid_member', `DDF anchor header at byte ${off}`, off, off, 512);
    const h = w.bytes(off, 512)!;
    for (const [field, name] of [
      [96, 'primary'],
      [104, 'secondary'],
    ] as const) {
      const lba = h.readBigUInt64BE(field);
      if (lba === 0xffffffffffffffffn || lba * 512n + 512n > BigInt(size)) continue;
      const at = Number(lba) * 512;
      const s = await readSector(Math.floor(at / sector) * sector);
      if (s && s.readUInt32BE(at % sector) === DDF_MAGIC) add('ddf_raid_member', `DDF ${name} header at byte ${at}`, at, at, 512);
    }
  }

  // Intel IMSM: the anchor two logical sectors from the end; a larger MPB continues in the sectors before it.
  {
    const off = (Math.floor(size / sector) - 2) * sector;
    if (off > 0 && w.ascii(off, ISW_SIGNATURE.length) === ISW_SIGNATURE) {
      const mpbSize = w.u32le(off + 36) ?? 0;
      const extra = Math.max(0, Math.ceil(Math.min(mpbSize, 1 << 20) / 512) - 1) * 512;
      add('isw_raid_member', `Intel IMSM metadata at byte ${off}`, off, off - extra, extra + sector);
    }
  }

  // DRBD internal metadata: its superblock's magic at byte 60 of the last 4 KiB (libblkid drbd.c), or of the last whole 4 KiB block (drbdmeta).
  for (const off of new Set([size - 4096, Math.floor(size / 4096) * 4096 - 4096])) {
    const m = w.bytes(off + 60, 4);
    if (m && m[0] === 0x83 && m[1] === 0x74 && m[2] === 0x02 && m[3]! >= 0x6b && m[3]! <= 0x6d) add('drbd', `DRBD internal metadata at byte ${off}`, off + 60, off, 4096);
  }

  // ZFS labels L2 and L3: the last 512 KiB of the 256 KiB-aligned size; an XDR nvlist at 16 KiB or uberblocks from 128 KiB (zfs.c, vdev_label.c).
  if (size >= 4 * ZFS_LABEL) {
    const base = size - (size % ZFS_LABEL) - 2 * ZFS_LABEL;
    for (const l of [2, 3]) {
      const label = base + (l - 2) * ZFS_LABEL;
      const nv = w.bytes(label + 16 * 1024, 16);
      let hit = !!nv && nv[0] === 1 && nv[1]! <= 1 && nv.readUInt32BE(12) !== 0;
      for (let i = 0; !hit && i < 128; i++) {
        const ub = w.bytes(label + 128 * 1024 + i * 1024, 8);
        if (ub && (ub.readBigUInt64LE(0) === ZFS_UBERBLOCK_MAGIC || ub.readBigUInt64BE(0) === ZFS_UBERBLOCK_MAGIC)) hit = true;
      }
      if (hit) add('zfs_member', `ZFS label L${l} at byte ${label}`, label + 16 * 1024, label, ZFS_LABEL);
    }
  }

  // bcachefs keeps a superblock copy 1 MiB from the end (bcache.c); nilfs2 a backup superblock 8 sectors from it (nilfs.c).
  {
    const off = size - 1024 * 1024;
    if (w.bytes(off + 24, 16)?.equals(BCACHEFS_MAGIC)) add('bcachefs', `bcachefs superblock copy at byte ${off}`, off + 24, off, 4096);
    const nil = (Math.floor(size / 512) - 8) * 512;
    if (w.bytes(nil + 6, 2)?.readUInt16LE(0) === 0x3434) add('nilfs2', `nilfs2 backup superblock at byte ${nil}`, nil + 6, nil, 1024);
  }

  // Older firmware RAID formats, each at a fixed 512-byte sector from the end.
  const at = (back: number) => (Math.floor(size / 512) - back) * 512;
  const last = at(1);
  const lastSector = w.bytes(last, 512);
  if (lastSector) {
    if (lastSector.readUInt32BE(0) === 0x37fc4d1e && lastSector.toString('latin1', 256, 260) === 'DPTM') add('adaptec_raid_member', `Adaptec RAID metadata at byte ${last}`, last, last, 512);
    if (lastSector.toString('latin1', 0, 2) === 'JM' && lastSector[0x30]! <= 5) add('jmicron_raid_member', `JMicron RAID metadata at byte ${last}`, last, last, 512);
    if (lastSector.toString('latin1', 0, 6) === '$XIDE$') add('lsi_mega_raid_member', `LSI MegaRAID metadata at byte ${last}`, last, last, 512);
    if (lastSector.readUInt32LE(0x60) === 0x2f000000) add('silicon_medley_raid_member', `Silicon Image RAID metadata at byte ${last}`, last, last, 512);
    if (lastSector.readUInt16LE(0) === 0xaa55 && lastSector[2]! <= 2) {
      let sum = 0;
      for (let i = 0; i < 50; i++) sum = (sum + lastSector[i]!) & 0xff;
      if (sum === lastSector[50]) add('via_raid_member', `VIA RAID metadata at byte ${last}`, last, last, 512);
    }
  }
  if (w.ascii(at(2), 8) === 'NVIDIA  ') add('nvidia_raid_member', `NVIDIA RAID metadata at byte ${at(2)}`, at(2), at(2), 512);
  const hpt = w.u32le(at(11));
  if (hpt === 0x5a7816f3 || hpt === 0x5a7816fd) add('hpt45x_raid_member', `HighPoint RAID metadata at byte ${at(11)}`, at(11), at(11), 512);
  for (const back of PROMISE_SECTORS) {
    if (w.ascii(at(back), PROMISE_SIGNATURE.length) === PROMISE_SIGNATURE) add('promise_fasttrack_raid_member', `Promise FastTrak RAID metadata at byte ${at(back)}`, at(back), at(back), 512);
  }
  return found;
}

export interface TailCleanup {
  /** Signatures whose magic lies past the copied area, each with the sectors to zero (clipped to the tail, `keep` left out). */
  readonly signatures: EndSignature[];
  /** Total bytes the cleanup writes. */
  readonly bytes: number;
}

/**
 * The stale signatures a copy of `copiedBytes` leaves in a larger target's
 * tail: read from the target before anything is written (the copy never
 * touches the tail), so the cleanup is part of the plan. `keep` lists ranges
 * the copy itself rewrites afterwards (the relocated backup GPT), which are
 * left out. Returns no signatures when the target is not larger.
 */
export async function planTailCleanup(target: BlockDevice, copiedBytes: number, options: { keep?: readonly { start: number; length: number }[] } = {}): Promise<TailCleanup> {
  if (target.size <= copiedBytes) return { signatures: [], bytes: 0 };
  const keep = options.keep ?? [];
  const out: EndSignature[] = [];
  for (const sig of await findEndSignatures(target)) {
    if (sig.anchor < copiedBytes) continue;
    let pieces = [{ start: Math.max(sig.start, copiedBytes), end: sig.start + sig.length }].filter((p) => p.end > p.start);
    for (const k of keep) {
      const ke = k.start + k.length;
      pieces = pieces.flatMap((p) => (ke <= p.start || k.start >= p.end ? [p] : [...(k.start > p.start ? [{ start: p.start, end: k.start }] : []), ...(ke < p.end ? [{ start: ke, end: p.end }] : [])]));
    }
    for (const p of pieces) out.push({ ...sig, start: p.start, length: p.end - p.start });
  }
  // Two probers can name the same sector (md 1.0 and DRBD on a small tail): write each sector once.
  const unique = out.filter((s, i) => out.findIndex((o) => o.start === s.start && o.length === s.length) === i);
  unique.sort((a, b) => a.start - b.start);
  return { signatures: unique, bytes: unique.reduce((n, s) => n + s.length, 0) };
}

/**
 * Metadata on the source that belongs at the end of the drive it lives on
 * (md 0.90/1.0, DDF, IMSM, DRBD internal metadata, ZFS L2/L3 and the like):
 * copied onto a larger standby it lands short of the end, where the tools no
 * longer find it. The backup GPT is not listed: the copy relocates it.
 */
export async function endAnchoredMetadata(source: BlockDevice): Promise<EndSignature[]> {
  return (await findEndSignatures(source)).filter((s) => s.type !== 'gpt');
}

export interface CopyTail {
  /** Stale signatures in the target's tail, to zero after the data and before the GPT relocation. */
  readonly cleanup: TailCleanup;
  /** The source's own end-anchored metadata, which will not sit at the end of the larger copy. */
  readonly endMetadata: EndSignature[];
}

/**
 * Both tail questions of a copy of the whole `source` onto a larger `target`,
 * asked before anything is written. When the source has a GPT, the sectors
 * its relocated backup (header and table) takes at the target's end are left
 * out of the cleanup: the relocation rewrites them, and a later copy finds
 * them in place instead of zeroing and rewriting them each time.
 */
export async function planCopyTail(source: BlockDevice, target: BlockDevice, sourceLayout?: DiskLayout): Promise<CopyTail> {
  if (target.size <= source.size) return { cleanup: { signatures: [], bytes: 0 }, endMetadata: [] };
  const keep: { start: number; length: number }[] = [];
  const g = sourceLayout?.scheme === 'gpt' ? sourceLayout.gpt : undefined;
  if (g && g.entryCount > 0 && g.entrySize > 0) {
    const s = target.logicalSectorSize;
    const backupBytes = (tableSectors(g.entryCount, g.entrySize, s) + 1) * s;
    keep.push({ start: target.size - backupBytes, length: backupBytes });
  }
  return { cleanup: await planTailCleanup(target, source.size, { keep }), endMetadata: await endAnchoredMetadata(source) };
}
