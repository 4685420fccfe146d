import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { openDrive } from '../../src/sata-bridge/index.ts';
import { clone, recover, runEngine, sync, JournalFullError } from '../../src/sync/index.ts';
import { randomImage, scatterWrites, sha256File, tempDir, sparseImage } from '../support/images.ts';
import { CancelledError } from '../../src/errors.ts';
import type { Progress } from '../../src/sync/index.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

async function withDrives<T>(src: string, tgt: string, fn: (s: Awaited<ReturnType<typeof openDrive>>, t: Awaited<ReturnType<typeof openDrive>>) => Promise<T>): Promise<T> {
  const s = await openDrive(src);
  const t = await openDrive(tgt, { write: true });
  try {
    return await fn(s, t);
  } finally {
    await s.close();
    await t.close();
  }
}

test('clone makes a byte-identical copy, also of a size that is not a whole number of chunks', async () => {
  const src = randomImage(join(dir, 'c-src.img'), 9 * MiB + 512 * 3, 7);
  const tgt = sparseImage(join(dir, 'c-tgt.img'), 12 * MiB);
  const result = await withDrives(src, tgt, (s, t) => runEngine({ mode: 'clone', source: s, target: t, ranges: [{ start: 0, length: s.size }] }));
  assert.is(result.bytesWritten, 9 * MiB + 1536);
  const { execFileSync } = await import('node:child_process');
  execFileSync('cmp', ['-n', String(9 * MiB + 1536), src, tgt]);
});

test('compare writes only the differing 4 KiB sub-blocks and ends byte-identical', async () => {
  const src = randomImage(join(dir, 's-src.img'), 16 * MiB, 3);
  const tgt = join(dir, 's-tgt.img');
  const { copyFileSync } = await import('node:fs');
  copyFileSync(src, tgt);
  const offsets = [...new Set(scatterWrites(src, 16 * MiB, 40))];
  const result = await withDrives(src, tgt, (s, t) => runEngine({ mode: 'compare', source: s, target: t, ranges: [{ start: 0, length: s.size }] }));
  assert.is(result.bytesWritten, offsets.length * 4096);
  assert.is(sha256File(src), sha256File(tgt));
});

test('verify reports every differing range with offset and length', async () => {
  const src = randomImage(join(dir, 'v-src.img'), 8 * MiB, 5);
  const tgt = join(dir, 'v-tgt.img');
  const { copyFileSync, openSync, writeSync, closeSync } = await import('node:fs');
  copyFileSync(src, tgt);
  const fd = openSync(tgt, 'r+');
  writeSync(fd, Buffer.alloc(4096, 0xaa), 0, 4096, 4096 * 10);
  writeSync(fd, Buffer.alloc(8192, 0xbb), 0, 8192, 5 * MiB);
  closeSync(fd);
  const before = sha256File(tgt);
  const s = await openDrive(src);
  const t = await openDrive(tgt);
  const result = await runEngine({ mode: 'verify', source: s, target: t, ranges: [{ start: 0, length: s.size }] });
  await s.close();
  await t.close();
  assert.equal(result.differences, [
    { start: 40960, length: 4096 },
    { start: 5 * MiB, length: 8192 },
  ]);
  assert.is(result.differenceCount, 2);
  assert.is(sha256File(tgt), before, 'verify wrote nothing');
});

test('ranges restrict the walk to the chosen bytes', async () => {
  const src = randomImage(join(dir, 'r-src.img'), 8 * MiB, 11);
  const tgt = sparseImage(join(dir, 'r-tgt.img'), 8 * MiB);
  await withDrives(src, tgt, (s, t) => runEngine({ mode: 'clone', source: s, target: t, ranges: [{ start: MiB, length: MiB }] }));
  const { readFileSync } = await import('node:fs');
  const a = readFileSync(src);
  const b = readFileSync(tgt);
  assert.ok(a.subarray(MiB, 2 * MiB).equals(b.subarray(MiB, 2 * MiB)));
  assert.ok(b.subarray(0, MiB).equals(Buffer.alloc(MiB)), 'nothing before the range');
  assert.ok(b.subarray(2 * MiB).equals(Buffer.alloc(6 * MiB)), 'nothing after the range');
});

test('progress events carry phase, bytes, rate and ETA, and end at 100 %', async () => {
  const src = randomImage(join(dir, 'p-src.img'), 8 * MiB, 13);
  const tgt = sparseImage(join(dir, 'p-tgt.img'), 8 * MiB);
  const events: Progress[] = [];
  await withDrives(src, tgt, (s, t) => runEngine({ mode: 'clone', source: s, target: t, ranges: [{ start: 0, length: s.size }], chunkSize: 1 * MiB, onProgress: (p) => events.push(p) }));
  const last = events[events.length - 1]!;
  assert.is(last.phase, 'done');
  assert.is(last.bytesDone, 8 * MiB);
  assert.is(last.percent, 100);
  assert.ok(events.some((e) => e.phase === 'copying'));
  for (const e of events) assert.ok(typeof e.rate === 'number' && e.bytesTotal === 8 * MiB);
});

