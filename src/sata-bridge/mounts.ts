/**
 * Which block devices are in use by this machine: mounted, swapped on, held
 * (LVM, md, dm), or holding the controller's own root filesystem. Storage is
 * matched by numbers the kernel gives (st_dev/st_ino of a file, st_rdev and
 * major:minor of a device), never by path strings: a hard link, a bind mount
 * or a symlink reaches the same inode under another name.
 */
import { closeSync, constants, openSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { holdersOf, linuxRoots, majorMinorOf, readBlockNode, listDisks, listPartitions, type SysRoots } from './sysfs.ts';

export interface MountInfo {
  readonly majorMinor: string;
  readonly mountPoint: string;
  readonly source: string;
  /** The kernel's mount ID (unique across mount namespaces). */
  readonly mountId?: string;
  /** Set for a mount of another mount namespace (a container, a service with a private /tmp, `unshare -m`): a process that lives there. */
  readonly namespace?: { readonly pid: number; readonly command: string };
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
    out.push({ majorMinor: fields[2]!, mountPoint: unescapeMount(fields[4]!), source: dash > 0 ? fields[dash + 2] ?? '' : '', mountId: fields[0]! });
  }
  return out;
}

function pidsOf(proc: string): number[] {
  try {
    return readdirSync(proc).filter((n) => /^\d+$/.test(n)).map(Number);
  } catch {
    return [];
  }
}

function commandOf(proc: string, pid: number): string {
  try {
    return readFileSync(join(proc, String(pid), 'comm'), 'utf8').trim();
  } catch {
    return '?';
  }
}

/**
 * The mounts of this process's namespace, then those of every other mount
 * namespace a process lives in (tagged with one such process): a filesystem
 * mounted in a container or under `unshare -m` is as mounted as one here,
 * though `/proc/self/mountinfo` does not list it. Device numbers are not
 * namespaced, so `majorMinor` compares across them. Namespaces of processes
 * this one may not look into (not root) are left out.
 */
export function readAllMounts(proc = '/proc'): MountInfo[] {
  const own = readMounts(join(proc, 'self/mountinfo'));
  let ownNs: string;
  try {
    ownNs = readlinkSync(join(proc, 'self/ns/mnt'));
  } catch {
    return own;
  }
  const seen = new Set([ownNs]);
  const ownKeys = new Set(own.map((m) => `${m.majorMinor} ${m.mountPoint}`));
  const out = [...own];
  for (const pid of pidsOf(proc)) {
    let ns: string;
    try {
      ns = readlinkSync(join(proc, String(pid), 'ns/mnt'));
    } catch {
      continue;
    }
    if (seen.has(ns)) continue;
    seen.add(ns);
    const namespace = { pid, command: commandOf(proc, pid) };
    for (const m of readMounts(join(proc, String(pid), 'mountinfo'))) {
      // A namespace copied from this one lists the same mounts again: those are said once, as ours.
      if (!ownKeys.has(`${m.majorMinor} ${m.mountPoint}`)) out.push({ ...m, namespace });
    }
  }
  return out;
}

/** A mount point as an operator reads it, naming the namespace when it is not this process's. */
export function describeMount(m: MountInfo): string {
  return m.namespace ? `${m.mountPoint} (in the mount namespace of ${m.namespace.command}, pid ${m.namespace.pid})` : m.mountPoint;
}

/**
 * Block nodes the kernel has given to an exclusive user (a mount in any
 * namespace, swap, md, device mapper, another program's O_EXCL open),
 * by kernel name: an `O_EXCL` open of a block device fails with EBUSY while
 * one holds it, whatever this process can see of that user. `names` are
 * kernel names (`loop3`, `sdb1`); a node whose `/dev` entry is missing or is
 * another device is skipped.
 */
export function exclusivelyClaimed(names: readonly string[], devDir = '/dev'): string[] {
  const out: string[] = [];
  for (const name of names) {
    const path = join(devDir, name);
    try {
      if (!statSync(path).isBlockDevice()) continue;
    } catch {
      continue;
    }
    try {
      closeSync(openSync(path, constants.O_RDONLY | constants.O_EXCL | constants.O_NONBLOCK));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EBUSY') out.push(name);
    }
  }
  return out;
}

/** A process that holds some storage open for writing. */
export interface OpenWriter {
  readonly pid: number;
  readonly command: string;
  /** The name the process opened it by. */
  readonly path: string;
}

