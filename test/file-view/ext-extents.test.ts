import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FileView } from '../../src/file-view/index.ts';
import { ExtentReader, runsFromLeaves } from '../../src/file-view/ext-extents.ts';
import { DeviceError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { sparseImage, tempDir } from '../support/images.ts';
import { patterned, MiB } from './support/fs-images.ts';

const tmp = tempDir('dpsr-ext-extents-');
const ok = requireEnv('ext4 extent trees read from the inodes', { tools: ['mkfs.ext4', 'debugfs', 'fls', 'icat', 'istat'] });

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * MiB });

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A local file with data at `islands` (byte offset, length) and holes elsewhere, `size` bytes long. */
function sparseLocal(path: string, size: number, islands: [number, number][], seed: number): Buffer {
  const want = Buffer.alloc(size);
  writeFileSync(path, '');
  const fd = openSync(path, 'r+');
  try {
    for (const [at, length] of islands) {
      const data = patterned(length + seed).subarray(seed);
      data.copy(want, at);
      writeSync(fd, data, 0, length, at);
    }
  } finally {
    closeSync(fd);
  }
  sh('truncate', ['-s', String(size), path]);
  return want;
}

/** An ext4 image made by mkfs.ext4 with files written in by debugfs (no mount): name → the content it must read back as. */
function extImage(name: string, mkfsArgs: string[]): { img: string; files: Map<string, Buffer> } {
  const img = join(tmp, `${name}.img`);
  sparseImage(img, 64 * MiB);
  sh('mkfs.ext4', ['-q', '-F', ...mkfsArgs, img]);
  const files = new Map<string, Buffer>();
  const put = (path: string, content: Buffer, local?: string) => {
    const src = local ?? join(tmp, `${name}-src`);
    if (!local) writeFileSync(src, content);
    sh('debugfs', ['-w', '-R', `write ${src} ${path.slice(1)}`, img]);
    files.set(path, content);
  };
  put('/tiny.txt', Buffer.from('a few bytes\n'));
  put('/empty', Buffer.alloc(0));
  put('/block.bin', patterned(4096 + 1).subarray(1));
  put('/big.bin', patterned(3 * MiB + 1234 + 5).subarray(5));
  for (let i = 0; i < 40; i++) put(`/s${String(i).padStart(2, '0')}.dat`, patterned(100 + i * 997 + i).subarray(i));
  // debugfs 1.47's write misplaces a sparse file's data on a filesystem with inline_data (icat and the kernel read it as
  // it wrote it, not as the local file): the sparse file is checked on the other layouts.
  if (mkfsArgs.includes('inline_data')) return { img, files };
  // Holes at the start, between islands and at the end; twelve islands need more extents than the inode holds (a depth-1 tree).
  const sparsePath = join(tmp, `${name}-sparse`);
  const islands: [number, number][] = Array.from({ length: 12 }, (_, i) => [MiB + i * 256 * 1024, 8192 + i * 100]);
  put('/sparse.bin', sparseLocal(sparsePath, 5 * MiB + 17, islands, 3), sparsePath);
  return { img, files };
}

const layouts: [string, string[]][] = [
  ['4k-64bit', ['-b', '4096', '-O', '64bit']],
  ['1k-32bit', ['-b', '1024', '-O', '^64bit', '-I', '128']],
  ['inline', ['-b', '4096', '-O', 'inline_data']],
];

test('runs from leaves: gaps and unwritten extents read as zeros, padded to the size; overlapping leaves refused', () => {
  const leaves = [
    { logical: 6, physical: 9999, length: 1, uninit: false },
    { logical: 0, physical: 4385, length: 2, uninit: false },
    { logical: 4, physical: 8451, length: 2, uninit: true },
  ];
  assert.equal(runsFromLeaves(leaves, 9 * 4096 - 100, 4096), [
    { start: 4385, length: 2 },
    { start: null, length: 2 },
    { start: null, length: 2 },
    { start: 9999, length: 1 },
    { start: null, length: 2 },
  ]);
  assert.equal(runsFromLeaves([{ logical: 0, physical: 10, length: 4, uninit: false }], 100, 4096), [{ start: 10, length: 4 }], 'more blocks than the size needs');
  assert.is(runsFromLeaves([{ logical: 0, physical: 10, length: 4, uninit: false }, { logical: 2, physical: 40, length: 1, uninit: false }], 5 * 4096, 4096), null);
});

for (const [name, args] of layouts) {
  test(`${name}: every file reads back byte-identical, from its extents where it has them, as icat reads it`, async () => {
    if (!ok) return;
    const { img, files } = extImage(name, args);
    const view = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' });
    const unit = await view.dataUnitSize();
    const reader = new ExtentReader(view.source, unit);
    const entries = await Promise.all([...files.keys()].map((p) => view.stat(p)));
    // Asked together, as an archive asks: one batch.
    const runs = await Promise.all(entries.map((e) => reader.runs(e.inode, e.size)));
    let inlined = 0;
    for (const [k, [path, want]] of [...files].entries()) {
      const entry = entries[k]!;
      const inline = /Size of inline data/.test(sh('debugfs', ['-R', `stat ${path.slice(1)}`, img]).toString());
      if (name !== 'inline') assert.not.ok(inline, `${path}: no inline data without the feature`);
      inlined += Number(inline);
      assert.is(runs[k] === null, inline, `${path}: ${inline ? 'inline data has no extents' : 'read from its extents'}`);
      const got = await readAll((await view.read(path)).stream);
      assert.ok(got.equals(want), `${path}: content (${got.length} bytes read, ${want.length} written)`);
      const icat = sh('icat', ['-f', 'ext', img, entry.address]);
      assert.ok(got.equals(icat), `${path}: as icat reads it`);
    }
    if (name === 'inline') assert.ok(inlined >= 2, `small files hold their data inline (${inlined})`);
    if (name === 'inline') return;
    const sparse = runs[[...files.keys()].indexOf('/sparse.bin')]!;
    assert.ok(sparse.filter((r) => r.start === null).length >= 12, `sparse.bin keeps its holes: ${JSON.stringify(sparse)}`);
    assert.match(sh('debugfs', ['-R', 'ex sparse.bin', img]).toString(), /^\s*0\/\s*1\s/m, 'sparse.bin\'s tree has an index level');
  });
}

