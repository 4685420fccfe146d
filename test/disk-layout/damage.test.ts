import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { FaultyDevice } from '../../src/sata-bridge/index.ts';
import { readLayout, regionsToCopy, tableAreaAt, type DiskLayout } from '../../src/disk-layout/index.ts';
import { crc32 } from '../../src/disk-layout/crc32.ts';
import { DeviceError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { MemoryDevice, MiB, sfdisk, sparse, tempDir } from './support/images.ts';

const tmp = tempDir();
const haveSfdisk = requireEnv('damaged sfdisk-made tables', { tools: ['sfdisk'] });
const SIZE = 16 * MiB;
const LAST = SIZE / 512 - 1;
let pristine: Buffer;
let reference: DiskLayout;

test.before(async () => {
  if (!haveSfdisk) return;
  const img = tmp.path('gpt.img');
  sparse(img, SIZE);
  sfdisk(img, 'label: gpt\nsize=4M, type=U, name="ESP"\ntype=L, name="root"\n');
  pristine = readFileSync(img);
  reference = await readLayout(new MemoryDevice(Buffer.from(pristine)), { sniff: false });
});

function damaged(edit: (d: Buffer) => void): MemoryDevice {
  const data = Buffer.from(pristine);
  edit(data);
  return new MemoryDevice(data);
}

test('primary header CRC broken: the backup is used and the damage reported', async () => {
  if (!haveSfdisk) return;
  const layout = await readLayout(damaged((d) => (d[512 + 48] ^= 1)), { sniff: false });
  assert.is(layout.scheme, 'gpt');
  assert.not.ok(layout.gpt!.primaryValid);
  assert.ok(layout.gpt!.backupValid && layout.gpt!.backupAtEnd);
  assert.is(layout.gpt!.usedCopy, 'backup');
  assert.equal(layout.partitions, reference.partitions);
  assert.ok(layout.problems.some((p) => /primary GPT header \(LBA 1\): header CRC mismatch/.test(p)), layout.problems.join('\n'));
  assert.ok(layout.problems.some((p) => /taken from the backup/.test(p)));
  assert.equal(layout.gpt!.problems.length > 0, true);
});

test('primary entry table CRC broken: the backup is used', async () => {
  if (!haveSfdisk) return;
  // A byte of partition 1's name, inside the primary table at LBA 2.
  const layout = await readLayout(damaged((d) => (d[1024 + 56] ^= 0x20)), { sniff: false });
  assert.not.ok(layout.gpt!.primaryValid);
  assert.is(layout.gpt!.usedCopy, 'backup');
  assert.is(layout.partitions[0]!.name, 'ESP');
  assert.ok(layout.problems.some((p) => /primary GPT entry table .*CRC mismatch/.test(p)));
});

test('primary wiped: the backup at the last LBA is found', async () => {
  if (!haveSfdisk) return;
  const layout = await readLayout(damaged((d) => d.fill(0, 512, 1024)), { sniff: false });
  assert.is(layout.gpt!.usedCopy, 'backup');
  assert.equal(layout.partitions, reference.partitions);
  assert.is(layout.diskId, reference.diskId);
});

test('backup broken: the primary is used and the backup reported', async () => {
  if (!haveSfdisk) return;
  const layout = await readLayout(damaged((d) => (d[LAST * 512 + 40] ^= 1)), { sniff: false });
  assert.ok(layout.gpt!.primaryValid);
  assert.not.ok(layout.gpt!.backupValid);
  assert.is(layout.gpt!.usedCopy, 'primary');
  assert.equal(layout.partitions, reference.partitions);
  assert.ok(layout.problems.some((p) => /backup GPT header .*CRC mismatch/.test(p)), layout.problems.join('\n'));
  const backupTable = await readLayout(damaged((d) => (d[(LAST - 32) * 512 + 60] ^= 1)), { sniff: false });
  assert.ok(backupTable.problems.some((p) => /backup GPT entry table .*CRC mismatch/.test(p)));
});

test('an unreadable backup beside a valid primary is reported, and the layout still read; tableAreaAt names it', async () => {
  if (!haveSfdisk) return;
  const bad = new FaultyDevice(damaged(() => undefined), { badReadLbas: Array.from({ length: 8 }, (_, i) => LAST - 7 + i) });
  const layout = await readLayout(bad, { sniff: false });
  assert.ok(layout.gpt!.primaryValid);
  assert.equal(layout.partitions, reference.partitions);
  assert.ok(layout.problems.some((p) => /backup GPT \(LBA \d+\) could not be read/.test(p)), layout.problems.join('\n'));
  assert.is(tableAreaAt(layout, LAST * 512), 'the backup GPT');
  assert.is(tableAreaAt(layout, (LAST - 32) * 512), 'the backup GPT');
  assert.is(tableAreaAt(layout, (LAST - 33) * 512), undefined, 'free space before the backup table');
  assert.is(tableAreaAt(layout, 0), 'the protective MBR');
  assert.is(tableAreaAt(layout, 512), 'the primary GPT');
  assert.is(tableAreaAt(layout, 33 * 512), 'the primary GPT');
  assert.is(tableAreaAt(layout, 34 * 512), undefined);
  // Without a valid primary an unreadable backup leaves nothing to go on: the I/O error stands.
  const both = new FaultyDevice(damaged((d) => d.fill(0, 512, 1024)), { badReadLbas: [LAST] });
  await readLayout(both, { sniff: false }).then(
    () => assert.unreachable('read a layout from nothing'),
    (e: unknown) => assert.ok(e instanceof Error),
  );
});

test('both copies broken: no partitions, clear problems, selection refused', async () => {
  if (!haveSfdisk) return;
  const layout = await readLayout(damaged((d) => {
    d[512 + 48] ^= 1;
    d[LAST * 512 + 48] ^= 1;
  }), { sniff: false });
  assert.is(layout.scheme, 'gpt');
  assert.equal(layout.partitions, []);
  assert.ok(layout.problems.some((p) => /neither the primary nor the backup GPT is valid/.test(p)));
  assert.throws(() => regionsToCopy(layout, [1], SIZE), /neither GPT copy/);
});

test('a header with a recomputed CRC but nonsense fields is rejected, not trusted', async () => {
  if (!haveSfdisk) return;
  const layout = await readLayout(damaged((d) => {
    d.writeUInt32LE(1 << 30, 512 + 80); // a billion entries
    d.writeUInt32LE(0, 512 + 16);
    d.writeUInt32LE(crc32(d.subarray(512, 512 + 92)), 512 + 16);
  }), { sniff: false });
  assert.is(layout.gpt!.usedCopy, 'backup');
  assert.ok(layout.problems.some((p) => /implausibly large/.test(p)));
});

test('a truncated GPT image still lists its partitions and says what is wrong', async () => {
  if (!haveSfdisk) return;
  const layout = await readLayout(new MemoryDevice(Buffer.from(pristine.subarray(0, SIZE / 2))), { sniff: false });
  assert.is(layout.scheme, 'gpt');
  assert.is(layout.partitions.length, 2);
  assert.not.ok(layout.gpt!.backupValid);
  assert.ok(layout.problems.some((p) => /describes a disk of at least/.test(p)), layout.problems.join('\n'));
  assert.ok(layout.problems.some((p) => /partition 2 ends at LBA .* past the end of the disk/.test(p)));
  assert.throws(() => regionsToCopy(layout, [2], SIZE / 2), /past the end of the drive/);
});

test('an EBR chain that loops ends with a problem, not a hang', async () => {
  const d = Buffer.alloc(4 * MiB);
  const entry = (sectorOff: number, slot: number, type: number, start: number, count: number) => {
    const o = sectorOff + 446 + slot * 16;
    d[o + 4] = type;
    d.writeUInt32LE(start, o + 8);
    d.writeUInt32LE(count, o + 12);
  };
  d.writeUInt16LE(0xaa55, 510);
  entry(0, 0, 0x05, 2048, 4096);
  const ebr = 2048 * 512;
  d.writeUInt16LE(0xaa55, ebr + 510);
  entry(ebr, 0, 0x83, 1, 100);
  entry(ebr, 1, 0x05, 0, 4096); // the next EBR is this one again
  d.writeUInt16LE(0xaa55, ebr + 510);
  const layout = await readLayout(new MemoryDevice(d));
  assert.is(layout.scheme, 'mbr');
  assert.equal(layout.partitions.map((p) => p.number), [1, 5]);
  // A link of 0 ends the chain; make it point back from a second EBR instead.
  entry(ebr, 1, 0x05, 200, 300);
  const ebr2 = (2048 + 200) * 512;
  d.writeUInt16LE(0xaa55, ebr2 + 510);
  entry(ebr2, 0, 0x83, 1, 50);
  entry(ebr2, 1, 0x05, 200, 300);
  const looped = await readLayout(new MemoryDevice(d));
  assert.equal(looped.partitions.map((p) => p.number), [1, 5, 6]);
  assert.ok(looped.problems.some((p) => /loops back/.test(p)));
});

test('MBR entries beyond the disk and an invalid boot flag are reported', async () => {
  const d = Buffer.alloc(MiB);
  d.writeUInt16LE(0xaa55, 510);
  d[446] = 0x12;
  d[446 + 4] = 0x83;
  d.writeUInt32LE(2048, 446 + 8);
  d.writeUInt32LE(1 << 20, 446 + 12);
  const layout = await readLayout(new MemoryDevice(d));
  assert.is(layout.scheme, 'mbr');
  assert.ok(layout.problems.some((p) => /invalid boot flag/.test(p)));
  assert.ok(layout.problems.some((p) => /runs past the end of the disk/.test(p)));
});

test('tiny, empty and random drives never crash the reader', async () => {
  const empty = await readLayout(new MemoryDevice(Buffer.alloc(0)));
  assert.is(empty.scheme, 'none');
  assert.ok(empty.problems.length > 0);
  const one = Buffer.alloc(512);
  one.writeUInt16LE(0xaa55, 510);
  assert.is((await readLayout(new MemoryDevice(one))).scheme, 'mbr');
  // A fixed-seed generator so a failure reproduces.
  let seed = 0x2545f491;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  for (let round = 0; round < 60; round++) {
    const d = Buffer.alloc(512 * (4 + (round % 40)));
    for (let i = 0; i < d.length; i++) d[i] = rand();
    if (round % 2) d.writeUInt16LE(0xaa55, 510);
    if (round % 3 === 0) {
      d.write('EFI PART', 512, 'latin1');
      d[446 + 4] = 0xee;
    }
    if (round % 5 === 0) d[446 + 4 + 16] = 0x05;
    const layout = await readLayout(new MemoryDevice(d));
    assert.ok(['gpt', 'mbr', 'none'].includes(layout.scheme));
    for (const p of layout.partitions) assert.ok(Number.isSafeInteger(p.startByte) && Number.isSafeInteger(p.sizeBytes));
  }
});

test('an unreadable primary GPT or MBR sector with a valid backup is damage read around; with no valid copy it is a DeviceError; one under a filesystem guess is neither', async () => {
  if (!haveSfdisk) return;
  const mem = new MemoryDevice(Buffer.from(pristine));
  const last = pristine.length / 512 - 1;
  for (const bad of [[1], [0], [0, 1, 2], [2]]) {
    // As firmware and gdisk do: the backup GPT at the last LBA stands in for an unreadable primary.
    const layout = await readLayout(new FaultyDevice(mem, { badReadLbas: bad }), { sniff: false });
    assert.is(layout.scheme, 'gpt', `bad ${bad.join(',')}`);
    assert.equal(layout.partitions, reference.partitions, `bad ${bad.join(',')}`);
    assert.ok(layout.problems.some((p) => /could not be read/.test(p)), layout.problems.join('; '));
    if (bad.includes(1) || bad.includes(2)) assert.is(layout.gpt!.usedCopy, 'backup');
  }
  try {
    await readLayout(new FaultyDevice(mem, { badReadLbas: [1, last] }));
    assert.unreachable('read through a bad sector');
  } catch (e) {
    assert.instance(e, DeviceError);
  }
  const underPartition = await readLayout(new FaultyDevice(mem, { badReadLbas: [reference.partitions[1]!.firstLba + 2] }));
  assert.equal(underPartition.partitions.map((p) => p.number), [1, 2]);
});

test.after(() => tmp.remove());
test.run();
