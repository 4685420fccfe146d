/**
 * The simulated rig: two image-file drives in the state directory (the
 * system drive built on first start, see system-drive.ts), the simulated
 * board, panel chips and host. With an external host (the HIL rig's virtual
 * machine) the daemon keeps only the board: the other process follows the
 * relay events, boots the drive file the muxes connect and reports its power
 * LED and heartbeats through the API. Drives are opened through FaultyDevice
 * so the rig controls (routes.ts) can pull a drive or make sectors
 * unreadable under a running job, and through an optional throttle that
 * models a USB bridge's speed.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdirSync, realpathSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { DeviceError, RefusedError } from '../../../src/errors.ts';
import { FaultyDevice, openLocated, Throttle, ThrottledDevice, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../../src/sata-bridge/index.ts';
import { SimulatedSmartSource } from '../../../src/sata-bridge/index.ts';
import { SimBoard, SimHost, systemClock, type Bay } from '../../../src/bootswitch/index.ts';
import { readJsonChecked, writeJsonDurably } from '../../../src/durable-file.ts';
import { SimPanelChips } from '../front-panel.ts';
import type { Controller } from '../controller.ts';
import type { PanelChips, Rig } from '../rig.ts';
import type { DriveBays } from '../roles.ts';
import type { Route } from '../http-server.ts';
import { simRoutes } from './routes.ts';
import { blankDrive, buildSystemDrive, copySystemImage } from './system-drive.ts';

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
  /** Clone bay A onto bay B once the controller runs, when this start created the drives. */
  initialClone?: boolean;
  /** Power the simulated host on once the controller runs. */
  hostPoweredAtStart?: boolean;
}

export class SimRig implements Rig {
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
  #panel: SimPanelChips | null = null;
  #stopHeartbeats: (() => void) | null = null;
  readonly bays: DriveBays = { path: (bay) => this.drivePath(bay), openDevice: (loc, options) => this.openDevice(loc, options) };

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

  present(bay: Bay): boolean {
    return this.#file.bays[bay] !== null;
  }

  smartDevice(bay: Bay): string | null {
    return this.present(bay) ? this.#smartKey(bay) : null;
  }

  /** Sets simulated SMART values of a bay's drive (also of a pulled one). */
  setSmart(bay: Bay, values: Parameters<SimulatedSmartSource['set']>[1]): void {
    this.smart.set(this.#smartKey(bay), values);
  }

  get banner(): string | null {
    if (!this.created) return null;
    const what = this.opts.systemImage ? `a copy of ${this.opts.systemImage}` : 'system drive (GPT, FAT EFI, ext4 root and data)';
    return `simulated rig created in ${this.dir}: ${what} in bay A, blank drive in bay B (${this.opts.driveSizeMiB} MiB each, host ${this.opts.host ?? 'simulated'})`;
  }

  /** Simulated OLED and rail monitors; the rails follow the drive power relays and the drives present. */
  async panelChips(): Promise<PanelChips> {
    const sim = (this.#panel ??= new SimPanelChips());
    return {
      i2c: sim.bus,
      oledAddress: SimPanelChips.OLED,
      rails: (['A', 'B'] as const).map((bay) => ({ bay, address: SimPanelChips.RAIL[bay], shuntOhms: 0.1 })),
      drivePower: (bay, on) => sim.setRail(bay, on, this.present(bay)),
    };
  }

  /** The simulated board records a move under a powered host as a rule violation unless it was forced on purpose. */
  async forcedMove<T>(move: () => Promise<T>): Promise<T> {
    this.board.forced = true;
    try {
      return await move();
    } finally {
      this.board.forced = false;
    }
  }

  hostStatus(): Record<string, unknown> {
    return this.host ? { simState: this.host.state, bootedFrom: this.host.bootedFrom } : { simState: 'external', bootedFrom: null };
  }

  routes(ctl: Controller): Route[] {
    return simRoutes(this, ctl);
  }

  async start(ctl: Controller): Promise<void> {
    this.#stopHeartbeats = this.host?.onHeartbeat((bay) => void ctl.host.heartbeat('sim-host', bay).catch(() => {})) ?? null;
    if (this.created && this.opts.initialClone && !ctl.jobs.current) ctl.copies.start('clone', {}, 'first-start');
    if (this.host && this.opts.hostPoweredAtStart && !this.host.powered) this.host.powerOn();
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

  async stop(): Promise<void> {
    this.#stopHeartbeats?.();
    this.host?.forceOff();
    this.host?.removeAllListeners();
    await this.board.close();
  }
}
