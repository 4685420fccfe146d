/**
 * GET /api/events/log on a large rotated log, asked of a running dpsrd: the
 * tail is read backwards from the end, so its time and memory do not grow
 * with the log. The same tail is timed with `tail -n` (the reference tool
 * reads from the end too); a type filter that matches nothing walks the
 * whole log, timed against `grep -c`. Memory is the growth of the daemon's
 * peak RSS (VmHWM) over both requests.
 * Targets: a 200-entry tail in under 50 ms whatever the log size; a full
 * filtered walk within 8 × grep; peak RSS growth under 32 MiB (garbage of
 * V8's young generation: the same for a 512 MiB and a 1 GiB log).
 *
 * Usage: node --import tsx bench/event-log-tail.bench.ts [--log-mib 512]
 */
import { parseArgs } from 'node:util';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, MiB, printTable, secs } from './lib.ts';

const { values } = parseArgs({ options: { 'log-mib': { type: 'string' } } });
const LOG_MIB = Number(values['log-mib'] ?? 512);
const dir = benchDir('event-log');
const state = join(dir, 'state');
rmSync(dir, { recursive: true, force: true });
mkdirSync(state, { recursive: true, mode: 0o700 });
const log = join(state, 'events.jsonl');

/** Fills the file with `yes` and `head`: fast, and outside the daemon. */
function fill(file: string, bytes: number): void {
  const line = JSON.stringify({ id: 'bench:1', seq: 1, at: new Date(0).toISOString(), type: 'job.note', data: { message: 'x'.repeat(100) } });
  const r = spawnSync('sh', ['-c', `yes '${line}' | head -c ${bytes} > '${file}' && echo >> '${file}'`]);
  if (r.status !== 0) throw new Error(`cannot write ${file}: ${r.stderr}`);
}
fill(`${log}.1`, (LOG_MIB / 2) * MiB);
fill(log, (LOG_MIB / 2) * MiB);
// A rotation limit above the log's size, so the daemon's own first events do not rotate the big file away.
const cfg = join(dir, 'config.json');
writeFileSync(cfg, JSON.stringify({ eventLog: { maxBytes: 1024 ** 3 }, sim: { initialClone: false } }));

const root = new URL('../', import.meta.url).pathname;
const daemon = spawn(process.execPath, ['bin/dpsrd.js', '--state-dir', state, '--listen', '127.0.0.1:0', '--config', cfg, '--log-format', 'json'], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
daemon.stdout!.on('data', (c) => (out += c));
const url = await new Promise<string>((resolve, reject) => {
  const t = setInterval(() => {
    const m = /"url":"(http:[^"]+)"/.exec(out);
    if (m) {
      clearInterval(t);
      resolve(m[1]!);
    }
  }, 50);
  daemon.on('exit', (code) => reject(new Error(`dpsrd exited with ${code}: ${out.slice(-2000)}`)));
});
const token = readFileSync(join(state, 'api-token'), 'utf8').trim();
const hwm = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${daemon.pid}/status`, 'utf8'))![1]) * 1024;

async function get(path: string): Promise<{ seconds: number; entries: number }> {
  const t = performance.now();
  const res = await fetch(new URL(path, url), { headers: { authorization: `Bearer ${token}` } });
  const body = (await res.json()) as { events: unknown[] };
  if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return { seconds: (performance.now() - t) / 1000, entries: body.events.length };
}

const timedRef = (cmd: string, args: string[]) => {
  const t = performance.now();
  spawnSync(cmd, args, { stdio: 'ignore' });
  return (performance.now() - t) / 1000;
};

try {
  await get('/api/events/log?limit=1'); // warm: the route's code is compiled
  const before = hwm();
  const tail = await get('/api/events/log?limit=200');
  const filtered = await get('/api/events/log?limit=200&types=no.such.type');
  const growth = hwm() - before;
  const tailRef = timedRef('tail', ['-n', '200', log]);
  const grepRef = timedRef('grep', ['-c', '"type":"no.such.type"', `${log}.1`, log]);
  if (tail.entries !== 200) throw new Error(`the tail has ${tail.entries} entries, not 200`);
  printTable(`GET /api/events/log on a ${LOG_MIB} MiB log (current + rotated), dpsrd in its own process`, [
    { what: 'tail of 200 entries', ours: secs(tail.seconds), referenceName: 'tail -n 200', reference: secs(tailRef), ratio: tail.seconds / tailRef, target: '< 0.05 s', ok: tail.seconds < 0.05 },
    { what: 'filter matching nothing (whole log)', ours: secs(filtered.seconds), referenceName: 'grep -c', reference: secs(grepRef), ratio: filtered.seconds / grepRef, target: '≤ 8 × grep', ok: filtered.seconds <= 8 * grepRef },
    { what: 'daemon peak RSS growth', ours: `${(growth / MiB).toFixed(1)} MiB`, referenceName: 'log size', reference: `${LOG_MIB} MiB`, ratio: null, target: '< 32 MiB', ok: growth < 32 * MiB },
  ]);
} finally {
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
}
