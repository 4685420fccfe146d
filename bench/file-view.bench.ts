/**
 * File-view benchmarks: a folder downloaded as a tar archive (walk + icat,
 * streamed) against GNU tar of the same folder on a read-only loop mount,
 * the side-by-side listing of a folder of 10,000 files (its first page, and
 * a further page with the listings kept as dpsrd keeps them), and the
 * process's peak RSS while archiving. Medians of DPSR_BENCH_RUNS runs
 * (default 3), the page cache dropped before each. Needs root (the mount)
 * and mkfs.ext4; the folder holds DPSR_BENCH_MIB MiB (default 256) in 4 MiB
 * files.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FileView, ListingCache, archiveFolder, diffFolder } from '../src/file-view/index.ts';
import { MiB, benchDir, hasCommand, measure, printTable, rate, secs, timedCommand, type Row } from './lib.ts';

const totalMiB = Number(process.env.DPSR_BENCH_MIB ?? 256);
const dir = benchDir('file-view');
const tree = join(dir, 'tree');
const img = join(dir, 'fs.img');
const mnt = join(dir, 'mnt');

if (!hasCommand('mkfs.ext4') || !hasCommand('fls') || process.getuid?.() !== 0) {
  console.log('SKIP: the file-view benchmark needs root, mkfs.ext4 and sleuthkit');
  process.exit(0);
}

rmSync(tree, { recursive: true, force: true });
mkdirSync(join(tree, 'big'), { recursive: true });
mkdirSync(join(tree, 'many'), { recursive: true });
const chunk = Buffer.alloc(4 * MiB);
for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
for (let i = 0; i < totalMiB / 4; i++) {
  chunk.writeUInt32LE(i, 0);
  writeFileSync(join(tree, 'big', `f${i}.bin`), chunk);
}
for (let i = 0; i < 10_000; i++) writeFileSync(join(tree, 'many', `file-${String(i).padStart(5, '0')}.txt`), `${i}\n`);
rmSync(img, { force: true });
execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, img, `${totalMiB + 256}M`]);
const view = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' });

/** Counts what it is given and drops it. */
const sink = () => new Writable({ write(_c, _e, cb) { cb(); } });

let peakRss = 0;
const watch = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 20);
const ours = await measure(() => {}, async () => {
  const { stream } = await archiveFolder(view, '/big', 'tar');
  await pipeline(stream, sink());
});
clearInterval(watch);

mkdirSync(mnt, { recursive: true });
execFileSync('mount', ['-o', 'ro,loop,noload', img, mnt]);
let reference: number;
try {
  // Through cat: GNU tar writing to /dev/null itself skips reading the files.
  reference = await measure(() => {}, () => timedCommand(`tar -cf - -C ${mnt} big | cat > /dev/null`, [], { shell: true }));
} finally {
  execFileSync('umount', [mnt]);
}

// The first page of a folder nobody listed yet: new views each run (nothing kept), the page cache dropped.
const fresh = () => new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' });
const listing = await measure(() => {}, () => diffFolder(fresh(), fresh(), '/many', { offset: 0, limit: 500 }));
// A further page, as the explorer asks for it: the folder's listings kept from its first page (dpsrd's ListingCache).
const kept = new ListingCache();
const keptView = () => fresh().cached(kept, 'bench');
await diffFolder(keptView(), keptView(), '/many', { offset: 0, limit: 500 });
const nextPage = await measure(() => {}, () => diffFolder(keptView(), keptView(), '/many', { offset: 500, limit: 500 }));
const bytes = totalMiB * MiB;
const rows: Row[] = [
  { what: `folder as tar (${totalMiB} MiB)`, ours: rate(bytes, ours), referenceName: 'tar of a ro loop mount', reference: rate(bytes, reference), ratio: reference / ours, target: '≥ 0.5 × throughput', ok: reference / ours >= 0.5 },
  { what: 'side-by-side listing, 10,000 files, first page of 500', ours: secs(listing), referenceName: '—', reference: '—', ratio: null, target: '< 1 s (aim ≤ 0.4 s idle)', ok: listing < 1 },
  { what: 'side-by-side listing, 10,000 files, next page (listings kept)', ours: secs(nextPage), referenceName: '—', reference: '—', ratio: null, target: '< 1 s', ok: nextPage < 1 },
  { what: 'peak RSS while archiving', ours: `${(peakRss / MiB).toFixed(0)} MiB`, referenceName: '—', reference: '—', ratio: null, target: '< 200 MiB', ok: peakRss < 200 * MiB },
];
printTable('file-view: downloads and listings', rows);
