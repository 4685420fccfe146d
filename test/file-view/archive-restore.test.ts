import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FileView, archiveFolder, diffTree, filesInRanges, writeBack, type TreeDifference } from '../../src/file-view/index.ts';
import { BadInputError, NotFoundError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { rejection } from '../support/assert-async.ts';
import { sha256File, tempDir } from '../support/images.ts';
import { differences, extractArchive } from './support/archives.ts';
import { driveImage, filesystemImage, makeTree, T0, MiB, type FsName } from './support/fs-images.ts';

const tmp = tempDir('dpsr-archive-');
const haveTsk = requireEnv('archives and restores of files', { tools: ['fls', 'icat', 'ifind', 'sfdisk', 'mkfs.ext4', 'debugfs', 'mkfs.vfat', 'mcopy', 'tar', 'unzip'] });
const haveFuseFs = haveTsk && requireEnv('exFAT and NTFS images, and writing files back (loop devices, mounts)', { tools: ['mkfs.exfat', 'mount.exfat-fuse', 'losetup', 'mkntfs', 'ntfs-3g', 'e2fsck', 'fsck.vfat', 'fsck.exfat', 'ntfsfix', 'mmd'], root: true });

const kinds: FsName[] = haveFuseFs ? ['ext4', 'vfat', 'exfat', 'ntfs'] : ['ext4', 'vfat'];
/** The standby holds the backup (`tree`); the active drive has changed since (`changed`). */
const backup = { 'dir/sub/new-in-backup.txt': 'only in the backup\n' };
const changes = { 'a.txt': 'HELLO, changed\n', 'dir/sub/big.bin': null, 'dir/sub/new-in-backup.txt': null, 'dir/added.txt': 'added on the active drive\n' };
let standbyDrive = '';
let activeDrive = '';
let tree = '';
if (haveTsk) {
  tree = makeTree(tmp, 'tree', backup);
  const changed = makeTree(tmp, 'changed', { ...backup, ...changes });
  mkdirSync(join(tmp, 's'));
  mkdirSync(join(tmp, 'a'));
  standbyDrive = driveImage(join(tmp, 'standby.img'), kinds.map((k) => filesystemImage(join(tmp, 's'), k, tree))).path;
  activeDrive = driveImage(join(tmp, 'active.img'), kinds.map((k) => filesystemImage(join(tmp, 'a'), k, changed))).path;
}
/** Entries the two trees differ in by how the images were made: a.txt's hard link changed with it, NTFS's sparse file and ext4's symlink got their own times. */
const skip = (p: string) => p.startsWith('/lost+found') || p === '/hard.txt' || p === '/sparse.bin' || p === '/link';
const open = (drive: string, fs: FsName) => FileView.open(drive, kinds.indexOf(fs) + 1);

const extract = (view: FileView, folder: string, format: 'tar' | 'zip', into: string) => extractArchive(view, folder, format, into, tmp);


for (const fs of kinds) {
  for (const format of ['tar', 'zip'] as const) {
    test(`${fs}: a folder downloaded as ${format} holds what was put into the filesystem, names and times kept`, async () => {
      if (!haveTsk) return;
      const out = await extract(await open(standbyDrive, fs), '/dir', format, join(tmp, `x-${fs}-${format}`));
      assert.is(differences(out, join(tree, 'dir')), '');
      const big = statSync(join(out, 'sub/big.bin'));
      assert.is(big.size, 300_000);
      // FAT keeps local time in 2-second steps; the others keep the second.
      if (fs !== 'vfat') assert.is(Math.round(big.mtimeMs / 1000), T0);
      assert.ok(readFileSync(join(out, 'A very long file name that is well past eight dot three characters.txt')).equals(Buffer.from('long\n')));
    });
  }
}

test('ext4: the root as tar keeps symlinks, permission bits, a hard link and a sparse file', async () => {
  if (!haveTsk) return;
  const out = await extract(await open(standbyDrive, 'ext4'), '/', 'tar', join(tmp, 'x-root'));
  assert.is(readlinkSync(join(out, 'link')), 'a.txt');
  assert.ok(lstatSync(join(out, 'link')).isSymbolicLink());
  assert.is(statSync(join(out, 'a.txt')).mode & 0o777, statSync(join(tree, 'a.txt')).mode & 0o777);
  assert.is(readFileSync(join(out, 'hard.txt'), 'utf8'), 'hello\n');
  const sparse = readFileSync(join(out, 'sparse.bin'));
  assert.is(sparse.length, 3 * MiB + 5);
  assert.ok(sparse.subarray(0, 3 * MiB).equals(Buffer.alloc(3 * MiB)));
  assert.is(sparse.subarray(3 * MiB).toString(), 'tail\n');
  assert.not.ok(lstatSync(join(out, 'deleted.txt'), { throwIfNoEntry: false }), 'a deleted file is not in the archive');
});

test('an archive of a file or of nothing is refused before anything is streamed', async () => {
  if (!haveTsk) return;
  const v = await open(standbyDrive, 'ext4');
  assert.instance(await rejection(archiveFolder(v, '/a.txt', 'tar')), BadInputError);
  assert.instance(await rejection(archiveFolder(v, '/nope', 'zip')), NotFoundError);
  assert.instance(await rejection(archiveFolder(v, '/dir/../..', 'zip')), BadInputError);
});

for (const fs of kinds) {
  test(`${fs}: the whole-tree walk lists exactly the differences, in path order`, async () => {
    if (!haveTsk) return;
    const rows: TreeDifference[] = [];
    const summary = await diffTree(await open(activeDrive, fs), await open(standbyDrive, fs), '/', (d) => void rows.push(d));
    const got = rows.map((r) => [r.path, r.state]).filter(([p]) => !skip(p as string));
    assert.equal(got, [
      ['/a.txt', 'changed'],
      ['/dir/added.txt', 'only-active'],
      ['/dir/sub', 'only-standby'],
      ['/dir/sub/big.bin', 'only-standby'],
      ['/dir/sub/new-in-backup.txt', 'only-standby'],
    ]);
    assert.is(summary.counts.changed + summary.counts['only-active'] + summary.counts['only-standby'], rows.length);
    assert.ok(summary.compared >= 8);
  });
}

/** The first data unit of a file, from `istat` (ext: "Direct Blocks:", FAT and exFAT: "Sectors:", NTFS: the $DATA attribute's run list). */
function firstUnit(view: FileView, inode: number): number {
  const { path, offsetSectors, sectorSize, fsType } = view.source;
  const text = execFileSync('istat', ['-f', fsType, '-i', 'raw', '-b', String(sectorSize), '-o', String(offsetSectors), path, String(inode)]).toString();
  const lines = text.split('\n');
  const at = lines.findIndex((l) => /^Direct Blocks:|^Sectors:|^Type: \$DATA/.test(l));
  return Number(lines.slice(at + 1).find((l) => /^\s*\d+/.test(l))!.trim().split(/\s+/)[0]);
}

for (const fs of kinds) {
  test(`${fs}: a range of the drive is mapped to its partition and the file that holds it`, async () => {
    if (!haveTsk) return;
    const v = await open(standbyDrive, fs);
    const big = await v.stat('/dir/sub/big.bin');
    const unit = await v.dataUnitSize();
    const start = v.partition!.startByte + firstUnit(v, big.inode) * unit;
    const [inFile, beforeAll] = await filesInRanges(standbyDrive, [{ start, length: 3 * unit }, { start: 0, length: 512 }]);
    assert.is(inFile!.partition, kinds.indexOf(fs) + 1);
    assert.equal(inFile!.files, ['/dir/sub/big.bin']);
    assert.is(beforeAll!.partition, undefined, 'the protective MBR lies in no partition');
    assert.equal(beforeAll!.files, []);
  });
}

const canWrite = haveFuseFs;
for (const fs of kinds) {
  test(`${fs}: files and a folder written back from the standby are byte-identical, what was replaced is listed, fsck is clean, the standby untouched`, async () => {
    if (!canWrite) return;
    const before = sha256File(standbyDrive);
    const report = await writeBack(await open(standbyDrive, fs), await open(activeDrive, fs), ['/a.txt', '/dir/sub']);
    assert.is(sha256File(standbyDrive), before, 'the standby is only read');
    assert.is(report.fsck.clean, true, report.fsck.output);
    assert.equal(report.overwritten.map((o) => o.path), ['/a.txt']);
    assert.is(report.overwritten[0]!.size, 'HELLO, changed\n'.length);
    assert.is(report.restored.files, 3);
    const rows: TreeDifference[] = [];
    await diffTree(await open(activeDrive, fs), await open(standbyDrive, fs), '/', (d) => void rows.push(d));
    // What is left differs only where nothing was restored: the file added on the active drive stays.
    assert.equal(rows.map((r) => [r.path, r.state]).filter(([p]) => !skip(p as string)), [['/dir/added.txt', 'only-active']]);
    const out = await extract(await open(activeDrive, fs), '/dir/sub', 'tar', join(tmp, `w-${fs}`));
    assert.is(differences(out, join(tree, 'dir/sub')), '');
  });
}

test('a restore cancelled part-way stops between files, unmounts, checks, and reports what it wrote', async () => {
  if (!canWrite) return;
  const stop = new AbortController();
  const report = await writeBack(await open(standbyDrive, 'ext4'), await open(activeDrive, 'ext4'), ['/dir'], {
    signal: stop.signal,
    onProgress: (p) => { if (p.entries === 2) stop.abort(); },
  });
  assert.is(report.cancelled, true);
  assert.ok(report.restored.files + report.restored.folders <= 2, JSON.stringify(report.restored));
  assert.is(report.fsck.clean, true, report.fsck.output);
  assert.not.ok(execFileSync('losetup', ['-j', activeDrive]).toString().trim(), 'no loop device left on the drive');
});

test.run();
