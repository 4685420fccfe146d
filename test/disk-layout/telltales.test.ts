/**
 * writeTelltales against filesystems made by their own mkfs, with the
 * expected offsets read from each filesystem's own tools (dumpe2fs,
 * fsck.fat -v, dump.exfat, ntfsinfo), and against damaged boot sectors.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openSync, readSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { SNIFF_BYTES, sniffFilesystem, writeTelltales } from '../../src/disk-layout/index.ts';
import { MiB, sh, sparse, tempDir } from './support/images.ts';
import { requireEnv } from '../support/require.ts';

const SIZE = 64 * MiB;
const tmp = tempDir();

function head(path: string): Uint8Array {
  const buf = new Uint8Array(SNIFF_BYTES);
  const fd = openSync(path, 'r');
  readSync(fd, buf, 0, SNIFF_BYTES, 0);
  closeSync(fd);
  return buf;
}

function made(name: string, mkfs: string, args: string[]): { path: string; head: Uint8Array; type: string } {
  const path = tmp.path(name);
  sparse(path, SIZE);
  sh(mkfs, [...args, path]);
  const h = head(path);
  return { path, head: h, type: sniffFilesystem(h)! };
}

const num = (text: string, re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);

test('ext4 with 1 KiB and 4 KiB blocks: the primary superblock and the first group descriptor block (dumpe2fs)', () => {
  if (!requireEnv('this test', { tools: ['mkfs.ext4', 'dumpe2fs'] })) return;
  for (const blockSize of [1024, 4096]) {
    const fs = made(`ext4-${blockSize}.img`, 'mkfs.ext4', ['-q', '-F', '-b', String(blockSize)]);
    assert.is(fs.type, 'ext4');
    const dump = sh('dumpe2fs', [fs.path]);
    const gdt = num(dump, /Group descriptors at (\d+)/) * blockSize;
    assert.equal(writeTelltales(fs.type, fs.head, SIZE), [...new Set([0, 1024, gdt])].sort((a, b) => a - b), `blocks of ${blockSize}`);
  }
});

test('FAT16 and FAT32: the first FAT, the root directory, FAT32\'s FSInfo (fsck.fat -v)', () => {
  if (!requireEnv('this test', { tools: ['mkfs.vfat', 'fsck.fat'] })) return;
  const f16 = made('fat16.img', 'mkfs.vfat', ['-F', '16']);
  const v16 = sh('fsck.fat', ['-nv', f16.path]);
  assert.equal(writeTelltales(f16.type, f16.head, SIZE), [0, num(v16, /First FAT starts at byte (\d+)/), num(v16, /Root directory starts at byte (\d+)/)]);
  const f32 = made('fat32.img', 'mkfs.vfat', ['-F', '32']);
  const v32 = sh('fsck.fat', ['-nv', f32.path]);
  const bytesPerCluster = num(v32, /(\d+) bytes per cluster/);
  const root = num(v32, /Data area starts at byte (\d+)/) + (num(v32, /Root directory start at cluster (\d+)/) - 2) * bytesPerCluster;
  // FSInfo is sector 1 on every mkfs.fat volume (BPB_FSInfo).
  assert.equal(writeTelltales(f32.type, f32.head, SIZE), [0, 512, num(v32, /First FAT starts at byte (\d+)/), root]);
});

test('exFAT: the boot sector, the FAT, the cluster heap (allocation bitmap) and the root directory (dump.exfat)', () => {
  if (!requireEnv('this test', { tools: ['mkfs.exfat', 'dump.exfat'] })) return;
  const fs = made('exfat.img', 'mkfs.exfat', []);
  assert.is(fs.type, 'exfat');
  const d = sh('dump.exfat', [fs.path]);
  const sector = 2 ** num(d, /Sector Size Bits:\s+(\d+)/);
  const cluster = sector * 2 ** num(d, /Sector per Cluster bits:\s+(\d+)/);
  const heap = num(d, /Cluster Heap Offset \(sector offset\):\s+(\d+)/) * sector;
  assert.equal(writeTelltales(fs.type, fs.head, SIZE), [0, num(d, /FAT Offset\(sector offset\):\s+(\d+)/) * sector, heap, heap + (num(d, /Root Cluster \(cluster offset\):\s+(\d+)/) - 2) * cluster]);
});

test('NTFS: the first 64 KiB of the $MFT (ntfsinfo)', () => {
  if (!requireEnv('this test', { tools: ['mkntfs', 'ntfsinfo'] })) return;
  const fs = made('ntfs.img', 'mkntfs', ['-q', '-F', '-f']);
  assert.is(fs.type, 'ntfs');
  const info = sh('ntfsinfo', ['-m', '-f', fs.path]);
  const mft = num(info, /LCN of Data Attribute for FILE_MFT:\s+(\d+)/) * num(info, /Cluster Size:\s+(\d+)/);
  const got = writeTelltales(fs.type, fs.head, SIZE);
  assert.is(got[0], 0);
  assert.equal(got.slice(1), Array.from({ length: 16 }, (_, k) => mft + k * 4096));
});

test('damaged or foreign boot sectors never throw and never point past the filesystem', () => {
  for (let i = 0; i < 2000; i++) {
    const h = new Uint8Array(randomBytes(i % 3 === 0 ? SNIFF_BYTES : 512 + (i % 700)));
    const size = 1 + (i * 7919) % SIZE;
    for (const type of ['ext4', 'ext2', 'ntfs', 'vfat', 'exfat', 'swap', undefined]) {
      for (const at of writeTelltales(type, h, size)) {
        assert.ok(Number.isSafeInteger(at) && at >= 0 && at < size, `${type}: ${at} of ${size}`);
      }
    }
  }
  assert.equal(writeTelltales('ext4', new Uint8Array(100), SIZE), [0], 'too short a head');
});

test.after(() => tmp.remove());
test.run();
