import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileView, type FileEntry } from '../../src/file-view/index.ts';
import { BadInputError, NotFoundError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { rejection } from '../support/assert-async.ts';
import { sha256File, tempDir } from '../support/images.ts';
import { driveImage, filesystemImage, makeTree, T0, MiB, type FsName } from './support/fs-images.ts';

const tmp = tempDir('dpsr-file-view-');
const haveTsk = requireEnv('reading filesystems with The Sleuth Kit', { tools: ['fls', 'icat', 'ifind', 'ffind', 'fsstat', 'sfdisk', 'mkfs.ext4', 'debugfs', 'mkfs.vfat', 'mcopy', 'mdir'] });
// exFAT and NTFS are filled through FUSE mounts of the images, which needs root.
const haveFuseFs = haveTsk && requireEnv('exFAT and NTFS test images', { tools: ['mkfs.exfat', 'mount.exfat-fuse', 'losetup', 'mkntfs', 'ntfs-3g', 'ntfsls'], root: true });

const kinds: FsName[] = haveFuseFs ? ['ext4', 'vfat', 'exfat', 'ntfs'] : ['ext4', 'vfat'];
let drive = '';
const tree = haveTsk ? makeTree(tmp, 'tree') : '';
if (haveTsk) drive = driveImage(join(tmp, 'drive.img'), kinds.map((k) => filesystemImage(tmp, k, tree))).path;
const before = haveTsk ? sha256File(drive) : '';

const views = new Map<FsName, FileView>();
async function view(fs: FsName): Promise<FileView> {
  if (!views.has(fs)) views.set(fs, await FileView.open(drive, kinds.indexOf(fs) + 1));
  return views.get(fs)!;
}
/** Awaits a promise that must fail with an error of class `cls`. */
async function rejects(p: Promise<unknown>, cls: new (...a: never[]) => Error, what = ''): Promise<void> {
  const e = await rejection(p, what);
  assert.instance(e, cls, `${what}: ${String(e)}`);
}
const live = (es: FileEntry[]) => es.filter((e) => !e.deleted).map((e) => e.name);
const byName = (es: FileEntry[], n: string) => es.find((e) => e.name === n && !e.deleted);

/** The filesystem's own tool's listing of a folder, names only. */
function ownListing(fs: FsName, folder: string): string[] {
  const part = kinds.indexOf(fs);
  const json = JSON.parse(execFileSync('sfdisk', ['-J', drive]).toString()) as { partitiontable: { partitions: { start: number; size: number }[] } };
  const p = json.partitiontable.partitions[part]!;
  const cut = join(tmp, `${fs}-cut.img`);
  execFileSync('dd', [`if=${drive}`, `of=${cut}`, 'bs=512', `skip=${p.start}`, `count=${p.size}`, 'status=none']);
  let names: string[];
  if (fs === 'ext4') {
    names = execFileSync('debugfs', ['-R', `ls -p ${folder}`, cut], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().split('\n').filter(Boolean).map((l) => l.split('/')[5]!).filter((n) => n && n !== '.' && n !== '..');
    // debugfs -p lists deleted entries too only with -d; live ones are what it gives here.
  } else if (fs === 'vfat') {
    names = execFileSync('mdir', ['-b', '-i', cut, `::${folder}`]).toString().split('\n').filter(Boolean).map((l) => l.replace(/\/$/, '').split('/').pop()!);
  } else if (fs === 'ntfs') {
    names = execFileSync('ntfsls', ['-p', folder, cut]).toString().split('\n').filter((n) => n && n !== '.' && n !== '..');
  } else {
    const loop = execFileSync('losetup', ['-f', '--show', '-r', cut]).toString().trim();
    const mnt = join(tmp, 'exfat-ro');
    execFileSync('mkdir', ['-p', mnt]);
    try {
      execFileSync('mount.exfat-fuse', ['-o', 'ro', loop, mnt]);
      names = execFileSync('ls', ['-A', join(mnt, folder)]).toString().split('\n').filter(Boolean);
      execFileSync('umount', [mnt]);
    } finally {
      execFileSync('losetup', ['-d', loop]);
    }
  }
  return names.sort();
}

for (const fs of kinds) {
  test(`${fs}: the root and a folder list as the filesystem's own tools list them, with sizes and times`, async () => {
    if (!haveTsk) return;
    const v = await view(fs);
    const root = await v.list('/');
    assert.equal(live(root).sort(), ownListing(fs, '/').filter((n) => n !== 'lost+found' && !(fs === 'ntfs' && n.startsWith('$'))).concat(fs === 'ext4' ? ['lost+found'] : []).sort());
    const dir = await v.list('/dir');
    assert.equal(live(dir).sort(), ownListing(fs, '/dir').sort());
    assert.ok(live(dir).includes('Ünïcødé файл.txt'), 'non-ASCII name');
    assert.ok(live(dir).includes('A very long file name that is well past eight dot three characters.txt'), 'long name');
    const a = byName(root, 'a.txt')!;
    assert.is(a.type, 'file');
    assert.is(a.size, 6);
    // FAT keeps local time in 2-second steps; the others keep seconds in UTC.
    if (fs !== 'vfat') assert.is(a.mtime, T0);
    assert.is(byName(dir, 'sub')!.type, 'directory');
    assert.is(byName(await v.list('dir/sub'), 'big.bin')!.size, 300_000);
  });

  test(`${fs}: a deleted file is listed as deleted, and left out on request`, async () => {
    if (!haveTsk) return;
    const v = await view(fs);
    const root = await v.list('/');
    // FAT overwrites a deleted entry's first character.
    const del = root.find((e) => e.deleted && e.name.endsWith('eleted.txt'));
    assert.ok(del, `deleted entry in ${JSON.stringify(root.map((e) => e.name))}`);
    assert.not.ok((await v.list('/', { deleted: false })).some((e) => e.deleted));
    await rejects(v.read('/deleted.txt'), NotFoundError);
  });

  test(`${fs}: content reads byte-identical`, async () => {
    if (!haveTsk) return;
    const v = await view(fs);
    for (const p of ['a.txt', 'dir/sub/big.bin', 'dir/Ünïcødé файл.txt']) {
      const { stream } = await v.read(p);
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      assert.ok(Buffer.concat(chunks).equals(readFileSync(join(tree, p))), `${p} on ${fs}`);
    }
  });
}

test('ext4 and NTFS: a hard link shares its inode; ext4 gives a symlink\'s target; a sparse file reads as zeros then its tail', async () => {
  if (!haveTsk) return;
  for (const fs of kinds.filter((k) => k === 'ext4' || k === 'ntfs')) {
    const v = await view(fs);
    const root = await v.list('/');
    assert.is(byName(root, 'hard.txt')!.inode, byName(root, 'a.txt')!.inode, `${fs} hard link`);
    const sparse = await v.read('sparse.bin');
    const chunks: Buffer[] = [];
    for await (const c of sparse.stream) chunks.push(c as Buffer);
    const all = Buffer.concat(chunks);
    assert.is(all.length, 3 * MiB + 5);
    assert.ok(all.subarray(0, 3 * MiB).every((b) => b === 0), `${fs} hole reads as zeros`);
    assert.is(all.subarray(3 * MiB).toString(), 'tail\n');
  }
  const link = byName(await (await view('ext4')).list('/'), 'link')!;
  assert.is(link.type, 'symlink');
  assert.is(link.linkTarget, 'a.txt');
});

test('bad paths are refused before any reader runs; absent ones are not found', async () => {
  if (!haveTsk) return;
  const v = await view('ext4');
  for (const bad of ['../etc', 'dir/../../x', 'a\u0000b', './a.txt', 'dir//sub']) await rejects(v.list(bad), BadInputError, bad);
  await rejects(v.read('dir/../a.txt'), BadInputError);
  await rejects(v.list('/nope'), NotFoundError);
  await rejects(v.read('/dir/nope.txt'), NotFoundError);
  await rejects(v.list('/a.txt'), BadInputError, 'a file is no folder');
  await rejects(v.read('/dir'), BadInputError, 'a folder has no content to read');
  await rejects(FileView.open(drive, 9), NotFoundError);
});

test('sectors map to the files that hold them; free space maps to none', async () => {
  if (!haveTsk) return;
  const json = JSON.parse(execFileSync('sfdisk', ['-J', drive]).toString()) as { partitiontable: { partitions: { start: number }[] } };
  for (const fs of kinds) {
    const v = await view(fs);
    const start = json.partitiontable.partitions[kinds.indexOf(fs)]!.start;
    // Find big.bin's first sector by its content, independently of TSK.
    const img = readFileSync(drive);
    const big = readFileSync(join(tree, 'dir/sub/big.bin'));
    const at = img.indexOf(big.subarray(0, 4096), start * 512);
    assert.ok(at > 0 && at % 512 === 0, `${fs}: big.bin found in the image`);
    const lba = at / 512;
    const [hit, outside] = [await v.filesAt([lba]), await v.filesAt([0])];
    assert.is(hit[0]?.path, '/dir/sub/big.bin', `${fs}: ${JSON.stringify(hit)}`);
    assert.equal(outside, [], 'an LBA outside the partition is left out');
    const last = start + 24 * 2048 - 1;
    const free = await v.filesAt([last - 4096]);
    assert.is(free[0]?.path, undefined, `${fs}: free space near the partition's end belongs to no file`);
  }
});

test('reading never changed the drive', () => {
  if (!haveTsk) return;
  assert.is(sha256File(drive), before);
});

test.run();
