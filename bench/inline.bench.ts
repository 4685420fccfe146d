/**
 * Inline mode's data path (issue 13):
 * - a changed-block sync after a 1 % scattered change (1 % of the drive in
 *   64 KiB writes at random places, the dirty bitmap's granularity) against
 *   a compare-mode sync of the same change: ratio, aim ≤ 0.05;
 * - host-visible write throughput through the export against the same image
 *   accessed directly (`qemu-img bench`, sequential 1 MiB and 4 KiB writes,
 *   queue depth 1 for the 4 KiB row; O_DIRECT on both sides, so both reach
 *   the disk): ratio, aim ≥ 0.8.
 * Syncs are medians of DPSR_BENCH_RUNS runs (default 3), each from the same
 * standby and state with the page cache dropped. Size with DPSR_BENCH_GIB.
 */
import { copyFileSync, cpSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { StorageDaemon } from '../src/export/index.ts';
import { ChangedBlockTracker } from '../src/snapshot/index.ts';
import { NbdDrive, readFlaggedRanges, STATE_DIRTY } from '../src/sata-bridge/index.ts';
import { clone, sync } from '../src/sync/index.ts';
import { randomImage } from '../test/support/images.ts';
import { GiB, MiB, benchDir, dropCaches, hasCommand, printTable, rate, secs, type Row, benchRuns, measure, median } from './lib.ts';

const size = Number(process.env.DPSR_BENCH_GIB ?? 2) * GiB;
const runs = benchRuns;
const dir = benchDir('inline');
const A = join(dir, 'active.img');
const B = join(dir, 'standby.img');
const B0 = join(dir, 'standby0.img');
const GRANULE = 64 * 1024;


function qemuImgBench(target: string, args: string[]): number {
  const out = execFileSync('qemu-img', ['bench', '-f', 'raw', '-w', ...args, target], { encoding: 'utf8' });
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (!m) throw new Error(`qemu-img bench said: ${out}`);
  return Number(m[1]);
}

async function main(): Promise<void> {
  if (!hasCommand('qemu-storage-daemon') || !hasCommand('qemu-img')) {
    console.log('SKIP: the inline benchmarks need qemu-storage-daemon and qemu-img (scripts/install-tools.sh --tests)');
    return;
  }
  console.log(`inline-mode benchmarks on ${size / GiB} GiB images in ${dir}; ${runs} runs each, median; page cache ${dropCaches() ? 'dropped before each run' : 'NOT dropped (needs root)'}`);
  randomImage(A, size, 77);
  copyFileSync(A, B0);
  copyFileSync(A, B);
  const daemon = new StorageDaemon({ drive: A, runDir: join(dir, 'run'), listen: { unix: join(dir, 'run', 'nbd.sock') }, exportName: 'sys', directIo: true });
  await daemon.start();
  try {
    const tracker = new ChangedBlockTracker({ daemon, stateFile: join(dir, 'cbt.json'), readRanges: (u, c) => readFlaggedRanges(u, c, STATE_DIRTY) });
    await tracker.commit(await tracker.beginEpoch());
    // Two pairs over the same drives, one per state directory: the changed sync reads the active drive over NBD, the compare sync directly.
    const stateN0 = join(dir, 'state-nbd0');
    const stateF0 = join(dir, 'state-file0');
    const stateN = join(dir, 'state-nbd');
    const stateF = join(dir, 'state-file');
    for (const s of [stateN0, stateF0, stateN, stateF]) rmSync(s, { recursive: true, force: true });
    await clone({ stateDir: stateN0, source: daemon.hostUri, target: B });
    await clone({ stateDir: stateF0, source: A, target: B });

    // The host changes 1 % of the drive in 64 KiB writes at random granules, through the export.
    const count = Math.round((size * 0.01) / GRANULE);
    const host = await NbdDrive.open(daemon.hostUri, { write: true });
    // Distinct granules, picked with a seeded shuffle, so the change is exactly 1 %.
    const granules = Array.from({ length: size / GRANULE }, (_, i) => i);
    let x = 4242;
    for (let i = granules.length - 1; i > 0; i--) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      const j = x % (i + 1);
      [granules[i], granules[j]] = [granules[j]!, granules[i]!];
    }
    const data = Buffer.alloc(GRANULE);
    for (let i = 0; i < count; i++) {
      data.fill((i % 255) + 1);
      await host.write(data, granules[i]! * GRANULE);
    }
    await host.flush();
    await host.close();
    const dirty = await tracker.dirtyBytes();

    const restore = (state0: string, state: string) => () => {
      copyFileSync(B0, B);
      rmSync(state, { recursive: true, force: true });
      cpSync(state0, state, { recursive: true });
    };
    let epoch: Awaited<ReturnType<ChangedBlockTracker['beginEpoch']>> | undefined;
    let changedBytes = 0;
    const changed = await measure(
      restore(stateN0, stateN),
      async () => {
        epoch = await tracker.beginEpoch();
        if (!epoch.ranges) throw new Error(`the bitmap is not trusted: ${epoch.reason}`);
        const r = await sync({ stateDir: stateN, source: daemon.hostUri, target: B, mode: 'changed', changed: { ranges: epoch.ranges } });
        changedBytes = r.bytesTotal;
      },
      // The same change for the next run: the frozen bitmap goes back into the live one.
      () => tracker.abort(epoch!),
    );
    const compare = await measure(restore(stateF0, stateF), () => sync({ stateDir: stateF, source: A, target: B, mode: 'compare' }));
    execFileSync('cmp', [A, B]);

    const rows: Row[] = [
      {
        what: `sync after a 1 % scattered change (${(dirty / MiB).toFixed(0)} MiB dirty of ${size / GiB} GiB)`,
        ours: `changed ${secs(changed)} (${(changedBytes / MiB).toFixed(0)} MiB read)`,
        referenceName: 'compare mode',
        reference: secs(compare),
        ratio: changed / compare,
        target: '≤ 0.05',
        ok: changed / compare <= 0.05,
      },
    ];

    // Host-visible write throughput: the export (the daemon opens the drive with O_DIRECT) against the image itself with O_DIRECT.
    const seq = ['-t', 'none', '-s', '1M', '-c', String(Math.min(1024, size / MiB)), '-d', '2'];
    const small = ['-t', 'none', '-s', '4096', '-c', '5000', '-d', '1'];
    const viaExport = qemuImgBench(daemon.hostUri, seq);
    const direct = qemuImgBench(A, seq);
    const viaExport4k = qemuImgBench(daemon.hostUri, small);
    const direct4k = qemuImgBench(A, small);
    const seqBytes = Math.min(1024, size / MiB) * MiB;
    rows.push(
      { what: 'host writes, 1 MiB sequential (qemu-img bench)', ours: `export ${rate(seqBytes, viaExport)}`, referenceName: 'image directly', reference: rate(seqBytes, direct), ratio: direct / viaExport, target: '≥ 0.8', ok: direct / viaExport >= 0.8 },
      {
        what: '4 KiB writes, queue depth 1 (mean latency)',
        ours: `export ${((viaExport4k / 5000) * 1e6).toFixed(0)} µs`,
        referenceName: 'image directly',
        reference: `${((direct4k / 5000) * 1e6).toFixed(0)} µs`,
        ratio: direct4k / viaExport4k,
        target: '—',
        ok: null,
      },
    );
    printTable('inline mode: changed-block sync and the host export', rows);
  } finally {
    await daemon.stop();
  }
}

await main();
