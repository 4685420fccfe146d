/**
 * Engine benchmarks (issues 2 and 3): clone against dd, sync against reading
 * both drives and against rsync, the undo journal's cost, manifest mode
 * against compare mode, and peak memory against drive size. Every figure is
 * the median of DPSR_BENCH_RUNS runs (default 3) with the page cache dropped
 * before each, and every run starts from the same files and state.
 * Size with DPSR_BENCH_GIB (default 2).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clone, sync, runEngine } from '../src/sync/index.ts';
import { openDrive } from '../src/sata-bridge/index.ts';
import { randomImage, scatterWrites, sparseImage } from '../test/support/images.ts';
import { GiB, benchDir, dropCaches, hasCommand, printTable, rate, secs, timedCommand, type Row, benchRuns, measure, median } from './lib.ts';

const size = Number(process.env.DPSR_BENCH_GIB ?? 2) * GiB;
const runs = benchRuns;
const dir = benchDir('engine');
const A = join(dir, 'a.img');
const B = join(dir, 'b.img');
const B0 = join(dir, 'b0.img');
const stateDir = join(dir, 'state');
const state0 = join(dir, 'state0');



/** The standby back to the last backup and the pair state back to before the sync. */
function restoreStandby(): void {
  copyFileSync(B0, B);
  rmSync(stateDir, { recursive: true, force: true });
  cpSync(state0, stateDir, { recursive: true });
}

async function main(): Promise<void> {
  console.log(`engine benchmarks on ${size / GiB} GiB images in ${dir}; ${runs} runs each, median; page cache ${dropCaches() ? 'dropped before each run' : 'NOT dropped (needs root)'}`);
  randomImage(A, size, 42);

  const blank = () => {
    rmSync(B, { force: true });
    sparseImage(B, size);
    rmSync(stateDir, { recursive: true, force: true });
  };
  const dd = await measure(blank, () => timedCommand('dd', [`if=${A}`, `of=${B}`, 'bs=4M', 'conv=fsync', 'status=none']));
  const ours = await measure(blank, () => clone({ stateDir, source: A, target: B }));
  const cloneRows: Row[] = [
    { what: `clone ${size / GiB} GiB`, ours: rate(size, ours), referenceName: 'dd bs=4M conv=fsync', reference: rate(size, dd), ratio: dd / ours, target: '≥ 0.9 × dd', ok: dd / ours >= 0.9 },
  ];

  // The last backup (B0 and the state after the clone), then 1 % of the source changed in scattered 4 KiB writes.
  copyFileSync(B, B0);
  rmSync(state0, { recursive: true, force: true });
  cpSync(stateDir, state0, { recursive: true });
  scatterWrites(A, size, Math.round((size * 0.01) / 4096));
  execFileSync('sync');

  const readBoth = await measure(() => undefined, () => timedCommand(`cat ${A} ${B0} > /dev/null`, [], { shell: true }));
  const withJournal = await measure(restoreStandby, () => sync({ stateDir, source: A, target: B, mode: 'compare' }));
  const bare = await measure(restoreStandby, async () => {
    const s = await openDrive(A);
    const t = await openDrive(B, { write: true });
    try {
      await runEngine({ mode: 'compare', source: s, target: t, ranges: [{ start: 0, length: size }] });
    } finally {
      await s.close();
      await t.close();
    }
  });
  let manifestMode = '';
  const manifest = await measure(restoreStandby, async () => {
    manifestMode = (await sync({ stateDir, source: A, target: B, mode: 'manifest' })).mode;
  });
  if (manifestMode !== 'manifest') console.log(`warning: the manifest sync ran in ${manifestMode} mode`);

  let rsyncSeconds: number | null = null;
  if (hasCommand('rsync')) {
    copyFileSync(B0, B);
    dropCaches();
    rsyncSeconds = timedCommand('rsync', ['--inplace', '--no-whole-file', '--ignore-times', A, B]);
  }

  const syncRows: Row[] = [
    { what: 'sync after 1 % changed', ours: secs(withJournal), referenceName: 'cat A B > /dev/null', reference: secs(readBoth), ratio: withJournal / readBoth, target: '≤ 1.2 × read both', ok: withJournal / readBoth <= 1.2 },
    { what: '  same, rsync (reference row)', ours: secs(withJournal), referenceName: 'rsync --inplace --no-whole-file -I', reference: rsyncSeconds === null ? 'not installed' : secs(rsyncSeconds), ratio: rsyncSeconds === null ? null : withJournal / rsyncSeconds, target: '—', ok: null },
    { what: 'journal cost (1 % change)', ours: secs(withJournal), referenceName: 'engine without journal', reference: secs(bare), ratio: withJournal / bare, target: '≤ 1.3 ×', ok: withJournal / bare <= 1.3 },
    { what: 'manifest mode (1 % change)', ours: secs(manifest), referenceName: 'compare mode', reference: secs(withJournal), ratio: manifest / withJournal, target: '≤ 0.6 ×', ok: manifest / withJournal <= 0.6 },
  ];

  // Peak RSS of a clone and a sync in a child process: 1 GiB against 8 GiB sparse images.
  const rss = (gib: number) => {
    const d = benchDir(`rss-${gib}`);
    const a = sparseImage(join(d, 'a.img'), gib * GiB);
    const b = sparseImage(join(d, 'b.img'), gib * GiB);
    const state = join(d, 'state');
    rmSync(state, { recursive: true, force: true });
    const child = fileURLToPath(new URL('./rss-child.ts', import.meta.url));
    const out = spawnSync(process.execPath, ['--import', 'tsx', child, state, a, b], { encoding: 'utf8' });
    if (out.status !== 0) throw new Error(out.stderr);
    rmSync(d, { recursive: true, force: true });
    return Number(/maxRSS=(\d+)/.exec(out.stdout)![1]) / 1024;
  };
  const small = rss(1);
  const big = rss(8);
  const memRows: Row[] = [
    { what: 'peak RSS, sync of 8 GiB', ours: `${big.toFixed(0)} MiB`, referenceName: 'same, 1 GiB', reference: `${small.toFixed(0)} MiB`, ratio: big / small, target: '< 200 MiB, flat', ok: big < 200 && big / small < 1.2 },
  ];

  printTable('clone (cold cache)', cloneRows);
  printTable('sync, journal and manifest (cold cache)', syncRows);
  printTable('memory', memRows);
  rmSync(dir, { recursive: true, force: true });
}

await main();
