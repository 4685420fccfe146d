/** Clone and sync of drives with real partition tables and filesystems. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { clone, sync, verify } from '../../src/sync/index.ts';
import { fsckPartition, partitionedImage, sha256File, sha256Range, sparseImage, tempDir, writeExt4File, writeFatFile } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir();
const MiB = 1024 * 1024;
const tools = ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy', 'debugfs', 'e2fsck', 'fsck.vfat', 'cmp'];

function cmp(a: string, b: string, bytes?: number): void {
  execFileSync('cmp', [...(bytes ? ['-n', String(bytes)] : []), a, b]);
}

for (const scheme of ['gpt', 'mbr'] as const) {
  test(`${scheme}: clone and sync give a byte-identical copy whose filesystems check clean`, async () => {
    if (!requireEnv('filesystem clone test', { tools })) return;
    const stateDir = join(dir, `state-${scheme}`);
    const img = partitionedImage(dir, `${scheme}-src.img`, { scheme, sizeMiB: 64 });
    const tgt = sparseImage(join(dir, `${scheme}-tgt.img`), 64 * MiB);
    await clone({ stateDir, source: img.path, target: tgt });
    cmp(img.path, tgt);
    for (const p of img.partitions) assert.is(fsckPartition(tgt, p, dir).code, 0, `${p.fs} on the clone`);

    writeExt4File(img, 0, 'notes.txt', 'changed after the clone\n'.repeat(500), dir);
    writeFatFile(img, 1, 'NEW.TXT', 'new file on FAT\n', dir);
    const report = await sync({ stateDir, source: img.path, target: tgt });
    assert.ok(report.bytesWritten > 0 && report.bytesWritten < 2 * MiB, `wrote ${report.bytesWritten} bytes`);
    cmp(img.path, tgt);
    for (const p of img.partitions) assert.is(fsckPartition(tgt, p, dir).code, 0, `${p.fs} on the synced copy`);
    const v = await verify({ stateDir, source: img.path, target: tgt });
    assert.ok(v.identical);
  });
}

test('gpt onto a larger drive: the backup GPT moves to the end and sgdisk -v finds no problems', async () => {
  if (!requireEnv('GPT relocation test', { tools: [...tools, 'sgdisk'] })) return;
  const stateDir = join(dir, 'state-larger');
  const img = partitionedImage(dir, 'small-src.img', { scheme: 'gpt', sizeMiB: 48 });
  const tgt = sparseImage(join(dir, 'larger-tgt.img'), 96 * MiB);
  const report = await clone({ stateDir, source: img.path, target: tgt });
  assert.ok(report.gptRelocated);
  const out = execFileSync('sgdisk', ['-v', tgt]).toString();
  assert.match(out, /No problems found/);
  for (const p of img.partitions) {
    assert.is(sha256Range(tgt, p.start, p.size), sha256Range(img.path, p.start, p.size), 'partition contents equal');
    assert.is(fsckPartition(tgt, p, dir).code, 0);
  }
  // A later sync keeps it valid and verify knows the headers differ on purpose.
  writeExt4File(img, 0, 'later.txt', 'x'.repeat(10000), dir);
  await sync({ stateDir, source: img.path, target: tgt });
  assert.match(execFileSync('sgdisk', ['-v', tgt]).toString(), /No problems found/);
  const v = await verify({ stateDir, source: img.path, target: tgt });
  assert.ok(v.identical, JSON.stringify(v.differences));
});

test('partition-selective sync copies only the chosen partition and the tables', async () => {
  if (!requireEnv('partition-selective sync test', { tools })) return;
  const stateDir = join(dir, 'state-select');
  const img = partitionedImage(dir, 'sel-src.img', { scheme: 'gpt', sizeMiB: 64 });
  const tgt = sparseImage(join(dir, 'sel-tgt.img'), 64 * MiB);
  await clone({ stateDir, source: img.path, target: tgt });
  const [p1, p2] = img.partitions as [(typeof img.partitions)[0], (typeof img.partitions)[0]];
  writeExt4File(img, 0, 'system.txt', 'system change\n', dir);
  writeFatFile(img, 1, 'DATA.TXT', 'data change\n', dir);
  const p1Before = sha256Range(tgt, p1.start, p1.size);
  const report = await sync({ stateDir, source: img.path, target: tgt, partitions: [2] });
  assert.ok(report.bytesTotal < 40 * MiB, `walked ${report.bytesTotal}`);
  assert.is(sha256Range(tgt, p2.start, p2.size), sha256Range(img.path, p2.start, p2.size), 'partition 2 synced');
  assert.is(sha256Range(tgt, p1.start, p1.size), p1Before, 'partition 1 untouched');
  assert.is(fsckPartition(tgt, p2, dir).code, 0);
  // Then the whole drive catches up.
  await sync({ stateDir, source: img.path, target: tgt });
  assert.is(sha256File(tgt), sha256File(img.path));
});

test('an unknown partition number is bad input and changes nothing', async () => {
  if (!requireEnv('partition selection test', { tools })) return;
  const stateDir = join(dir, 'state-unknown');
  const img = partitionedImage(dir, 'unk-src.img', { scheme: 'mbr', sizeMiB: 32 });
  const tgt = sparseImage(join(dir, 'unk-tgt.img'), 32 * MiB);
  await clone({ stateDir, source: img.path, target: tgt });
  writeFatFile(img, 1, 'X.TXT', 'x', dir);
  const before = readFileSync(tgt);
  const err = await sync({ stateDir, source: img.path, target: tgt, partitions: [7] }).catch((e: Error) => e);
  assert.instance(err, Error);
  assert.match((err as Error).message, /7/);
  assert.ok(readFileSync(tgt).equals(before));
});

test('clone and sync on loop devices, checked through partition nodes', async () => {
  if (!requireEnv('loop device test', { root: true, tools: [...tools, 'losetup', 'partx'] })) return;
  const stateDir = join(dir, 'state-loop');
  const img = partitionedImage(dir, 'loop-src.img', { scheme: 'gpt', sizeMiB: 64 });
  const tgtFile = sparseImage(join(dir, 'loop-tgt.img'), 64 * MiB);
  const a = execFileSync('losetup', ['--find', '--show', img.path]).toString().trim();
  const b = execFileSync('losetup', ['--find', '--show', tgtFile]).toString().trim();
  try {
    await clone({ stateDir, source: a, target: b });
    writeExt4File(img, 0, 'viaimage.txt', 'y'.repeat(3000), dir);
    await sync({ stateDir, source: a, target: b });
    cmp(img.path, tgtFile);
    try {
      execFileSync('partx', ['-a', b], { stdio: 'pipe' });
    } catch {
      /* already known to the kernel */
    }
    execFileSync('e2fsck', ['-fn', `${b}p1`], { stdio: 'pipe' });
    execFileSync('fsck.vfat', ['-n', `${b}p2`], { stdio: 'pipe' });
  } finally {
    try {
      execFileSync('partx', ['-d', b], { stdio: 'pipe' });
    } catch {
      /* no partitions were added */
    }
    execFileSync('losetup', ['-d', a]);
    execFileSync('losetup', ['-d', b]);
  }
});

test.run();
