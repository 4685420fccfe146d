/**
 * Verify looks at every byte. On a standby whose GPT was moved to its larger
 * end, LBA 0, LBA 1, the old backup header and the new backup are compared
 * with exactly what the relocation leaves there; differences come in logical
 * sectors; unreadable source sectors make the headline say so.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { closeSync, openSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { openLocated, FaultyDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { clone, sync, verify, verifyHeadline } from '../../src/sync/index.ts';
import { dpsr } from '../support/cli.ts';
import { partitionedImage, randomImage, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir('dpsr-verify-');
const MiB = 1024 * 1024;

function poke(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** A GPT system drive with BIOS boot code in LBA 0 (as GRUB's boot.img leaves it), cloned onto a 1.5× larger standby. */
async function relocatedPair(name: string) {
  const stateDir = join(dir, `state-${name}`);
  const img = partitionedImage(dir, `${name}-src.img`, { scheme: 'gpt', sizeMiB: 32 });
  poke(img.path, 0, Buffer.from([0xeb, 0x63, 0x90, ...Array.from({ length: 200 }, (_, i) => i + 1)]));
  const tgt = sparseImage(join(dir, `${name}-tgt.img`), 48 * MiB);
  const report = await clone({ stateDir, source: img.path, target: tgt });
  assert.ok(report.gptRelocated);
  return { stateDir, src: img.path, tgt };
}

