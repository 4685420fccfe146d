/**
 * Start-up of the `dpsr` CLI: the compiled build (what deploy/install.sh and
 * `npm run build` give, plain node) against the TypeScript sources through
 * tsx (a checkout without a build), and against node starting with nothing
 * to do. Measured with hyperfine when it is installed (mean of 20 runs after
 * 3 warm-ups), else with a loop of the same shape. Builds dist/ first.
 * Usage: npx tsx bench/cli-startup.bench.ts
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCommand, printTable, type Row } from './lib.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'bin/dpsr.js');
const RUNS = 20;
const WARMUP = 3;
const TARGET = 0.15;

execFileSync(process.execPath, [join(root, 'scripts/build.mjs')], { stdio: 'inherit' });
const stateDir = mkdtempSync(join(tmpdir(), 'dpsr-bench-state-'));

/** Mean seconds of `argv` with `env` added. */
function measure(argv: string[], env: Record<string, string> = {}): number {
  if (hasCommand('hyperfine')) {
    const out = join(stateDir, 'hyperfine.json');
    const envPrefix = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const command = [...(envPrefix.length ? ['env', ...envPrefix] : []), ...argv].map((a) => `'${a}'`).join(' ');
    execFileSync('hyperfine', ['-N', '--warmup', String(WARMUP), '--runs', String(RUNS), '--export-json', out, '--style', 'none', command], { stdio: 'ignore' });
    return (JSON.parse(readFileSync(out, 'utf8')) as { results: { mean: number }[] }).results[0]!.mean;
  }
  const times: number[] = [];
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t = performance.now();
    const r = spawnSync(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}`);
    if (i >= WARMUP) times.push((performance.now() - t) / 1000);
  }
  return times.reduce((a, b) => a + b, 0) / times.length;
}

const node = process.execPath;
const version = ['--version'];
const status = ['status', '--json', '--state-dir', stateDir];
const compiledVersion = measure([node, bin, ...version]);
const sourceVersion = measure([node, bin, ...version], { DPSR_FROM_SOURCE: '1' });
const bare = measure([node, '-e', '0']);
const compiledStatus = measure([node, bin, ...status]);
const sourceStatus = measure([node, bin, ...status], { DPSR_FROM_SOURCE: '1' });
rmSync(stateDir, { recursive: true, force: true });

const s = (x: number) => `${x.toFixed(3)} s`;
const rows: Row[] = [
  { what: 'dpsr --version, compiled', ours: s(compiledVersion), referenceName: 'sources via tsx', reference: s(sourceVersion), ratio: compiledVersion / sourceVersion, target: `< ${TARGET} s`, ok: compiledVersion < TARGET },
  { what: 'dpsr --version, compiled', ours: s(compiledVersion), referenceName: 'node -e 0', reference: s(bare), ratio: compiledVersion / bare, target: '—', ok: null },
  { what: 'dpsr status --json (loads the engine), compiled', ours: s(compiledStatus), referenceName: 'sources via tsx', reference: s(sourceStatus), ratio: compiledStatus / sourceStatus, target: `< ${TARGET * 2} s`, ok: compiledStatus < TARGET * 2 },
];
printTable(`CLI start-up (${hasCommand('hyperfine') ? 'hyperfine' : 'spawn loop'}, mean of ${RUNS} runs)`, rows);
