/**
 * File-view benchmarks: folders downloaded as tar archives, from dpsrd over
 * HTTP (ext4 and NTFS; large files and many small ones) against GNU tar of
 * the same folder on a read-only mount (ext4: kernel loop mount; NTFS:
 * ntfs-3g, the only NTFS driver here), each stream read by one C program
 * writing it to /dev/null (tar's by cat, dpsrd's by curl); the archive code alone (no HTTP) on ext4; the
 * side-by-side listing of a folder of 10,000 files (its first page, and a
 * further page with the listings kept as dpsrd keeps them), in this process
 * and through dpsrd's route with the same drive in both bays; peak RSS of
 * the archiving process and of dpsrd (built first, so that it runs the
 * compiled code as on the board, with the service's memory settings). Medians of DPSR_BENCH_RUNS runs
 * (default 3), the page cache dropped before each. Needs root (the mounts),
 * mkfs.ext4, mkntfs, ntfs-3g, sfdisk, curl and sleuthkit; the large folder
 * holds DPSR_BENCH_MIB MiB (default 256) in 4 MiB files, the mixed one 2,000
 * files of 100 B to 150 KiB. The images are built once and kept under the
 * bench folder (DPSR_BENCH_DIR).
 *
 * Measured here (two cores shared with other work; load average from uptime):
 * - ext4 small files (the mixed folder) through dpsrd: 0.84 × tar idle when
 *   extent maps came from debugfs in batches of 512, but 0.25-0.48 × at load
 *   3-13: each debugfs start blocked the daemon ~100 ms (forking a large
 *   process, waiting for its exec; 1.2 s of a 4.6 s archive in a CPU profile
 *   at load 6). With the extent trees read from the inodes in Node: 1.01 ×
 *   at load 5-7 (178 vs 177 MiB/s), 0.65-0.77 × at load 7-15 from other
 *   work, 1.11 × (45 vs 40 MiB/s) and 2.94 × (74 vs 25) with a `yes` per
 *   core on top (load 5 → 10-11; tar of small files suffers more than
 *   dpsrd). dpsrd's CPU profile over three such downloads at load 7: socket
 *   writes 0.73 s, starting file reads 0.57 s, GC 0.26 s, process starts
 *   0.09 s (the folder walk's fls).
 * - The side-by-side listing's first page is, per drive (both at once), an
 *   `fls` of the root (to find the folder) and one of the 10,000 entries,
 *   after a dropped page cache: a cold `fls` reads ~28 MB, its 45 shared
 *   libraries (of the root alone: 0.3-0.38 s at load 6, 0.02 s CPU); the
 *   10,000 entries add ~3 MB of the image and 0.05 s CPU. With both: 0.43 s
 *   in-process and 0.46 s over HTTP at load 5; 1.4-1.9 s at load 7-15. With
 *   the folder found by reading the folders on the way (one fls per drive):
 *   0.41 s and 0.34 s at load 5-7; 1.09 s and 1.27 s with a `yes` per core
 *   on top (load 10), which still misses < 1 s. Pages after the first come
 *   from the kept listings (0.01-0.05 s, 0.02-0.19 s over HTTP).
 * - dpsrd's peak RSS over the downloads rose to 165-181 MiB with the
 *   small-file reads: not live objects (a heap snapshot after them holds
 *   13 MiB) nor malloc arenas (MALLOC_ARENA_MAX=2 changed nothing) but V8's
 *   young generation, grown to 3 × 16 MiB by the allocation rate of many
 *   small files; with 8 MiB semi-spaces (deploy/dpsrd.service) the peak is
 *   147-162 MiB (the archive code alone, in this process under tsx: 130-141).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FileView, ListingCache, archiveFolder, diffFolder } from '../src/file-view/index.ts';
import { MiB, apiRequest, benchDir, downloadCommand, downloadEnv, hasCommand, measure, printTable, rate, secs, startDpsrd, timedCommand, type BenchDaemon, type Row } from './lib.ts';

const totalMiB = Number(process.env.DPSR_BENCH_MIB ?? 256);
const dir = benchDir(`file-view-${totalMiB}`);
const tree = join(dir, 'tree');
const img = join(dir, 'fs.img');
const ntfsImg = join(dir, 'ntfs.img');
const drive = join(dir, 'drive.img');
const mnt = join(dir, 'mnt');
const MIXED = 2000;
const mixedSize = (i: number) => [100, 3 * 1024, 40 * 1024, 150 * 1024][i % 4]! + (i % 7);
const T0 = 1_700_000_000;

if (process.getuid?.() !== 0 || !['mkfs.ext4', 'mkntfs', 'ntfs-3g', 'sfdisk', 'curl', 'fls'].every(hasCommand)) {
  console.log('SKIP: the file-view benchmark needs root, mkfs.ext4, mkntfs, ntfs-3g, sfdisk, curl and sleuthkit');
  process.exit(0);
}

const sh = (cmd: string, args: string[], input?: string) => execFileSync(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], input }).toString();

/** The tree (big/, mixed/, many/), as ext4 and NTFS images, and a drive with both (GPT: 1 ext4, 2 NTFS). Built once. */
function build(): void {
  if (existsSync(join(dir, 'done'))) return;
  rmSync(tree, { recursive: true, force: true });
  for (const d of ['big', 'mixed', 'many']) mkdirSync(join(tree, d), { recursive: true });
  const chunk = Buffer.alloc(4 * MiB);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (let i = 0; i < totalMiB / 4; i++) {
    chunk.writeUInt32LE(i, 0);
    writeFileSync(join(tree, 'big', `f${i}.bin`), chunk);
  }
  for (let i = 0; i < MIXED; i++) {
    const p = join(tree, 'mixed', `m-${String(i).padStart(5, '0')}.dat`);
    writeFileSync(p, chunk.subarray(i % 1024, (i % 1024) + mixedSize(i)));
    utimesSync(p, T0 + i, T0 + i);
  }
  for (let i = 0; i < 10_000; i++) writeFileSync(join(tree, 'many', `file-${String(i).padStart(5, '0')}.txt`), `${i}\n`);
  const fsMiB = totalMiB + 256;
  rmSync(img, { force: true });
  sh('mkfs.ext4', ['-q', '-F', '-d', tree, img, `${fsMiB}M`]);
  rmSync(ntfsImg, { force: true });
  writeFileSync(ntfsImg, '');
  sh('truncate', ['-s', `${fsMiB}M`, ntfsImg]);
  sh('mkntfs', ['-q', '-F', '-f', ntfsImg]);
  mkdirSync(mnt, { recursive: true });
  sh('ntfs-3g', [ntfsImg, mnt]);
  try {
    sh('cp', ['-r', '--preserve=timestamps', join(tree, 'big'), join(tree, 'mixed'), mnt]);
  } finally {
    sh('umount', [mnt]);
  }
  rmSync(drive, { force: true });
  writeFileSync(drive, '');
  sh('truncate', ['-s', `${2 * fsMiB + 4}M`, drive]);
  sh('sfdisk', ['-q', drive], `label: gpt\n,${fsMiB}M,L\n,${fsMiB}M,L\n`);
  [img, ntfsImg].forEach((p, i) => sh('dd', [`if=${p}`, `of=${drive}`, 'bs=1M', `seek=${1 + i * fsMiB}`, 'conv=notrunc,sparse', 'status=none']));
  writeFileSync(join(dir, 'done'), '');
}

