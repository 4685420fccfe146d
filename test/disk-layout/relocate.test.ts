import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { openDrive } from '../../src/sata-bridge/index.ts';
import { readLayout, relocateGptBackup, type DiskLayout } from '../../src/disk-layout/index.ts';
import { BadInputError, DeviceError, RefusedError } from '../../src/errors.ts';
import { isRoot, requireEnv } from '../support/require.ts';
import { MemoryDevice, MiB, sfdisk, sh, sparse, tempDir } from './support/images.ts';

const tmp = tempDir();
const haveTools = requireEnv('GPT relocation checked by sgdisk', { tools: ['sfdisk', 'sgdisk'] });
const haveFdisk = requireEnv('4Kn GPT relocation', { tools: ['fdisk'] });

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** A whole-drive copy of `src` onto a larger `dst`: same bytes, then more zeros. */
function copyOntoLarger(src: string, dst: string, bytes: number): void {
  sh('cp', ['--sparse=always', src, dst]);
  sparse(dst, bytes);
}

function sgdiskVerify(path: string): string {
  try {
    return sh('sgdisk', ['-v', path]);
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? e);
  }
}

async function layoutOf(path: string, imageSectorSize = 512): Promise<DiskLayout> {
  const dev = await openDrive(path, { imageSectorSize });
  try {
    return await readLayout(dev, { sniff: false });
  } finally {
    await dev.close();
  }
}

function sourceImage(name: string): string {
  const src = tmp.path(name);
  sparse(src, 64 * MiB);
  sfdisk(src, 'label: gpt\nsize=8M, type=U, name="ESP"\nsize=16M, type=L, name="system"\ntype=L, name="data"\n');
  return src;
}

test('a GPT copied onto a larger image is valid for sgdisk -v after relocation', async () => {
  if (!haveTools) return;
  const src = sourceImage('src.img');
  const dst = tmp.path('dst.img');
  copyOntoLarger(src, dst, 96 * MiB);
  assert.not.match(sgdiskVerify(dst), /No problems found/, 'the unrelocated copy is flagged by sgdisk');
  const before = await layoutOf(dst);
  assert.ok(before.gpt!.primaryValid && before.gpt!.backupValid);
  assert.not.ok(before.gpt!.backupAtEnd);
  assert.ok(before.problems.some((p) => /copied onto a larger one/.test(p)));

  const dev = await openDrive(dst, { write: true });
  const result = await relocateGptBackup(dev, 64 * MiB);
  await dev.close();
  const last = 96 * MiB / 512 - 1;
  assert.ok(result.changed);
  assert.is(result.oldBackupLba, 64 * MiB / 512 - 1);
  assert.is(result.newBackupLba, last);
  assert.is(result.lastUsableLba, last - 33);
  assert.equal(result.zeroedLbas, [64 * MiB / 512 - 1]);
  assert.ok(result.protectiveMbrUpdated);

  const out = sgdiskVerify(dst);
  assert.match(out, /No problems found/, out);
  const after = await layoutOf(dst);
  assert.equal(after.problems, []);
  const g = after.gpt!;
  assert.ok(g.primaryValid && g.backupValid && g.backupAtEnd);
  assert.is(g.alternateLba, last);
  assert.is(g.lastUsableLba, last - 33);
  const original = await layoutOf(src);
  assert.equal(after.partitions, original.partitions, 'partitions unchanged');
  assert.is(after.diskId, original.diskId);
  // The old backup header sector now reads as zeros.
  const bytes = readFileSync(dst);
  assert.ok(bytes.subarray(64 * MiB - 512, 64 * MiB).every((b) => b === 0));
  // sfdisk agrees on the new last usable LBA.
  assert.is((JSON.parse(sh('sfdisk', ['--json', dst])) as { partitiontable: { lastlba: number } }).partitiontable.lastlba, last - 33);
});

test('relocation is idempotent: a second run writes nothing', async () => {
  if (!haveTools) return;
  const src = sourceImage('src2.img');
  const dst = tmp.path('dst2.img');
  copyOntoLarger(src, dst, 80 * MiB);
  let dev = await openDrive(dst, { write: true });
  assert.ok((await relocateGptBackup(dev, 64 * MiB)).changed);
  await dev.close();
  const hash = sha(dst);
  dev = await openDrive(dst, { write: true });
  const again = await relocateGptBackup(dev, 64 * MiB);
  await dev.close();
  assert.not.ok(again.changed);
  assert.equal(again.zeroedLbas, []);
  assert.is(sha(dst), hash);
  // A read-only handle is enough when there is nothing to do.
  dev = await openDrive(dst);
  assert.not.ok((await relocateGptBackup(dev, 64 * MiB)).changed);
  await dev.close();
});

test('no-op for equal sizes and for MBR disks; bad sizes are bad input', async () => {
  if (!haveTools) return;
  const src = sourceImage('src3.img');
  const hash = sha(src);
  let dev = await openDrive(src, { write: true });
  const same = await relocateGptBackup(dev, 64 * MiB);
  assert.not.ok(same.changed);
  assert.match(same.summary, /same size/);
  for (const bad of [0, -512, 1000, 128 * MiB]) {
    try {
      await relocateGptBackup(dev, bad);
      assert.unreachable(`size ${bad} accepted`);
    } catch (e) {
      assert.instance(e, BadInputError);
    }
  }
  await dev.close();
  assert.is(sha(src), hash);

  const mbr = tmp.path('mbr.img');
  sparse(mbr, 32 * MiB);
  sfdisk(mbr, 'label: dos\ntype=83\n');
  const big = tmp.path('mbr-big.img');
  copyOntoLarger(mbr, big, 48 * MiB);
  const mhash = sha(big);
  dev = await openDrive(big, { write: true });
  const r = await relocateGptBackup(dev, 32 * MiB);
  await dev.close();
  assert.not.ok(r.changed);
  assert.match(r.summary, /not a GPT/);
  assert.is(sha(big), mhash);
});