test('records that do not check, or do not match the listing, are left to TSK', async () => {
  if (!ok) return;
  const { img } = extImage('damaged', ['-b', '4096']);
  const view = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' });
  const reader = new ExtentReader(view.source, await view.dataUnitSize());
  const big = await view.stat('/big.bin');
  assert.ok(await reader.runs(big.inode, big.size), 'the sound record reads');
  assert.is(await reader.runs(big.inode, big.size + 1), null, 'a size other than the inode\'s');
  const dir = await view.stat('/');
  assert.is(await reader.runs(dir.inode, 4096), null, 'not a regular file');
  assert.is(await reader.runs(10_000_000, 10), null, 'past the inode count');
  // The extent header's magic overwritten in the inode (imap gives where the record lies).
  const where = /located at block (\d+), offset (0x[0-9a-f]+)/.exec(sh('debugfs', ['-R', `imap <${big.inode}>`, img]).toString())!;
  const at = Number(where[1]) * 4096 + Number(where[2]) + 0x28;
  const fd = openSync(img, 'r+');
  writeSync(fd, Buffer.from([0, 0]), 0, 2, at);
  closeSync(fd);
  assert.is(await new ExtentReader(view.source, 4096).runs(big.inode, big.size), null, 'a bad extent header');
  // A filesystem said to start past the drive's end: a device error naming the drive, for every file of the batch.
  const past = new ExtentReader({ ...view.source, offsetSectors: (64 * MiB) / 512 }, 4096);
  const failed = await Promise.allSettled([past.runs(big.inode, big.size), past.runs(12, 1)]);
  for (const f of failed) {
    assert.is(f.status, 'rejected');
    const e = (f as PromiseRejectedResult).reason as Error;
    assert.instance(e, DeviceError);
    assert.match(e.message, img);
  }
});

test('folders are found by reading the folders on the way, as ifind finds them; anything else is left to TSK', async () => {
  if (!ok) return;
  const img = join(tmp, 'folders.img');
  sparseImage(img, 64 * MiB);
  sh('mkfs.ext4', ['-q', '-F', '-b', '1024', img]);
  const local = join(tmp, 'folders-src');
  writeFileSync(local, 'x');
  // A folder of 600 entries (many blocks; hash-indexed after e2fsck -D), nested and non-ASCII names, a file among them.
  const cmds = ['mkdir big', 'mkdir big/inner', 'mkdir "Größe ü"', 'mkdir "Größe ü/tief"', `write ${local} plain`];
  for (let i = 0; i < 600; i++) cmds.push(`write ${local} big/entry-with-a-longer-name-${String(i).padStart(4, '0')}`);
  const cmdFile = join(tmp, 'folders.cmds');
  writeFileSync(cmdFile, `${cmds.join('\n')}\n`);
  sh('debugfs', ['-w', '-f', cmdFile, img]);
  try {
    sh('e2fsck', ['-fyD', img]);
  } catch {
    // e2fsck exits 1 when it optimised folders: what -D is asked to do.
  }
  assert.match(sh('debugfs', ['-R', 'stat big', img]).toString(), /Flags: 0x81000/, 'big is hash-indexed (EXT4_INDEX_FL) with an extent tree');
  const view = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' });
  const reader = new ExtentReader(view.source, await view.dataUnitSize());
  const ifind = (path: string) => Number(sh('ifind', ['-f', 'ext', '-n', path, img]).toString().trim());
  for (const path of ['/big', '/big/inner', '/Größe ü', '/Größe ü/tief']) {
    assert.is(await reader.folderInode(path.split('/').filter(Boolean)), ifind(path), path);
  }
  assert.is(await reader.folderInode([]), 2, 'the root');
  assert.is(await reader.folderInode(['plain']), null, 'a file');
  assert.is(await reader.folderInode(['big', 'entry-with-a-longer-name-0007']), null, 'a file in a folder');
  assert.is(await reader.folderInode(['nothing']), null, 'not there');
  assert.is(await reader.folderInode(['BIG']), null, 'names compare exactly');
  // The listing through the folder found so: what fls gives for the folder's inode (live entries: e2fsck -D may leave an old name in a gap).
  const names = (await view.list('/big', { deleted: false })).map((e) => e.name);
  assert.is(names.length, 601);
  assert.equal(names.slice(0, 2), ['entry-with-a-longer-name-0000', 'entry-with-a-longer-name-0001']);
  assert.ok(names.includes('inner'));
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
