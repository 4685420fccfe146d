/**
 * GET /api/events/log on a large rotated log: the tail is read backwards from
 * the end, so its time and memory do not grow with the log. The same tail is
 * timed with `tail -n` (the reference tool reads from the end too); a filter
 * that matches nothing walks the whole log, timed against `grep -c`. Memory
 * is the growth of the process's peak RSS over the read.
 * Targets: a 200-entry tail in under 50 ms whatever the log size; a full
 * filtered walk within 8 × grep; peak RSS growth under 64 MiB (garbage of
 * V8's young generation: the same for a 512 MiB and a 1 GiB log).
 *
 * Usage: node --import tsx bench/event-log-tail.bench.ts [--log-mib 512]
 */
import { parseArgs } from 'node:util';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { EventBus } from '../firmware/controller/events.ts';
import { benchDir, MiB, printTable, secs, timed } from './lib.ts';

const { values } = parseArgs({ options: { 'log-mib': { type: 'string' } } });
const LOG_MIB = Number(values['log-mib'] ?? 512);
const dir = benchDir('event-log');
const log = join(dir, 'events.jsonl');

/** Fills the file with `yes` and `head`, outside this process, so its memory stays as a daemon's would. */
function fill(file: string, bytes: number): number {
  const line = JSON.stringify({ id: 'bench:1', seq: 1, at: new Date(0).toISOString(), type: 'job.note', data: { message: 'x'.repeat(100) } });
  const r = spawnSync('sh', ['-c', `yes '${line}' | head -c ${bytes} > '${file}' && echo >> '${file}'`]);
  if (r.status !== 0) throw new Error(`cannot write ${file}: ${r.stderr}`);
  return bytes;
}

const rotatedBytes = fill(`${log}.1`, (LOG_MIB / 2) * MiB);
const currentBytes = fill(log, (LOG_MIB / 2) * MiB);
const bus = new EventBus(log, { replay: 0, logMaxBytes: 1024 ** 3 });
const rss = () => process.memoryUsage().rss;

const before = rss();
let peak = before;
const sampler = setInterval(() => (peak = Math.max(peak, rss())), 5);
const tail = await timed(() => bus.readLog(200));
const filtered = await timed(() => bus.readLog(200, ['no.such.type']));
clearInterval(sampler);
peak = Math.max(peak, rss());

const tailRef = (() => {
  const t = performance.now();
  spawnSync('tail', ['-n', '200', log], { stdio: 'ignore' });
  return (performance.now() - t) / 1000;
})();
const grepRef = (() => {
  const t = performance.now();
  spawnSync('grep', ['-c', '"type":"no.such.type"', `${log}.1`, log], { stdio: 'ignore' });
  return (performance.now() - t) / 1000;
})();

if (tail.value.length !== 200) throw new Error(`the tail has ${tail.value.length} entries, not 200`);
printTable(`event log tail, ${((rotatedBytes + currentBytes) / MiB).toFixed(0)} MiB log (current + rotated)`, [
  { what: 'tail of 200 entries', ours: secs(tail.seconds), referenceName: 'tail -n 200', reference: secs(tailRef), ratio: tail.seconds / tailRef, target: '< 0.05 s', ok: tail.seconds < 0.05 },
  { what: 'filter matching nothing (whole log)', ours: secs(filtered.seconds), referenceName: 'grep -c', reference: secs(grepRef), ratio: filtered.seconds / grepRef, target: '≤ 8 × grep', ok: filtered.seconds <= 8 * grepRef },
  { what: 'peak RSS growth over both reads', ours: `${((peak - before) / MiB).toFixed(1)} MiB`, referenceName: 'log size', reference: `${LOG_MIB} MiB`, ratio: null, target: '< 64 MiB', ok: peak - before < 64 * MiB },
]);
rmSync(dir, { recursive: true, force: true });