/** Mounts an image read-only (ext4: kernel loop mount without journal replay; NTFS: ntfs-3g), runs `fn` on the mount point, unmounts. */
async function mounted<T>(fs: 'ext' | 'ntfs', fn: (at: string) => Promise<T>): Promise<T> {
  mkdirSync(mnt, { recursive: true });
  if (fs === 'ext') sh('mount', ['-o', 'ro,loop,noload', img, mnt]);
  else sh('ntfs-3g', ['-o', 'ro', ntfsImg, mnt]);
  try {
    return await fn(mnt);
  } finally {
    sh('umount', [mnt]);
  }
}

build();
const view = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' });

/** Counts what it is given and drops it. */
const sink = () => new Writable({ write(_c, _e, cb) { cb(); } });

let peakRss = 0;
const watch = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 20);
const alone = await measure(() => {}, async () => {
  const { stream } = await archiveFolder(view, '/big', 'tar');
  await pipeline(stream, sink());
});
clearInterval(watch);

const bigBytes = totalMiB * MiB;
const mixedBytes = Array.from({ length: MIXED }, (_, i) => mixedSize(i)).reduce((a, b) => a + b, 0);
const tarOf = (folder: string) => (at: string) => measure(() => {}, () => timedCommand(`tar -cf - -C ${at} ${folder} | cat > /dev/null`, [], { shell: true }));
const reference = {
  ext: { big: await mounted('ext', tarOf('big')), mixed: await mounted('ext', tarOf('mixed')) },
  ntfs: { big: await mounted('ntfs', tarOf('big')), mixed: await mounted('ntfs', tarOf('mixed')) },
};

