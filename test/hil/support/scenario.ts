/**
 * Scenario plumbing: picks the rig, checks the machine has what the rig
 * needs, runs one scenario with a started rig, prints its result and
 * timings, and appends them to the run's results file, from which
 * support/summary.ts prints the table.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { requireEnv, inCI } from '../../support/require.ts';
import { createRig, RealRig, seconds, type Rig, type RigOptions } from '../rig.ts';

const REPO = new URL('../../../', import.meta.url).pathname;

export interface ScenarioResult {
  scenario: string;
  rig: string;
  result: 'passed' | 'failed';
  /** From the failure to the first heartbeat from the standby, when the scenario has one. */
  downtimeMs: number | null;
  downtimeWhat?: string;
  totalMs: number;
  notes: string[];
  error?: string;
  /** The cases of a load scenario, a table row each: result, the longest write the guest timed, records checked on the standby. */
  cases?: ScenarioCase[];
}

export interface ScenarioCase {
  name: string;
  result: 'passed' | 'failed';
  /** The longest write (with its fsync) the guest saw during the sync, ms. */
  stallMs: number | null;
  /** Records checked on the standby. */
  recordsChecked: number | null;
}

/** One file per test-runner run: the runner's pid, which every scenario process shares as its parent. */
export function resultsFile(): string {
  const dir = join(process.env.DPSR_HIL_CACHE ?? join(REPO, '.hil-cache'), 'hil-results');
  mkdirSync(dir, { recursive: true });
  return process.env.DPSR_HIL_RESULTS ?? join(dir, `run-${process.ppid}.jsonl`);
}

export function readResults(): ScenarioResult[] {
  const f = resultsFile();
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as ScenarioResult);
}

/** Whether the selected rig can run here; prints SKIP (or throws in CI) when not. */
export function rigAvailable(what: string): boolean {
  if ((process.env.DPSR_HIL_RIG ?? 'sim') === 'real') {
    const missing = RealRig.missing();
    if (missing.length === 0) return requireEnv(`${what} on the real rig`, { root: true, tools: ['apt-get', 'dpkg', 'sfdisk', 'mkfs.ext4', 'losetup', 'debugfs', 'mount'] });
    const message = `${what} on the real rig needs ${missing.join(', ')}`;
    if (inCI) throw new Error(message);
    console.log(`SKIP: ${message}`);
    return false;
  }
  return requireEnv(`${what} on the simulated rig`, { root: true, tools: ['qemu-system-x86_64', 'apt-get', 'dpkg', 'sfdisk', 'mkfs.ext4', 'losetup', 'debugfs', 'mount'] });
}

export interface ScenarioContext {
  rig: Rig;
  /** Adds a line to the scenario's printed result. */
  note(text: string): void;
  /** The scenario's downtime: failure → first heartbeat from the standby. */
  downtime(ms: number, what?: string): void;
  /** Records a case of the scenario for the table (a failed one too, before its error is thrown). */
  recordCase(c: ScenarioCase): void;
}

/** A uvu test body: start the rig, run, print and record the result, close the rig. */
export function scenario(name: string, opts: Omit<RigOptions, 'name'>, body: (ctx: ScenarioContext) => Promise<void>): () => Promise<void> {
  return async () => {
    const started = performance.now();
    const rig = createRig({ name, ...opts });
    const res: ScenarioResult = { scenario: name, rig: rig.kind, result: 'failed', downtimeMs: null, totalMs: 0, notes: [] };
    const ctx: ScenarioContext = {
      rig,
      note: (t) => {
        res.notes.push(t);
        console.log(`  ${name}: ${t}`);
      },
      downtime: (ms, what) => {
        res.downtimeMs = ms;
        res.downtimeWhat = what;
        console.log(`  ${name}: downtime ${seconds(ms)}${what ? ` (${what})` : ''}`);
      },
      recordCase: (c) => {
        (res.cases ??= []).push(c);
        console.log(`  ${name}: case ${c.name} ${c.result}; longest guest write during the sync ${c.stallMs === null ? '—' : seconds(c.stallMs)}; records checked ${c.recordsChecked ?? '—'}`);
      },
    };
    try {
      const t = performance.now();
      await rig.start();
      ctx.note(`rig up (${rig.kind}, dpsrd, image ${rig.image.key}, first clone) in ${seconds(performance.now() - t)}`);
      await body(ctx);
      res.result = 'passed';
    } catch (e) {
      res.error = (e as Error).message;
      if (rig.dpsrd) console.log(`  ${name}: dpsrd log tail:\n${rig.dpsrd.tail()}`);
      throw e;
    } finally {
      await rig.close().catch(() => {});
      res.totalMs = performance.now() - started;
      console.log(`SCENARIO ${name}: ${res.result} in ${seconds(res.totalMs)}${res.downtimeMs !== null ? `, downtime ${seconds(res.downtimeMs)}` : ''}`);
      appendFileSync(resultsFile(), `${JSON.stringify(res)}\n`);
    }
  };
}
