/** Shared helpers of the benchmarks: timing, page cache, tables. */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { writeFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { request, type Agent } from 'node:http';
// @ts-expect-error: plain JavaScript without types (the bins' helper)
import { whichBuild } from '../bin/entry.js';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** Where benchmark images go: disk-backed (O_DIRECT and honest I/O), never tmpfs. */
export function benchDir(name: string): string {
  const dir = join(process.env.DPSR_BENCH_DIR ?? '/var/tmp/dpsr-bench', name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

let canDrop: boolean | undefined;
/** Drops the page cache when root allows, so every run reads from the disk. Returns whether it could. */
export function dropCaches(): boolean {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    canDrop = true;
  } catch {
    canDrop = false;
  }
  return canDrop;
}

export function cachesDropped(): boolean {
  return canDrop ?? dropCaches();
}

export async function timed<T>(fn: () => Promise<T> | T): Promise<{ seconds: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { seconds: (performance.now() - t) / 1000, value };
}

/**
 * Seconds one run of a command takes; with `shell` the command is a bash line
 * (pipefail: a failure anywhere in a pipe is a failure), `env` is added to the environment.
 * @throws Error when it exits non-zero.
 */
export function timedCommand(cmd: string, args: string[], options: { shell?: boolean; env?: Record<string, string> } = {}): number {
  const t = performance.now();
  const env = { ...process.env, ...options.env };
  const r = options.shell ? spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { stdio: 'ignore', env }) : spawnSync(cmd, args, { stdio: 'ignore', env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
  return (performance.now() - t) / 1000;
}

/**
 * Keeps `image`'s write stamp (its mtime to the nanosecond, in a reference
 * file beside it, `touch -r`) and returns the function that puts it back. A
 * bench that writes a standby's old content back between runs puts back the
 * stamp its last sync sealed too: otherwise the next changed or manifest
 * sync sees a standby written since by something else and makes a full one.
 */
export function keepWriteStamp(image: string, name = 'sealed'): () => void {
  const ref = `${image}.${name}-stamp`;
  writeFileSync(ref, '');
  execFileSync('touch', ['-r', image, ref]);
  return () => execFileSync('touch', ['-r', ref, image]);
}

export function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

export interface Row {
  readonly what: string;
  readonly ours: string;
  readonly reference: string;
  readonly referenceName: string;
  readonly ratio: number | null;
  readonly target: string;
  readonly ok: boolean | null;
}

export function printTable(title: string, rows: Row[]): void {
  const header = ['measure', 'dpsr', 'reference', 'ref value', 'ratio', 'target', 'met'];
  const body = rows.map((r) => [r.what, r.ours, r.referenceName, r.reference, r.ratio === null ? '—' : r.ratio.toFixed(2), r.target, r.ok === null ? '—' : r.ok ? 'yes' : 'NO']);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(`\n### ${title}\n`);
  console.log(line(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const b of body) console.log(line(b));
}

export const rate = (bytes: number, seconds: number) => `${(bytes / MiB / seconds).toFixed(0)} MiB/s`;
export const secs = (s: number) => `${s.toFixed(2)} s`;

/** Runs of each measurement: DPSR_BENCH_RUNS (default 3). */
export const benchRuns = Math.max(1, Number(process.env.DPSR_BENCH_RUNS ?? 3));

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Runs `fn` `runs` times, each after `prepare` and a dropped page cache (the
 * same starting point every time), `after` outside the clock; the median in
 * seconds.
 */
export async function measure(
  prepare: () => void,
  fn: () => Promise<unknown> | unknown,
  after?: () => Promise<unknown> | unknown,
  runs = benchRuns,
): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    prepare();
    dropCaches();
    const t = performance.now();
    await fn();
    times.push((performance.now() - t) / 1000);
    await after?.();
  }
  return median(times);
}

/**
 * One call of a dpsrd's HTTP API with its bearer token: resolves with the
 * parsed JSON body (null when empty), whatever the status.
 */
export function apiRequest(base: string, token: string, method: string, path: string, body?: unknown, agent: Agent | false = false): Promise<any> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const req = request(new URL(path, base), { method, agent, headers: { authorization: `Bearer ${token}`, ...(text ? { 'content-type': 'application/json' } : {}) } });
    req.on('response', (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve(data ? JSON.parse(data) : null));
    });
    req.on('error', reject);
    req.end(text);
  });
}

