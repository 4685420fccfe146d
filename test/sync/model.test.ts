/**
 * The model-based test of the copy rules (test/support/copy-model.ts): a few
 * hundred random sequences of operations and kills, each checked step by step
 * against what the drives must hold. `bench/copy-model.bench.ts` runs thousands.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { join } from 'node:path';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { makeTemplate, runSequence, sequenceArb } from '../support/copy-model.ts';
import { tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const RUNS = Number(process.env.DPSR_MODEL_RUNS ?? 200);

/** A scratch directory for the model's drives (in RAM where /dev/shm exists), removed at exit, with the template drive made in it. */
async function modelWorkspace() {
  const dir = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/dpsr-model-') : tempDir('dpsr-model-');
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return { dir, template: await makeTemplate(dir) };
}

test(`${RUNS} random sequences of copies, kills, rollbacks, failovers and size changes keep every standby either its previous backup or the new one`, async () => {
  if (!requireEnv('the copy model', { tools: ['sfdisk'] })) return;
  // tmpfs when there is one: the model makes thousands of small durable writes, and no O_DIRECT.
  const { dir, template } = await modelWorkspace();
  let n = 0;
  await fc.assert(
    fc.asyncProperty(sequenceArb, async (ops) => {
      const r = await runSequence(join(dir, `seq-${n++ % 4}`), template, ops);
      if (r.violations.length) throw new Error(`${r.violations.join('\n')}\nsteps: ${r.steps.join(' | ')}`);
    }),
    { numRuns: RUNS },
  );
  assert.ok(n >= RUNS);
});

test('found by the model: a failover during an interrupted restore leaves the half-restored drive as a standby marked inconsistent, and recover rolls it back', async () => {
  if (!requireEnv('the copy model', { tools: ['sfdisk'] })) return;
  const { dir, template } = await modelWorkspace();
  const r = await runSequence(join(dir, 'seq'), template, [
    { t: 'clone', force: false },
    { t: 'host-write', blocks: 20, seed: 3 },
    { t: 'restore', crash: { at: 'write', n: 3, tornJournal: false } },
    { t: 'failover' },
    { t: 'sync', partitions: [], mode: 'compare' },
    { t: 'recover' },
    { t: 'sync', partitions: [], mode: 'compare' },
  ]);
  assert.equal(r.violations, []);
  assert.equal(r.steps.map((s) => s.split(': ')[1]), ['done', 'done', 'killed', 'done', 'refused', 'done', 'done']);
});

test('found by the model: the active drive and the standby written between a killed copy and its resume; the resume ends equal to the source as it is then', async () => {
  if (!requireEnv('the copy model', { tools: ['sfdisk'] })) return;
  const { dir, template } = await modelWorkspace();
  const r = await runSequence(join(dir, 'seq'), template, [
    { t: 'clone', force: false },
    { t: 'host-write', blocks: 40, seed: 11 },
    { t: 'sync', partitions: [], mode: 'compare', crash: { at: 'write', n: 12, tornJournal: false } },
    { t: 'host-write', blocks: 30, seed: 12 },
    { t: 'standby-write', blocks: 10, seed: 13 },
    { t: 'sync', partitions: [], mode: 'compare' },
    { t: 'clone', force: true, crash: { at: 'write', n: 6, tornJournal: false } },
    { t: 'host-write', blocks: 30, seed: 14 },
    { t: 'clone', force: true },
  ]);
  assert.equal(r.violations, []);
  assert.equal(r.steps.map((s) => s.split(': ')[1]), ['done', 'done', 'killed', 'done', 'done', 'done', 'killed', 'done', 'done']);
});

test('a second writer during a sync, onto either drive, from the same or another state directory, is refused as busy and changes nothing; the sync completes', async () => {
  if (!requireEnv('the copy model', { tools: ['sfdisk'] })) return;
  const { dir, template } = await modelWorkspace();
  const r = await runSequence(join(dir, 'seq'), template, [
    { t: 'clone', force: false },
    { t: 'host-write', blocks: 20, seed: 5 },
    { t: 'sync', partitions: [], mode: 'compare', intruder: 'sync' },
    { t: 'host-write', blocks: 20, seed: 6 },
    { t: 'sync', partitions: [2], mode: 'manifest', intruder: 'recover' },
    { t: 'host-write', blocks: 20, seed: 7 },
    { t: 'sync', partitions: [], mode: 'compare', intruder: 'clone-from-another-state-dir' },
    { t: 'host-write', blocks: 20, seed: 8 },
    { t: 'sync', partitions: [], mode: 'compare', intruder: 'clone-onto-the-source' },
  ]);
  assert.equal(r.violations, []);
  assert.equal(r.steps.map((s) => s.split(': ')[1]), ['done', 'done', 'done', 'done', 'done', 'done', 'done', 'done', 'done']);
});

test.run();
