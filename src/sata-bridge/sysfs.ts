/**
 * What Linux says about a block device: geometry and identity from sysfs and
 * the udev database. The roots are parameters so tests can use a fake tree.
 */
import { readFileSync, readlinkSync, existsSync, readdirSync } from 'node:fs';
import { join, basename, dirname, resolve } from 'node:path';

export interface SysRoots {
  /** Usually `/sys`. */
  readonly sys: string;
  /** Usually `/run/udev/data`. */
  readonly udevData: string;
}

export const linuxRoots: SysRoots = { sys: '/sys', udevData: '/run/udev/data' };

export interface BlockNodeInfo {
  /** Kernel name, `sda` or `sda1` or `loop3`. */
  readonly name: string;
  readonly majorMinor: string;
  readonly isPartition: boolean;
  /** Whole disk this node is or belongs to. */
  readonly disk: string;
  /** Byte offset of a partition in its disk (0 for a disk). */
  readonly startBytes: number;
  readonly sizeBytes: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly readOnly: boolean;
  readonly removable: boolean;
  readonly model?: string;
  readonly vendor?: string;
  readonly serial?: string;
  readonly wwn?: string;
  /** For loop devices, the file behind it. */
  readonly backingFile?: string;
  readonly bridge?: { vendorId: string; productId: string; driver?: string; product?: string };
}

/** A sysfs or procfs attribute, trimmed; undefined when it cannot be read or is empty. */
export function readTrim(path: string): string | undefined {
  try {
    const value = readFileSync(path, 'utf8').trim();
    return value === '' ? undefined : value;
  } catch {
    return undefined;
  }
}