test('cancellation stops between chunks with a CancelledError', async () => {
  const src = randomImage(join(dir, 'x-src.img'), 16 * MiB, 17);
  const tgt = sparseImage(join(dir, 'x-tgt.img'), 16 * MiB);
  const controller = new AbortController();
  let chunks = 0;
  const err = await withDrives(src, tgt, (s, t) =>
    runEngine({
      mode: 'clone',
      source: s,
      target: t,
      ranges: [{ start: 0, length: s.size }],
      chunkSize: MiB,
      inFlight: 1,
      signal: controller.signal,
      onChunkDone: () => {
        if (++chunks === 3) controller.abort();
      },
    }).then(
      () => undefined,
      (e: unknown) => e,
    ),
  );
  assert.instance(err, CancelledError);
  assert.is(chunks, 3);
});

test('direct I/O (O_DIRECT) works with the aligned buffers', async () => {
  const src = randomImage(join(dir, 'd-src.img'), 4 * MiB, 19);
  const tgt = sparseImage(join(dir, 'd-tgt.img'), 4 * MiB);
  let s, t;
  try {
    s = await openDrive(src, { direct: true });
    t = await openDrive(tgt, { write: true, direct: true });
  } catch (e) {
    console.log(`SKIP: O_DIRECT is not supported in ${dir} (${(e as Error).message}); set DPSR_TEST_TMP to a disk-backed folder`);
    return;
  }
  await runEngine({ mode: 'clone', source: s, target: t, ranges: [{ start: 0, length: s.size }] });
  await s.close();
  await t.close();
  assert.is(sha256File(src), sha256File(tgt));
});

test('direct I/O (O_DIRECT): a journaled sync writes its staged data, and recover rolls it back', async () => {
  const src = randomImage(join(dir, 'dj-src.img'), 8 * MiB, 23);
  const tgt = sparseImage(join(dir, 'dj-tgt.img'), 8 * MiB);
  try {
    await (await openDrive(tgt, { write: true, direct: true })).close();
  } catch (e) {
    console.log(`SKIP: O_DIRECT is not supported in ${dir} (${(e as Error).message}); set DPSR_TEST_TMP to a disk-backed folder`);
    return;
  }
  const stateDir = join(dir, 'state-direct-journal');
  await clone({ stateDir, source: src, target: tgt, direct: true });
  // Scattered changes give runs shorter than a chunk, staged in the journal's batch before they are written.
  scatterWrites(src, 8 * MiB, 40);
  await sync({ stateDir, source: src, target: tgt, direct: true });
  const backup = sha256File(tgt);
  assert.is(backup, sha256File(src));
  randomImage(src, 8 * MiB, 31);
  const err = await sync({ stateDir, source: src, target: tgt, direct: true, chunkSize: MiB, journalBudget: 3 * MiB }).catch((e: unknown) => e);
  assert.instance(err, JournalFullError);
  await recover({ stateDir, target: tgt, direct: true });
  assert.is(sha256File(tgt), backup);
});

test('recover reports its progress in bytes of the journal it puts back, like every other phase, ending at the bytes restored', async () => {
  const src = randomImage(join(dir, 'rp-src.img'), 32 * MiB, 41);
  const tgt = sparseImage(join(dir, 'rp-tgt.img'), 32 * MiB);
  const stateDir = join(dir, 'state-recover-progress');
  await clone({ stateDir, source: src, target: tgt });
  const backup = sha256File(tgt);
  randomImage(src, 32 * MiB, 43);
  const err = await sync({ stateDir, source: src, target: tgt, journalBudget: 12 * MiB }).catch((e: unknown) => e);
  assert.instance(err, JournalFullError);
  const seen: Progress[] = [];
  const report = await recover({ stateDir, target: tgt, onProgress: (p) => seen.push(p) });
  assert.is(sha256File(tgt), backup);
  assert.ok(report.records >= 2, JSON.stringify(report));
  assert.ok(seen.length >= 2);
  const last = seen[seen.length - 1]!;
  // It said "recovering 25 % of 4 B, 1 B done": the count of journal records shown as bytes.
  assert.is(last.bytesTotal, report.bytesRestored);
  assert.is(last.bytesDone, report.bytesRestored);
  assert.is(last.bytesWritten, report.bytesRestored, 'a rollback writes what it puts back');
  assert.is(last.percent, 100);
  for (const p of seen) assert.is(p.phase, 'recovering');
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]!.bytesDone > seen[i - 1]!.bytesDone);
});

test.run();
