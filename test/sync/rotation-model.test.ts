/**
 * The model-based test of standby rotation (test/support/rotation-model.ts):
 * random sequences of syncs to whichever of two standbys is in the bay,
 * swaps, interruptions, recoveries and failovers across three drives, each
 * checked step by step against what every drive must hold.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { join } from 'node:path';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { runRotation, rotationSequenceArb, type RotationOp } from '../support/rotation-model.ts';
import { tempDir } from '../support/images.ts';

const RUNS = Number(process.env.DPSR_MODEL_RUNS ?? 60);
// tmpfs when there is one: many small durable writes.
const dir = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/dpsr-rotation-') : tempDir('dpsr-rotation-');
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

test(`${RUNS} random sequences of syncs to whichever standby is present, swaps, interruptions and failovers keep every drive what the model says`, async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(rotationSequenceArb, async (ops) => {
      const r = await runRotation(join(dir, `seq-${n++ % 4}`), ops);
      if (r.violations.length) throw new Error(`${r.violations.join('\n')}\nsteps: ${r.steps.join(' | ')}`);
    }),
    { numRuns: RUNS },
  );
  assert.ok(n >= RUNS);
});

test('the model checks something: an interrupted sync swapped off-site and resumed after host writes, a failover to the newest standby, the older one synced from it in manifest mode', async () => {
  const ops: RotationOp[] = [
    { t: 'host-write', blocks: 10, seed: 3 },
    { t: 'sync', mode: 'compare', force: false, crashAfter: 3 },
    { t: 'swap' },
    { t: 'host-write', blocks: 10, seed: 4 },
    { t: 'swap' },
    { t: 'sync', mode: 'manifest', force: false },
    { t: 'sync', mode: 'compare', force: false },
    { t: 'swap' },
    { t: 'sync', mode: 'manifest', force: false },
    { t: 'failover' },
    { t: 'sync', mode: 'compare', force: false },
    { t: 'swap' },
    { t: 'sync', mode: 'manifest', force: false },
  ];
  const r = await runRotation(join(dir, 'fixed'), ops);
  assert.equal(r.violations, []);
  assert.equal(
    r.steps.slice(3).map((s) => s.replace(/^[^:]*: /, '')),
    ['done', 'crashed', 'C in the bay', 'done', 'B in the bay', 'refused', 'done', 'C in the bay', 'done', 'done', 'done', 'B in the bay', 'done'],
    r.steps.join(' | '),
  );
});

test.run();
