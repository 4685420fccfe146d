/**
 * The spot check of a standby against its manifest catches the usual ways a
 * drive gets written outside dpsr, even a single small file: its sample
 * always reads the filesystem metadata that a write updates, not only an
 * even spread that a few changed blocks slip between.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { closeSync, openSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { clone, spotCheckStandby, PairStore } from '../../src/sync/index.ts';
import { partitionedImage, sparseImage, tempDir, writeExt4File, writeFatFile } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir('dpsr-spot-');
const MiB = 1024 * 1024;

/** A 256 MiB GPT drive (ext4 + FAT) cloned onto a standby: the spread sample reads one block in 128. */
async function pair(name: string) {
  const stateDir = join(dir, `state-${name}`);
  const img = partitionedImage(dir, `${name}-src.img`, { scheme: 'gpt', sizeMiB: 256 });
  const standby = sparseImage(join(dir, `${name}-standby.img`), 256 * MiB);
  const report = await clone({ stateDir, source: img.path, target: standby });
  const check = () => spotCheckStandby({ stateDir, pairId: report.pairId, standby });
  const standbyState = () => new PairStore(stateDir, { create: false }).byId(report.pairId)!.standbyState;
  return { img, standbyImage: { ...img, path: standby }, check, standbyState };
}

const tools = { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy', 'debugfs'] };

test('an untouched standby samples clean, and the sample holds more than the even spread', async () => {
  if (!requireEnv('spot check', tools)) return;
  const p = await pair('clean');
  const r = await p.check();
  assert.ok(r);
  assert.is(r!.blocksDiffering, 0);
  assert.ok(r!.blocksChecked > 64, `${r!.blocksChecked} blocks read`);
  assert.is(p.standbyState(), 'consistent');
});

test('one small file written into the standby\'s ext4 elsewhere (debugfs, no mount) is found', async () => {
  if (!requireEnv('spot check', tools)) return;
  const p = await pair('ext4');
  writeExt4File(p.standbyImage, 0, 'note.txt', 'written elsewhere\n', dir);
  const r = await p.check();
  assert.ok(r && r.blocksDiffering > 0, JSON.stringify(r));
  assert.is(p.standbyState(), 'inconsistent');
});

test('one small file copied onto the standby\'s FAT partition elsewhere (mtools) is found', async () => {
  if (!requireEnv('spot check', tools)) return;
  const p = await pair('fat');
  writeFatFile(p.standbyImage, 1, 'NOTE.TXT', 'written elsewhere\n', dir);
  const r = await p.check();
  assert.ok(r && r.blocksDiffering > 0, JSON.stringify(r));
  assert.is(p.standbyState(), 'inconsistent');
});

test('a read-write mount alone (the ext4 superblock\'s mount count and time) is found', async () => {
  if (!requireEnv('spot check', tools)) return;
  const p = await pair('mount');
  // What a mount writes: s_mnt_count (0x34) and s_mtime (0x2C) of the primary superblock.
  const fd = openSync(p.standbyImage.path, 'r+');
  const sb = p.img.partitions[0]!.start + 1024;
  writeSync(fd, Buffer.from([0x01, 0x00]), 0, 2, sb + 0x34);
  writeSync(fd, Buffer.from([0x11, 0x22, 0x33, 0x44]), 0, 4, sb + 0x2c);
  closeSync(fd);
  const r = await p.check();
  assert.ok(r && r.blocksDiffering > 0, JSON.stringify(r));
});

test('a changed partition entry at the drive\'s end (the backup GPT) is found', async () => {
  if (!requireEnv('spot check', tools)) return;
  const p = await pair('gpt');
  const fd = openSync(p.standbyImage.path, 'r+');
  writeSync(fd, Buffer.from('X'), 0, 1, 256 * MiB - 512 + 100);
  closeSync(fd);
  const r = await p.check();
  assert.ok(r && r.blocksDiffering > 0, JSON.stringify(r));
});

for (const [how, delta] of [['grew', 8], ['shrank', -8]] as const) {
  test(`a standby that ${how} by ${Math.abs(delta)} MiB since its last copy (its geometry, not its blocks) is no backup`, async () => {
    if (!requireEnv('spot check', tools)) return;
    const p = await pair(`size-${how}`);
    truncateSync(p.standbyImage.path, (256 + delta) * MiB);
    const r = await p.check();
    assert.ok(r && r.blocksDiffering > 0, JSON.stringify(r));
    assert.is(p.standbyState(), 'inconsistent');
  });
}

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
