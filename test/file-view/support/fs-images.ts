/**
 * Drive images with one partition per filesystem file-view reads, each
 * filled by that filesystem's own tools: mkfs.ext4 -d and debugfs, mkfs.vfat
 * and mtools, mkfs.exfat and exfat-fuse on a loop device, mkntfs and ntfs-3g.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync, linkSync, symlinkSync, readdirSync, lstatSync, lutimesSync } from 'node:fs';
import { join } from 'node:path';
import { sparseImage } from '../../support/images.ts';

export type FsName = 'ext4' | 'vfat' | 'exfat' | 'ntfs';
export const MiB = 1024 * 1024;
const PART_MIB = 24;
/** Fixed times, so two trees written apart compare by content, not by when they were made. */
export const T0 = 1_700_000_000;

function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], input }).toString();
}

/**
 * The files every filesystem gets: folders, a long and a non-ASCII name, a
 * file of random bytes spanning many blocks. `extra` adds or overrides
 * files (path → content); `null` leaves one out.
 */
export function makeTree(dir: string, name: string, extra: Record<string, string | Buffer | null> = {}): string {
  const files: Record<string, string | Buffer | null> = {
    'a.txt': 'hello\n',
    'dir/sub/big.bin': patterned(300_000),
    'dir/Ünïcødé файл.txt': 'Ünïcødé\n',
    'dir/A very long file name that is well past eight dot three characters.txt': 'long\n',
    ...extra,
  };
  const root = join(dir, name);
  mkdirSync(root, { recursive: true });
  for (const [p, content] of Object.entries(files)) {
    if (content === null) continue;
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), content);
  }
  return root;
}

/** The same bytes every call: two trees made apart hold the same big file. */
export function patterned(size: number): Buffer {
  const b = Buffer.alloc(size);
  let x = 0x9e3779b9;
  for (let i = 0; i < size; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** Sets every mtime in a tree to T0, a symlink's own included (folders last, since writing into a folder moves its time). */
export function fixTimes(root: string): void {
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (lstatSync(p).isDirectory()) walk(p);
      // lutimes: utimes would follow a symlink and leave the link's own time at when it was made.
      lutimesSync(p, T0, T0);
    }
  };
  walk(root);
}

function copyTreeInto(root: string, mnt: string, fs: FsName): void {
  sh('cp', ['-r', '--preserve=timestamps', '--no-dereference', `${root}/.`, mnt]);
  if (fs === 'ntfs') linkSync(join(mnt, 'a.txt'), join(mnt, 'hard.txt'));
}

/** A filesystem image of PART_MIB filled from `root`, with a deleted file `deleted.txt` and, where the fs has them, a hard link, a symlink and a sparse file. */
export function filesystemImage(dir: string, fs: FsName, root: string): string {
  const img = join(dir, `${fs}.fs`);
  sparseImage(img, PART_MIB * MiB);
  const withDeleted = join(dir, `${fs}-src`);
  rmSync(withDeleted, { recursive: true, force: true });
  sh('cp', ['-a', root, withDeleted]);
  writeFileSync(join(withDeleted, 'deleted.txt'), 'gone soon\n');
  if (fs === 'ext4') {
    linkSync(join(withDeleted, 'a.txt'), join(withDeleted, 'hard.txt'));
    symlinkSync('a.txt', join(withDeleted, 'link'));
    const sp = join(withDeleted, 'sparse.bin');
    writeFileSync(sp, '');
    truncateSync(sp, 3 * MiB);
    writeFileSync(sp, 'tail\n', { flag: 'a' });
  }
  fixTimes(withDeleted);
  if (fs === 'ext4') {
    sh('mkfs.ext4', ['-q', '-F', '-d', withDeleted, img]);
    sh('debugfs', ['-w', '-R', 'rm deleted.txt', img]);
  } else if (fs === 'vfat') {
    sh('mkfs.vfat', [img]);
    sh('mcopy', ['-s', '-m', '-i', img, ...readdirSync(withDeleted).map((n) => join(withDeleted, n)), '::/']);
    sh('mdel', ['-i', img, '::/deleted.txt']);
  } else {
    sh(fs === 'exfat' ? 'mkfs.exfat' : 'mkntfs', fs === 'exfat' ? [img] : ['-q', '-F', '-f', img]);
    const mnt = mkdtempSync(join(dir, 'mnt-'));
    const loop = fs === 'exfat' ? sh('losetup', ['-f', '--show', img]).trim() : '';
    try {
      if (fs === 'exfat') sh('mount.exfat-fuse', [loop, mnt]);
      else sh('ntfs-3g', [img, mnt]);
      try {
        copyTreeInto(withDeleted, mnt, fs);
        if (fs === 'ntfs') {
          writeFileSync(join(mnt, 'sparse.bin'), '');
          truncateSync(join(mnt, 'sparse.bin'), 3 * MiB);
          writeFileSync(join(mnt, 'sparse.bin'), 'tail\n', { flag: 'a' });
        }
        sh('sync', []);
        rmSync(join(mnt, 'deleted.txt'));
      } finally {
        sh('umount', [mnt]);
      }
    } finally {
      if (loop) sh('losetup', ['-d', loop]);
    }
  }
  return img;
}

/** A GPT drive image holding the given filesystem images as partitions 1, 2, …; their byte offsets. */
export function driveImage(path: string, fsImages: string[]): { path: string; starts: number[] } {
  const size = (fsImages.length * PART_MIB + 2) * MiB;
  sparseImage(path, size);
  sh('sfdisk', ['-q', path], `label: gpt\n${fsImages.map(() => `,${PART_MIB}M,L\n`).join('')}`);
  const json = JSON.parse(sh('sfdisk', ['-J', path])) as { partitiontable: { partitions: { start: number }[] } };
  const starts = json.partitiontable.partitions.map((p) => p.start * 512);
  fsImages.forEach((img, i) => sh('dd', [`if=${img}`, `of=${path}`, 'bs=1M', `seek=${starts[i]! / MiB}`, 'conv=notrunc,sparse', 'status=none']));
  return { path, starts };
}
