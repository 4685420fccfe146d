/**
 * The simulated rig's drives: the system drive built with a real GPT, a FAT
 * EFI partition and two ext4 partitions holding files (or copied from a
 * given bootable image), and blank drives.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DeviceError, NoSpaceError } from '../../../src/errors.ts';

const MiB = 1024 * 1024;

function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'], encoding: 'utf8' });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new DeviceError(`${cmd} is not installed: the simulated rig needs it to build its system drive`, { hint: 'install fdisk, e2fsprogs, dosfstools and mtools' });
    throw new DeviceError(`${cmd} ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
  }
}

/**
 * A build step that failed because the filesystem under the drive image is
 * full (the tools say so only as a bare failure, sfdisk not even that): the
 * same meaning as every other full state directory, with what to do.
 */
function fullFilesystem(path: string, e: unknown): unknown {
  let free: number;
  try {
    const s = statfsSync(dirname(path));
    free = s.bavail * s.bsize;
  } catch {
    return e;
  }
  if (free >= MiB) return e;
  return new NoSpaceError(`the filesystem of ${dirname(path)} is full (${Math.floor(free / 1024)} KiB free): the simulated rig could not build its drive ${path}`, {
    hint: 'the simulated rig keeps its drives (sparse image files, a few MiB of real data each) in the state directory: free space there, or give dpsrd a --state-dir on a larger filesystem',
    cause: e,
  });
}

/** Copies a file into an image at a byte offset. */
function copyInto(image: string, offset: number, file: string): void {
  const data = readFileSync(file);
  const fd = openSync(image, 'r+');
  try {
    let done = 0;
    while (done < data.length) done += writeSync(fd, data, done, data.length - done, offset + done);
  } finally {
    closeSync(fd);
  }
}

/**
 * Builds the simulated system drive: GPT with an EFI system partition (FAT),
 * a root and a data partition (ext4), each holding a few files.
 */
export function buildSystemDrive(path: string, sizeMiB: number): void {
  const work = mkdtempSync(join(path, '..', '.build-'));
  try {
    const fd = openSync(path, 'w');
    ftruncateSync(fd, sizeMiB * MiB);
    closeSync(fd);
    const efiMiB = Math.max(4, Math.floor(sizeMiB / 8));
    const rootMiB = Math.max(8, Math.floor((sizeMiB - efiMiB - 2) / 2));
    run('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', path], [
      'label: gpt',
      `start=2048, size=${efiMiB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI"`,
      `size=${rootMiB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"`,
      'type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data"',
      '',
    ].join('\n'));
    const table = JSON.parse(run('sfdisk', ['--json', path])) as { partitiontable: { sectorsize?: number; partitions: { start: number; size: number }[] } };
    const sector = table.partitiontable.sectorsize ?? 512;
    const [p1, p2, p3] = table.partitiontable.partitions;
    if (!p1 || !p2 || !p3) throw new DeviceError(`sfdisk did not create three partitions on ${path}`);

    const efi = join(work, 'efi.img');
    run('mkfs.vfat', ['-C', '-n', 'EFI', efi, String((p1.size * sector) / 1024)]);
    const efiFiles = join(work, 'efi-files');
    mkdirSync(join(efiFiles, 'EFI/BOOT'), { recursive: true });
    writeFileSync(join(efiFiles, 'EFI/BOOT/README.TXT'), 'dpsr simulated EFI system partition\r\n');
    writeFileSync(join(efiFiles, 'EFI/BOOT/DPSR.CFG'), 'timeout=3\r\ndefault=linux\r\n');
    run('mcopy', ['-s', '-i', efi, join(efiFiles, 'EFI'), '::/']);
    copyInto(path, p1.start * sector, efi);

    const root = join(work, 'root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    mkdirSync(join(root, 'home/operator'), { recursive: true });
    writeFileSync(join(root, 'etc/hostname'), 'dpsr-sim-host\n');
    writeFileSync(join(root, 'etc/os-release'), 'NAME="dpsr simulated host"\nID=dpsr-sim\n');
    writeFileSync(join(root, 'home/operator/notes.txt'), 'The simulated host keeps its notes here.\n');
    const rootImg = join(work, 'root.img');
    run('mkfs.ext4', ['-q', '-F', '-L', 'root', '-E', 'root_owner=0:0', '-d', root, rootImg, `${(p2.size * sector) / 1024}k`]);
    copyInto(path, p2.start * sector, rootImg);

    const data = join(work, 'data');
    mkdirSync(join(data, 'reports'), { recursive: true });
    writeFileSync(join(data, 'reports/2024-q1.csv'), 'month,units\njan,120\nfeb,98\nmar,143\n');
    writeFileSync(join(data, 'payload.bin'), randomBytes(256 * 1024));
    const dataImg = join(work, 'data.img');
    run('mkfs.ext4', ['-q', '-F', '-L', 'data', '-E', 'root_owner=0:0', '-d', data, dataImg, `${(p3.size * sector) / 1024}k`]);
    copyInto(path, p3.start * sector, dataImg);
  } catch (e) {
    // Looked at before the work folder is removed: that frees the space the failed step lacked.
    throw fullFilesystem(path, e);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Builds the first drive of a simulated data pair: GPT with one ext4
 * partition holding a few files (the host's data disk, no boot code).
 */
export function buildDataDrive(path: string, sizeMiB: number): void {
  const work = mkdtempSync(join(path, '..', '.build-'));
  try {
    const fd = openSync(path, 'w');
    ftruncateSync(fd, sizeMiB * MiB);
    closeSync(fd);
    run('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', path], ['label: gpt', 'start=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data"', ''].join('\n'));
    const table = JSON.parse(run('sfdisk', ['--json', path])) as { partitiontable: { sectorsize?: number; partitions: { start: number; size: number }[] } };
    const sector = table.partitiontable.sectorsize ?? 512;
    const [p1] = table.partitiontable.partitions;
    if (!p1) throw new DeviceError(`sfdisk did not create the data partition on ${path}`);
    const data = join(work, 'data');
    mkdirSync(join(data, 'projects'), { recursive: true });
    writeFileSync(join(data, 'projects/ledger.csv'), 'day,entries\nmon,12\ntue,9\n');
    writeFileSync(join(data, 'payload.bin'), randomBytes(256 * 1024));
    const img = join(work, 'data.img');
    run('mkfs.ext4', ['-q', '-F', '-L', 'data', '-E', 'root_owner=0:0', '-d', data, img, `${(p1.size * sector) / 1024}k`]);
    copyInto(path, p1.start * sector, img);
  } catch (e) {
    throw fullFilesystem(path, e);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Bay A from a given bootable image, grown (sparse) to the drive size. */
export function copySystemImage(image: string, path: string, sizeMiB: number): void {
  copyFileSync(image, path);
  const fd = openSync(path, 'r+');
  try {
    ftruncateSync(fd, sizeMiB * MiB);
  } finally {
    closeSync(fd);
  }
}

export function blankDrive(path: string, sizeMiB: number): void {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, sizeMiB * MiB);
  closeSync(fd);
}

