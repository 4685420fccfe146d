/**
 * Metadata that host tools find at the end of a drive, written into image
 * files the way the tools that own them lay it out (md superblocks as mdadm
 * writes them, with their checksums; a DDF anchor and header; an Intel IMSM
 * anchor; DRBD 8.4 internal metadata). The md kernel driver is not needed:
 * tests check each fixture with blkid -p, wipefs and mdadm --examine first,
 * so a fixture the real tools do not recognise fails the test.
 */
import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';

function put(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** mdadm's calc_sb_1_csum / calc_sb0_csum: 32-bit little-endian words summed in 64 bits, folded. */
function foldedSum(buf: Buffer, length: number): number {
  let sum = 0n;
  for (let i = 0; i + 4 <= length; i += 4) sum += BigInt(buf.readUInt32LE(i));
  if (length % 4 === 2) sum += BigInt(buf.readUInt16LE(length - 2));
  return Number(((sum & 0xffffffffn) + (sum >> 32n)) & 0xffffffffn);
}

/** md superblock 1.0 (mdp_superblock_1), 4 KiB-aligned 8 KiB before the end: a RAID 1 member. */
export function writeMd10(path: string): number {
  const size = statSync(path).size;
  const off = Math.floor(size / 4096) * 4096 - 8192;
  const sb = Buffer.alloc(4096);
  sb.writeUInt32LE(0xa92b4efc, 0);
  sb.writeUInt32LE(1, 4);
  randomBytes(16).copy(sb, 16);
  sb.write('old-standby:0', 32, 'latin1');
  sb.writeBigUInt64LE(BigInt(Math.floor(Date.now() / 1000)), 64);
  sb.writeUInt32LE(1, 72); // level: raid1
  const dataSectors = off / 512 - 128;
  sb.writeBigUInt64LE(BigInt(dataSectors), 80);
  sb.writeUInt32LE(2, 92); // raid_disks
  sb.writeBigUInt64LE(0n, 128); // data_offset
  sb.writeBigUInt64LE(BigInt(dataSectors), 136);
  sb.writeBigUInt64LE(BigInt(off / 512), 144); // super_offset
  sb.writeBigUInt64LE(0xffffffffffffffffn, 152); // recovery_offset
  randomBytes(16).copy(sb, 168);
  sb.writeBigUInt64LE(1n, 200); // events
  sb.writeBigUInt64LE(0xffffffffffffffffn, 208); // resync_offset: clean
  sb.writeUInt32LE(2, 220); // max_dev
  sb.writeUInt16LE(0, 256);
  sb.writeUInt16LE(1, 258);
  sb.writeUInt32LE(foldedSum(sb, 256 + 2 * 2), 216);
  put(path, off, sb);
  return off;
}

/** md superblock 0.90 (mdp_super_t), in the last 64 KiB-aligned 64 KiB: a RAID 1 member. */
export function writeMd090(path: string): number {
  const size = statSync(path).size;
  const off = Math.floor(size / 65536) * 65536 - 65536;
  const sb = Buffer.alloc(4096);
  const w = (word: number, v: number) => sb.writeUInt32LE(v >>> 0, word * 4);
  w(0, 0xa92b4efc);
  w(1, 0);
  w(2, 90);
  w(3, 0);
  w(5, randomBytes(4).readUInt32LE(0));
  w(6, Math.floor(Date.now() / 1000));
  w(7, 1); // raid1
  w(8, off / 1024); // size in KiB
  w(9, 2);
  w(10, 2);
  for (const word of [13, 14, 15]) w(word, randomBytes(4).readUInt32LE(0));
  w(32, Math.floor(Date.now() / 1000));
  w(33, 1); // clean
  w(34, 2);
  w(35, 2);
  w(40, 1); // events
  // this_disk (the descriptor at word 992) and the disk table: two active members.
  for (const [base, nr] of [
    [992, 0],
    [128, 0],
    [160, 1],
  ] as const) {
    w(base, nr);
    w(base + 1, 8);
    w(base + 2, nr);
    w(base + 3, nr);
    w(base + 4, 6); // active, sync
  }
  w(38, foldedSum(sb, 4096));
  put(path, off, sb);
  return off;
}

/** The CRC libblkid checks DDF headers with: reflected CRC-32, seed 0, no final inversion, the CRC field read as 0xFFFFFFFF. */
function ddfCrc(header: Buffer): number {
  const copy = Buffer.from(header);
  copy.fill(0xff, 4, 8);
  let crc = 0;
  for (const byte of copy) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return crc >>> 0;
}

function ddfHeader(type: number, primaryLba: bigint, secondaryLba: bigint, guid: Buffer): Buffer {
  const h = Buffer.alloc(512, 0xff);
  h.writeUInt32BE(0xde11de11, 0);
  guid.copy(h, 8);
  h.write('02.00.00', 32, 'latin1');
  h.writeUInt32BE(1, 40);
  h.writeUInt32BE(Math.floor(Date.now() / 1000), 44);
  h.fill(0, 48, 52);
  h.writeBigUInt64BE(primaryLba, 96);
  h.writeBigUInt64BE(secondaryLba, 104);
  h[112] = type;
  h.writeUInt32BE(ddfCrc(h), 4);
  return h;
}

/** SNIA DDF: the anchor in the last sector, its primary header 32 MiB from the end (where mdadm puts it). */
export function writeDdf(path: string): { anchor: number; primary: number } {
  const size = statSync(path).size;
  const sectors = BigInt(size / 512);
  const primaryLba = sectors - 1n - 32n * 2048n;
  const guid = Buffer.concat([Buffer.from('Linux-MD'), randomBytes(16)]);
  put(path, Number(primaryLba) * 512, ddfHeader(0x55, primaryLba, 0xffffffffffffffffn, guid));
  put(path, size - 512, ddfHeader(0x00, primaryLba, 0xffffffffffffffffn, guid));
  return { anchor: size - 512, primary: Number(primaryLba) * 512 };
}

/** Intel IMSM: the MPB anchor two sectors from the end. */
export function writeImsm(path: string, sector = 512): number {
  const size = statSync(path).size;
  const off = (Math.floor(size / sector) - 2) * sector;
  const mpb = Buffer.alloc(sector);
  mpb.write('Intel Raid ISM Cfg Sig. 1.0.00', 0, 'latin1');
  mpb.writeUInt32LE(480, 36); // mpb_size
  mpb.writeUInt32LE(0x1234, 40); // family
  mpb.writeUInt32LE(1, 44); // generation
  put(path, off, mpb);
  return off;
}

/** DRBD 8.4 internal metadata: its superblock in the last 4 KiB block. */
export function writeDrbd(path: string): number {
  const size = statSync(path).size;
  const off = Math.floor(size / 4096) * 4096 - 4096;
  const md = Buffer.alloc(4096);
  md.writeBigUInt64BE(BigInt(off / 512 - 2048), 0); // la_sect
  randomBytes(40).copy(md, 8); // uuids and device uuid
  Buffer.from([0x83, 0x74, 0x02, 0x6b]).copy(md, 60);
  md.writeUInt32BE(8, 64); // md_size_sect
  md.writeInt32BE(8, 68);
  md.writeUInt32BE(61, 72);
  md.writeInt32BE(-2048, 76);
  md.writeUInt32BE(4096, 80); // bm_bytes_per_bit
  put(path, off, md);
  return off;
}

/** An XDR-encoded nvpair (uint64 or string) as ZFS writes its vdev labels. */
function nvpair(name: string, value: bigint | string): Buffer {
  const nameBytes = Buffer.alloc(Math.ceil(name.length / 4) * 4);
  nameBytes.write(name, 'latin1');
  let body: Buffer;
  if (typeof value === 'bigint') {
    body = Buffer.alloc(16);
    body.writeUInt32BE(8, 0); // DATA_TYPE_UINT64
    body.writeUInt32BE(1, 4);
    body.writeBigUInt64BE(value, 8);
  } else {
    body = Buffer.alloc(12 + Math.ceil(value.length / 4) * 4);
    body.writeUInt32BE(9, 0); // DATA_TYPE_STRING
    body.writeUInt32BE(1, 4);
    body.writeUInt32BE(value.length, 8);
    body.write(value, 12, 'latin1');
  }
  const head = Buffer.alloc(12);
  head.writeUInt32BE(12 + nameBytes.length + body.length, 0);
  head.writeUInt32BE(name.length, 8);
  return Buffer.concat([head, nameBytes, body]);
}

/** ZFS vdev labels L2 and L3 (the 256 KiB-aligned last 512 KiB): an nvlist at 16 KiB and uberblocks from 128 KiB of each. */
export function writeZfsLabels(path: string): number[] {
  const size = statSync(path).size;
  const base = size - (size % (256 * 1024)) - 512 * 1024;
  const pairs = Buffer.concat([
    nvpair('version', 5000n),
    nvpair('name', 'oldpool'),
    nvpair('state', 0n),
    nvpair('txg', 4n),
    nvpair('pool_guid', 0x1234567890abcdefn),
    nvpair('guid', 0x0fedcba987654321n),
    Buffer.alloc(8),
  ]);
  const header = Buffer.alloc(12);
  header[0] = 1; // NV_ENCODE_XDR
  header[1] = 1; // little-endian host
  const ub = Buffer.alloc(1024);
  ub.writeBigUInt64LE(0x00bab10cn, 0);
  ub.writeBigUInt64LE(5000n, 8);
  const labels = [base, base + 256 * 1024];
  for (const l of labels) {
    put(path, l + 16 * 1024, Buffer.concat([header, pairs]));
    // util-linux 2.38 wants four uberblocks, newer versions the nvlist: both are there.
    for (let i = 4; i < 8; i++) put(path, l + 128 * 1024 + i * 1024, ub);
  }
  return labels;
}

/** What blkid -p says a drive is, as KEY=value pairs (empty when it finds nothing). */
export function blkidProbe(path: string): Record<string, string> {
  try {
    const out = execFileSync('blkid', ['-p', '-o', 'export', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const pairs = out
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const)
      .filter(([k]) => ['TYPE', 'PTTYPE', 'USAGE', 'VERSION'].includes(k));
    return Object.fromEntries(pairs);
  } catch (e) {
    const err = e as { status?: number; stdout?: string };
    // 2: nothing found; anything found with an ambivalent result is printed too.
    if (err.status === 2) return {};
    return { error: String(err.stdout ?? e) };
  }
}

/** Every signature wipefs finds, as "TYPE@offset". */
export function wipefsList(path: string): string[] {
  const out = execFileSync('wipefs', ['--no-act', '--json', path], { encoding: 'utf8' });
  if (!out.trim()) return [];
  return (JSON.parse(out) as { signatures: { offset: string; type: string }[] }).signatures.map((s) => `${s.type}@${s.offset}`).sort();
}

/** mdadm --examine: exit code and output (0 when it found a superblock of any kind). */
export function mdadmExamine(path: string): { code: number; output: string } {
  try {
    return { code: 0, output: execFileSync('mdadm', ['--examine', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (e) {
    const err = e as { status?: number; stdout?: string; stderr?: string };
    return { code: err.status ?? 1, output: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}