/**
 * Processes other than this one that hold a file (by `fileKeyOf`) or a block
 * node (by major:minor) open for writing: an NBD server exporting it
 * (qemu-nbd, nbdkit), a virtual machine running from it, a `dd`. Read from
 * `/proc/PID/fdinfo` (access mode and inode number), so a descriptor is
 * stat'ed only when its inode number matches a file looked for, or when it is
 * a device node: a hung FUSE filesystem under some other descriptor cannot
 * stall the scan. Processes this one may not look into (not root) are left
 * out.
 */
export function openWriters(files: readonly string[], majorMinors: readonly string[], proc = '/proc'): OpenWriter[] {
  if (files.length === 0 && majorMinors.length === 0) return [];
  const inodes = new Set(files.map((f) => f.slice(f.lastIndexOf(':') + 1)));
  const fileSet = new Set(files);
  const nodeSet = new Set(majorMinors);
  const out: OpenWriter[] = [];
  for (const pid of pidsOf(proc)) {
    if (pid === process.pid) continue;
    const fdDir = join(proc, String(pid), 'fd');
    let fds: string[];
    try {
      fds = readdirSync(fdDir);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let info: string;
      let target: string;
      try {
        info = readFileSync(join(proc, String(pid), 'fdinfo', fd), 'utf8');
        target = readlinkSync(join(fdDir, fd));
      } catch {
        continue; // closed meanwhile
      }
      const flags = /^flags:\s*([0-7]+)/m.exec(info)?.[1];
      if (flags === undefined || (parseInt(flags, 8) & 3) === 0) continue;
      const ino = /^ino:\s*(\d+)/m.exec(info)?.[1];
      const maybeFile = ino !== undefined && inodes.has(ino);
      if (!maybeFile && !target.startsWith('/dev/')) continue;
      let hit = false;
      try {
        const st = statSync(join(fdDir, fd), { bigint: true });
        hit = st.isBlockDevice() ? nodeSet.has(majorMinorOf(Number(st.rdev))) : st.isFile() && fileSet.has(fileKey(st.dev, st.ino));
      } catch {
        continue;
      }
      if (hit) {
        out.push({ pid, command: commandOf(proc, pid), path: target });
        break;
      }
    }
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
  /** Mount points of the node or any partition of its disk, in any mount namespace (`describeMount`). */
  readonly mountPoints: string[];
  /** Of `mountPoints`, those seen in another mount namespace, with a process living there (to unmount with `nsenter -t PID -m umount`). */
  readonly otherNamespaces?: { readonly mountPoint: string; readonly pid: number }[];
  /** The disk carries the controller's own root (or /boot) filesystem. */
  readonly isSystemDisk: boolean;
  /** Swap areas on the disk, its partitions, or (for an image) the file itself. */
  readonly swaps: string[];
  /** Device-mapper (LVM, dm-crypt) and md devices built on the disk or its partitions. */
  readonly holders: string[];
}

/** The whole disk (by kernel name) that holds `/`, or the disks, if it sits on several. */
export function systemDisks(roots: SysRoots = linuxRoots, mounts: readonly MountInfo[] = readMounts()): Set<string> {
  const disks = new Set<string>();
  for (const m of mounts) {
    // Another namespace's root (a container's) is not the controller's system.
    if (m.namespace) continue;
    if (m.mountPoint !== '/' && m.mountPoint !== '/boot' && m.mountPoint !== '/boot/efi') continue;
    const node = readBlockNode(m.majorMinor, roots);
    if (node) disks.add(node.disk);
  }
  return disks;
}

/** How the disk `diskName` is used: every mount of the disk itself or its partitions. */
export function diskUsage(diskName: string, roots: SysRoots = linuxRoots, mounts = readAllMounts(), swaps = readSwaps()): UsageReport {
  const diskDev = listDisks(roots).find((mm) => readBlockNode(mm, roots)?.name === diskName);
  const nodes = new Set<string>(diskDev ? [diskDev, ...listPartitions(diskName, roots)] : []);
  return {
    mountPoints: mounts.filter((m) => nodes.has(m.majorMinor)).map(describeMount),
    otherNamespaces: mounts.filter((m) => nodes.has(m.majorMinor) && m.namespace).map((m) => ({ mountPoint: m.mountPoint, pid: m.namespace!.pid })),
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
