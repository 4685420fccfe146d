/**
 * The simulated rig: two image-file drives in the state directory (the
 * system drive built on first start with a real GPT, a FAT EFI partition and
 * two ext4 partitions holding files, or copied from a given bootable image),
 * the simulated board and a simulated host. With an external host (the HIL
 * rig's virtual machine) the daemon keeps only the board: the other process
 * follows the relay events, boots the drive file the muxes connect and
 * reports its power LED and heartbeats through the API. Drives are opened through FaultyDevice so the rig controls can pull
 * a drive or make sectors unreadable under a running job, and through an
 * optional throttle that models a USB bridge's speed.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, realpathSync, rmSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { DeviceError, RefusedError } from '../../src/errors.ts';
import { FaultyDevice, openLocated, Throttle, ThrottledDevice, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { SimulatedSmartSource } from '../../src/sata-bridge/index.ts';
import { SimBoard, SimHost, systemClock, type Bay } from '../../src/bootswitch/index.ts';
import { readJsonChecked, writeJsonDurably } from '../../src/durable-file.ts';

const MiB = 1024 * 1024;

interface RigFile {
  bays: Record<Bay, string | null>;
  replacements: number;
  /** The file of a pulled drive, so "insert" puts the same drive back (also after a restart). */
  pulled: Record<Bay, string | null>;
  /** Bays whose drive holds a bootable system (the original, or a completed copy of it). */
  bootable: Record<Bay, boolean>;
}

export interface SimRigOptions {
  stateDir: string;
  driveSizeMiB: number;
  bridgeMiBps: number;
  hostBootMs: number;
  hostShutdownMs: number;
  heartbeatMs: number;
  driveTemperatureC: number[];
  /** external: no SimHost; the power LED input is set through setHostPowerLed. */
  host?: 'simulated' | 'external';
  /** A raw disk image copied into bay A when the rig is created. */
  systemImage?: string;
}

