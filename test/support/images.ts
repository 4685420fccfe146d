/** Image files for tests: random, sparse, or partitioned with real filesystems. */
import { mkdtempSync, rmSync, openSync, writeSync, closeSync, readFileSync, readSync, ftruncateSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { xorshift32 } from './xorshift.ts';

/** A temp folder removed at exit. Under /var/tmp by default: tmpfs would refuse O_DIRECT. */
export function tempDir(prefix = 'dpsr-test-'): string {
  const base = process.env.DPSR_TEST_TMP ?? tmpdir();
  const dir = mkdtempSync(join(base, prefix));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function sparseImage(path: string, size: number): string {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  closeSync(fd);
  return path;
}

/** An image of `size` bytes of pseudo-random data (seeded, so runs repeat). */
export function randomImage(path: string, size: number, seed = 1): string {
  const fd = openSync(path, 'w');
  const block = Buffer.alloc(1 << 20);
  const next = xorshift32(seed);
  for (let off = 0; off < size; off += block.length) {
    for (let i = 0; i < block.length; i += 4) block.writeUInt32LE(next(), i);
    writeSync(fd, block, 0, Math.min(block.length, size - off), off);
  }
  closeSync(fd);
  return path;
}

/** Overwrites `count` scattered 4 KiB blocks with random bytes; returns their offsets. */
export function scatterWrites(path: string, size: number, count: number, blockSize = 4096): number[] {
  const fd = openSync(path, 'r+');
  const offsets: number[] = [];
  const blocks = Math.floor(size / blockSize);
  for (let i = 0; i < count; i++) {
    const off = Math.floor(Math.random() * blocks) * blockSize;
    writeSync(fd, randomBytes(blockSize), 0, blockSize, off);
    offsets.push(off);
  }
  closeSync(fd);
  return offsets;
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export function sha256Range(path: string, start: number, length: number): string {
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(length);
  try {
    readSync(fd, buf, 0, length, start);
  } finally {
    closeSync(fd);
  }
  return createHash('sha256').update(buf).digest('hex');
}

export interface PartitionedImage {
  readonly path: string;
  readonly size: number;
  /** Byte offsets and sizes of the partitions, in table order. */
  readonly partitions: { start: number; size: number; fs: 'ext4' | 'vfat' }[];
}

/**
 * A drive image with a real partition table (GPT or MBR made by sfdisk), an
 * ext4 partition and a FAT partition, both holding files.
 */
export function partitionedImage(dir: string, name: string, options: { scheme?: 'gpt' | 'mbr'; sizeMiB?: number } = {}): PartitionedImage {
  const sizeMiB = options.sizeMiB ?? 64;
  const path = join(dir, name);
  sparseImage(path, sizeMiB * 1024 * 1024);
  const script = options.scheme === 'mbr' ? `label: dos\n,${Math.floor(sizeMiB / 2)}M,83\n,,c\n` : `label: gpt\n,${Math.floor(sizeMiB / 2)}M,L\n,,EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n`;
  execFileSync('sfdisk', ['-q', path], { input: script });
  const json = JSON.parse(execFileSync('sfdisk', ['-J', path]).toString()) as { partitiontable: { partitions: { start: number; size: number }[]; sectorsize?: number } };
  const sector = json.partitiontable.sectorsize ?? 512;
  const parts = json.partitiontable.partitions.map((p, i) => ({ start: p.start * sector, size: p.size * sector, fs: (i === 0 ? 'ext4' : 'vfat') as 'ext4' | 'vfat' }));
  // The ext4 partition gets files from a folder; the FAT one through mtools: no mount, no root needed.
  const content = join(dir, `${name}.content`);
  mkdirSync(join(content, 'etc'), { recursive: true });
  writeFileSync(join(content, 'etc/hostname'), 'dpsr-test\n');
  writeFileSync(join(content, 'data.bin'), randomBytes(256 * 1024));
  const ext = parts[0]!;
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', content, '-E', `offset=${ext.start}`, path, `${ext.size / 1024}k`], { stdio: 'pipe' });
  const fat = parts[1]!;
  execFileSync('mkfs.vfat', ['--offset', String(fat.start / 512), path, String(fat.size / 1024)], { stdio: 'pipe' });
  writeFileSync(join(dir, `${name}.readme`), 'hello from FAT\n');
  execFileSync('mcopy', ['-i', `${path}@@${fat.start}`, join(dir, `${name}.readme`), '::README.TXT'], { stdio: 'pipe' });
  rmSync(content, { recursive: true, force: true });
  return { path, size: sizeMiB * 1024 * 1024, partitions: parts };
}

/** Adds or changes a file in the ext4 partition of an image (debugfs, no mount). */
export function writeExt4File(image: PartitionedImage, partIndex: number, name: string, content: Buffer | string, dir: string): void {
  const p = image.partitions[partIndex]!;
  const local = join(dir, `upload-${Date.now()}-${Math.random()}`);
  writeFileSync(local, content);
  // debugfs works on a file, so the partition is cut out and put back.
  const part = join(dir, `part-${Date.now()}.img`);
  execFileSync('dd', [`if=${image.path}`, `of=${part}`, 'bs=512', `skip=${p.start / 512}`, `count=${p.size / 512}`, 'status=none']);
  execFileSync('debugfs', ['-w', '-R', `rm ${name}`, part], { stdio: 'pipe' });
  execFileSync('debugfs', ['-w', '-R', `write ${local} ${name}`, part], { stdio: 'pipe' });
  execFileSync('dd', [`if=${part}`, `of=${image.path}`, 'bs=512', `seek=${p.start / 512}`, 'conv=notrunc', 'status=none']);
  rmSync(part);
  rmSync(local);
}

/** Deletes a file from the ext4 partition of an image (debugfs, no mount). */
export function removeExt4File(image: PartitionedImage, partIndex: number, name: string, dir: string): void {
  const p = image.partitions[partIndex]!;
  const part = join(dir, `part-${Date.now()}.img`);
  execFileSync('dd', [`if=${image.path}`, `of=${part}`, 'bs=512', `skip=${p.start / 512}`, `count=${p.size / 512}`, 'status=none']);
  execFileSync('debugfs', ['-w', '-R', `rm ${name}`, part], { stdio: 'pipe' });
  execFileSync('dd', [`if=${part}`, `of=${image.path}`, 'bs=512', `seek=${p.start / 512}`, 'conv=notrunc', 'status=none']);
  rmSync(part);
}

/** The partitions of an existing drive image as sfdisk reads them (every one taken for ext4: give the index of one that is). */
export function imagePartitions(path: string): PartitionedImage {
  const json = JSON.parse(execFileSync('sfdisk', ['-J', path]).toString()) as { partitiontable: { partitions: { start: number; size: number }[]; sectorsize?: number } };
  const sector = json.partitiontable.sectorsize ?? 512;
  return { path, size: statSync(path).size, partitions: json.partitiontable.partitions.map((p) => ({ start: p.start * sector, size: p.size * sector, fs: 'ext4' as const })) };
}

/** Adds a file to the FAT partition (mtools). */
export function writeFatFile(image: PartitionedImage, partIndex: number, name: string, content: Buffer | string, dir: string): void {
  const p = image.partitions[partIndex]!;
  const local = join(dir, `fat-upload-${Date.now()}`);
  writeFileSync(local, content);
  execFileSync('mcopy', ['-o', '-i', `${image.path}@@${p.start}`, local, `::${name}`], { stdio: 'pipe' });
  rmSync(local);
}

/** Runs fsck read-only on a partition of an image; returns its exit code and output. */
export function fsckPartition(path: string, part: { start: number; size: number; fs: 'ext4' | 'vfat' }, dir: string): { code: number; output: string } {
  const cut = join(dir, `fsck-${Date.now()}-${Math.random()}.img`);
  execFileSync('dd', [`if=${path}`, `of=${cut}`, 'bs=512', `skip=${part.start / 512}`, `count=${part.size / 512}`, 'status=none']);
  try {
    const args = part.fs === 'ext4' ? ['e2fsck', '-fn', cut] : ['fsck.vfat', '-n', cut];
    execFileSync(args[0]!, args.slice(1), { stdio: 'pipe' });
    return { code: 0, output: '' };
  } catch (e) {
    const err = e as { status?: number; stdout?: Buffer; stderr?: Buffer };
    return { code: err.status ?? 1, output: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  } finally {
    rmSync(cut, { force: true });
  }
}
