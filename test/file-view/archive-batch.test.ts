import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FileView } from '../../src/file-view/index.ts';
import { TskReader } from '../../src/file-view/tsk-reader.ts';
import { icatStream } from '../../src/file-view/tsk.ts';
import { DriveFile, runsStream } from '../../src/file-view/content.ts';
import { DeviceError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { rejection } from '../support/assert-async.ts';
import { sparseImage, tempDir } from '../support/images.ts';
import { differences, extractArchive } from './support/archives.ts';
import { driveImage, filesystemImage, makeTree, patterned, T0, MiB, type FsName } from './support/fs-images.ts';

const tmp = tempDir('dpsr-archive-batch-');
const ready = requireEnv('archives of NTFS, FAT and exFAT folders through one libtsk reader', {
  tools: ['fls', 'icat', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mdel', 'mkfs.exfat', 'mount.exfat-fuse', 'losetup', 'mkntfs', 'ntfs-3g', 'tar'],
  root: true,
  pythonModules: ['pytsk3'],
});

const kinds: FsName[] = ['vfat', 'exfat', 'ntfs'];
/** Sizes around the readers' edges: empty, NTFS-resident, one cluster, several, past the 64 KiB small-file line, a few MiB. */
const SIZES = [0, 1, 100, 700, 3 * 1024, 4096, 40 * 1024, 70 * 1024, 150 * 1024];
const MANY = 240;
let drive = '';
let tree = '';
if (ready) {
  const extra: Record<string, Buffer> = {};
  for (let i = 0; i < MANY; i++) {
    const size = SIZES[i % SIZES.length]! + (i % 5);
    // Non-ASCII names: Latin with diacritics, Cyrillic, CJK, and one past 8.3. Long enough for a FAT long-name entry: mcopy
    // stores a name that fits 8.3 as a short name in the DOS code page, which TSK shows with ^ for each non-ASCII character.
    const name = [`file-${i}.bin`, `ñandú-straße-${i}.dat`, `файл-${i}.txt`, `文件-${i}.bin`, `a rather long name number ${i}.data`][i % 5]!;
    extra[`many/${name}`] = patterned(size + 17 * i).subarray(17 * i);
  }
  extra['many/big-2.bin'] = patterned(2 * MiB + 3);
  tree = makeTree(tmp, 'tree', extra);
  mkdirSync(join(tmp, 'fs'));
  drive = driveImage(join(tmp, 'drive.img'), kinds.map((k) => filesystemImage(join(tmp, 'fs'), k, tree))).path;
}
const open = (fs: FsName) => FileView.open(drive, kinds.indexOf(fs) + 1);

const extract = (view: FileView, folder: string, into: string) => extractArchive(view, folder, 'tar', into, tmp);


const bytesOf = async (s: Readable) => {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
};

for (const fs of kinds) {
  test(`${fs}: a folder of ${MANY + 1} files of many sizes and non-ASCII names as tar is byte-identical, times kept`, async () => {
    if (!ready) return;
    const view = await open(fs);
    const batch = await view.batchReader();
    assert.ok(batch, 'the batch reader runs here, so the archive goes through it');
    batch!.close();
    const out = await extract(view, '/many', join(tmp, `x-${fs}`));
    assert.is(differences(out, join(tree, 'many')), '');
    const t = statSync(join(out, 'big-2.bin')).mtimeMs / 1000;
    // fixTimes set every time to T0; FAT keeps local time in 2-second steps.
    assert.ok(Math.abs(t - T0) <= (fs === 'vfat' ? 2 : 0), `mtime ${t}`);
  });

  test(`${fs}: the batch reader gives every file exactly what icat gives, in request order`, async () => {
    if (!ready) return;
    const view = await open(fs);
    const entries = (await view.list('/many')).filter((e) => e.type === 'file');
    const root = (await view.list('/')).filter((e) => e.type === 'file');
    const all = [...entries, ...root];
    const reader = new TskReader(view.source);
    try {
      assert.ok(await reader.ready);
      // Every request first, then the answers read in turn: the process is paused by the streams' back-pressure in between.
      const streams = all.map((e) => reader.content(e.address, e.size));
      for (const [i, e] of all.entries()) {
        const got = await bytesOf(streams[i]!);
        const want = await bytesOf(icatStream(view.source, e.address));
        assert.is(got.length, e.size, e.name);
        assert.ok(got.equals(want), `${e.name}: the bytes differ from icat's`);
      }
    } finally {
      reader.close();
    }
  });
}

for (const fs of kinds) {
  test(`${fs}: files past the small-file line are answered with runs that read exactly what icat reads`, async () => {
    if (!ready) return;
    const view = await open(fs);
    const large = [...(await view.list('/many')), ...(await view.list('/'))].filter((e) => e.type === 'file' && e.size > 64 * 1024);
    const reader = new TskReader(view.source);
    try {
      const answers = large.map((e) => reader.read(e.address, e.size));
      let byRuns = 0;
      for (const [i, e] of large.entries()) {
        const got = await answers[i]!;
        if (got.runs) byRuns++;
        const bytes = await bytesOf(got.runs ? runsStream(view.source, got.runs, e.size, got.unit) : got.stream);
        assert.ok(bytes.equals(await bytesOf(icatStream(view.source, e.address))), `${e.name}: the bytes differ from icat's`);
        if (e.name === 'big-2.bin') assert.ok(got.runs, 'a plain 2 MiB file is read from its runs');
      }
      assert.ok(byRuns >= large.length - 1, `${byRuns} of ${large.length} by runs`);
    } finally {
      reader.close();
    }
  });
}

test('ntfs: a file initialised only in part is answered with its content, zeros past the initialised size, not the stale bytes its runs hold', async () => {
  if (!ready) return;
  const img = join(tmp, 'partial.ntfs');
  sparseImage(img, 16 * MiB);
  execFileSync('mkntfs', ['-q', '-F', '-f', img], { stdio: 'ignore' });
  const mnt = mkdtempSync(join(tmp, 'mnt-'));
  execFileSync('ntfs-3g', [img, mnt]);
  try {
    // 300,000 bytes of 0x22, cut to 200,000 and grown to 900,000: NTFS keeps 200,000 as the initialised size, and the
    // cluster holding byte 200,000 still holds 0x22 after it.
    const fd = openSync(join(mnt, 'partial.bin'), 'w');
    writeSync(fd, Buffer.alloc(300_000, 0x22));
    ftruncateSync(fd, 200_000);
    ftruncateSync(fd, 900_000);
    closeSync(fd);
  } finally {
    execFileSync('umount', [mnt]);
  }
  const view = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ntfs' });
  const entry = await view.stat('/partial.bin');
  const reader = new TskReader(view.source);
  try {
    const got = await reader.read(entry.address, entry.size);
    assert.is(got.runs, undefined, 'not read from its runs');
    const bytes = await bytesOf(got.stream!);
    assert.ok(bytes.equals(Buffer.concat([Buffer.alloc(200_000, 0x22), Buffer.alloc(700_000)])));
  } finally {
    reader.close();
  }
});

test('ext4: files of every size are read from their extents (the batch process does not start); inline data starts it and reads as TSK reads it', async () => {
  if (!ready) return;
  const dir = join(tmp, 'ext-inline');
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  const files: Record<string, Buffer> = {
    'big.bin': patterned(2 * MiB + 3),
    'small.bin': patterned(40 * 1024 + 7),
    'one.bin': patterned(1000),
    'inline.txt': Buffer.from('hello\n'),
    'empty.bin': Buffer.alloc(0),
  };
  for (const [name, data] of Object.entries(files)) writeFileSync(join(src, name), data);
  const sp = join(src, 'sparse.bin');
  writeFileSync(sp, '');
  truncateSync(sp, 3 * MiB);
  writeFileSync(sp, 'tail\n', { flag: 'a' });
  const img = join(dir, 'fs.img');
  sparseImage(img, 64 * MiB);
  // inline_data: a file of a few bytes lives in its inode, with no extent map to read from.
  execFileSync('mkfs.ext4', ['-q', '-F', '-O', 'inline_data', '-d', src, img]);
  const view = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' });
  const batch = await view.batchReader();
  assert.ok(batch);
  const drive = new DriveFile(img);
  try {
    const streams: [string, Readable][] = [];
    for (const name of ['big.bin', 'small.bin', 'sparse.bin', 'one.bin']) streams.push([name, await view.content(await view.stat(`/${name}`), undefined, batch, drive)]);
    assert.not.ok(batch!.running, 'files with extents do not start it');
    streams.push(['inline.txt', await view.content(await view.stat('/inline.txt'), undefined, batch, drive)]);
    assert.ok(batch!.running, 'inline data is read by TSK');
    streams.push(['empty.bin', await view.content(await view.stat('/empty.bin'), undefined, batch, drive)]);
    streams.push(['small.bin', await view.content(await view.stat('/small.bin'), undefined, batch, drive)]);
    for (const [name, stream] of streams) {
      const bytes = await bytesOf(stream);
      if (name === 'sparse.bin') {
        assert.is(bytes.length, 3 * MiB + 5);
        assert.ok(bytes.subarray(0, 3 * MiB).equals(Buffer.alloc(3 * MiB)));
        assert.is(bytes.subarray(3 * MiB).toString(), 'tail\n');
      } else assert.ok(bytes.equals(files[name]!), name);
    }
  } finally {
    batch!.close();
    await drive.close();
  }
  // The folder as tar holds the same bytes.
  const out = await extract(view, '/', join(dir, 'x'));
  for (const [name, data] of Object.entries(files)) assert.ok(readFileSync(join(out, name)).equals(data), name);
  assert.ok(readFileSync(join(out, 'sparse.bin')).equals(readFileSync(sp)));
});

test('ntfs: the root as tar holds the hard link and the sparse file with their content', async () => {
  if (!ready) return;
  const out = await extract(await open('ntfs'), '/', join(tmp, 'x-ntfs-root'));
  assert.is(readFileSync(join(out, 'hard.txt'), 'utf8'), 'hello\n');
  assert.is(readFileSync(join(out, 'a.txt'), 'utf8'), 'hello\n');
  const sparse = readFileSync(join(out, 'sparse.bin'));
  assert.is(sparse.length, 3 * MiB + 5);
  assert.ok(sparse.subarray(0, 3 * MiB).equals(Buffer.alloc(3 * MiB)));
  assert.is(sparse.subarray(3 * MiB).toString(), 'tail\n');
  assert.is(differences(join(out, 'many'), join(tree, 'many')), '');
});

test('the batch reader: a stream its consumer drops does not hold up the next, and an address that is not there fails only its own stream', async () => {
  if (!ready) return;
  const view = await open('ntfs');
  const big = await view.stat('/many/big-2.bin');
  const small = await view.stat('/a.txt');
  const reader = new TskReader(view.source);
  try {
    const dropped = reader.content(big.address, big.size);
    const missing = reader.content("999999-128-1", 10);
    const after = reader.content(small.address, small.size);
    const first = await new Promise<Buffer>((r) => dropped.once('data', r));
    assert.ok(first.length > 0);
    dropped.destroy();
    const e = await rejection(bytesOf(missing));
    assert.instance(e, DeviceError);
    assert.match((e as Error).message, /999999-128-1/);
    assert.is((await bytesOf(after)).toString(), 'hello\n');
  } finally {
    reader.close();
  }
});

test('the batch reader closed with files still queued fails their streams instead of leaving them open', async () => {
  if (!ready) return;
  const view = await open('exfat');
  const big = await view.stat('/many/big-2.bin');
  const reader = new TskReader(view.source);
  assert.ok(await reader.ready);
  const s = reader.content(big.address, big.size);
  reader.close();
  assert.instance(await rejection(bytesOf(s)), DeviceError);
});

test.run();
