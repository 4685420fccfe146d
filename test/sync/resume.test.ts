/** Resuming: the sync map records finished chunks while a sync runs, and a resumed sync skips them. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { clone, sync, recover, restore, verify, PairStore, JournalFullError } from '../../src/sync/index.ts';
import { CancelledError, RefusedError } from '../../src/errors.ts';
import { chunkMode, type CopyMode } from '../../src/sync/engine.ts';
import { randomImage, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

test('a sync whose every chunk changed checkpoints progress, and the same sync resumes where it stopped', async () => {
  const stateDir = join(dir, 'state');
  const a = randomImage(join(dir, 'a.img'), 32 * MiB, 1);
  const b = sparseImage(join(dir, 'b.img'), 32 * MiB);
  await clone({ stateDir, source: a, target: b });
  randomImage(a, 32 * MiB, 2); // every block changed
  const controller = new AbortController();
  let chunks = 0;
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, checkpointMs: 0, signal: controller.signal, onChunkDone: () => ++chunks === 12 && controller.abort() }).catch((e: unknown) => e);
  assert.instance(err, CancelledError);
  const pair = new PairStore(stateDir).pairs()[0]!;
  const map = JSON.parse(readFileSync(join(stateDir, 'pairs', pair.id, 'sync-map.json'), 'utf8').split('\n').slice(1).join('\n'));
  const done = [...Buffer.from(map.done, 'base64')].reduce((n, byte) => n + byte.toString(2).split('1').length - 1, 0);
  assert.ok(done >= 10, `${done} chunks recorded as done`);
  const resumed = await sync({ stateDir, source: a, target: b, chunkSize: MiB });
  assert.ok(resumed.bytesResumed >= 10 * MiB, `resumed ${resumed.bytesResumed} bytes`);
  assert.is(sha256File(a), sha256File(b));
});

test('how a chunk is walked: a chunk an interrupted run finished is compared again in every copying mode', () => {
  const table: [CopyMode, boolean, CopyMode][] = [
    ['clone', false, 'clone'],
    ['clone', true, 'compare'],
    ['compare', false, 'compare'],
    ['compare', true, 'compare'],
    ['manifest', false, 'manifest'],
    // The manifest speaks for the standby as the interrupted run left it, not for what was written to it since.
    ['manifest', true, 'compare'],
    ['verify', false, 'verify'],
    ['verify', true, 'verify'],
  ];
  for (const [mode, finished, want] of table) assert.is(chunkMode(mode, finished), want, `${mode}, finished before: ${finished}`);
});

/** Overwrites `length` bytes at `at` with seeded random data, as a writer other than dpsr would. */
function overwrite(path: string, at: number, length: number, seed: number): void {
  const tmp = randomImage(join(dir, `overwrite-${seed}.tmp`), length, seed);
  execFileSync('dd', [`if=${tmp}`, `of=${path}`, 'bs=64K', `seek=${at / 65536}`, 'conv=notrunc', 'status=none']);
}

async function interruptedAtChunk(name: string, stopAt: number) {
  const stateDir = join(dir, `${name}-state`);
  const a = randomImage(join(dir, `${name}-a.img`), 16 * MiB, 51);
  const b = sparseImage(join(dir, `${name}-b.img`), 16 * MiB);
  await clone({ stateDir, source: a, target: b });
  const previous = sha256File(b);
  randomImage(a, 16 * MiB, 52);
  const controller = new AbortController();
  let chunks = 0;
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, checkpointMs: 0, inFlight: 1, signal: controller.signal, onChunkDone: () => ++chunks === stopAt && controller.abort() }).catch((e: unknown) => e);
  assert.instance(err, CancelledError);
  return { stateDir, a, b, previous };
}

test('the active drive written between the interruption and the resume: the resumed sync copies the finished chunks that changed again and ends identical to the source', async () => {
  const { stateDir, a, b, previous } = await interruptedAtChunk('active-changed', 8);
  // The host booted the active drive meanwhile and wrote inside chunks the sync map has as finished.
  overwrite(a, 0, 256 * 1024, 53);
  overwrite(a, 3 * MiB + 64 * 1024, 64 * 1024, 54);
  const r = await sync({ stateDir, source: a, target: b, chunkSize: MiB });
  assert.ok(r.notes.some((n) => /resuming the interrupted sync/.test(n)), r.notes.join('; '));
  assert.ok(r.notes.some((n) => /2 finished chunks .*changed since the interruption/.test(n)), r.notes.join('; '));
  assert.is(sha256File(b), sha256File(a));
  assert.is(new PairStore(stateDir).pairs()[0]!.standbyState, 'consistent');
  // What it marked consistent is the source as it is now: verify agrees.
  assert.is((await verify({ stateDir, source: a, target: b })).identical, true);
  void previous;
});

test('the standby written between the interruption and the resume: the resumed sync puts the finished chunks right again', async () => {
  const { stateDir, a, b } = await interruptedAtChunk('standby-changed', 8);
  overwrite(b, MiB, 128 * 1024, 55);
  const r = await sync({ stateDir, source: a, target: b, chunkSize: MiB });
  assert.ok(r.notes.some((n) => /1 finished chunk .*changed since the interruption/.test(n)), r.notes.join('; '));
  assert.is(sha256File(b), sha256File(a));
});

test('a rollback after a resume that copied changed chunks again still gives the previous backup, byte for byte', async () => {
  const { stateDir, a, b, previous } = await interruptedAtChunk('resume-then-recover', 8);
  overwrite(a, 0, 512 * 1024, 56);
  // The resume is interrupted too, after copying the changed chunk again.
  const controller = new AbortController();
  let chunks = 0;
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, checkpointMs: 0, inFlight: 1, signal: controller.signal, onChunkDone: () => ++chunks === 10 && controller.abort() }).catch((e: unknown) => e);
  assert.instance(err, CancelledError);
  await recover({ stateDir, target: b });
  assert.is(sha256File(b), previous);
});

