/**
 * The model-based test of the copy rules at length: DPSR_MODEL_RUNS (default
 * 3000) random sequences of copies, kills, rollbacks, failovers and size
 * changes (test/support/copy-model.ts), each checked step by step. Prints how
 * often each kind of step ended which way, and every violation found; exits 1
 * on any.
 */
import fc from 'fast-check';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { makeTemplate, runSequence, sequenceArb } from '../test/support/copy-model.ts';
import { benchDir } from './lib.ts';

const runs = Number(process.env.DPSR_MODEL_RUNS ?? 3000);
const seed = Number(process.env.DPSR_MODEL_SEED ?? Date.now() % 2 ** 31);
const dir = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/dpsr-model-') : benchDir('copy-model');
const template = await makeTemplate(dir);
const outcomes = new Map<string, number>();
const violations: string[] = [];
let steps = 0;
const started = performance.now();
const sequences = fc.sample(sequenceArb, { numRuns: runs, seed });
for (const [i, ops] of sequences.entries()) {
  const r = await runSequence(join(dir, 'seq'), template, ops);
  steps += r.steps.length;
  for (const s of r.steps) {
    const [what, how] = s.split(': ');
    const kind = what!.replace(/ killed@\S+/, ' (kill planned)').replace(/host writes \d+ blocks/, 'host writes').replace(/grow \w+/, 'grow');
    const key = `${kind} | ${how ?? '?'}`;
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
  }
  if (r.violations.length) violations.push(`sequence ${i}: ${r.violations.join('; ')}\n  steps: ${r.steps.join(' | ')}`);
  if ((i + 1) % 250 === 0) console.log(`${i + 1}/${runs} sequences`);
}
rmSync(dir, { recursive: true, force: true });
console.log(`\n| step | ended | count |\n|---|---|---|`);
for (const [k, n] of [...outcomes].sort()) console.log(`| ${k.replace(' | ', ' | ')} | ${n} |`);
console.log(`\n${runs} sequences (seed ${seed}), ${steps} steps in ${((performance.now() - started) / 1000).toFixed(0)} s: ${violations.length} with violations`);
for (const v of violations.slice(0, 20)) console.log(v);
process.exit(violations.length ? 1 : 0);
