/**
 * The long crash run of issue 3: DPSR_CRASH_TRIALS (default 200) syncs killed
 * at random moments, each followed by a rollback or the same sync again.
 * Prints a table of outcomes; exits 1 on any mixed outcome.
 */
import { crashTrial, type TrialOutcome } from '../test/support/crash-trials.ts';
import { benchDir } from './lib.ts';
import { rmSync } from 'node:fs';

const trials = Number(process.env.DPSR_CRASH_TRIALS ?? 200);
const dir = benchDir('crash');
const outcomes: TrialOutcome[] = [];
const started = performance.now();
for (let i = 0; i < trials; i++) {
  outcomes.push(await crashTrial(dir, i));
  rmSync(`${dir}/trial-${i}`, { recursive: true, force: true });
  if ((i + 1) % 25 === 0) console.log(`${i + 1}/${trials} trials`);
}
const byKind = new Map<string, number>();
for (const o of outcomes) {
  const kind = o.how.replace(/\d+/g, 'N');
  const key = `${kind} | ${o.afterward} | ${o.result}`;
  byKind.set(key, (byKind.get(key) ?? 0) + 1);
}
console.log(`\n| kill | afterwards | standby ends as | trials |\n|---|---|---|---|`);
for (const [k, n] of [...byKind].sort()) console.log(`| ${k} | ${n} |`);
const mixed = outcomes.filter((o) => o.result === 'MIXED').length;
console.log(`\n${trials} trials in ${((performance.now() - started) / 1000).toFixed(0)} s: killed ${outcomes.filter((o) => o.killed).length}, resumed from the sync map ${outcomes.filter((o) => o.resumedBytes > 0).length}, mixed outcomes ${mixed}`);
rmSync(dir, { recursive: true, force: true });
process.exit(mixed ? 1 : 0);
