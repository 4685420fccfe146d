import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { openLocated, FaultyDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { clone, sync, PairStore } from '../../src/sync/index.ts';
import { DeviceError } from '../../src/errors.ts';
import { partitionedImage, randomImage, sha256File, sparseImage, tempDir, scatterWrites } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

/** Opens drives, wrapping the one at `path` in a FaultyDevice with `plan`. */
function faultyOpener(path: string, plan: ConstructorParameters<typeof FaultyDevice>[1], seen: FaultyDevice[] = []) {
  return async (loc: DriveLocation, options: OpenDriveOptions) => {
    const dev = await openLocated(loc, options);
    if (loc.requested !== path) return dev;
    const faulty = new FaultyDevice(dev, plan);
    seen.push(faulty);
    return faulty;
  };
}

test('unreadable source sectors are retried, skipped, reported with their partition, and never zeroed on the target', async () => {
  if (!requireEnv('bad-sector test', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const img = partitionedImage(dir, 'bad-src.img', { scheme: 'gpt', sizeMiB: 32 });
  const tgt = randomImage(join(dir, 'bad-tgt.img'), 32 * MiB, 99);
  const oldTarget = readFileSync(tgt);
  const lbaInP1 = img.partitions[0]!.start / 512 + 100;
  const lbaInP2 = img.partitions[1]!.start / 512 + 7;
  const seen: FaultyDevice[] = [];
  const report = await clone({
    stateDir: join(dir, 'state1'),
    source: img.path,
    target: tgt,
    retries: 2,
    openDevice: faultyOpener(img.path, { badReadLbas: [lbaInP1, lbaInP1 + 1, lbaInP2] }, seen),
  });
  assert.is(report.result, 'done-with-errors');
  assert.equal(
    report.unreadable.map((u) => [u.firstLba, u.sectors, u.partition]),
    [
      [lbaInP1, 2, 1],
      [lbaInP2, 1, 2],
    ],
  );
  // Each unreadable sector was tried 1 + retries times on its own.
  const singleTries = seen[0]!.readFailures.filter((l) => l === lbaInP2).length;
  assert.ok(singleTries >= 3, `sector ${lbaInP2} read ${singleTries} times`);
  const src = readFileSync(img.path);
  const out = readFileSync(tgt);
  for (const lba of [lbaInP1, lbaInP1 + 1, lbaInP2]) {
    assert.ok(out.subarray(lba * 512, lba * 512 + 512).equals(oldTarget.subarray(lba * 512, lba * 512 + 512)), `target kept its data at LBA ${lba}`);
  }
  // Everything else is the source.
  const mask = (b: Buffer) => {
    const c = Buffer.from(b);
    for (const lba of [lbaInP1, lbaInP1 + 1, lbaInP2]) c.fill(0, lba * 512, lba * 512 + 512);
    return c;
  };
  assert.ok(mask(src).equals(mask(out)));
});

test('a weak sector that reads on retry is copied and not reported', async () => {
  const src = randomImage(join(dir, 'weak-src.img'), 8 * MiB, 5);
  const tgt = sparseImage(join(dir, 'weak-tgt.img'), 8 * MiB);
  const report = await clone({ stateDir: join(dir, 'state2'), source: src, target: tgt, retries: 2, openDevice: faultyOpener(src, { flakyReadLbas: new Map([[300, 2]]) }) });
  assert.is(report.result, 'done');
  assert.is(report.unreadable.length, 0);
  assert.is(sha256File(src), sha256File(tgt));
});

test('a write error on the target stops the job with a clear error and the standby stays recoverable', async () => {
  const src = randomImage(join(dir, 'w-src.img'), 16 * MiB, 8);
  const tgt = sparseImage(join(dir, 'w-tgt.img'), 16 * MiB);
  const stateDir = join(dir, 'state3');
  await clone({ stateDir, source: src, target: tgt });
  const backup = sha256File(tgt);
  scatterWrites(src, 16 * MiB, 200);
  const err = await sync({ stateDir, source: src, target: tgt, chunkSize: MiB, openDevice: faultyOpener(tgt, { failWritesAfter: 20 }) }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.instance(err, DeviceError);
  assert.match((err as Error).message, /writing the standby .* failed/);
  assert.match((err as DeviceError).hint ?? '', /dpsr recover/);
  const pair = new PairStore(stateDir).pairs()[0]!;
  assert.is(pair.standbyState, 'inconsistent');
  const { recover } = await import('../../src/sync/index.ts');
  await recover({ stateDir, target: tgt });
  assert.is(sha256File(tgt), backup, 'rolled back to the previous backup');
});

test('a source that stops answering midway stops the sync; running it again finishes it', async () => {
  const src = randomImage(join(dir, 'g-src.img'), 16 * MiB, 9);
  const tgt = sparseImage(join(dir, 'g-tgt.img'), 16 * MiB);
  const stateDir = join(dir, 'state4');
  await clone({ stateDir, source: src, target: tgt });
  scatterWrites(src, 16 * MiB, 300);
  const err = await sync({ stateDir, source: src, target: tgt, chunkSize: MiB, openDevice: faultyOpener(src, { failReadsAfter: 6 }) }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof Error);
  const again = await sync({ stateDir, source: src, target: tgt, chunkSize: MiB });
  assert.is(again.result, 'done');
  assert.is(sha256File(src), sha256File(tgt));
});

test.run();
