/**
 * Which block devices are in use by this machine: mounted, swapped on, or
 * holding the controller's own root filesystem.
 */
import { readFileSync } from 'node:fs';
import { linuxRoots, readBlockNode, listDisks, listPartitions, type SysRoots } from './sysfs.ts';

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

/** Active swap devices by path, from `/proc/swaps`. */
function readSwaps(path = '/proc/swaps'): string[] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .slice(1)
      .map((l) => l.split(/\s+/)[0]!)
      .filter(Boolean);
  } catch {
    return [];
  }
}

export interface UsageReport {
  /** Mount points of the node or any partition of its disk. */
  readonly mountPoints: string[];
  /** The disk carries the controller's own root (or /boot) filesystem. */
  readonly isSystemDisk: boolean;
  readonly swaps: string[];
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
export function diskUsage(diskName: string, roots: SysRoots = linuxRoots, mounts = readMounts()): UsageReport {
  const diskDev = listDisks(roots).find((mm) => readBlockNode(mm, roots)?.name === diskName);
  const nodes = new Set<string>(diskDev ? [diskDev, ...listPartitions(diskName, roots)] : []);
  const names = new Set<string>([...nodes].map((mm) => readBlockNode(mm, roots)?.name).filter((n): n is string => !!n));
  return {
    mountPoints: mounts.filter((m) => nodes.has(m.majorMinor)).map((m) => m.mountPoint),
    isSystemDisk: systemDisks(roots, mounts).has(diskName),
    swaps: readSwaps().filter((s) => names.has(s.replace(/^\/dev\//, ''))),
  };
}

/** Loop devices whose backing file is `realPath` (an image file attached with losetup). */
export function loopDevicesFor(realPath: string, roots: SysRoots = linuxRoots): string[] {
  const out: string[] = [];
  for (const mm of listDisks(roots)) {
    const node = readBlockNode(mm, roots);
    if (node?.backingFile && node.backingFile.replace(/ \(deleted\)$/, '') === realPath) out.push(node.name);
  }
  return out;
}