/** A dpsrd started by a benchmark on the simulated rig. */
export interface BenchDaemon {
  readonly url: string;
  readonly token: string;
  readonly pid: number;
  /** Which code it runs: the compiled build (as installed on the board) or the TypeScript sources through tsx. */
  readonly runs: 'dist' | 'source';
  /** What it printed so far (for an error report). */
  log(): string;
  /** Its peak RSS (VmHWM) since the last resetPeak, bytes. */
  peakRss(): number;
  resetPeak(): void;
  stop(): Promise<void>;
}

/**
 * The memory settings dpsrd runs with on the board (deploy/dpsrd.service's
 * MALLOC_* and NODE_OPTIONS lines), so that its resident memory is measured
 * as installed; NODE_OPTIONS is added to this process's own.
 */
export function serviceMemoryEnv(): Record<string, string> {
  const unit = readFileSync(new URL('../deploy/dpsrd.service', import.meta.url), 'utf8');
  const env: Record<string, string> = {};
  for (const [, name, value] of unit.matchAll(/^Environment=(MALLOC_\w+|NODE_OPTIONS)=(.*)$/gm)) {
    env[name!] = name === 'NODE_OPTIONS' ? [process.env.NODE_OPTIONS, value].filter(Boolean).join(' ') : value!;
  }
  return env;
}

/**
 * Starts dpsrd (its own process, the sources or the current build, as
 * `bin/dpsrd.js` picks) on the simulated rig with state in `dir`/state (made
 * anew) and `simConfig` as the config's `sim` section (YAML lines, indented
 * by two spaces); resolves once it answers. With `build`, the checkout is
 * built first where its build is missing or older than its sources, so
 * dpsrd runs the compiled code as on the board (the sources through tsx
 * hold tens of MiB more: the compiler and its caches).
 * @throws Error it did not start within a minute, or the build failed.
 */
export async function startDpsrd(dir: string, simConfig: string, options: { build?: boolean } = {}): Promise<BenchDaemon> {
  const state = join(dir, 'state');
  rmSync(state, { recursive: true, force: true });
  const cfg = join(dir, 'config.yaml');
  writeFileSync(cfg, `sim:\n${simConfig}\nlog:\n  level: warn\n`);
  const root = new URL('../', import.meta.url).pathname;
  if (options.build && whichBuild(root, 'firmware/controller/dpsrd') !== 'dist') execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: root, stdio: 'ignore' });
  const runs = whichBuild(root, 'firmware/controller/dpsrd') as 'dist' | 'source';
  const daemon = spawn(process.execPath, ['bin/dpsrd.js', '--state-dir', state, '--listen', '127.0.0.1:0', '--config', cfg], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...serviceMemoryEnv() } });
  let log = '';
  daemon.stdout!.on('data', (d) => (log += d));
  daemon.stderr!.on('data', (d) => (log += d));
  const exited = new Promise((r) => daemon.on('exit', r));
  const stop = async () => {
    if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGTERM');
    await exited;
  };
  for (let i = 0; i < 600 && !/ up at http/.test(log) && daemon.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
  const url = / up at (http\S+)/.exec(log)?.[1] ?? '';
  if (!url) {
    await stop();
    throw new Error(`dpsrd did not start:\n${log}`);
  }
  const status = () => readFileSync(`/proc/${daemon.pid}/status`, 'utf8');
  return {
    url,
    token: readFileSync(join(state, 'api-token'), 'utf8').trim(),
    pid: daemon.pid!,
    runs,
    log: () => log,
    peakRss: () => Number(/VmHWM:\s+(\d+) kB/.exec(status())![1]) * 1024,
    // Writing 5 to clear_refs resets VmHWM to the current RSS.
    resetPeak: () => writeFileSync(`/proc/${daemon.pid}/clear_refs`, '5\n'),
    stop,
  };
}

/**
 * A shell line that downloads `path` from a dpsrd with curl, which reads the
 * body and writes it to /dev/null as cat does with a reference's stream in
 * `… | cat > /dev/null`: one C program reading the stream on either side.
 * The token comes from the environment (DPSR_BENCH_TOKEN, see downloadEnv).
 * curl's --fail makes an error status a failure, and a body cut short (an
 * archive whose reader failed) fails too.
 */
export function downloadCommand(d: BenchDaemon, path: string): string {
  return `curl -sS --fail -o /dev/null -H "authorization: Bearer $DPSR_BENCH_TOKEN" '${new URL(path, d.url).href}'`;
}

export const downloadEnv = (d: BenchDaemon) => ({ DPSR_BENCH_TOKEN: d.token });
