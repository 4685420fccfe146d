/**
 * Which block devices are in use by this machine: mounted, swapped on, held
 * (LVM, md, dm), or holding the controller's own root filesystem. Storage is
 * matched by numbers the kernel gives (st_dev/st_ino of a file, st_rdev and
 * major:minor of a device), never by path strings: a hard link, a bind mount
 * or a symlink reaches the same inode under another name.
 */
import { readFileSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { holdersOf, linuxRoots, majorMinorOf, readBlockNode, listDisks, listPartitions, type SysRoots } from './sysfs.ts';

export interface MountInfo {
  readonly majorMinor: string;
  readonly mountPoint: string;
  readonly source: string;
}

/** Parses `/proc/self/mountinfo` (the only file that names devices by major:minor). */
export function readMounts(mountinfoPath = '/proc/self/mountinfo'): MountInfo[] {
  let text: string;
  try {
    text = readFileSync(mountinfoPath, 'utf8');
  } catch {
    return [];
  }
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 10) continue;
    const dash = fields.indexOf('-');
    out.push({ majorMinor: fields[2]!, mountPoint: unescapeMount(fields[4]!), source: dash > 0 ? fields[dash + 2] ?? '' : '' });
  }
  return out;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/**
 * A file's identity, whatever name reaches it: `file:<major:minor of st_dev>:<st_ino>`.
 * Undefined when the path cannot be stat'ed.
 */
export function fileKeyOf(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return fileKey(st.dev, st.ino);
  } catch {
    return undefined;
  }
}

function fileKey(dev: bigint | number, ino: bigint | number | string): string {
  return `file:${majorMinorOf(Number(dev))}:${String(ino)}`;
}

export interface SwapEntry {
  /** As `/proc/swaps` names it. */
  readonly path: string;
  /** `major:minor` of a swap partition or device. */
  readonly majorMinor?: string;
  /** `fileKeyOf` a swap file. */
  readonly fileKey?: string;
}

/** Active swap areas from `/proc/swaps`, each resolved to device or inode numbers. */
export function readSwaps(path = '/proc/swaps'): SwapEntry[] {
  let lines: string[];
  try {
    lines = readFileSync(path, 'utf8').split('\n').slice(1);
  } catch {
    return [];
  }
  const out: SwapEntry[] = [];
  for (const line of lines) {
    // Fields are separated by runs of blanks; a path with spaces is escaped as \040.
    const name = line.split(/\s+/)[0];
    if (!name) continue;
    const swapPath = name.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))).replace(/ \(deleted\)$/, '');
    try {
      const st = statSync(swapPath, { bigint: true });
      out.push(st.isBlockDevice() ? { path: swapPath, majorMinor: majorMinorOf(Number(st.rdev)) } : { path: swapPath, fileKey: fileKey(st.dev, st.ino) });
    } catch {
      out.push({ path: swapPath });
    }
  }
  return out;
}

export interface UsageReport {
  /** Mount points of the node or any partition of its disk. */
  readonly mountPoints: string[];
  /** The disk carries the controller's own root (or /boot) filesystem. */
  readonly isSystemDisk: boolean;
  /** Swap areas on the disk, its partitions, or (for an image) the file itself. */
  readonly swaps: string[];
  /** Device-mapper (LVM, dm-crypt) and md devices built on the disk or its partitions. */
  readonly holders: string[];
}

/** The whole disk (by kernel name) that holds `/`, or the disks, if it sits on several. */
export function systemDisks(roots: SysRoots = linuxRoots, mounts = readMounts()): Set<string> {
  const disks = new Set<string>();
  for (const m of mounts) {
    if (m.mountPoint !== '/' && m.mountPoint !== '/boot' && m.mountPoint !== '/boot/efi') continue;
    const node = readBlockNode(m.majorMinor, roots);
    if (node) disks.add(node.disk);
  }
  return disks;
}

/** How the disk `diskName` is used: every mount of the disk itself or its partitions. */
export function diskUsage(diskName: string, roots: SysRoots = linuxRoots, mounts = readMounts(), swaps = readSwaps()): UsageReport {
  const diskDev = listDisks(roots).find((mm) => readBlockNode(mm, roots)?.name === diskName);
  const nodes = new Set<string>(diskDev ? [diskDev, ...listPartitions(diskName, roots)] : []);
  return {
    mountPoints: mounts.filter((m) => nodes.has(m.majorMinor)).map((m) => m.mountPoint),
    isSystemDisk: systemDisks(roots, mounts).has(diskName),
    swaps: swaps.filter((s) => s.majorMinor !== undefined && nodes.has(s.majorMinor)).map((s) => s.path),
    holders: holdersOf(diskName, roots),
  };
}

/**
 * The file behind a loop device, by identity. The sysfs path is what the file
 * was called when attached; when that name is gone (" (deleted)", renamed
 * away) the kernel's own record of device and inode is asked through losetup.
 */
export function loopBackingKey(loopName: string, backingFile: string, roots: SysRoots = linuxRoots): string | undefined {
  if (!backingFile.endsWith(' (deleted)')) {
    const key = fileKeyOf(backingFile);
    if (key) return key;
  }
  if (roots !== linuxRoots) return undefined;
  try {
    const out = execFileSync('losetup', ['--list', '--json', '--output', 'NAME,BACK-INO,BACK-MAJ:MIN', `/dev/${loopName}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const dev = (JSON.parse(out) as { loopdevices?: { 'back-ino'?: number | string; 'back-maj:min'?: string }[] }).loopdevices?.[0];
    const mm = dev?.['back-maj:min']?.trim();
    if (!dev || dev['back-ino'] === undefined || !mm) return undefined;
    return `file:${mm}:${String(dev['back-ino'])}`;
  } catch {
    return undefined;
  }
}

/** What one loop device is over: a file (by `fileKeyOf`) or a block device (the whole disk it belongs to, by kernel name). */
export interface LoopBacking {
  /** The loop device's kernel name. */
  readonly loop: string;
  readonly file?: string;
  readonly disk?: string;
}

/**
 * Every loop device and what it is over. A backing "file" that is a device
 * node (a loop device over another loop device or a partition) is that
 * device, by its device numbers: the node's own inode says nothing of it.
 */
export function loopBackings(roots: SysRoots = linuxRoots): LoopBacking[] {
  const out: LoopBacking[] = [];
  for (const mm of listDisks(roots)) {
    const node = readBlockNode(mm, roots);
    if (!node?.backingFile) continue;
    if (!node.backingFile.endsWith(' (deleted)')) {
      try {
        const st = statSync(node.backingFile);
        if (st.isBlockDevice()) {
          const lower = majorMinorOf(st.rdev);
          out.push({ loop: node.name, disk: readBlockNode(lower, roots)?.disk ?? `dev-${lower}` });
          continue;
        }
      } catch {
        /* gone meanwhile: asked through losetup below */
      }
    }
    out.push({ loop: node.name, file: loopBackingKey(node.name, node.backingFile, roots) });
  }
  return out;
}
