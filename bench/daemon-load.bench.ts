/**
 * Does API load slow a sync? dpsrd runs in its own process on the simulated
 * rig; the same sync (the simulated host rewrites WRITE_MIB at random, then a
 * compare-mode sync) is timed alone and with 50 clients polling
 * GET /api/status every POLL_MS and 10 clients holding the event stream
 * (every event, progress included). Runs alternate and the medians are
 * compared. Target: loaded / alone ≤ 1.10.
 *
 * The clients run in a child process of their own: by default at normal
 * priority, so they compete with the daemon for the same two cores; with
 * --nice they run at nice 19, which models clients on other machines while
 * the daemon still serves every request.
 *
 * Usage: node --import tsx bench/daemon-load.bench.ts [--size-mib 2048] [--write-mib 256] [--runs 3] [--poll-ms 100] [--nice]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'node:http';
import { parseArgs } from 'node:util';
import { apiRequest } from './lib.ts';

const { values } = parseArgs({
  options: { 'size-mib': { type: 'string' }, 'write-mib': { type: 'string' }, runs: { type: 'string' }, 'poll-ms': { type: 'string' }, nice: { type: 'boolean' }, clients: { type: 'string' }, token: { type: 'string' } },
});
const SIZE_MIB = Number(values['size-mib'] ?? 2048);
const WRITE_MIB = Number(values['write-mib'] ?? 256);
const RUNS = Number(values.runs ?? 3);
const POLL_MS = Number(values['poll-ms'] ?? 100);
const POLLERS = 50;
const STREAMS = 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (values.clients) {
  // Client mode: poll and stream until the parent closes stdin, then report counts on stdout.
  const agent = new Agent({ keepAlive: true, maxSockets: POLLERS });
  const base = values.clients;
  const auth = { authorization: `Bearer ${values.token}` };
  let running = true;
  let requests = 0;
  let events = 0;
  process.stdin.on('close', () => (running = false));
  process.stdin.resume();
  const get = () =>
    new Promise<void>((resolve, reject) => {
      const req = request(new URL('/api/status', base), { agent, headers: auth });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve());
      });
      req.on('error', reject);
      req.end();
    });
  const streams = Array.from({ length: STREAMS }, () => {
    const req = request(new URL('/api/events', base), { headers: auth });
    req.on('response', (res) => res.on('data', (c: Buffer) => (events += (c.toString().match(/\nevent: /g) ?? []).length)));
    req.on('error', () => {});
    req.end();
    return req;
  });
  await Promise.all(
    Array.from({ length: POLLERS }, async (_, i) => {
      await sleep((i * POLL_MS) / POLLERS);
      while (running) {
        await get();
        requests++;
        await sleep(POLL_MS);
      }
    }),
  );
  for (const st of streams) st.destroy();
  agent.destroy();
  process.stdout.write(JSON.stringify({ requests, events }));
  process.exit(0);
}

const root = new URL('../', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'dpsrd-bench-'));
const cfg = join(dir, 'config.yaml');
writeFileSync(cfg, `sim:\n  driveSizeMiB: ${SIZE_MIB}\nlog:\n  level: warn\n`);
const daemon = spawn(process.execPath, ['bin/dpsrd.js', '--state-dir', join(dir, 'state'), '--listen', '127.0.0.1:0', '--config', cfg, '--log-level', 'info'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
daemon.stdout!.on('data', (d) => (out += d));
daemon.stderr!.on('data', (d) => (out += d));

const agent = new Agent({ keepAlive: true, maxSockets: 100 });
let url = '';
let token = '';

const api = (method: string, path: string, body?: unknown) => apiRequest(url, token, method, path, body, agent);

async function waitIdle(): Promise<void> {
  while ((await api('GET', '/api/status')).job !== null) await sleep(100);
}

async function oneSync(): Promise<number> {
  await api('POST', '/api/sim/host/write', { mib: WRITE_MIB });
  const { id } = await api('POST', '/api/sync', { mode: 'compare' });
  for (;;) {
    await sleep(100);
    const j = await api('GET', `/api/jobs/${id}`);
    if (j.state === 'done') return j.result.seconds as number;
    if (j.state !== 'running') throw new Error(`sync ${j.state}: ${j.error?.message}`);
  }
}

interface Load {
  stop(): Promise<{ requests: number; events: number }>;
}

function startLoad(): Load {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', new URL(import.meta.url).pathname, '--clients', url, '--token', token, '--poll-ms', String(POLL_MS)], { stdio: ['pipe', 'pipe', 'inherit'] });
  if (values.nice) setPriority(child.pid!, 19);
  let text = '';
  child.stdout!.on('data', (d) => (text += d));
  const exited = new Promise((r) => child.on('exit', r));
  return {
    async stop() {
      child.stdin!.end();
      await exited;
      return JSON.parse(text || '{"requests":0,"events":0}');
    },
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

try {
  for (let i = 0; i < 600 && !/"url":"http/.test(out); i++) await sleep(100);
  url = /"url":"(http[^"]+)"/.exec(out)?.[1] ?? '';
  if (!url) throw new Error(`dpsrd did not start:\n${out}`);
  token = readFileSync(join(dir, 'state', 'api-token'), 'utf8').trim();
  await waitIdle(); // the first start's clone
  await oneSync(); // warm the page cache

  const alone: number[] = [];
  const loaded: number[] = [];
  let reqRate = 0;
  let evCount = 0;
  for (let r = 0; r < RUNS; r++) {
    alone.push(await oneSync());
    const load = startLoad();
    await sleep(1500);
    const t0 = performance.now();
    loaded.push(await oneSync());
    const took = (performance.now() - t0) / 1000;
    const counts = await load.stop();
    reqRate = Math.max(reqRate, counts.requests / (took + 1.5));
    evCount += counts.events;
  }
  const a = median(alone);
  const l = median(loaded);
  const row = (name: string, xs: number[], m: number) => `| ${name.padEnd(44)} | ${xs.map((x) => x.toFixed(2)).join(', ').padEnd(22)} | ${m.toFixed(2).padStart(6)} |`;
  console.log(`\ndpsrd load: ${SIZE_MIB} MiB simulated drives, ${WRITE_MIB} MiB rewritten before each compare-mode sync, ${RUNS} runs each, 2 cores shared by daemon and clients\n`);
  console.log(`| ${'condition'.padEnd(44)} | ${'sync seconds (runs)'.padEnd(22)} | median |`);
  console.log(`|${'-'.repeat(46)}|${'-'.repeat(24)}|--------|`);
  console.log(row('sync alone', alone, a));
  console.log(row(`with ${POLLERS} pollers (every ${POLL_MS} ms) + ${STREAMS} SSE${values.nice ? ', clients nice 19' : ''}`, loaded, l));
  console.log(`\nratio loaded / alone: ${(l / a).toFixed(3)} (target ≤ 1.10)`);
  console.log(`status requests served while loaded: about ${reqRate.toFixed(0)} per second; events delivered to the streams: ${evCount}`);
  process.exitCode = l / a <= 1.1 ? 0 : 1;
} finally {
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.on('exit', r));
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
}