test('a standby that disappears during a checkpoint ends the sync with an error, not a crash', async () => {
  const { openLocated, FaultyDevice } = await import('../../src/sata-bridge/index.ts');
  const stateDir = join(dir, 'state-pull');
  const a = randomImage(join(dir, 'pa.img'), 16 * MiB, 3);
  const b = sparseImage(join(dir, 'pb.img'), 16 * MiB);
  await clone({ stateDir, source: a, target: b });
  randomImage(a, 16 * MiB, 4);
  let faulty: InstanceType<typeof FaultyDevice> | undefined;
  let chunks = 0;
  const err = await sync({
    stateDir,
    source: a,
    target: b,
    chunkSize: MiB,
    checkpointMs: 0,
    openDevice: async (loc, options) => {
      const dev = await openLocated(loc, options);
      if (!options.write) return dev;
      faulty = new FaultyDevice(dev);
      return faulty;
    },
    onChunkDone: () => ++chunks === 4 && faulty!.pull(),
  }).catch((e: unknown) => e);
  assert.instance(err, Error);
  assert.match((err as Error).message, /gone|pulled/);
});

/** A GPT drive with two 8 MiB partitions full of random data. */
function twoPartitions(path: string, seed: number): string {
  randomImage(path, 24 * MiB, seed);
  execFileSync('sfdisk', ['-q', '--wipe', 'never', path], { input: 'label: gpt\nstart=2048, size=8MiB, name="p1"\nsize=8MiB, name="p2"\n' });
  return path;
}

async function interruptedWholeSync(name: string) {
  const stateDir = join(dir, `${name}-state`);
  const a = twoPartitions(join(dir, `${name}-a.img`), 11);
  const b = sparseImage(join(dir, `${name}-b.img`), 24 * MiB);
  await clone({ stateDir, source: a, target: b });
  const previous = sha256File(b);
  // The host changes both partitions completely.
  const fresh = randomImage(join(dir, `${name}-fresh.img`), 24 * MiB, 12);
  execFileSync('dd', [`if=${fresh}`, `of=${a}`, 'bs=1M', 'skip=1', 'seek=1', 'count=16', 'conv=notrunc', 'status=none']);
  // A whole-drive sync stops part-way (journal budget): the standby is half old, half new.
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, batchBytes: MiB, journalBudget: 6 * MiB }).catch((e: unknown) => e);
  assert.instance(err, JournalFullError);
  assert.is.not(sha256File(b), previous, 'the interrupted sync wrote part of the standby');
  assert.is.not(sha256File(b), sha256File(a));
  const pair = new PairStore(stateDir).pairs()[0]!;
  return { stateDir, a, b, previous, journal: join(stateDir, 'pairs', pair.id, 'undo.journal') };
}

test('an interrupted whole-drive sync is not "resumed" by a sync of other partitions; recover still brings the previous backup back (r01)', async () => {
  if (!requireEnv('partitioned images', { tools: ['sfdisk'] })) return;
  const { stateDir, a, b, previous, journal } = await interruptedWholeSync('r01');
  const half = sha256File(b);
  const err = await sync({ stateDir, source: a, target: b, partitions: [2] }).catch((e: unknown) => e);
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, /whole-drive sync in compare mode .* was interrupted \(its undo journal holds \d+ records? .*this request is a sync of partition 2/);
  assert.match((err as RefusedError).hint ?? '', /dpsr sync .*r01-a\.img .*r01-b\.img`.*dpsr recover .*r01-b\.img/);
  assert.is(sha256File(b), half, 'the refusal wrote nothing');
  assert.ok(existsSync(journal), 'the undo journal is kept');
  assert.is(new PairStore(stateDir).pairs()[0]!.standbyState, 'inconsistent');
  await recover({ stateDir, target: b });
  assert.is(sha256File(b), previous);
});

test('the same whole-drive sync run again finishes the interrupted one (r01, the other way out)', async () => {
  if (!requireEnv('partitioned images', { tools: ['sfdisk'] })) return;
  const { stateDir, a, b } = await interruptedWholeSync('r01b');
  const r = await sync({ stateDir, source: a, target: b, chunkSize: MiB });
  assert.ok(r.notes.some((n) => /resuming the interrupted sync/.test(n)), r.notes.join('; '));
  assert.is(sha256File(b), sha256File(a));
  assert.is(new PairStore(stateDir).pairs()[0]!.standbyState, 'consistent');
});

test('a restore stopped by its journal budget speaks of the active drive and the restore, not of the standby and a sync', async () => {
  const stateDir = join(dir, 'state-restore-budget');
  const a = randomImage(join(dir, 'rb-a.img'), 8 * MiB, 41);
  const b = sparseImage(join(dir, 'rb-b.img'), 8 * MiB);
  await clone({ stateDir, source: a, target: b });
  randomImage(a, 8 * MiB, 43);
  const before = sha256File(a);
  const err = await restore({ stateDir, source: b, target: a, chunkSize: MiB, journalBudget: 2 * MiB }).catch((e: unknown) => e);
  assert.instance(err, JournalFullError);
  const text = `${(err as JournalFullError).message}\n${(err as JournalFullError).hint}`;
  assert.match(text, /the restore stopped before overwriting more of the active drive/);
  assert.not.match(text, /standby|the same sync/);
  // Rolled back, the active drive is its own content from before the restore, not "the previous backup".
  const report = await recover({ stateDir, target: a });
  assert.match(report.message, /holds again what it held before the restore/);
  assert.is(sha256File(a), before);
});

test.run();
