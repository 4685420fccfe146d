/**
 * The scenario table of this run: scenario, rig, result, downtime, the
 * longest write stall the guest saw during a live sync and the records
 * checked on the standby (load scenarios, a row per case), time.
 * Every scenario file must have reported when the run included scenarios.
 * `npm run test:hil` runs this after every test file of the tier
 * (run-tests.mjs --finally), whatever their names and results.
 */
import { readdirSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readResults, resultsFile } from './scenario.ts';
import { seconds } from '../rig.ts';

test('scenario table', () => {
  const rigKind = process.env.DPSR_HIL_RIG ?? 'sim';
  if (rigKind !== 'real') console.log('SKIP: real-rig scenarios: set DPSR_HIL_RIG=real with DPSR_HIL_REAL_CONFIG and DPSR_HIL_SERIAL on a rig (test/hil/README.md)');
  const results = readResults();
  if (results.length === 0) {
    console.log(`no scenario results in this run (${resultsFile()})`);
    return;
  }
  const ms = (v: number | null | undefined): string => (v === null || v === undefined ? '—' : seconds(v));
  const rows = results.flatMap((r) => {
    const cases = r.cases ?? [];
    const stall = cases.length ? Math.max(...cases.map((c) => c.stallMs ?? 0)) : null;
    const checked = cases.length ? String(cases.reduce((n, c) => n + (c.recordsChecked ?? 0), 0)) : '—';
    return [
      [r.scenario, r.rig, r.result, ms(r.downtimeMs), r.downtimeWhat ?? '', ms(stall), checked, seconds(r.totalMs)],
      ...cases.map((c) => [`  ${r.scenario}: ${c.name}`, '', c.result, '', '', ms(c.stallMs), c.recordsChecked === null ? '—' : String(c.recordsChecked), '']),
    ];
  });
  const head = ['scenario', 'rig', 'result', 'downtime', 'downtime measured', 'longest guest stall', 'records checked', 'time'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(`\nHIL scenario table\n${line(head)}\n${line(widths.map((w) => '-'.repeat(w)))}\n${rows.map(line).join('\n')}`);
  const total = results.reduce((s, r) => s + r.totalMs, 0);
  console.log(`scenarios took ${seconds(total)} in all`);

  const files = readdirSync(new URL('../scenarios/', import.meta.url)).filter((f) => f.endsWith('.test.ts'));
  const reported = new Set(results.map((r) => r.scenario.replace(/-(resume|rollback)$/, '')));
  for (const f of files) assert.ok(reported.has(f.replace(/\.test\.ts$/, '')), `scenario file ${f} reported no result in this run`);
});

test.run();
