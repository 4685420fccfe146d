/** Atomic syncs under SIGKILL: a modest number of trials here; bench/crash-trials.ts runs hundreds. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { crashTrial } from '../support/crash-trials.ts';
import { tempDir } from '../support/images.ts';
import { xorshift32 } from '../support/xorshift.ts';

const TRIALS = Number(process.env.DPSR_CRASH_TRIALS ?? 24);
// The trials' choices (where to kill, recover or resume) repeat from this seed; a kill by time does not.
const SEED = Number(process.env.DPSR_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 32));
const next = xorshift32(SEED);
const rng = () => next() / 2 ** 32;

test(`${TRIALS} syncs killed at random moments end as the previous backup or the source, never a mix`, async () => {
  const dir = tempDir('dpsr-crash-');
  const outcomes = [];
  for (let i = 0; i < TRIALS; i++) {
    outcomes.push(await crashTrial(dir, i, rng).catch((e: Error) => {
      throw new Error(`DPSR_CRASH_SEED=${SEED}: ${e.message}`, { cause: e });
    }));
  }
  const mixed = outcomes.filter((o) => o.result === 'MIXED');
  const counts = outcomes.reduce<Record<string, number>>((m, o) => ((m[`${o.afterward} → ${o.result}`] = (m[`${o.afterward} → ${o.result}`] ?? 0) + 1), m), {});
  const resumed = outcomes.filter((o) => o.resumedBytes > 0).length;
  console.log(`crash trials: ${TRIALS} (DPSR_CRASH_SEED=${SEED}), killed ${outcomes.filter((o) => o.killed).length}, resumed from the sync map ${resumed}; ${JSON.stringify(counts)}`);
  assert.equal(mixed, [], `mixed outcomes (DPSR_CRASH_SEED=${SEED}): ${JSON.stringify(mixed)}`);
  assert.ok(outcomes.some((o) => o.killed), 'some trials were really killed');
});

test.run();