function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'], encoding: 'utf8' });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new DeviceError(`${cmd} is not installed: the simulated rig needs it to build its system drive`, { hint: 'install fdisk, e2fsprogs, dosfstools and mtools' });
    throw new DeviceError(`${cmd} ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
  }
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
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Bay A from a given bootable image, grown (sparse) to the drive size. */
function copySystemImage(image: string, path: string, sizeMiB: number): void {
  copyFileSync(image, path);
  const fd = openSync(path, 'r+');
  try {
    ftruncateSync(fd, sizeMiB * MiB);
  } finally {
    closeSync(fd);
  }
}

function blankDrive(path: string, sizeMiB: number): void {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, sizeMiB * MiB);
  closeSync(fd);
}

export class SimRig {
  readonly board: SimBoard;
  /** Null with an external host. */
  readonly host: SimHost | null;
  readonly smart = new SimulatedSmartSource();
  /** True when this start created the drives (the daemon then pairs them). */
  readonly created: boolean;
  readonly dir: string;
  #file: RigFile;
  #badReads: Record<Bay, number[]> = { A: [], B: [] };
  #live: Record<Bay, Set<FaultyDevice>> = { A: new Set(), B: new Set() };
  #throttles: Record<Bay, Throttle | null>;

  constructor(private readonly opts: SimRigOptions) {
    this.dir = join(opts.stateDir, 'sim');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const rigPath = join(this.dir, 'rig.json');
    const existing = readJsonChecked<RigFile>(rigPath);
    if (existing) {
      this.#file = { ...existing, pulled: existing.pulled ?? { A: null, B: null } };
      this.created = false;
    } else {
      const a = join(this.dir, 'bay-A.img');
      const b = join(this.dir, 'bay-B.img');
      if (opts.systemImage) copySystemImage(opts.systemImage, a, opts.driveSizeMiB);
      else buildSystemDrive(a, opts.driveSizeMiB);
      blankDrive(b, opts.driveSizeMiB);
      this.#file = { bays: { A: 'bay-A.img', B: 'bay-B.img' }, replacements: 0, pulled: { A: null, B: null }, bootable: { A: true, B: false } };
      this.#save();
      this.created = true;
    }
    const rate = opts.bridgeMiBps > 0 ? (opts.bridgeMiBps * MiB) / 1000 : 0;
    this.#throttles = { A: rate ? new Throttle(rate) : null, B: rate ? new Throttle(rate) : null };
    this.board = new SimBoard(systemClock);
    this.host = opts.host === 'external' ? null : new SimHost(this.board, systemClock, { bootMs: opts.hostBootMs, shutdownMs: opts.hostShutdownMs, heartbeatMs: opts.heartbeatMs });
    for (const bay of ['A', 'B'] as const) {
      if (this.host) this.host.bootable[bay] = this.#file.bootable[bay] && this.#file.bays[bay] !== null;
      this.smart.set(this.#smartKey(bay), { temperatureC: opts.driveTemperatureC[bay === 'A' ? 0 : 1] ?? 35, present: this.#file.bays[bay] !== null });
    }
  }

  #save(): void {
    writeJsonDurably(join(this.dir, 'rig.json'), this.#file);
  }

  #smartKey(bay: Bay): string {
    return `sim-bay-${bay}`;
  }

  /** Path of the drive in a bay, or null when the bay is empty (pulled). */
  drivePath(bay: Bay): string | null {
    const f = this.#file.bays[bay];
    return f ? join(this.dir, f) : null;
  }

  /** Stable path of a bay's drive even while it is pulled (the file stays). */
  lastDrivePath(bay: Bay): string {
    return this.drivePath(bay) ?? join(this.dir, this.#file.pulled[bay] ?? `bay-${bay}.img`);
  }

  present(bay: Bay): boolean {
    return this.#file.bays[bay] !== null;
  }

  smartDevice(bay: Bay): string {
    return this.#smartKey(bay);
  }

  bayOfPath(realPath: string): Bay | undefined {
    for (const bay of ['A', 'B'] as const) {
      const p = this.drivePath(bay) ?? (this.#file.pulled[bay] ? join(this.dir, this.#file.pulled[bay]!) : null);
      if (p && existsSync(p) && realpathSync(p) === realPath) return bay;
    }
    return undefined;
  }

  /** The engine's openDevice hook: every handle on a bay's drive goes through its fault plan. */
  openDevice = async (loc: DriveLocation, options: OpenDriveOptions): Promise<BlockDevice> => {
    const bay = this.bayOfPath(loc.realPath);
    if (bay && !this.present(bay)) throw new DeviceError(`bay ${bay}: no drive (pulled)`, { hint: 'insert the drive again', fault: 'transport' });
    let dev: BlockDevice = await openLocated(loc, options);
    if (!bay) return dev;
    const t = this.#throttles[bay];
    if (t) dev = new ThrottledDevice(dev, t);
    const faulty = new FaultyDevice(dev, { badReadLbas: this.#badReads[bay] });
    const live = this.#live[bay];
    live.add(faulty);
    const close = faulty.close.bind(faulty);
    faulty.close = async () => {
      live.delete(faulty);
      await close();
    };
    return faulty;
  };

  setReadErrors(bay: Bay, lbas: number[]): void {
    this.#badReads[bay] = [...lbas];
    for (const d of this.#live[bay]) d.setPlan({ badReadLbas: lbas });
    this.smart.set(this.#smartKey(bay), { pendingSectors: lbas.length });
  }

  readErrors(bay: Bay): number[] {
    return [...this.#badReads[bay]];
  }

  sectors(bay: Bay): number {
    return (this.opts.driveSizeMiB * MiB) / 512;
  }

  pull(bay: Bay): void {
    if (!this.present(bay)) throw new RefusedError(`bay ${bay} is already empty`);
    for (const d of this.#live[bay]) d.pull();
    this.#file.pulled[bay] = this.#file.bays[bay];
    this.#file.bays[bay] = null;
    this.#save();
    this.smart.set(this.#smartKey(bay), { present: false });
    if (!this.host) return; // an external host hears of it from the drive event
    this.host.bootable[bay] = false;
    // The OS loses its disk: it stops answering.
    if (this.host.bootedFrom === bay && this.host.state === 'running') this.host.hang();
  }

  /** Puts the pulled drive back, or a new blank drive when `replacement` is set. */
  insert(bay: Bay, replacement: boolean): string {
    if (this.present(bay)) throw new RefusedError(`bay ${bay} already holds a drive`, { hint: `pull it first: POST /api/sim/drive/${bay}/pull` });
    let name = this.#file.pulled[bay];
    if (replacement || !name) {
      this.#file.replacements++;
      name = `bay-${bay}-r${this.#file.replacements}.img`;
      blankDrive(join(this.dir, name), this.opts.driveSizeMiB);
      this.#file.bootable[bay] = false;
      this.#badReads[bay] = [];
      this.smart.set(this.#smartKey(bay), { pendingSectors: 0, reallocatedSectors: 0, overall: 'passed' });
    }
    for (const d of this.#live[bay]) d.reinsert();
    this.#file.bays[bay] = name;
    this.#file.pulled[bay] = null;
    this.#save();
    this.smart.set(this.#smartKey(bay), { present: true });
    if (this.host) this.host.bootable[bay] = this.#file.bootable[bay];
    return join(this.dir, name);
  }

  /** A completed copy made this bay's drive bootable. */
  markBootable(bay: Bay): void {
    if (this.#file.bootable[bay]) return;
    this.#file.bootable[bay] = true;
    this.#save();
    if (this.host) this.host.bootable[bay] = this.present(bay);
  }

  get externalHost(): boolean {
    return this.host === null;
  }

  /** The external host's power LED, as that host reports it; never a boot. */
  setHostPowerLed(lit: boolean): void {
    if (this.host) throw new RefusedError('the simulated host drives its own power LED', { hint: 'set sim.host "external" to run the host outside the daemon' });
    this.board.setPowerLed(lit);
  }

  /**
   * What a running OS does to its disk: random 64 KiB writes, kept off the
   * first and last MiB so the partition tables stay valid.
   */
  async hostWrite(bay: Bay, bytes: number): Promise<number> {
    const path = this.drivePath(bay);
    if (!path) throw new RefusedError(`bay ${bay} holds no drive`);
    if (!this.host) throw new RefusedError('the host is external: random writes under its file systems would damage them', { hint: 'write through the external host (its agent)' });
    const size = this.opts.driveSizeMiB * MiB;
    const block = 64 * 1024;
    const slots = Math.floor((size - 2 * MiB) / block);
    const h = await open(path, 'r+');
    let written = 0;
    try {
      while (written < bytes) {
        await h.write(randomBytes(block), 0, block, MiB + randomInt(slots) * block);
        written += block;
      }
      await h.datasync();
    } finally {
      await h.close();
    }
    return written;
  }

  async close(): Promise<void> {
    this.host?.forceOff();
    this.host?.removeAllListeners();
    await this.board.close();
  }
}
