/**
 * Opening a drive by path: an image file, a Linux block device (also through
 * /dev/disk/by-id links) or an NBD export named by its URI. Never creates
 * anything: a missing node is an error.
 */
import { constants, existsSync, realpathSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { open, type FileHandle } from 'node:fs/promises';
import { BadInputError, BusyError, DeviceError, NotFoundError } from '../errors.ts';
import type { BlockDevice, DriveIdentity, OpenOptions } from './block-device.ts';
import { blockNames, linuxRoots, listDisks, readTrim, listPartitions, lowerDisksOf, majorMinorOf, readBlockNode, type BlockNodeInfo, type SysRoots } from './sysfs.ts';
import { diskUsage, exclusivelyClaimed, fileKeyOf, loopBackings, openWriters, readAllMounts, readSwaps, type OpenWriter, type UsageReport } from './mounts.ts';
import { NbdDrive, isNbdUri, parseNbdUri, type NbdUri } from './nbd-drive.ts';

/** Where a path leads, before anything is opened. */
export type DriveLocation = LocalLocation | NbdLocation;

export interface LocalLocation {
  readonly requested: string;
  readonly realPath: string;
  readonly kind: 'image' | 'block';
  readonly stats: Stats;
  /** sysfs view of a block device. */
  readonly node?: BlockNodeInfo;
}

/** An NBD export: its size and sectors are known once connected. */
export interface NbdLocation {
  readonly requested: string;
  /** The canonical URI. */
  readonly realPath: string;
  readonly kind: 'nbd';
  readonly uri: NbdUri;
  readonly stats?: undefined;
  readonly node?: undefined;
}

/** Logical sector size of image files: 512 unless a `.4k` name or an option says 4096. */
export const DEFAULT_IMAGE_SECTOR = 512;

export function locateDrive(path: string, roots: SysRoots = linuxRoots): DriveLocation {
  if (typeof path !== 'string' || path.trim() === '') throw new BadInputError('no drive given', { hint: 'name a drive by /dev/disk/by-id/…, a device path, an image file or an NBD URI' });
  if (isNbdUri(path)) {
    const uri = parseNbdUri(path);
    return { requested: path, realPath: uri.canonical, kind: 'nbd', uri };
  }
  let realPath: string;
  try {
    realPath = realpathSync(path);
  } catch {
    throw new NotFoundError(`no drive at ${path}: the path does not exist`, { hint: 'run `dpsr drives` to list the drives this controller sees' });
  }
  const stats = statSync(realPath);
  if (stats.isFile()) return { requested: path, realPath, kind: 'image', stats };
  if (stats.isBlockDevice()) {
    const node = readBlockNode(majorMinorOf(stats.rdev), roots);
    return { requested: path, realPath, kind: 'block', stats, node };
  }
  throw new BadInputError(`${path} is neither an image file nor a block device`, { hint: 'name a drive by /dev/disk/by-id/…, a device path or an image file' });
}

/**
 * The storage a location really touches, by kernel numbers: the file behind it
 * (st_dev and st_ino, so a hard link, bind mount or symlink is the same file)
 * and every whole disk that reaches that storage (a partition counts as its
 * disk). Loop devices are followed both ways, through any number of levels:
 * down to what a loop device is over, and up to every loop device over what
 * is reached (another name of the file, or a loop device over a loop device).
 */
export function storageOf(loc: DriveLocation, roots: SysRoots = linuxRoots): { files: string[]; disks: string[] } {
  // An NBD export is matched by its canonical address (in storageKeys); the file it serves from is not visible here.
  if (loc.kind === 'nbd') return { files: [], disks: [] };
  const files = new Set<string>();
  const disks = new Set<string>();
  if (loc.kind === 'image') files.add(fileKeyOf(loc.realPath) ?? `file:${majorMinorOf(loc.stats.dev)}:${loc.stats.ino}`);
  else if (loc.node) disks.add(loc.node.disk);
  else return { files: [], disks: [] };
  const loops = loopBackings(roots);
  for (let grew = true; grew; ) {
    grew = false;
    for (const l of loops) {
      const over = (l.file !== undefined && files.has(l.file)) || (l.disk !== undefined && disks.has(l.disk));
      if (!over && !disks.has(l.loop)) continue;
      // Writing either side writes the other: the loop device and what it is over are one storage.
      for (const [set, key] of [
        [disks, l.loop],
        [files, l.file],
        [disks, l.disk],
      ] as const) {
        if (key !== undefined && !set.has(key)) {
          set.add(key);
          grew = true;
        }
      }
    }
  }
  return { files: [...files], disks: [...disks] };
}

/**
 * Keys for "is the target the source?" checks: two locations share storage
 * when any key is common. A device-mapper or md device counts as the disks it
 * is built on.
 */
export function storageKeys(loc: DriveLocation, roots: SysRoots = linuxRoots): Set<string> {
  const { files, disks } = storageOf(loc, roots);
  const lower = disks.flatMap((d) => lowerDisksOf(d, roots));
  const keys = new Set<string>([...files, ...[...disks, ...lower].map((d) => `disk:${d}`)]);
  if (loc.kind === 'nbd') keys.add(`nbd:${loc.uri.canonical}`);
  else if (keys.size === 0) keys.add(`rdev:${loc.stats.rdev}`);
  return keys;
}

/** The kernel object a storage key stands for: a file by a path that leads to it now, or a whole disk by its device numbers. */
export type StorageObject = { readonly file: string } | { readonly device: string };

/**
 * What each of storageKeys(loc) is in the kernel, for locks that must be seen
 * by every process on the machine (the drive locks' flock(2)): a `file:` key
 * by a path that leads to that very file now (the image's own, or a loop
 * device's backing file, checked by device and inode numbers), a disk by its
 * `major:minor`. Null for an NBD export (its server holds the storage) and
 * for a file no path leads to (a loop device's deleted backing file); the
 * loop device's own key still stands for that storage.
 */
export function storageObjects(loc: DriveLocation, roots: SysRoots = linuxRoots): Map<string, StorageObject | null> {
  const out = new Map<string, StorageObject | null>();
  let backingFiles: string[] | undefined;
  for (const key of storageKeys(loc, roots)) {
    if (key.startsWith('disk:')) {
      const name = key.slice('disk:'.length);
      // loopBackings names a lower device sysfs does not list by its numbers ("dev-7:3").
      const mm = name.startsWith('dev-') ? name.slice('dev-'.length) : readTrim(join(roots.sys, 'block', name, 'dev'));
      out.set(key, mm ? { device: mm } : null);
    } else if (key.startsWith('rdev:')) {
      out.set(key, { device: majorMinorOf(Number(key.slice('rdev:'.length))) });
    } else if (key.startsWith('file:')) {
      backingFiles ??= loopBackingFiles(roots);
      const candidates = loc.kind === 'image' ? [loc.realPath, ...backingFiles] : backingFiles;
      const path = candidates.find((p) => fileKeyOf(p) === key);
      out.set(key, path === undefined ? null : { file: path });
    } else {
      out.set(key, null);
    }
  }
  return out;
}

/** The paths loop devices name as their backing files (`/sys/block/loop*\/loop/backing_file`), deleted ones left out. */
function loopBackingFiles(roots: SysRoots): string[] {
  const out: string[] = [];
  for (const name of blockNames(roots)) {
    const file = readTrim(join(roots.sys, 'block', name, 'loop', 'backing_file'));
    if (file && !file.endsWith(' (deleted)')) out.push(file);
  }
  return out;
}

export function sameStorage(a: DriveLocation, b: DriveLocation, roots: SysRoots = linuxRoots): boolean {
  const ka = storageKeys(a, roots);
  for (const k of storageKeys(b, roots)) if (ka.has(k)) return true;
  return false;
}

/**
 * Mounts, swaps, holders and system-disk status of everything that reaches a
 * location's storage: an image file counts through every loop device over it
 * and as a swap file itself.
 */
export function usageOf(loc: DriveLocation, roots: SysRoots = linuxRoots): UsageReport {
  const { files, disks } = storageOf(loc, roots);
  const mounts = readAllMounts();
  const swaps = readSwaps();
  const reports = disks.map((d) => diskUsage(d, roots, mounts, swaps));
  const swapFiles = swaps.filter((s) => s.fileKey !== undefined && files.includes(s.fileKey)).map((s) => s.path);
  return {
    mountPoints: [...new Set(reports.flatMap((r) => r.mountPoints))],
    otherNamespaces: reports.flatMap((r) => r.otherNamespaces ?? []),
    isSystemDisk: reports.some((r) => r.isSystemDisk),
    swaps: [...new Set([...reports.flatMap((r) => r.swaps), ...swapFiles])],
    holders: [...new Set(reports.flatMap((r) => r.holders))],
  };
}

/** What holds a location's storage beyond what `usageOf` names. */
export interface HeldReport {
  /** Block nodes (kernel names) the kernel gave to an exclusive user: a mount or swap this process cannot see, md, device mapper, an O_EXCL open. */
  readonly claimed: string[];
  /** Other processes with the storage open for writing (an NBD server, a virtual machine). */
  readonly writers: OpenWriter[];
}

/**
 * Users of a location's storage that leave no trace in this process's mount
 * table or in sysfs: asked of the kernel (an exclusive open of every block
 * node that reaches it) and of `/proc` (every other process's descriptors).
 * An NBD export's server side is not visible here: nothing is reported for it.
 */
export function heldElsewhere(loc: DriveLocation, roots: SysRoots = linuxRoots): HeldReport {
  const { files, disks } = storageOf(loc, roots);
  const nodes = new Map<string, string>();
  for (const disk of disks) {
    const mm = listDisks(roots).find((d) => readBlockNode(d, roots)?.name === disk);
    for (const m of mm ? [mm, ...listPartitions(disk, roots)] : []) {
      const name = readBlockNode(m, roots)?.name;
      if (name) nodes.set(m, name);
    }
  }
  return { claimed: roots === linuxRoots ? exclusivelyClaimed([...nodes.values()]) : [], writers: openWriters(files, [...nodes.keys()]) };
}

/**
 * A value that changes whenever the drive is written, by any path, read
 * without reading the drive: for an image file its modification time (in
 * nanoseconds); for a block device the kernel's count of writes to the whole
 * disk since boot (`/sys/block/NAME/stat`, partitions included) with the boot's
 * id, and for a loop device also its backing file's modification time.
 * Undefined where none can be read (an NBD export). Opaque: only compared.
 */
export function writeStampOf(loc: DriveLocation, roots: SysRoots = linuxRoots): string | undefined {
  if (loc.kind === 'nbd') return undefined;
  const mtime = (path: string) => {
    try {
      return `mtime:${statSync(path, { bigint: true }).mtimeNs}`;
    } catch {
      return undefined;
    }
  };
  if (loc.kind === 'image') return mtime(loc.realPath);
  const disk = loc.node?.disk;
  if (!disk) return undefined;
  const fields = readTrim(join(roots.sys, 'block', disk, 'stat'))?.split(/\s+/);
  const bootId = readTrim('/proc/sys/kernel/random/boot_id');
  // Fields 5 and 7: write requests completed and sectors written.
  if (!fields || fields.length < 7 || !bootId) return undefined;
  const backing = loc.node?.backingFile && !loc.node.backingFile.endsWith(' (deleted)') ? mtime(loc.node.backingFile) : undefined;
  return [`writes:${bootId}:${disk}:${fields[4]}:${fields[6]}`, backing].filter(Boolean).join(';');
}

/**
 * The identity of a located drive. An NBD export's size and sectors are known
 * only once connected: for one, open it and read the drive's `identity`
 * (DeviceError here); `driveKeyOf` gives its key without connecting.
 */
export function identityOf(loc: DriveLocation, imageSectorSize = DEFAULT_IMAGE_SECTOR): DriveIdentity {
  if (loc.kind === 'nbd') throw new DeviceError(`${loc.requested}: an NBD export's geometry is known once it is opened`);
  if (loc.kind === 'image') {
    // The inode number is part of the identity, as a WWN is of a disk: another
    // file put at the same path (a standby image swapped for one of the same
    // size) is another drive, whose content the pair's records do not describe.
    return {
      key: `image:${loc.realPath}?ino=${loc.stats.ino}`,
      kind: 'image',
      model: 'image file',
      sizeBytes: loc.stats.size,
      logicalSectorSize: imageSectorSize,
      physicalSectorSize: Math.max(imageSectorSize, 4096),
    };
  }
  const n = loc.node;
  if (!n) throw new DeviceError(`${loc.requested}: the kernel's sysfs does not describe this block device`);
  const key = n.wwn
    ? `wwn:${n.wwn}`
    : n.serial
      ? `serial:${n.model ?? 'unknown'}:${n.serial}`
      : n.backingFile
        ? loopKey(n.backingFile)
        : `dev:${n.disk}`;
  return {
    key: n.isPartition ? `${key}#${n.name}` : key,
    kind: 'block',
    model: n.model,
    serial: n.serial,
    wwn: n.wwn,
    sizeBytes: n.sizeBytes,
    logicalSectorSize: n.logicalSectorSize,
    physicalSectorSize: n.physicalSectorSize,
    bridge: n.bridge,
  };
}

/**
 * A loop device over an image file is that image: it gets the image's own key
 * (`image:<realpath>?ino=N`), so a pair recorded with the image knows its
 * standby reached through a loop device, and the other way round. A backing
 * file that is gone keeps a `loop:` key, which no image has.
 */
function loopKey(backingFile: string): string {
  const ino = loopInode(backingFile);
  if (!ino) return `loop:${backingFile}`;
  try {
    return `image:${realpathSync(backingFile)}${ino}`;
  } catch {
    return `loop:${backingFile}${ino}`;
  }
}

/** `?ino=N` of a loop device's backing file, as an image's key has it: another file attached under the same name is another drive. */
function loopInode(backingFile: string): string {
  const key = backingFile.endsWith(' (deleted)') ? undefined : fileKeyOf(backingFile);
  return key ? `?ino=${key.slice(key.lastIndexOf(':') + 1)}` : '';
}

/** The identity key of a located drive, without opening it. */
export function driveKeyOf(loc: DriveLocation, imageSectorSize = DEFAULT_IMAGE_SECTOR): string {
  return loc.kind === 'nbd' ? `nbd:${loc.uri.canonical}` : identityOf(loc, imageSectorSize).key;
}

export interface OpenDriveOptions extends OpenOptions {
  /** Logical sector size an image file pretends to have (512 or 4096). */
  readonly imageSectorSize?: number;
  readonly roots?: SysRoots;
}

export async function openDrive(path: string, options: OpenDriveOptions = {}): Promise<BlockDevice> {
  const loc = locateDrive(path, options.roots);
  return openLocated(loc, options);
}

export async function openLocated(loc: DriveLocation, options: OpenDriveOptions = {}): Promise<BlockDevice> {
  if (loc.kind === 'nbd') {
    // Direct I/O and the image sector size do not apply: the server decides both.
    return NbdDrive.open(loc.requested, { write: options.write });
  }
  return openLocalDrive(loc, options);
}

async function openLocalDrive(loc: LocalLocation, options: OpenDriveOptions): Promise<FileBlockDevice> {
  const sector = options.imageSectorSize ?? DEFAULT_IMAGE_SECTOR;
  if (sector !== 512 && sector !== 4096) throw new BadInputError(`image sector size ${sector} is not supported`, { hint: 'use 512 or 4096' });
  const identity = identityOf(loc, sector);
  if (identity.sizeBytes % identity.logicalSectorSize !== 0) {
    throw new BadInputError(`${loc.requested} is ${identity.sizeBytes} bytes, not a whole number of ${identity.logicalSectorSize}-byte sectors`, {
      hint: 'an image file must be a multiple of its sector size (truncate -s)',
    });
  }
  let flags = options.write ? constants.O_RDWR : constants.O_RDONLY;
  // O_EXCL on a block device asks the kernel for exclusive use: it fails while mounted or held.
  if (options.write && loc.kind === 'block') flags |= constants.O_EXCL;
  // Direct reads, cached writes: the exclusive handle writes; a second, read-only one (opened once the first holds the claim) reads.
  const splitReads = options.direct === 'reads' && !!options.write;
  if (options.direct === true || (options.direct === 'reads' && !options.write)) flags |= constants.O_DIRECT;
  let handle: FileHandle;
  let readHandle: FileHandle | undefined;
  try {
    handle = await open(loc.realPath, flags);
    if (splitReads) {
      try {
        readHandle = await open(loc.realPath, constants.O_RDONLY | constants.O_DIRECT);
      } catch (e) {
        await handle.close();
        throw e;
      }
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EBUSY') throw new BusyError(`${loc.requested} is in use (mounted or held by another program)`, { hint: 'unmount it and stop whatever holds it', cause: e });
    if (code === 'EACCES' || code === 'EPERM') throw new DeviceError(`no permission to open ${loc.requested}${options.write ? ' for writing' : ''}`, { hint: 'run as root or add the user to the disk group', cause: e });
    if (code === 'EINVAL' && options.direct) throw new DeviceError(`${loc.requested} does not support direct I/O (O_DIRECT)`, { hint: 'run without direct I/O on this filesystem (tmpfs has none)', cause: e });
    if (code === 'EROFS') throw new DeviceError(`${loc.requested} is read-only`, { cause: e });
    throw new DeviceError(`cannot open ${loc.requested}: ${(e as Error).message}`, { cause: e });
  }
  const roots = options.roots ?? linuxRoots;
  const disk = loc.node?.disk;
  // A gone USB disk answers EIO like a bad sector does; sysfs tells them apart (the disk is gone or offline).
  const present = disk ? () => existsSync(join(roots.sys, 'block', disk)) && readTrim(join(roots.sys, 'block', disk, 'device', 'state')) !== 'offline' : () => true;
  return new FileBlockDevice(loc.requested, identity, handle, !!options.write, present, readHandle);
}

/** errno codes of a read or write that the medium refused: a bad or unwritable sector. */
const MEDIA_ERRNO = new Set(['EIO', 'ENODATA', 'EBADMSG', 'EILSEQ']);
/** errno codes that say the device, or the way to it, is gone. */
const TRANSPORT_ERRNO = new Set(['ENODEV', 'ENXIO', 'ENOMEDIUM', 'ESHUTDOWN', 'ENOTCONN', 'ETIMEDOUT', 'ENOLINK']);

export class FileBlockDevice implements BlockDevice {
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  private closed = false;

  /**
   * @param present whether the device is still there (sysfs), asked when an
   *   I/O error could mean a bad sector or a vanished drive.
   * @param readHandle reads go through it when given (an O_DIRECT descriptor
   *   beside a cached one that writes); closed with the device.
   */
  constructor(
    readonly path: string,
    readonly identity: DriveIdentity,
    private readonly handle: FileHandle,
    readonly writable: boolean,
    private readonly present: () => boolean = () => true,
    private readonly readHandle: FileHandle = handle,
  ) {
    this.size = identity.sizeBytes;
    this.logicalSectorSize = identity.logicalSectorSize;
    this.physicalSectorSize = identity.physicalSectorSize;
  }

  private check(buf: Uint8Array, position: number, length: number, op: string): void {
    if (this.closed) throw new DeviceError(`${this.path} is closed`);
    const s = this.logicalSectorSize;
    if (position % s !== 0 || length % s !== 0 || length > buf.byteLength || position < 0) {
      throw new RangeError(`${op} of ${length} bytes at ${position} on ${this.path} is not aligned to ${s}-byte sectors`);
    }
    if (position + length > this.size) throw new DeviceError(`${op} of ${length} bytes at ${position} runs past the end of ${this.path} (${this.size} bytes)`);
  }

  /** The DeviceError for a failed system call, its fault told by errno and by whether the drive is still there. */
  private ioError(op: string, position: number, length: number, e: unknown): DeviceError {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    const gone = TRANSPORT_ERRNO.has(code) || !this.present();
    const fault = gone ? 'transport' : MEDIA_ERRNO.has(code) ? 'media' : undefined;
    const where = op === 'flush' ? `flush of ${this.path}` : `${op} of ${length} bytes at LBA ${Math.floor(position / this.logicalSectorSize)} of ${this.path}`;
    const what = fault === 'transport' ? 'the drive is gone' : fault === 'media' ? 'the medium refused it' : (e as Error).message;
    return new DeviceError(`${where} failed: ${what} (${code || 'no errno'})`, { cause: e, fault });
  }

  async read(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    this.check(buf, position, length, 'read');
    let done = 0;
    while (done < length) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await this.readHandle.read(buf, done, length - done, position + done));
      } catch (e) {
        throw this.ioError('read', position + done, length - done, e);
      }
      if (bytesRead === 0) throw new DeviceError(`${this.path} ended early at byte ${position + done} (did the drive shrink or disappear?)`, { fault: 'transport' });
      done += bytesRead;
    }
  }

  async write(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    if (!this.writable) throw new DeviceError(`${this.path} was opened read-only`);
    this.check(buf, position, length, 'write');
    let done = 0;
    while (done < length) {
      let bytesWritten: number;
      try {
        ({ bytesWritten } = await this.handle.write(buf, done, length - done, position + done));
      } catch (e) {
        throw this.ioError('write', position + done, length - done, e);
      }
      if (bytesWritten === 0) throw new DeviceError(`${this.path} accepted no bytes at ${position + done}`);
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    if (this.closed) throw new DeviceError(`${this.path} is closed`);
    if (!this.writable) return;
    try {
      await this.handle.datasync();
    } catch (e) {
      throw this.ioError('flush', 0, 0, e);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.readHandle !== this.handle) await this.readHandle.close();
    await this.handle.close();
  }
}
