/**
 * The changed-block sync of inline.bench.ts alone, repeated, to see where its
 * time goes: the same 2 GiB drives, daemon and 1 % scattered change, then
 * DPSR_PROFILE_RUNS runs (default 5) each from the same standby and state
 * with the page cache dropped. Per run: wall time (freezing and reading the
 * bitmap, then the sync), this process's CPU (user, system), minor page
 * faults and garbage collections; medians at the end. With
 * DPSR_PROFILE_CPU=FILE the last run's CPU profile is written there (open it
 * in Chrome's DevTools). To count system calls, attach `strace -c -f -p PID`
 * (the PID is printed) while the runs go.
 *
 * Not a benchmark (no reference tool, no ratio): `npx tsx bench/inline-sync-profile.ts`.
 * Size with DPSR_BENCH_GIB, like the bench.
 */
import { copyFileSync, cpSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { Session } from 'node:inspector/promises';
import { clone, sync } from '../src/sync/index.ts';
import { startInlineRig, writeScatteredChange } from './inline-rig.ts';
import { GiB, benchDir, keepWriteStamp, dropCaches, median } from './lib.ts';

const size = Number(process.env.DPSR_BENCH_GIB ?? 2) * GiB;
const runs = Math.max(1, Number(process.env.DPSR_PROFILE_RUNS ?? 5));
const cpuProfile = process.env.DPSR_PROFILE_CPU;
const dir = benchDir('inline-sync-profile');

const gcs: number[] = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push(e.duration);
}).observe({ entryTypes: ['gc'] });

console.log(`pid ${process.pid}: setting up ${size / GiB} GiB drives in ${dir}`);
const { A, B, B0, daemon, tracker } = await startInlineRig(dir, size);
try {
  const state0 = join(dir, 'state0');
  const state = join(dir, 'state');
  for (const s of [state0, state]) rmSync(s, { recursive: true, force: true });
  await clone({ stateDir: state0, source: daemon.hostUri, target: B });
  const putSealedStamp = keepWriteStamp(B);
  // The host changes 1 % of the drive in 64 KiB writes at distinct, seeded granules, through the export.
  await writeScatteredChange(daemon.hostUri, size);

  const rows: { wall: number; epoch: number; user: number; system: number; faults: number; gc: number }[] = [];
  for (let i = 0; i < runs; i++) {
    copyFileSync(B0, B);
    putSealedStamp();
    rmSync(state, { recursive: true, force: true });
    cpSync(state0, state, { recursive: true });
    dropCaches();
    const session = cpuProfile && i === runs - 1 ? new Session() : undefined;
    if (session) {
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    }
    gcs.length = 0;
    const faults0 = process.resourceUsage().minorPageFault;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const epoch = await tracker.beginEpoch();
    const t1 = performance.now();
    await sync({ stateDir: state, source: daemon.hostUri, target: B, mode: 'changed', changed: { ranges: epoch.ranges! } });
    const t2 = performance.now();
    const cpu = process.cpuUsage(cpu0);
    const faults = process.resourceUsage().minorPageFault - faults0;
    if (session) {
      const { profile } = await session.post('Profiler.stop');
      writeFileSync(cpuProfile!, JSON.stringify(profile));
      session.disconnect();
    }
    // GC entries arrive after the fact.
    await new Promise((r) => setTimeout(r, 20));
    const row = { wall: (t2 - t0) / 1000, epoch: (t1 - t0) / 1000, user: cpu.user / 1e6, system: cpu.system / 1e6, faults, gc: gcs.reduce((a, b) => a + b, 0) / 1000 };
    rows.push(row);
    console.log(`run ${i + 1}: ${row.wall.toFixed(3)} s (bitmap ${row.epoch.toFixed(3)} s), CPU ${row.user.toFixed(3)} s user + ${row.system.toFixed(3)} s system, ${faults} minor faults, ${gcs.length} GCs ${row.gc.toFixed(3)} s, load ${loadavg()[0]!.toFixed(1)}`);
    execFileSync('cmp', [A, B]);
    await tracker.abort(epoch);
  }
  const m = (k: keyof (typeof rows)[number], digits = 3) => median(rows.map((r) => r[k])).toFixed(digits);
  console.log(`median: ${m('wall')} s (bitmap ${m('epoch')} s), CPU ${m('user')} s user + ${m('system')} s system, ${m('faults', 0)} minor faults, GC ${m('gc')} s${cpuProfile ? `; CPU profile of the last run in ${cpuProfile}` : ''}`);
} finally {
  await daemon.stop();
}