function readNumber(path: string): number | undefined {
  const text = readTrim(path);
  if (text === undefined) return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/** `E:KEY=value` lines of a udev database entry. */
export function readUdevProperties(roots: SysRoots, majorMinor: string): Map<string, string> {
  const props = new Map<string, string>();
  const text = readTrim(join(roots.udevData, `b${majorMinor}`));
  if (!text) return props;
  for (const line of text.split('\n')) {
    if (!line.startsWith('E:')) continue;
    const eq = line.indexOf('=');
    if (eq > 2) props.set(line.slice(2, eq), line.slice(eq + 1));
  }
  return props;
}

/** Walks up from the block device's sysfs node to the USB device that carries it, if any. */
function findUsbBridge(devicePath: string): BlockNodeInfo['bridge'] {
  let dir = devicePath;
  let driver: string | undefined;
  while (dir !== '/' && dir.length > 1) {
    const drv = join(dir, 'driver');
    if (!driver && existsSync(drv)) {
      const name = basename(readlinkSafe(drv) ?? '');
      if (name === 'uas' || name === 'usb-storage') driver = name;
    }
    const vendorId = readTrim(join(dir, 'idVendor'));
    const productId = readTrim(join(dir, 'idProduct'));
    if (vendorId && productId) return { vendorId, productId, driver, product: readTrim(join(dir, 'product')) };
    dir = dirname(dir);
  }
  return undefined;
}

function readlinkSafe(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/** Reads one block node, by its `major:minor`. Returns undefined when sysfs does not know it. */
export function readBlockNode(majorMinor: string, roots: SysRoots = linuxRoots): BlockNodeInfo | undefined {
  const link = join(roots.sys, 'dev/block', majorMinor);
  const target = readlinkSafe(link);
  if (!target) return undefined;
  const nodeDir = resolve(dirname(link), target);
  const name = basename(nodeDir);
  const isPartition = existsSync(join(nodeDir, 'partition'));
  const diskDir = isPartition ? dirname(nodeDir) : nodeDir;
  const disk = basename(diskDir);
  const sectors512 = readNumber(join(nodeDir, 'size')) ?? 0;
  const start512 = isPartition ? readNumber(join(nodeDir, 'start')) ?? 0 : 0;
  const logical = readNumber(join(diskDir, 'queue/logical_block_size')) ?? 512;
  const physical = readNumber(join(diskDir, 'queue/physical_block_size')) ?? logical;
  const udev = readUdevProperties(roots, majorMinor);
  const deviceDir = join(diskDir, 'device');
  const wwid = readTrim(join(deviceDir, 'wwid'));
  const wwn = udev.get('ID_WWN_WITH_EXTENSION') ?? udev.get('ID_WWN') ?? (wwid?.startsWith('naa.') ? wwid : undefined);
  const realDevice = existsSync(deviceDir) ? resolve(diskDir, readlinkSafe(deviceDir) ?? 'device') : undefined;
  return {
    name,
    majorMinor,
    isPartition,
    disk,
    startBytes: start512 * 512,
    sizeBytes: sectors512 * 512,
    logicalSectorSize: logical,
    physicalSectorSize: physical,
    readOnly: readTrim(join(nodeDir, 'ro')) === '1',
    removable: readTrim(join(diskDir, 'removable')) === '1',
    model: udev.get('ID_MODEL') ?? readTrim(join(deviceDir, 'model')),
    vendor: udev.get('ID_VENDOR') ?? readTrim(join(deviceDir, 'vendor')),
    serial: udev.get('ID_SCSI_SERIAL') ?? udev.get('ID_SERIAL_SHORT') ?? readTrim(join(deviceDir, 'serial')),
    wwn,
    backingFile: readTrim(join(diskDir, 'loop/backing_file')),
    bridge: realDevice ? findUsbBridge(realDevice) : undefined,
  };
}

/** The kernel names of every whole disk (`/sys/block/*`: sda, loop0, nbd1…); empty when sysfs cannot be read. */
export function blockNames(roots: SysRoots = linuxRoots): string[] {
  try {
    return readdirSync(join(roots.sys, 'block'));
  } catch {
    return [];
  }
}

/** Every whole disk sysfs lists (`/sys/block/*`), as `major:minor`. */
export function listDisks(roots: SysRoots = linuxRoots): string[] {
  const out: string[] = [];
  for (const name of blockNames(roots).sort()) {
    const dev = readTrim(join(roots.sys, 'block', name, 'dev'));
    if (dev) out.push(dev);
  }
  return out;
}

/** Partitions of a whole disk, as `major:minor`. */
export function listPartitions(disk: string, roots: SysRoots = linuxRoots): string[] {
  const dir = join(roots.sys, 'block', disk);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.startsWith(disk) && existsSync(join(dir, n, 'partition')))
    .sort()
    .map((n) => readTrim(join(dir, n, 'dev')))
    .filter((d): d is string => d !== undefined);
}

/**
 * What holds a block node (`/sys/block/NAME/holders`, or a partition's): device
 * mapper (LVM, dm-crypt, multipath) and md arrays built on it, each named as an
 * operator would recognise it.
 */
export function holdersOf(name: string, roots: SysRoots = linuxRoots): string[] {
  const disk = existsSync(join(roots.sys, 'block', name)) ? join(roots.sys, 'block', name) : undefined;
  const dirs = disk ? [join(disk, 'holders')] : [];
  if (disk) {
    let entries: string[] = [];
    try {
      entries = readdirSync(disk);
    } catch {
      /* no partitions to look at */
    }
    for (const n of entries) if (n.startsWith(name) && existsSync(join(disk, n, 'partition'))) dirs.push(join(disk, n, 'holders'));
  }
  const out: string[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const h of names.sort()) out.push(describeHolder(h, roots));
  }
  return [...new Set(out)];
}

/**
 * The whole disks a stacked device (device mapper, md) is built on, through
 * every level (`/sys/block/NAME/slaves`): writing the stacked device writes them.
 */
export function lowerDisksOf(name: string, roots: SysRoots = linuxRoots, seen = new Set<string>()): string[] {
  const dir = join(roots.sys, 'block', name, 'slaves');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const slave of names.sort()) {
    const mm = readTrim(join(dir, slave, 'dev'));
    const disk = (mm && readBlockNode(mm, roots)?.disk) ?? slave;
    if (seen.has(disk)) continue;
    seen.add(disk);
    out.push(disk, ...lowerDisksOf(disk, roots, seen));
  }
  return out;
}

function describeHolder(name: string, roots: SysRoots): string {
  const base = join(roots.sys, 'block', name);
  const dmName = readTrim(join(base, 'dm/name'));
  if (dmName) {
    const uuid = readTrim(join(base, 'dm/uuid')) ?? '';
    const what = uuid.startsWith('LVM-') ? 'LVM volume' : uuid.startsWith('CRYPT-') ? 'dm-crypt volume' : uuid.startsWith('mpath-') ? 'multipath device' : 'device-mapper device';
    return `${name} (${what} ${dmName})`;
  }
  if (existsSync(join(base, 'md'))) return `${name} (md RAID array)`;
  return name;
}

export function majorMinorOf(rdev: number): string {
  // Linux's encoding of dev_t (glibc's gnu_dev_major / gnu_dev_minor).
  const major = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | ((rdev >>> 12) & ~0xff);
  return `${major}:${minor}`;
}
