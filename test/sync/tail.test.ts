/**
 * The standby's tail (f15 and its kin): after a copy onto a larger standby,
 * blkid -p, wipefs, mdadm --examine and sgdisk -v read the standby exactly as
 * they read the source, whatever end-of-disk metadata the standby's previous
 * life left there; only the sectors that held it are written. Metadata the
 * source anchors to its own end is named before the copy starts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { clone, sync, verify } from '../../src/sync/index.ts';
import { openDrive } from '../../src/sata-bridge/index.ts';
import { partitionedImage, randomImage, sparseImage, tempDir } from '../support/images.ts';
import { blkidProbe, mdadmExamine, wipefsList, writeDdf, writeDrbd, writeImsm, writeMd090, writeMd10, writeZfsLabels } from '../support/end-signatures.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir('dpsr-tail-');
const MiB = 1024 * 1024;
const tools = ['sfdisk', 'sgdisk', 'blkid', 'wipefs', 'mdadm', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'];

function sgdiskVerify(path: string): string {
  try {
    return execFileSync('sgdisk', ['-v', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? e);
  }
}

/**
 * What each host tool recognises on a drive: blkid's types, wipefs's
 * signatures, whether mdadm finds RAID metadata (not just the MBR it also
 * prints), and sgdisk's verdict on the partition tables (its free-space
 * figures depend on the drive's size and are left out).
 */
function toolsView(path: string) {
  return {
    blkid: blkidProbe(path),
    wipefs: wipefsList(path).map((s) => s.replace(/@.*/, '')),
    mdadm: /^\s+Magic : /m.test(mdadmExamine(path).output),
    sgdisk: sgdiskVerify(path)
      .split('\n')
      .filter((l) => /GPT|MBR|damaged|corrupt/i.test(l))
      .join('\n'),
  };
}

const previousLives: [string, (p: string) => void][] = [
  ['a GPT disk (f15)', (p) => void execFileSync('sgdisk', ['-n1:2048:0', '-t1:8300', p], { stdio: 'ignore' })],
  ['an md 0.90 and 1.0 member with DRBD and ZFS leftovers', (p) => (writeMd090(p), writeMd10(p), writeDrbd(p), void writeZfsLabels(p))],
  ['a DDF and Intel IMSM firmware RAID member', (p) => (writeDdf(p), void writeImsm(p))],
];

for (const [life, make] of previousLives) {
  test(`an MBR clone onto a larger standby that was ${life} reads like the source`, async () => {
    if (!requireEnv('standby tail test', { tools })) return;
    const name = life.replace(/\W+/g, '-');
    const src = partitionedImage(dir, `${name}-src.img`, { scheme: 'mbr', sizeMiB: 64 });
    const tgt = sparseImage(join(dir, `${name}-tgt.img`), 96 * MiB);
    make(tgt);
    assert.not.equal(toolsView(tgt), toolsView(src.path), 'the fixture is seen by the tools');
    const before = readFileSync(tgt);
    const report = await clone({ stateDir: join(dir, `state-${name}`), source: src.path, target: tgt });
    assert.is(report.result, 'done');
    assert.equal(toolsView(tgt), toolsView(src.path));
    assert.ok(report.notes.some((n) => /zeroed what its previous contents left past the copy/.test(n)), report.notes.join('\n'));
    // Only the sectors that held signatures were written past the copy, not the whole tail.
    const after = readFileSync(tgt);
    let changed = 0;
    for (let off = 64 * MiB; off < after.length; off += 512) if (!after.subarray(off, off + 512).equals(before.subarray(off, off + 512))) changed++;
    assert.ok(changed > 0 && changed <= 2 * 1024, `${changed} tail sectors written`);
  });
}