test('a read-only target that needs relocation fails without writing', async () => {
  if (!haveTools) return;
  const src = sourceImage('src4.img');
  const dst = tmp.path('dst4.img');
  copyOntoLarger(src, dst, 72 * MiB);
  const hash = sha(dst);
  const dev = await openDrive(dst);
  try {
    await relocateGptBackup(dev, 64 * MiB);
    assert.unreachable('relocated through a read-only handle');
  } catch (e) {
    assert.instance(e, DeviceError);
  } finally {
    await dev.close();
  }
  assert.is(sha(dst), hash);
});

test('a damaged primary GPT is refused and nothing is written', async () => {
  if (!haveTools) return;
  const src = sourceImage('src5.img');
  const dst = tmp.path('dst5.img');
  copyOntoLarger(src, dst, 72 * MiB);
  const data = readFileSync(dst);
  const mem = new MemoryDevice(Buffer.from(data));
  mem.data[512 + 40] ^= 0xff; // inside the primary header: its CRC no longer matches
  const before = Buffer.from(mem.data);
  try {
    await relocateGptBackup(mem, 64 * MiB);
    assert.unreachable('relocated from a damaged primary');
  } catch (e) {
    assert.instance(e, RefusedError);
    assert.match((e as Error).message, /primary GPT .* damaged/);
  }
  assert.ok(mem.data.equals(before));
});

test('a power loss after the backup was written: a rerun finishes the job', async () => {
  if (!haveTools) return;
  const src = sourceImage('src6.img');
  const dst = tmp.path('dst6.img');
  copyOntoLarger(src, dst, 72 * MiB);
  const mem = new MemoryDevice(Buffer.from(readFileSync(dst)));
  const done = new MemoryDevice(Buffer.from(mem.data));
  await relocateGptBackup(done, 64 * MiB);
  // Only the new backup (table + header at the end) made it to the disk.
  const tail = 72 * MiB - 33 * 512;
  mem.data.set(done.data.subarray(tail), tail);
  const mid = await readLayout(mem, { sniff: false });
  assert.ok(mid.gpt!.primaryValid, 'still a valid GPT in between');
  const r = await relocateGptBackup(mem, 64 * MiB);
  assert.ok(r.changed);
  assert.ok(mem.data.equals(done.data));
});

test('4Kn: a 4096-byte-sector GPT relocates onto a larger 4Kn image', async () => {
  if (!haveFdisk) return;
  const src = tmp.path('src4k.img');
  sparse(src, 64 * MiB);
  sh('fdisk', ['-b', '4096', '--wipe', 'never', src], 'g\nn\n\n\n+10M\nn\n\n\n\nw\n');
  const dst = tmp.path('dst4k.img');
  copyOntoLarger(src, dst, 128 * MiB);
  const dev = await openDrive(dst, { write: true, imageSectorSize: 4096 });
  const r = await relocateGptBackup(dev, 64 * MiB);
  await dev.close();
  const last = 128 * MiB / 4096 - 1;
  assert.ok(r.changed);
  assert.is(r.newBackupLba, last);
  assert.is(r.lastUsableLba, last - 5);
  assert.equal(r.zeroedLbas, [64 * MiB / 4096 - 1]);
  const after = await layoutOf(dst, 4096);
  assert.equal(after.problems, []);
  assert.ok(after.gpt!.backupAtEnd && after.gpt!.primaryValid);
  assert.equal(after.partitions, (await layoutOf(src, 4096)).partitions);
  const listing = sh('fdisk', ['-b', '4096', '-l', dst]);
  assert.not.match(listing, /corrupt|not at the end|differ/i, listing);
});

/** Attaches an image as a 4Kn loop device so sgdisk sees 4096-byte sectors; undefined when the kernel refuses. */
function attach4k(path: string): string | undefined {
  try {
    return sh('losetup', ['--sector-size', '4096', '-f', '--show', path]).trim();
  } catch (e) {
    console.log(`SKIP: 4Kn sgdisk check: losetup failed (${String((e as { stderr?: string }).stderr ?? e).trim()})`);
    return undefined;
  }
}

test('4Kn: sgdisk -v on a 4096-byte loop device finds no problems after relocation', async () => {
  if (!haveFdisk || !haveTools) return;
  if (!isRoot) {
    console.log('SKIP: 4Kn sgdisk check needs root for a loop device');
    return;
  }
  if (!requireEnv('4Kn sgdisk check', { tools: ['losetup'] })) return;
  const src = tmp.path('src4k-loop.img');
  sparse(src, 64 * MiB);
  sh('fdisk', ['-b', '4096', '--wipe', 'never', src], 'g\nn\n\n\n+10M\nn\n\n\n\nw\n');
  const dst = tmp.path('dst4k-loop.img');
  copyOntoLarger(src, dst, 96 * MiB);
  const dev = await openDrive(dst, { write: true, imageSectorSize: 4096 });
  assert.ok((await relocateGptBackup(dev, 64 * MiB)).changed);
  await dev.close();
  const loop = attach4k(dst);
  if (!loop) return;
  try {
    const out = sgdiskVerify(loop);
    assert.match(out, /No problems found/, out);
  } finally {
    sh('losetup', ['-d', loop]);
  }
});

test.after(() => tmp.remove());
test.run();
