/**
 * The whole-partition difference walk and the daemon's memory: dpsrd (its
 * own process, the simulated rig) walks 100,000 files on ext4 and on NTFS
 * with 1 % of them changed, against `rsync -rn --itemize-changes` between
 * read-only mounts of the same two partitions (ext4: kernel loop mount with
 * noload; NTFS: ntfs-3g read-only, the only NTFS driver here). The daemon's
 * peak RSS (VmHWM, reset before each walk) is read from /proc. Folder
 * downloads are measured in file-view.bench.ts.
 *
 * Needs root, mkfs.ext4, mkntfs, ntfs-3g, sfdisk, rsync and sleuthkit. The
 * images are built once and kept under the bench folder (DPSR_BENCH_DIR);
 * DPSR_BENCH_WALK_FILES sets the file count (default 100000),
 * DPSR_BENCH_MIB the size of a folder of large files the images also hold
 * (default 256). Medians of DPSR_BENCH_RUNS runs, the page cache dropped
 * before each.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MiB, benchDir, hasCommand, measure, printTable, secs, startDpsrd, timedCommand, type Row, apiRequest } from './lib.ts';

const N = Number(process.env.DPSR_BENCH_WALK_FILES ?? 100_000);
const BIG_MIB = Number(process.env.DPSR_BENCH_MIB ?? 256);
const DIRS = 100;
const T0 = 1_700_000_000;
const dir = benchDir(`file-view-walk-${N}-${BIG_MIB}`);
const sh = (cmd: string, args: string[], input?: string) => execFileSync(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], input, maxBuffer: 64 * MiB }).toString();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (process.getuid?.() !== 0 || !['mkfs.ext4', 'mkntfs', 'ntfs-3g', 'sfdisk', 'rsync', 'fls'].every(hasCommand)) {
  console.log('SKIP: the walk benchmark needs root, mkfs.ext4, mkntfs, ntfs-3g, sfdisk, rsync and sleuthkit');
  process.exit(0);
}

const fileName = (i: number) => join(`d${String(i % DIRS).padStart(3, '0')}`, `file-${String(i).padStart(6, '0')}.txt`);
const changed = (i: number) => i % 100 === 37;
const content = (i: number, version: number) => `${i} ${version} ${'x'.repeat(60 + (i % 40))}\n`;

/** Builds the images once: each partition's filesystem as an image, then both drives (GPT: 1 ext4, 2 NTFS). */
function build(): void {
  if (existsSync(join(dir, 'done'))) return;
  const tree = join(dir, 'tree');
  rmSync(tree, { recursive: true, force: true });
  for (let d = 0; d < DIRS; d++) mkdirSync(join(tree, `d${String(d).padStart(3, '0')}`), { recursive: true });
  console.log(`building ${N} files…`);
  for (let i = 0; i < N; i++) {
    const p = join(tree, fileName(i));
    writeFileSync(p, content(i, 1));
    utimesSync(p, T0, T0);
  }
  mkdirSync(join(tree, 'big'));
  const chunk = Buffer.alloc(4 * MiB);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (let i = 0; i < BIG_MIB / 4; i++) {
    chunk.writeUInt32LE(i, 0);
    writeFileSync(join(tree, 'big', `f${i}.bin`), chunk);
  }
  const extMiB = Math.ceil((N * 5 * 1024) / MiB) + BIG_MIB + 128;
  const ntfsMiB = Math.ceil((N * 2 * 1024) / MiB) + 128;
  const ext = (name: string) => sh('mkfs.ext4', ['-q', '-F', '-N', String(N + 4096), '-d', tree, join(dir, name), `${extMiB}M`]);
  console.log('mkfs.ext4 -d (backup)…');
  ext('ext-standby.fs');
  console.log('mkntfs + ntfs-3g (backup)…');
  const ntfs = join(dir, 'ntfs-standby.fs');
  rmSync(ntfs, { force: true });
  writeFileSync(ntfs, '');
  execFileSync('truncate', ['-s', `${ntfsMiB}M`, ntfs]);
  sh('mkntfs', ['-q', '-F', '-f', ntfs]);
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt, { recursive: true });
  sh('ntfs-3g', [ntfs, mnt]);
  try {
    for (let d = 0; d < DIRS; d++) sh('cp', ['-r', '--preserve=timestamps', join(tree, `d${String(d).padStart(3, '0')}`), mnt]);
  } finally {
    sh('umount', [mnt]);
  }
  // The active drive: 1 % of the files rewritten since the backup (another size, another time).
  for (let i = 0; i < N; i++) {
    if (!changed(i)) continue;
    writeFileSync(join(tree, fileName(i)), content(i, 22));
    utimesSync(join(tree, fileName(i)), T0 + 3600, T0 + 3600);
  }
  console.log('mkfs.ext4 -d (active)…');
  ext('ext-active.fs');
  console.log('ntfs-3g (active)…');
  sh('cp', ['--sparse=always', ntfs, join(dir, 'ntfs-active.fs')]);
  sh('ntfs-3g', [join(dir, 'ntfs-active.fs'), mnt]);
  try {
    for (let i = 0; i < N; i++) if (changed(i)) sh('cp', ['--preserve=timestamps', join(tree, fileName(i)), join(mnt, fileName(i))]);
  } finally {
    sh('umount', [mnt]);
  }
  for (const side of ['active', 'standby']) {
    const drive = join(dir, `drive-${side}.img`);
    const parts = [join(dir, `ext-${side}.fs`), join(dir, `ntfs-${side}.fs`)];
    const sizes = parts.map((p) => Math.ceil(statSync(p).size / MiB));
    rmSync(drive, { force: true });
    writeFileSync(drive, '');
    execFileSync('truncate', ['-s', `${sizes[0]! + sizes[1]! + 4}M`, drive]);
    sh('sfdisk', ['-q', drive], `label: gpt\n,${sizes[0]}M,L\n,${sizes[1]}M,L\n`);
    parts.forEach((p, i) => sh('dd', [`if=${p}`, `of=${drive}`, 'bs=1M', `seek=${1 + (i === 0 ? 0 : sizes[0]!)}`, 'conv=notrunc,sparse', 'status=none']));
  }
  rmSync(tree, { recursive: true, force: true });
  writeFileSync(join(dir, 'done'), '');
}

