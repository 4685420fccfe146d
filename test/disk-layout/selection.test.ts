import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openDrive } from '../../src/sata-bridge/index.ts';
import { partitionAt, readLayout, regionsToCopy, type DiskLayout } from '../../src/disk-layout/index.ts';
import { BadInputError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { MiB, sfdisk, sparse, tempDir } from './support/images.ts';

const tmp = tempDir();
const haveSfdisk = requireEnv('partition selection on sfdisk-made tables', { tools: ['sfdisk'] });
let gpt: DiskLayout;
let mbr: DiskLayout;

async function layoutOf(path: string): Promise<DiskLayout> {
  const dev = await openDrive(path);
  try {
    return await readLayout(dev);
  } finally {
    await dev.close();
  }
}

test.before(async () => {
  if (!haveSfdisk) return;
  sparse(tmp.path('gpt.img'), 64 * MiB);
  sfdisk(tmp.path('gpt.img'), 'label: gpt\nsize=8M, type=U, name="ESP"\nsize=16M, type=L, name="system"\ntype=L, name="data"\n');
  gpt = await layoutOf(tmp.path('gpt.img'));
  sparse(tmp.path('mbr.img'), 64 * MiB);
  sfdisk(tmp.path('mbr.img'), 'label: dos\nsize=8M, type=83, bootable\ntype=5\nsize=10M, type=83\ntype=83\n');
  mbr = await layoutOf(tmp.path('mbr.img'));
});

function throwsBadInput(fn: () => unknown, pattern: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, BadInputError);
    assert.match(`${(e as Error).message} ${(e as BadInputError).hint ?? ''}`, pattern);
    return;
  }
  assert.unreachable('expected a BadInputError');
}

test('GPT: chosen partition plus primary and backup table regions, sorted', () => {
  if (!haveSfdisk) return;
  const { ranges } = regionsToCopy(gpt, [3], 64 * MiB);
  const p3 = gpt.partitions.find((p) => p.number === 3)!;
  const g = gpt.gpt!;
  assert.equal(ranges, [
    { start: 0, length: g.firstUsableLba * 512, what: 'protective MBR, primary GPT header and table' },
    { start: p3.startByte, length: p3.sizeBytes, what: 'partition 3 (Linux filesystem "data")' },
    { start: g.backupEntriesLba * 512, length: 64 * MiB - g.backupEntriesLba * 512, what: 'backup GPT table and header' },
  ]);
});

test('GPT: several partitions, duplicates ignored, nothing overlaps', () => {
  if (!haveSfdisk) return;
  const { ranges } = regionsToCopy(gpt, [2, 1, 2], 64 * MiB);
  assert.is(ranges.length, 4);
  for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i]!.start >= ranges[i - 1]!.start + ranges[i - 1]!.length);
  const total = ranges.reduce((n, r) => n + r.length, 0);
  assert.is(total, gpt.gpt!.firstUsableLba * 512 + 24 * MiB + 33 * 512);
});

test('MBR: logical partition brings the MBR boot area and every EBR', () => {
  if (!haveSfdisk) return;
  const { ranges } = regionsToCopy(mbr, [6], 64 * MiB);
  const ebrs = mbr.mbr!.ebrLbas;
  assert.is(ebrs.length, 2);
  assert.equal(ranges[0], { start: 0, length: MiB, what: 'MBR and boot area before the first partition' });
  for (const lba of ebrs) assert.ok(ranges.some((r) => r.start === lba * 512 && r.length === 512), `EBR at ${lba}`);
  const p6 = mbr.partitions.find((p) => p.number === 6)!;
  assert.ok(ranges.some((r) => r.start === p6.startByte && r.length === p6.sizeBytes));
});

test('MBR: the extended partition swallows its EBRs and logical partitions', () => {
  if (!haveSfdisk) return;
  const { ranges } = regionsToCopy(mbr, [2, 5], 64 * MiB);
  const ext = mbr.partitions.find((p) => p.number === 2)!;
  assert.is(ranges.length, 2);
  assert.equal({ start: ranges[1]!.start, length: ranges[1]!.length }, { start: ext.startByte, length: ext.sizeBytes });
});

test('unknown partition numbers name the number and the partitions that exist', () => {
  if (!haveSfdisk) return;
  throwsBadInput(() => regionsToCopy(gpt, [1, 4], 64 * MiB), /no partition 4 .*partitions on the drive: 1, 2, 3/);
  throwsBadInput(() => regionsToCopy(mbr, [3], 64 * MiB), /no partition 3 .*1, 2, 5, 6/);
  throwsBadInput(() => regionsToCopy(gpt, [1.5], 64 * MiB), /no partition 1.5/);
  throwsBadInput(() => regionsToCopy(gpt, [], 64 * MiB), /no partition chosen/);
});

test('a drive without a table, or too small for its table, is refused as bad input', () => {
  if (!haveSfdisk) return;
  const none: DiskLayout = { scheme: 'none', sectorSize: 512, diskSizeBytes: MiB, diskId: '', partitions: [], problems: [] };
  throwsBadInput(() => regionsToCopy(none, [1], MiB), /no partition table/);
  throwsBadInput(() => regionsToCopy(gpt, [3], 32 * MiB), /past the end of the drive \(33554432 bytes\)/);
});

test('partitionAt: the innermost partition, or undefined in gaps and tables', () => {
  if (!haveSfdisk) return;
  const p2 = gpt.partitions[1]!;
  assert.is(partitionAt(gpt, p2.startByte)?.number, 2);
  assert.is(partitionAt(gpt, p2.startByte + p2.sizeBytes - 1)?.number, 2);
  assert.is(partitionAt(gpt, p2.startByte + p2.sizeBytes)?.number, 3);
  assert.is(partitionAt(gpt, 512), undefined);
  assert.is(partitionAt(gpt, 64 * MiB - 512), undefined);
  const p5 = mbr.partitions.find((p) => p.number === 5)!;
  assert.is(partitionAt(mbr, p5.startByte + 4096)?.number, 5);
  // The EBR in front of a logical partition belongs to the extended one only.
  assert.is(partitionAt(mbr, mbr.mbr!.ebrLbas[0]! * 512)?.number, 2);
});

test.after(() => tmp.remove());
test.run();
