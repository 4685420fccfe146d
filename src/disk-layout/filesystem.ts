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