build();
const driveMiB = Math.ceil(statSync(join(dir, 'drive-active.img')).size / MiB);

// dpsrd on the simulated rig: the active drive in bay A (as its system image), the standby in bay B, the host off.
const daemon = await startDpsrd(dir, `  driveSizeMiB: ${driveMiB}\n  systemImage: ${join(dir, 'drive-active.img')}\n  initialClone: false\n  hostPoweredAtStart: false`);
const api = (method: string, path: string, body?: unknown) => apiRequest(daemon.url, daemon.token, method, path, body, false);

async function walk(partition: number): Promise<{ changed: number; differences: number }> {
  const { id, error } = await api('POST', '/api/browse/diff', { partition, window: false });
  if (!id) throw new Error(`the walk did not start: ${JSON.stringify(error)}`);
  for (;;) {
    await sleep(50);
    const j = await api('GET', `/api/jobs/${id}`);
    if (j.state === 'done') return { changed: j.result.counts.changed, differences: j.result.differences };
    if (j.state !== 'running') throw new Error(`walk ${j.state}: ${JSON.stringify(j.error)}`);
  }
}

/** Mounts both sides' partition read-only, runs `fn` with the two mount points, unmounts. */
async function mounted<T>(fs: 'ext' | 'ntfs', fn: (a: string, s: string) => Promise<T>): Promise<T> {
  const points = ['active', 'standby'].map((side) => {
    const m = join(dir, `ro-${fs}-${side}`);
    mkdirSync(m, { recursive: true });
    const img = join(dir, `${fs}-${side}.fs`);
    if (fs === 'ext') sh('mount', ['-o', 'ro,loop,noload', img, m]);
    else sh('ntfs-3g', ['-o', 'ro', img, m]);
    return m;
  });
  try {
    return await fn(points[0]!, points[1]!);
  } finally {
    for (const m of points) sh('umount', [m]);
  }
}

const rows: Row[] = [];
const peaks: Record<string, number> = {};
try {
  const bayB = join(dir, 'state', 'sim', 'bay-B.img');
  // Replaced whole, not rewritten: the daemon may hold the old file open.
  sh('cp', ['--sparse=always', join(dir, 'drive-standby.img'), `${bayB}.new`]);
  renameSync(`${bayB}.new`, bayB);
  for (const [partition, fs, name] of [[1, 'ext', 'ext4'], [2, 'ntfs', 'NTFS']] as const) {
    let found = { changed: 0, differences: 0 };
    daemon.resetPeak();
    const ours = await measure(() => {}, async () => (found = await walk(partition)));
    peaks[`walk ${name}`] = daemon.peakRss();
    if (found.changed !== N / 100) throw new Error(`the ${name} walk found ${found.changed} changed files, not ${N / 100}`);
    let lines = 0;
    const reference = await mounted(fs, async (a, s) => {
      const t = await measure(() => {}, () => timedCommand(`rsync -rn --itemize-changes ${a}/ ${s}/ > /dev/null`, [], { shell: true }));
      lines = sh('sh', ['-c', `rsync -rn --itemize-changes ${a}/ ${s}/ | grep -c '^>f'`]).trim() as unknown as number;
      return t;
    });
    rows.push({ what: `difference walk, ${name}, ${N} files, ${found.changed} changed (rsync: ${lines})`, ours: secs(ours), referenceName: `rsync -rn --itemize-changes, ro ${fs === 'ext' ? 'loop' : 'ntfs-3g'} mounts`, reference: secs(reference), ratio: ours / reference, target: '≤ 2 × (aim)', ok: ours / reference <= 2 });
  }
  for (const [what, bytesPeak] of Object.entries(peaks)) {
    rows.push({ what: `dpsrd peak RSS (VmHWM) during the ${what}`, ours: `${(bytesPeak / MiB).toFixed(0)} MiB`, referenceName: '—', reference: '—', ratio: null, target: '< 200 MiB', ok: bytesPeak < 200 * MiB });
  }
  printTable(`file-view: difference walk and daemon memory (${N} files)`, rows);
} catch (e) {
  console.error(`dpsrd's log:\n${daemon.log().slice(-4000)}`);
  throw e;
} finally {
  await daemon.stop();
}
