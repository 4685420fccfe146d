/** Shared helpers of the benchmarks: timing, page cache, tables. */
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { request, type Agent } from 'node:http';

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

export function timedCommand(cmd: string, args: string[], options: { shell?: boolean } = {}): number {
  const t = performance.now();
  const r = options.shell ? spawnSync('sh', ['-c', cmd], { stdio: 'ignore' }) : spawnSync(cmd, args, { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
  return (performance.now() - t) / 1000;
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
