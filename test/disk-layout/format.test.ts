import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatLayout, formatSize, type DiskLayout } from '../../src/disk-layout/index.ts';

const MiB = 1024 * 1024;

const gpt: DiskLayout = {
  scheme: 'gpt',
  sectorSize: 512,
  diskSizeBytes: 64 * MiB,
  diskId: '75B3E4F7-E7BD-D14C-803F-357980464BA0',
  partitions: [
    { number: 1, startByte: MiB, sizeBytes: 8 * MiB, firstLba: 2048, lastLba: 18431, type: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', typeName: 'EFI System', name: 'ESP', guid: 'X', bootable: false, filesystem: 'vfat' },
    { number: 2, startByte: 9 * MiB, sizeBytes: 16 * MiB, firstLba: 18432, lastLba: 51199, type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', typeName: 'Linux filesystem', name: 'root', guid: 'Y', bootable: true, filesystem: 'ext4' },
  ],
  gpt: { primaryValid: false, backupValid: true, backupAtEnd: true, alternateLba: 131071, firstUsableLba: 2048, lastUsableLba: 131038, primaryEntriesLba: 2, backupLba: 131071, backupEntriesLba: 131039, entryCount: 128, entrySize: 128, usedCopy: 'backup', problems: ['primary GPT header (LBA 1): header CRC mismatch'] },
  problems: ['primary GPT header (LBA 1): header CRC mismatch', 'the primary GPT is damaged; partitions are taken from the backup GPT'],
};

test('GPT: geometry, both copies, one row per partition, problems last', () => {
  const text = formatLayout(gpt);
  assert.match(text, /Disk: 64\.0 MiB \(67108864 bytes, 131072 sectors of 512 bytes\)/);
  assert.match(text, /Partition table: GPT, disk GUID 75B3E4F7-E7BD-D14C-803F-357980464BA0/);
  assert.match(text, /GPT: primary damaged, backup ok at LBA 131071 \(end of disk\)/);
  assert.match(text, /partitions below come from the backup GPT/);
  const rows = text.split('\n').filter((l) => /^\s+\d+\s+\d+/.test(l));
  assert.is(rows.length, 2);
  assert.match(rows[0]!, /1\s+2048\s+18431\s+8\.00 MiB\s+EFI System\s+ESP\s+vfat/);
  assert.match(rows[1]!, /2\s+18432\s+51199\s+16\.0 MiB\s+Linux filesystem\s+root\s+ext4\s+legacy-bios-bootable/);
  assert.ok(text.indexOf('Problems (2):') > text.indexOf('ESP'));
  assert.match(text, / {2}! the primary GPT is damaged/);
});

test('MBR: type codes and flags; no table; whole-disk filesystem', () => {
  const mbr: DiskLayout = {
    scheme: 'mbr',
    sectorSize: 4096,
    diskSizeBytes: 64 * MiB,
    diskId: '0x12345678',
    partitions: [
      { number: 1, startByte: MiB, sizeBytes: 8 * MiB, firstLba: 256, lastLba: 2303, type: '0x0c', typeName: 'W95 FAT32 (LBA)', bootable: true },
      { number: 2, startByte: 9 * MiB, sizeBytes: 55 * MiB, firstLba: 2304, lastLba: 16383, type: '0x05', typeName: 'Extended', bootable: false, extended: true },
      { number: 5, startByte: 10 * MiB, sizeBytes: 54 * MiB, firstLba: 2560, lastLba: 16383, type: '0x83', typeName: 'Linux', bootable: false, logical: true },
    ],
    problems: [],
  };
  const text = formatLayout(mbr);
  assert.match(text, /sectors of 4096 bytes/);
  assert.match(text, /Partition table: MBR \(DOS\), disk signature 0x12345678/);
  assert.match(text, /W95 FAT32 \(LBA\) \(0x0c\)\s+boot/);
  assert.match(text, /Extended \(0x05\)\s+extended/);
  assert.match(text, /5\s+2560\s+16383\s+54\.0 MiB\s+Linux \(0x83\)\s+logical/);
  assert.not.match(text, /Problems/);
  assert.not.match(text, /Name/);
  const none = formatLayout({ scheme: 'none', sectorSize: 512, diskSizeBytes: 16 * MiB, diskId: '', partitions: [], wholeDiskFilesystem: 'vfat', problems: [] });
  assert.match(none, /Partition table: none \(a vfat filesystem fills the whole drive\)/);
});

test('formatSize: binary units', () => {
  assert.is(formatSize(0), '0 B');
  assert.is(formatSize(512), '512 B');
  assert.is(formatSize(1536), '1.50 KiB');
  assert.is(formatSize(2 * 1024 ** 4), '2.00 TiB');
  assert.is(formatSize(500107862016), '465.8 GiB');
});

test.run();
