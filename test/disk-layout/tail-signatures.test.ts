/**
 * End-anchored signatures: each fixture is first recognised by the real tools
 * (blkid -p, mdadm --examine, sgdisk), then found by findEndSignatures at the
 * same place; the cleanup plan keeps to the tail, leaves out what the copy
 * rewrites, and stays in whole logical sectors.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { FaultyDevice, openDrive } from '../../src/sata-bridge/index.ts';
import { endAnchoredMetadata, findEndSignatures, planTailCleanup } from '../../src/disk-layout/index.ts';
import { blkidProbe, mdadmExamine, writeDdf, writeDrbd, writeImsm, writeMd090, writeMd10, writeZfsLabels } from '../support/end-signatures.ts';
import { requireEnv } from '../support/require.ts';
import { MiB, sparse, tempDir } from './support/images.ts';

const t = tempDir();
process.on('exit', t.remove);
const SIZE = 96 * MiB + 7 * 512; // not a multiple of 4 KiB or 64 KiB: the alignments matter

function image(name: string, size = SIZE): string {
  const p = t.path(name);
  sparse(p, size);
  return p;
}

async function found(path: string, sector = 512) {
  const dev = await openDrive(path, { imageSectorSize: sector });
  try {
    return (await findEndSignatures(dev)).map((s) => ({ type: s.type, start: s.start, length: s.length }));
  } finally {
    await dev.close();
  }
}

test('md superblocks 0.90 and 1.0: where mdadm and blkid look, 64 KiB- and 4 KiB-aligned', async () => {
  if (!requireEnv('md superblock fixtures', { tools: ['blkid', 'mdadm'] })) return;
  const a = image('md090.img');
  const off090 = writeMd090(a);
  assert.is(blkidProbe(a).TYPE, 'linux_raid_member');
  assert.match(mdadmExamine(a).output, /Version : 0\.90/);
  assert.equal(await found(a), [{ type: 'linux_raid_member', start: off090, length: 4096 }]);
  assert.is(off090, 96 * MiB - 65536);

  const b = image('md10.img');
  const off10 = writeMd10(b);
  assert.is(blkidProbe(b).VERSION, '1.0');
  assert.match(mdadmExamine(b).output, /Version : 1\.0/);
  assert.equal(await found(b), [{ type: 'linux_raid_member', start: off10, length: 4096 }]);
  assert.is(off10, 96 * MiB - 8192);
});

test('DDF anchor and the primary header it points to; Intel IMSM two sectors from the end', async () => {
  if (!requireEnv('firmware RAID fixtures', { tools: ['blkid'] })) return;
  const a = image('ddf.img');
  const ddf = writeDdf(a);
  assert.is(blkidProbe(a).TYPE, 'ddf_raid_member');
  assert.equal(await found(a), [
    { type: 'ddf_raid_member', start: ddf.anchor, length: 512 },
    { type: 'ddf_raid_member', start: ddf.primary, length: 512 },
  ]);
  const b = image('imsm.img');
  const imsm = writeImsm(b);
  assert.is(blkidProbe(b).TYPE, 'isw_raid_member');
  assert.equal(await found(b), [{ type: 'isw_raid_member', start: imsm, length: 512 }]);
  assert.is(imsm, SIZE - 1024);
});

test('DRBD internal metadata and ZFS labels L2/L3', async () => {
  if (!requireEnv('DRBD and ZFS fixtures', { tools: ['blkid'] })) return;
  const a = image('drbd.img', 96 * MiB);
  const drbd = writeDrbd(a);
  assert.is(blkidProbe(a).TYPE, 'drbd');
  assert.equal(await found(a), [{ type: 'drbd', start: drbd, length: 4096 }]);
  const b = image('zfs.img');
  const labels = writeZfsLabels(b);
  assert.is(blkidProbe(b).TYPE, 'zfs_member');
  assert.equal(await found(b), labels.map((l) => ({ type: 'zfs_member', start: l, length: 256 * 1024 })));
});

test('a backup GPT at the last LBA, with its table', async () => {
  if (!requireEnv('GPT fixture', { tools: ['sgdisk'] })) return;
  const a = image('gpt.img', 96 * MiB);
  execFileSync('sgdisk', ['-n1:2048:0', '-t1:8300', a], { stdio: 'ignore' });
  const last = (96 * MiB) / 512 - 1;
  assert.equal(await found(a), [
    { type: 'gpt', start: last * 512, length: 512 },
    { type: 'gpt', start: (last - 32) * 512, length: 32 * 512 },
  ]);
});

test('the older firmware RAID formats at their fixed sectors from the end', async () => {
  const cases: [string, number, (b: Buffer) => void][] = [
    ['lsi_mega_raid_member', 1, (b) => b.write('$XIDE$', 0, 'latin1')],
    ['nvidia_raid_member', 2, (b) => b.write('NVIDIA  ', 0, 'latin1')],
    ['hpt45x_raid_member', 11, (b) => b.writeUInt32LE(0x5a7816f3, 0)],
    ['promise_fasttrack_raid_member', 3087, (b) => b.write('Promise Technology, Inc.', 0, 'latin1')],
    ['silicon_medley_raid_member', 1, (b) => b.writeUInt32LE(0x2f000000, 0x60)],
    ['adaptec_raid_member', 1, (b) => (b.writeUInt32BE(0x37fc4d1e, 0), b.write('DPTM', 256, 'latin1'))],
  ];
  for (const [type, back, fill] of cases) {
    const p = image(`${type}.img`, 8 * MiB);
    const sector = Buffer.alloc(512);
    fill(sector);
    execFileSync('dd', [`of=${p}`, 'bs=512', `seek=${(8 * MiB) / 512 - back}`, 'conv=notrunc', 'status=none'], { input: sector });
    assert.equal(await found(p), [{ type, start: 8 * MiB - back * 512, length: 512 }], type);
  }
});

test('a clean tail, or one that is all zeros or all 0xff, has nothing', async () => {
  const a = image('clean.img', 8 * MiB);
  assert.equal(await found(a), []);
  const b = t.path('ones.img');
  execFileSync('sh', ['-c', `head -c ${8 * MiB} /dev/zero | tr '\\0' '\\377' > ${b}`]);
  assert.equal(await found(b), []);
});

test('the cleanup plan: only signatures past the copied area, clipped to it, minus what the copy rewrites', async () => {
  if (!requireEnv('cleanup plan', { tools: ['mdadm'] })) return;
  const p = image('plan.img');
  const md = writeMd10(p);
  const zfs = writeZfsLabels(p);
  const dev = await openDrive(p);
  try {
    // The copied area ends past L2's nvlist (16 KiB into the label): L2 is the source's business; L3 and md 1.0 are stale.
    const copied = zfs[0]! + 20 * 1024;
    let plan = await planTailCleanup(dev, copied);
    assert.equal(
      plan.signatures.map((s) => [s.type, s.start, s.length]),
      [
        ['zfs_member', zfs[1], 256 * 1024],
        ['linux_raid_member', md, 4096],
      ].sort((x, y) => (x[1] as number) - (y[1] as number)),
    );
    // The copied area ends between L2's start and its nvlist: L2 is stale, and only its part past the copy is zeroed.
    // Kept ranges are left out, even inside another signature's range (md 1.0 sits inside L3 here).
    plan = await planTailCleanup(dev, zfs[0]! + 4096, { keep: [{ start: md, length: 4096 }] });
    const l3End = zfs[1]! + 256 * 1024;
    assert.equal(
      plan.signatures.map((s) => [s.type, s.start, s.length]),
      [
        ['zfs_member', zfs[0]! + 4096, 256 * 1024 - 4096],
        ['zfs_member', zfs[1], md - zfs[1]!],
        ['zfs_member', md + 4096, l3End - md - 4096],
      ],
    );
    assert.is(plan.bytes, 512 * 1024 - 4096 - 4096);
    // Not larger: nothing.
    assert.equal((await planTailCleanup(dev, dev.size)).signatures, []);
  } finally {
    await dev.close();
  }
});

test('on a 4Kn drive the ranges are whole 4 KiB sectors', async () => {
  const p = image('fourk.img', 96 * MiB);
  writeImsm(p, 4096);
  writeMd090(p);
  const sigs = await found(p, 4096);
  assert.equal(sigs, [
    { type: 'linux_raid_member', start: 96 * MiB - 65536, length: 4096 },
    { type: 'isw_raid_member', start: 96 * MiB - 8192, length: 4096 },
  ]);
});

test("endAnchoredMetadata names the source's own end-anchored metadata, never its backup GPT", async () => {
  if (!requireEnv('end-anchored metadata', { tools: ['sgdisk'] })) return;
  const p = image('src-md.img', 64 * MiB);
  execFileSync('sgdisk', ['-n1:2048:+16M', p], { stdio: 'ignore' });
  writeMd090(p);
  const dev = await openDrive(p);
  try {
    assert.equal(
      (await endAnchoredMetadata(dev)).map((s) => s.what),
      [`md superblock 0.90 at byte ${64 * MiB - 65536}`],
    );
  } finally {
    await dev.close();
  }
});

test('an unreadable stretch of the tail hides only what lies in it, and never fails the scan', async () => {
  if (!requireEnv('md superblock fixture', { tools: ['mdadm'] })) return;
  const p = image('badtail.img', 96 * MiB);
  const md = writeMd10(p);
  writeMd090(p);
  const inner = await openDrive(p);
  // The sector holding the md 0.90 magic cannot be read; the md 1.0 superblock 56 KiB further is still found.
  const bad = new FaultyDevice(inner, { badReadLbas: [(96 * MiB - 65536) / 512] });
  try {
    const sigs = await findEndSignatures(bad);
    assert.equal(sigs.map((s) => [s.type, s.start]), [['linux_raid_member', md]]);
  } finally {
    await inner.close();
  }
});

test.run();