test('a GPT clone onto an old md/GPT standby: the tail is cleaned and the relocated GPT is whole', async () => {
  if (!requireEnv('standby tail test', { tools })) return;
  const src = partitionedImage(dir, 'gpt-src.img', { scheme: 'gpt', sizeMiB: 64 });
  const tgt = sparseImage(join(dir, 'gpt-tgt.img'), 96 * MiB);
  execFileSync('sgdisk', ['-n1:2048:0', '-t1:fd00', tgt], { stdio: 'ignore' });
  writeMd10(tgt);
  writeMd090(tgt);
  const stateDir = join(dir, 'state-gpt');
  const report = await clone({ stateDir, source: src.path, target: tgt });
  assert.ok(report.gptRelocated);
  assert.match(sgdiskVerify(tgt), /No problems found/);
  assert.is(/^\s+Magic : /m.test(mdadmExamine(tgt).output), false);
  assert.equal(blkidProbe(tgt), blkidProbe(src.path));
  assert.equal(wipefsList(tgt).map((s) => s.replace(/@.*/, '')), wipefsList(src.path).map((s) => s.replace(/@.*/, '')));
  assert.ok((await verify({ stateDir, source: src.path, target: tgt })).identical);
  // A later sync finds a clean tail and leaves the relocated backup alone.
  const again = await sync({ stateDir, source: src.path, target: tgt });
  assert.not.ok(again.notes.some((n) => /zeroed/.test(n)), again.notes.join('\n'));
  assert.match(sgdiskVerify(tgt), /No problems found/);
});

test('a sync cleans signatures that appeared in the tail since the clone, through the undo journal', async () => {
  if (!requireEnv('standby tail test', { tools })) return;
  const src = randomImage(join(dir, 'sync-src.img'), 32 * MiB, 4);
  const tgt = sparseImage(join(dir, 'sync-tgt.img'), 48 * MiB);
  const stateDir = join(dir, 'state-sync');
  await clone({ stateDir, source: src, target: tgt });
  writeMd10(tgt);
  assert.is(mdadmExamine(tgt).code, 0);
  const report = await sync({ stateDir, source: src, target: tgt });
  assert.ok(report.notes.some((n) => /md superblock 1\.0/.test(n)), report.notes.join('\n'));
  assert.not.equal(mdadmExamine(tgt).code, 0);
});

test('metadata the source anchors to its end is named before the copy writes anything', async () => {
  if (!requireEnv('standby tail test', { tools })) return;
  const src = randomImage(join(dir, 'md-src.img'), 32 * MiB, 5);
  const off = writeMd10(src);
  const tgt = sparseImage(join(dir, 'md-tgt.img'), 48 * MiB);
  const events: string[] = [];
  const report = await clone({
    stateDir: join(dir, 'state-md-src'),
    source: src,
    target: tgt,
    onNote: (n) => events.push(`note: ${n}`),
    onProgress: (p) => {
      if (p.bytesWritten > 0 && !events.includes('written')) events.push('written');
    },
  });
  const note = events.findIndex((e) => e.includes(`md superblock 1.0 at byte ${off}`));
  assert.ok(note >= 0, events.join('\n'));
  assert.ok(note < events.indexOf('written'), 'named before the first write');
  assert.match(events[note]!, /16,777,216 bytes short of the end/);
  assert.ok(report.notes.some((n) => n.includes('anchored to its end')));
});

test('with direct I/O (O_DIRECT) the tables are read, the tail cleaned, the GPT relocated and verified', async () => {
  if (!requireEnv('standby tail test', { tools })) return;
  const src = partitionedImage(dir, 'direct-src.img', { scheme: 'gpt', sizeMiB: 32 });
  const tgt = sparseImage(join(dir, 'direct-tgt.img'), 48 * MiB);
  try {
    (await openDrive(tgt, { write: true, direct: true })).close();
  } catch (e) {
    console.log(`SKIP: O_DIRECT is not supported in ${dir} (${(e as Error).message}); set DPSR_TEST_TMP to a disk-backed folder`);
    return;
  }
  writeMd090(tgt);
  const stateDir = join(dir, 'state-direct');
  const report = await clone({ stateDir, source: src.path, target: tgt, direct: true });
  assert.ok(report.gptRelocated);
  assert.ok(report.notes.some((n) => /md superblock 0\.90/.test(n)), report.notes.join('\n'));
  assert.match(sgdiskVerify(tgt), /No problems found/);
  assert.is(/^\s+Magic : /m.test(mdadmExamine(tgt).output), false);
  assert.ok((await verify({ stateDir, source: src.path, target: tgt, direct: true })).identical);
});

test.run();
