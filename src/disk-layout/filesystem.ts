/**
 * Best-effort filesystem recognition from a partition's first 8 KiB, for
 * `dpsr inspect`. Names follow blkid's TYPE values. Never authoritative: a
 * wrong guess costs nothing, so nothing here throws.
 */

/** How much of a partition's start the sniffers look at. */
export const SNIFF_BYTES = 8192;

function ascii(buf: Uint8Array, offset: number, length: number): string {
  if (offset + length > buf.byteLength) return '';
  return Buffer.from(buf.buffer, buf.byteOffset + offset, length).toString('latin1');
}

function u16(buf: Uint8Array, o: number): number {
  return buf[o]! | (buf[o + 1]! << 8);
}

function u32(buf: Uint8Array, o: number): number {
  return (buf[o]! | (buf[o + 1]! << 8) | (buf[o + 2]! << 16) | (buf[o + 3]! << 24)) >>> 0;
}

function ext(buf: Uint8Array): string | undefined {
  const sb = 1024;
  if (buf.byteLength < sb + 0x68 || u16(buf, sb + 0x38) !== 0xef53) return undefined;
  const compat = u32(buf, sb + 0x5c);
  const incompat = u32(buf, sb + 0x60);
  const roCompat = u32(buf, sb + 0x64);
  // extents, 64bit, flex_bg, mmp / huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum: only ext4 sets them.
  if (incompat & 0x3c0 || roCompat & 0x478) return 'ext4';
  if (compat & 0x4) return 'ext3';
  return 'ext2';
}

export function sniffFilesystem(buf: Uint8Array): string | undefined {
  if (buf.byteLength < 512) return undefined;
  const e = ext(buf);
  if (e) return e;
  const swapSig = ascii(buf, 4096 - 10, 10);
  if (swapSig === 'SWAPSPACE2' || swapSig === 'SWAP-SPACE') return 'swap';
  if (ascii(buf, 0, 6) === 'LUKS\xba\xbe') return 'crypto_LUKS';
  if (ascii(buf, 0, 4) === 'XFSB') return 'xfs';
  if (ascii(buf, 512, 8) === 'LABELONE' && ascii(buf, 512 + 24, 8) === 'LVM2 001') return 'LVM2_member';
  if (ascii(buf, 3, 8) === 'NTFS    ') return 'ntfs';
  if (ascii(buf, 3, 8) === 'EXFAT   ') return 'exfat';
  if (buf[510] === 0x55 && buf[511] === 0xaa) {
    if (ascii(buf, 82, 5) === 'FAT32') return 'vfat';
    const fs16 = ascii(buf, 54, 5);
    if (fs16 === 'FAT12' || fs16 === 'FAT16' || ascii(buf, 54, 8) === 'FAT     ') return 'vfat';
  }
  return undefined;
}

function u64(buf: Uint8Array, o: number): number {
  return u32(buf, o) + u32(buf, o + 4) * 2 ** 32;
}

/**
 * Byte offsets, from the start of a filesystem, of metadata that every
 * read-write mount or every allocation updates, so that a spot check of a
 * copy reads them whatever else it samples: a drive mounted or written
 * elsewhere almost always changed one of them.
 * - ext2/3/4: the primary superblock (s_mtime, s_mnt_count, s_wtime and the
 *   free counts; ext4 disk layout, "The Super Block") and the first group
 *   descriptor block (free counts per group).
 * - NTFS: the first 64 KiB of the $MFT (records 0–63: $MFT's own bitmap,
 *   $LogFile, $Volume with its dirty flag, the root directory, $Bitmap,
 *   and the first user files), located from the boot sector's MFT LCN.
 * - FAT: the first FAT sector (FAT[1]'s dirty bits, the first clusters'
 *   chains), the FAT32 FSInfo sector (free count, next free) and the root
 *   directory's start (Microsoft FAT specification, sections 3 and 5).
 * - exFAT: the boot sector (VolumeFlags, PercentInUse), the FAT's start,
 *   the cluster heap's start (the allocation bitmap) and the root
 *   directory (exFAT specification, section 3.1).
 * `head` is the filesystem's first SNIFF_BYTES or more; `sizeBytes` its
 * size. Offsets past the filesystem or from a damaged boot sector are
 * dropped: never throws, and an unknown type gives only offset 0.
 */
export function writeTelltales(type: string | undefined, head: Uint8Array, sizeBytes: number): number[] {
  const out = new Set<number>([0]);
  const add = (offset: number) => {
    if (Number.isSafeInteger(offset) && offset >= 0 && offset < sizeBytes) out.add(offset);
  };
  if (head.byteLength < 512) return [...out];
  if (type === 'ext2' || type === 'ext3' || type === 'ext4') {
    const sb = 1024;
    if (head.byteLength < sb + 0x20) return [...out];
    const logBlock = u32(head, sb + 0x18);
    if (logBlock <= 6) {
      const blockSize = 1024 << logBlock;
      add(sb);
      add((u32(head, sb + 0x14) + 1) * blockSize);
    }
  } else if (type === 'ntfs') {
    const bytesPerSector = u16(head, 0x0b);
    const rawSpc = head[0x0d]!;
    const sectorsPerCluster = rawSpc > 0x80 ? 2 ** (256 - rawSpc) : rawSpc;
    const cluster = bytesPerSector * sectorsPerCluster;
    if (bytesPerSector >= 256 && cluster > 0) {
      const mft = u64(head, 0x30) * cluster;
      for (let k = 0; k < 64 * 1024; k += 4096) add(mft + k);
    }
  } else if (type === 'vfat') {
    const bytesPerSector = u16(head, 0x0b);
    const sectorsPerCluster = head[0x0d]!;
    const reserved = u16(head, 0x0e);
    const fats = head[0x10]!;
    const fat16Sectors = u16(head, 0x16);
    if (bytesPerSector >= 512 && sectorsPerCluster > 0 && reserved > 0) {
      add(reserved * bytesPerSector);
      if (fat16Sectors > 0) {
        add((reserved + fats * fat16Sectors) * bytesPerSector);
      } else {
        const fsInfo = u16(head, 0x30);
        if (fsInfo > 0 && fsInfo < reserved) add(fsInfo * bytesPerSector);
        const dataStart = (reserved + fats * u32(head, 0x24)) * bytesPerSector;
        const rootCluster = u32(head, 0x2c);
        if (rootCluster >= 2) add(dataStart + (rootCluster - 2) * sectorsPerCluster * bytesPerSector);
      }
    }
  } else if (type === 'exfat') {
    const sectorShift = head[108]!;
    const clusterShift = head[109]!;
    if (sectorShift >= 9 && sectorShift <= 12 && sectorShift + clusterShift <= 25) {
      const sector = 2 ** sectorShift;
      const heap = u32(head, 88) * sector;
      add(u32(head, 80) * sector);
      add(heap);
      const rootCluster = u32(head, 96);
      if (rootCluster >= 2) add(heap + (rootCluster - 2) * 2 ** (sectorShift + clusterShift));
    }
  }
  return [...out].sort((a, b) => a - b);
}