test('a relocated GPT standby verifies identical right after the copy and after a later sync', async () => {
  if (!requireEnv('relocated GPT verify', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const p = await relocatedPair('fresh');
  let v = await verify({ stateDir: p.stateDir, source: p.src, target: p.tgt });
  assert.ok(v.identical, JSON.stringify(v.differences));
  assert.is(v.sectorSize, 512);
  assert.is(v.bytesCompared, 32 * MiB + 33 * 512, "the source area (three sectors of it against their relocated form) and the new backup table and header");
  poke(p.src, 20 * MiB, Buffer.from('changed'));
  await sync({ stateDir: p.stateDir, source: p.src, target: p.tgt });
  v = await verify({ stateDir: p.stateDir, source: p.src, target: p.tgt });
  assert.ok(v.identical, JSON.stringify(v.differences));
});

test('a standby only a few sectors larger, where the new backup table overlaps the old one, verifies identical', async () => {
  if (!requireEnv('relocated GPT verify', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const stateDir = join(dir, 'state-few');
  const img = partitionedImage(dir, 'few-src.img', { scheme: 'gpt', sizeMiB: 32 });
  for (const extra of [1, 4, 40]) {
    const tgt = sparseImage(join(dir, `few-tgt-${extra}.img`), 32 * MiB + extra * 512);
    const report = await clone({ stateDir: `${stateDir}-${extra}`, source: img.path, target: tgt });
    assert.ok(report.gptRelocated);
    const v = await verify({ stateDir: `${stateDir}-${extra}`, source: img.path, target: tgt });
    assert.ok(v.identical, `${extra} sectors larger: ${JSON.stringify(v.differences)} ${v.notes.join('; ')}`);
  }
});

// Each damage, and the one logical sector verify must name for it (f02 and its kin).
const damages: [string, (tgt: string) => void, (tgtSectors: number) => number][] = [
  ['boot code in LBA 0 overwritten', (t) => poke(t, 0, Buffer.alloc(8)), () => 0],
  ['primary GPT header (LBA 1) zeroed', (t) => poke(t, 512, Buffer.alloc(512)), () => 1],
  ['primary GPT header: one byte outside the relocated fields', (t) => poke(t, 512 + 60, Buffer.from([0x5a])), () => 1],
  ['protective MBR entry size wrong', (t) => poke(t, 446 + 12, Buffer.from([1, 0, 0, 0])), () => 0],
  ['relocated backup GPT header zeroed', (t) => poke(t, 48 * MiB - 512, Buffer.alloc(512)), (n) => n - 1],
  ['relocated backup table damaged', (t) => poke(t, 48 * MiB - 33 * 512 + 130, Buffer.from('X')), (n) => n - 33],
  ["the source's old backup header left in place", (_t) => undefined, () => (32 * MiB) / 512 - 1],
];

for (const [what, damage, lba] of damages) {
  test(`verify reports the sector when the ${what}`, async () => {
    if (!requireEnv('relocated GPT verify', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
    const p = await relocatedPair(what.replace(/\W+/g, '-'));
    damage(p.tgt);
    if (what.startsWith("the source's old backup")) {
      // Put the source's backup header back where the relocation zeroed it.
      execFileSync('dd', [`if=${p.src}`, `of=${p.tgt}`, 'bs=512', `skip=${lba(0)}`, `seek=${lba(0)}`, 'count=1', 'conv=notrunc', 'status=none']);
    }
    const v = await verify({ stateDir: p.stateDir, source: p.src, target: p.tgt });
    assert.not.ok(v.identical);
    assert.equal(v.differences, [{ start: lba((48 * MiB) / 512) * 512, length: 512 }]);
    assert.is(v.differingBytes, 512);
    assert.match(verifyHeadline(v), /^DIFFERENT: 1 range, 512 bytes \(1 sector\) differ$/);
  });
}

test('the CLI exits 1 and names the differing sector of a standby without boot code (f02)', async () => {
  if (!requireEnv('relocated GPT verify', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const p = await relocatedPair('cli');
  poke(p.tgt, 0, Buffer.alloc(8));
  const r = dpsr(['verify', p.src, p.tgt], { DPSR_STATE_DIR: p.stateDir });
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stdout, /DIFFERENT: 1 range, 512 bytes \(1 sector\) differ/);
  assert.match(r.stdout, /differs: LBA 0 \(1 sector\), byte offset 0/);
  assert.match(r.stdout, /LBA 0 \(protective MBR and boot code\) is not what the copy leaves there/);
});

test('differences are whole logical sectors, not larger blocks', async () => {
  const a = randomImage(join(dir, 'gran-a.img'), 4 * MiB, 7);
  const b = join(dir, 'gran-b.img');
  execFileSync('cp', [a, b]);
  poke(b, 5000, Buffer.from([0xff ^ 0x12]));
  poke(b, 3 * MiB + 1023, Buffer.from('ab'));
  const v = await verify({ stateDir: join(dir, 'state-gran'), source: a, target: b });
  assert.equal(v.differences, [
    { start: 4608, length: 512 },
    { start: 3 * MiB + 512, length: 1024 },
  ]);
  assert.is(v.differingBytes, 1536);
});

test('with unreadable source sectors the headline says the comparison is incomplete, never "0 ranges differ" (f09)', async () => {
  const a = randomImage(join(dir, 'unr-a.img'), 8 * MiB, 3);
  const b = join(dir, 'unr-b.img');
  execFileSync('cp', [a, b]);
  const last = (8 * MiB) / 512;
  const openDevice = async (loc: DriveLocation, options: OpenDriveOptions) => {
    const dev = await openLocated(loc, options);
    return loc.requested === a ? new FaultyDevice(dev, { badReadLbas: Array.from({ length: 8 }, (_, i) => last - 8 + i) }) : dev;
  };
  const v = await verify({ stateDir: join(dir, 'state-unr'), source: a, target: b, retries: 0, openDevice });
  assert.not.ok(v.identical);
  assert.is(v.differenceCount, 0);
  assert.is(v.unreadableSectors, 8);
  const headline = verifyHeadline(v);
  assert.is(headline, 'INCOMPLETE: 4,096 bytes (8 sectors) of the source could not be read, so they were not compared; everything else compared equal');
  assert.not.match(headline, /0 ranges|0 B differ/);

  poke(b, 4096, Buffer.from('x'));
  const w = await verify({ stateDir: join(dir, 'state-unr'), source: a, target: b, retries: 0, openDevice });
  assert.is(verifyHeadline(w), 'DIFFERENT: 1 range, 512 bytes (1 sector) differ; also 4,096 bytes (8 sectors) of the source could not be read, so they were not compared');
});

test('unreadable sectors in the backup GPT are named as such, not just "outside every partition" (f09)', async () => {
  if (!requireEnv('GPT source', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const img = partitionedImage(dir, 'unr-gpt.img', { scheme: 'gpt', sizeMiB: 32 });
  const copy = join(dir, 'unr-gpt-copy.img');
  execFileSync('cp', [img.path, copy]);
  const last = (32 * MiB) / 512;
  const openDevice = async (loc: DriveLocation, options: OpenDriveOptions) => {
    const dev = await openLocated(loc, options);
    return loc.requested === img.path ? new FaultyDevice(dev, { badReadLbas: Array.from({ length: 8 }, (_, i) => last - 8 + i) }) : dev;
  };
  const v = await verify({ stateDir: join(dir, 'state-unr-gpt'), source: img.path, target: copy, retries: 0, openDevice });
  assert.equal(
    v.unreadable.map((u) => [u.firstLba, u.sectors, u.partition, u.area]),
    [[last - 8, 8, undefined, 'the backup GPT']],
  );
});

test('a larger standby whose source has an unreadable backup GPT is verified to the end: the unreadable sectors are reported, not a read error (f09)', async () => {
  if (!requireEnv('GPT source', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const img = partitionedImage(dir, 'unr-big-src.img', { scheme: 'gpt', sizeMiB: 32 });
  const tgt = sparseImage(join(dir, 'unr-big-tgt.img'), 48 * MiB);
  const last = (32 * MiB) / 512;
  const openDevice = async (loc: DriveLocation, options: OpenDriveOptions) => {
    const dev = await openLocated(loc, options);
    return loc.requested === img.path ? new FaultyDevice(dev, { badReadLbas: Array.from({ length: 8 }, (_, i) => last - 8 + i) }) : dev;
  };
  const stateDir = join(dir, 'state-unr-big');
  const copied = await clone({ stateDir, source: img.path, target: tgt, retries: 0, openDevice });
  assert.is(copied.result, 'done-with-errors');
  assert.ok(copied.gptRelocated);
  const v = await verify({ stateDir, source: img.path, target: tgt, retries: 0, openDevice });
  assert.is(v.unreadableSectors, 8);
  assert.is(v.differenceCount, 0, JSON.stringify(v.differences));
  assert.match(verifyHeadline(v), /^INCOMPLETE: 4,096 bytes \(8 sectors\) of the source could not be read/);
  // The source's unreadable old backup header is compared with nothing: its place on the standby is left to the unreadable report.
  assert.equal(v.unreadable.map((u) => [u.firstLba, u.sectors, u.area]), [[last - 8, 8, 'the backup GPT']]);
});

test('a verify of a standby whose sync was interrupted says so and names the way out, beside the differences it finds', async () => {
  const stateDir = join(dir, 'state-pending');
  const a = randomImage(join(dir, 'pend-a.img'), 16 * MiB, 21);
  const b = sparseImage(join(dir, 'pend-b.img'), 16 * MiB);
  await clone({ stateDir, source: a, target: b });
  randomImage(a, 16 * MiB, 22);
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, batchBytes: MiB, journalBudget: 4 * MiB }).catch((e: unknown) => e);
  assert.instance(err, Error);
  const v = await verify({ stateDir, source: a, target: b });
  assert.not.ok(v.identical);
  assert.ok(
    v.notes.some((n) => /the standby .*pend-b\.img is inconsistent: .*interrupted: a whole-drive sync in compare mode onto .*pend-b\.img.*dpsr recover/.test(n)),
    v.notes.join('\n'),
  );
  const r = dpsr(['verify', a, b], { DPSR_STATE_DIR: stateDir });
  assert.is(r.code, 1);
  assert.match(r.stdout, /note: the standby .* is inconsistent/);
});

test.run();