// dpsrd on the simulated rig with the drive as its active drive (bay A), the host off, so that side reads as the standby does.
const driveMiB = Math.ceil(statSync(drive).size / MiB);
// Built first, so that it runs the compiled code as the board does (its memory is a target).
const daemon: BenchDaemon = await startDpsrd(dir, `  driveSizeMiB: ${driveMiB}\n  systemImage: ${drive}\n  initialClone: false\n  hostPoweredAtStart: false`, { build: true });
const ours = { ext: { big: 0, mixed: 0 }, ntfs: { big: 0, mixed: 0 } };
let daemonPeak = 0;
const httpListing = { first: 0, next: 0 };
try {
  daemon.resetPeak();
  for (const [fs, partition] of [['ext', 1], ['ntfs', 2]] as const) {
    for (const folder of ['big', 'mixed'] as const) {
      const path = `/api/browse/archive?side=active&partition=${partition}&path=/${folder}&format=tar`;
      ours[fs][folder] = await measure(() => {}, () => timedCommand(downloadCommand(daemon, path), [], { shell: true, env: downloadEnv(daemon) }));
    }
  }
  daemonPeak = daemon.peakRss();
  // The side-by-side listing of the 10,000 files through dpsrd's route: the drive copied into bay B too (replaced whole: the
  // daemon may hold the old file open), its first page with nothing kept (both images' times moved before each run: dpsrd
  // then takes the drives for changed under it), then a further page with the listings kept.
  const status = await apiRequest(daemon.url, daemon.token, 'GET', '/api/status');
  const images = [status.drives[status.active].path as string, status.drives[status.standby].path as string];
  sh('cp', ['--sparse=always', drive, `${images[1]}.new`]);
  renameSync(`${images[1]}.new`, images[1]!);
  const page = (offset: number) => apiRequest(daemon.url, daemon.token, 'GET', `/api/browse?partition=1&path=/many&offset=${offset}&limit=500`).then((b: { rows?: { state?: string }[] }) => {
    if (b.rows?.length !== 500 || b.rows.some((r) => r.state !== 'same')) throw new Error(`dpsrd listed ${JSON.stringify(b).slice(0, 300)}`);
  });
  const now = Date.now() / 1000;
  let touched = 0;
  httpListing.first = await measure(() => {
    touched++;
    for (const p of images) utimesSync(p, now + touched, now + touched);
  }, () => page(0));
  await page(0);
  httpListing.next = await measure(() => {}, () => page(500));
} catch (e) {
  console.error(`dpsrd's log:\n${daemon.log().slice(-4000)}`);
  throw e;
} finally {
  await daemon.stop();
}

// The first page of a folder nobody listed yet: new views each run (nothing kept), the page cache dropped.
const fresh = () => new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' });
const listing = await measure(() => {}, () => diffFolder(fresh(), fresh(), '/many', { offset: 0, limit: 500 }));
// A further page, as the explorer asks for it: the folder's listings kept from its first page (dpsrd's ListingCache).
const kept = new ListingCache();
const keptView = () => fresh().cached(kept, 'bench');
await diffFolder(keptView(), keptView(), '/many', { offset: 0, limit: 500 });
const nextPage = await measure(() => {}, () => diffFolder(keptView(), keptView(), '/many', { offset: 500, limit: 500 }));
const fsName = { ext: 'ext4', ntfs: 'NTFS' };
const refName = { ext: 'tar of a ro loop mount', ntfs: 'tar of a ro ntfs-3g mount' };
const folderName = { big: `${totalMiB} MiB in 4 MiB files`, mixed: `${MIXED} files of 100 B–150 KiB, ${(mixedBytes / MiB).toFixed(0)} MiB` };
const rows: Row[] = [];
for (const fs of ['ext', 'ntfs'] as const) {
  for (const folder of ['big', 'mixed'] as const) {
    const bytes = folder === 'big' ? bigBytes : mixedBytes;
    const ratio = reference[fs][folder] / ours[fs][folder];
    rows.push({ what: `folder as tar from dpsrd, ${fsName[fs]}, ${folderName[folder]}`, ours: rate(bytes, ours[fs][folder]), referenceName: refName[fs], reference: rate(bytes, reference[fs][folder]), ratio, target: '≥ 0.5 × throughput', ok: ratio >= 0.5 });
  }
}
rows.push(
  { what: `folder as tar, archive code alone (no HTTP), ext4, ${totalMiB} MiB`, ours: rate(bigBytes, alone), referenceName: refName.ext, reference: rate(bigBytes, reference.ext.big), ratio: reference.ext.big / alone, target: '≥ 0.5 × throughput', ok: reference.ext.big / alone >= 0.5 },
  { what: 'side-by-side listing, 10,000 files, first page of 500', ours: secs(listing), referenceName: '—', reference: '—', ratio: null, target: '< 1 s (aim ≤ 0.4 s idle)', ok: listing < 1 },
  { what: 'side-by-side listing, 10,000 files, next page (listings kept)', ours: secs(nextPage), referenceName: '—', reference: '—', ratio: null, target: '< 1 s', ok: nextPage < 1 },
  { what: 'side-by-side listing from dpsrd (HTTP), 10,000 files, first page', ours: secs(httpListing.first), referenceName: '—', reference: '—', ratio: null, target: '< 1 s', ok: httpListing.first < 1 },
  { what: 'side-by-side listing from dpsrd (HTTP), 10,000 files, next page', ours: secs(httpListing.next), referenceName: '—', reference: '—', ratio: null, target: '< 1 s', ok: httpListing.next < 1 },
  { what: 'peak RSS of the archive code alone', ours: `${(peakRss / MiB).toFixed(0)} MiB`, referenceName: '—', reference: '—', ratio: null, target: '< 200 MiB', ok: peakRss < 200 * MiB },
  { what: `dpsrd peak RSS (VmHWM) during the downloads (${daemon.runs === 'dist' ? 'compiled build, as installed' : 'TypeScript sources through tsx'})`, ours: `${(daemonPeak / MiB).toFixed(0)} MiB`, referenceName: '—', reference: '—', ratio: null, target: '< 200 MiB', ok: daemonPeak < 200 * MiB },
);
printTable('file-view: downloads and listings', rows);
