import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FileView, type TskFsType } from '../../src/file-view/index.ts';
import { parseRuns, runsOf } from '../../src/file-view/content.ts';
import { ExtentReader } from '../../src/file-view/ext-extents.ts';
import { requireEnv } from '../support/require.ts';
import { sparseImage, tempDir } from '../support/images.ts';
import { patterned, MiB, type FsName } from './support/fs-images.ts';

const tmp = tempDir('dpsr-content-');
const haveTsk = requireEnv('reading files from their data runs', { tools: ['fls', 'icat', 'istat', 'mkfs.ext4', 'mkfs.vfat', 'mcopy', 'mdel', 'fallocate'], root: true });
const haveFuseFs = haveTsk && requireEnv('exFAT and NTFS images (loop devices, FUSE mounts)', { tools: ['mkfs.exfat', 'mount.exfat-fuse', 'losetup', 'mkntfs', 'ntfs-3g'], root: true });
const kinds: FsName[] = haveFuseFs ? ['ext4', 'vfat', 'exfat', 'ntfs'] : haveTsk ? ['ext4', 'vfat'] : [];
const TSK_TYPE: Record<FsName, TskFsType> = { ext4: 'ext', vfat: 'fat', exfat: 'exfat', ntfs: 'ntfs' };

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** Distinct bytes per file, so a block read from the wrong place shows. */
function bytes(size: number, seed: number): Buffer {
  const b = patterned(size + seed * 7);
  return b.subarray(seed * 7);
}

/** Files every filesystem gets: a large one whose last block is partly used, and one written into the gaps between others. */
const BIG = bytes(3 * MiB + 1234, 1);
const FRAG = bytes(MiB + 777, 2);
/** ext4 only: a hole at the start and one at the end; space reserved but written only in part (unwritten extents read as zeros). */
const SPARSE = Buffer.concat([Buffer.alloc(2 * MiB), bytes(70_000, 3), Buffer.alloc(MiB + 5)]);
const PREALLOC = Buffer.concat([bytes(100_000, 4), Buffer.alloc(900_000)]);

/** Fills a mounted folder with small files, deletes every other one and writes `name` into the gaps. */
function writeIntoGaps(mnt: string, name: string, content: Buffer): void {
  mkdirSync(join(mnt, 'fill'));
  for (let i = 0; i < 256; i++) writeFileSync(join(mnt, 'fill', `f${i}`), bytes(8192, 10 + (i % 5)));
  sh('sync', []);
  for (let i = 0; i < 256; i += 2) rmSync(join(mnt, 'fill', `f${i}`));
  sh('sync', []);
  writeFileSync(join(mnt, name), content);
}

function image(fs: FsName): string {
  const img = join(tmp, `${fs}.img`);
  sparseImage(img, 40 * MiB);
  const mnt = join(tmp, `mnt-${fs}`);
  mkdirSync(mnt, { recursive: true });
  if (fs === 'vfat') {
    sh('mkfs.vfat', [img]);
    const local = join(tmp, 'vfat-files');
    mkdirSync(local, { recursive: true });
    const fill = Array.from({ length: 256 }, (_, i) => {
      const p = join(local, `f${i}`);
      writeFileSync(p, bytes(8192, 10 + (i % 5)));
      return p;
    });
    sh('mcopy', ['-i', img, ...fill, '::/']);
    for (let i = 0; i < 256; i += 2) sh('mdel', ['-i', img, `::/f${i}`]);
    writeFileSync(join(local, 'frag.bin'), FRAG);
    writeFileSync(join(local, 'big.bin'), BIG);
    sh('mcopy', ['-i', img, join(local, 'frag.bin'), join(local, 'big.bin'), '::/']);
    return img;
  }
  let loop = '';
  if (fs === 'ext4') {
    sh('mkfs.ext4', ['-q', '-F', img]);
    sh('mount', ['-o', 'loop', img, mnt]);
  } else if (fs === 'exfat') {
    sh('mkfs.exfat', [img]);
    loop = sh('losetup', ['-f', '--show', img]).trim();
    sh('mount.exfat-fuse', [loop, mnt]);
  } else {
    sh('mkntfs', ['-q', '-F', '-f', img]);
    sh('ntfs-3g', [img, mnt]);
  }
  try {
    if (fs === 'ext4') {
      // Two files grown in turn, each step forced onto the disk: their blocks interleave.
      const a = openSync(join(mnt, 'frag.bin'), 'w');
      const b = openSync(join(mnt, 'other.bin'), 'w');
      for (let off = 0; off < FRAG.length; off += 16384) {
        writeSync(a, FRAG, off, Math.min(16384, FRAG.length - off));
        fsyncSync(a);
        writeSync(b, bytes(16384, 5));
        fsyncSync(b);
      }
      closeSync(a);
      closeSync(b);
      const sp = openSync(join(mnt, 'sparse.bin'), 'w');
      writeSync(sp, SPARSE, 2 * MiB, 70_000, 2 * MiB);
      closeSync(sp);
      execFileSync('truncate', ['-s', String(SPARSE.length), join(mnt, 'sparse.bin')]);
      sh('fallocate', ['-l', String(PREALLOC.length), join(mnt, 'prealloc.bin')]);
      const pa = openSync(join(mnt, 'prealloc.bin'), 'r+');
      writeSync(pa, PREALLOC, 0, 100_000, 0);
      closeSync(pa);
    } else {
      writeIntoGaps(mnt, 'frag.bin', FRAG);
    }
    if (fs === 'ntfs') {
      const sp = openSync(join(mnt, 'sparse.bin'), 'w');
      writeSync(sp, SPARSE, 2 * MiB, 70_000, 2 * MiB);
      closeSync(sp);
      execFileSync('truncate', ['-s', String(SPARSE.length), join(mnt, 'sparse.bin')]);
    }
    writeFileSync(join(mnt, 'big.bin'), BIG);
    sh('sync', []);
  } finally {
    sh('umount', [mnt]);
    if (loop) sh('losetup', ['-d', loop]);
  }
  return img;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test('istat run lists: holes only on ext, unknown flags and NTFS attributes that are not plain go to icat', () => {
  const ext = 'inode: 14\nDirect Blocks:\n  Starting address: X, length: 2  Filler\n  Starting address: 100, length: 3  \n  Starting address: X, length: 4  Sparse\n';
  assert.equal(parseRuns(ext, 'ext', '14', 9 * 4096, 4096), [{ start: null, length: 2 }, { start: 100, length: 3 }, { start: null, length: 4 }]);
  assert.is(parseRuns(ext, 'ext', '14', 9 * 4096 + 1, 4096), null, 'runs short of the size');
  assert.is(parseRuns('Direct Blocks:\n  Starting address: 5, length: 1  Encrypted\n', 'ext', '5', 10, 4096), null, 'an unknown flag');
  assert.is(parseRuns('inode: 12\nsize: 10\n', 'ext', '12', 10, 4096), null, 'no run list (inline data)');
  assert.equal(parseRuns('Sectors:\n  Starting address: 300, length: 8  \n  Starting address: 900, length: 2  \n', 'fat', '4', 5000, 512), [{ start: 300, length: 8 }, { start: 900, length: 2 }]);
  assert.is(parseRuns('Sectors:\n  Starting address: X, length: 8  Sparse\n', 'exfat', '4', 5000, 512), null, 'no holes on FAT or exFAT');
  const ntfs = (flags: string, init: number, id = 2) => `Attributes: \nType: $STANDARD_INFORMATION (16-0)   Name: N/A   Resident   size: 48\nType: $DATA (128-${id})   Name: N/A   Non-Resident${flags}   size: 10000  init_size: ${init}\n  Starting address: 77, length: 3  \n`;
  assert.equal(parseRuns(ntfs('', 10000), 'ntfs', '64-128-2', 10000, 4096), [{ start: 77, length: 3 }]);
  assert.is(parseRuns(ntfs(', Sparse', 10000), 'ntfs', '64-128-2', 10000, 4096), null, 'sparse');
  assert.is(parseRuns(ntfs(', Compressed', 10000), 'ntfs', '64-128-2', 10000, 4096), null, 'compressed');
  assert.is(parseRuns(ntfs('', 8192), 'ntfs', '64-128-2', 10000, 4096), null, 'initialised in part');
  assert.is(parseRuns(ntfs('', 10000, 5), 'ntfs', '64-128-2', 10000, 4096), null, 'another attribute than the address names');
  assert.is(parseRuns('Type: $DATA (128-2)   Name: N/A   Resident   size: 3\n', 'ntfs', '65-128-2', 3, 4096), null, 'resident');
  assert.is(parseRuns('Type: $DATA (128-4)   Name: secret   Non-Resident   size: 10000  init_size: 10000\n  Starting address: 77, length: 3  \n', 'ntfs', '64-128-4', 10000, 4096), null, 'a named stream');
});

for (const fs of kinds) {
  test(`${fs}: large, fragmented${fs === 'ext4' ? ', sparse and preallocated' : ''} files read from their runs are byte-identical`, async () => {
    const img = image(fs);
    const view = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: TSK_TYPE[fs] });
    const unit = await view.dataUnitSize();
    const files: [string, Buffer, 'runs' | 'icat'][] = [['/big.bin', BIG, 'runs'], ['/frag.bin', FRAG, 'runs']];
    if (fs === 'ext4') files.push(['/sparse.bin', SPARSE, 'runs'], ['/prealloc.bin', PREALLOC, 'runs']);
    if (fs === 'ntfs') files.push(['/sparse.bin', SPARSE, 'icat']);
    for (const [path, want, how] of files) {
      const entry = await view.stat(path);
      assert.is(entry.size, want.length, `${path}: size`);
      const runs = await runsOf(view.source, entry.address, entry.size, unit);
      assert.is(runs === null ? 'icat' : 'runs', how, `${path}: read by ${how}`);
      if (path === '/frag.bin') assert.ok(runs!.filter((r) => r.start !== null).length > 1, `${path} is fragmented: ${JSON.stringify(runs)}`);
      if (fs === 'ext4') assert.ok(await new ExtentReader(view.source, unit).runs(entry.inode, entry.size), `${path}: its extents are read from its inode`);
      const got = await readAll(await view.content(entry));
      assert.is(got.length, want.length, `${path}: length`);
      assert.ok(got.equals(want), `${path}: content`);
    }
  });
}

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
