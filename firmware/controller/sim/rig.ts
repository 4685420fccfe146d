/**
 * The simulated rig: an image-file drive per configured bay in the state
 * directory (the system drive in bay A and each data pair's data drive in
 * its first bay built on first start, see system-drive.ts; a bay added to
 * the config later gets its drive at the next start), the simulated
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
import { join } from 'node:path';
import { BadInputError, DeviceError, RefusedError } from '../../../src/errors.ts';
import { acquireDriveLock } from '../../../src/sync/index.ts';
import { FaultyDevice, locateDrive, openDrive, openLocated, Throttle, ThrottledDevice, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../../src/sata-bridge/index.ts';
import { SimulatedSmartSource } from '../../../src/sata-bridge/index.ts';
import { SimBoard, SimHost, systemClock, type Bay } from '../../../src/bootswitch/index.ts';
import { readJsonChecked, writeJsonDurably } from '../../../src/durable-file.ts';
import { SimPanelChips } from '../front-panel.ts';
import type { Controller } from '../controller.ts';
import type { PanelChips, Rig } from '../rig.ts';
import type { RigBays } from '../roles.ts';
import { BAY_NAMES, DEFAULT_PAIRS, configuredBays, type BayName, type PairConfig } from '../pair-config.ts';
import type { Route } from '../http-server.ts';
import { simRoutes } from './routes.ts';
import { SimHostDisk } from './host-disk.ts';
import { blankDrive, buildDataDrive, buildSystemDrive, copySystemImage } from './system-drive.ts';

const MiB = 1024 * 1024;

interface RigFile {
  bays: Partial<Record<BayName, string | null>>;
  replacements: number;
  /** The file of a pulled drive, so "insert" puts the same drive back (also after a restart). */
  pulled: Partial<Record<BayName, string | null>>;
  /** Bays whose drive holds a bootable system (the original, or a completed copy of it). */
  bootable: Partial<Record<BayName, boolean>>;
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
  /** The pairs whose bays get drives; default the one boot pair on bays A and B. */
  pairs?: PairConfig[];
}

export class SimRig implements Rig {
  readonly board: SimBoard;
  /** Null with an external host. */
  readonly host: SimHost | null;
  readonly smart = new SimulatedSmartSource();
  /** True when this start created the boot pair's drives (the daemon then pairs them). */
  readonly created: boolean;
  /** The pairs whose drives this start created, in config order: each gets its first clone. */
  readonly createdPairs: string[];
  readonly dir: string;
  /** The bays the configured pairs use. */
  readonly bayNames: BayName[];
  readonly pairs: PairConfig[];
  #file: RigFile;
  #badReads = new Map<BayName, number[]>();
  #live = new Map<BayName, Set<FaultyDevice>>();
  #throttles = new Map<BayName, Throttle>();
  #panel: SimPanelChips | null = null;
  #stopHeartbeats: (() => void) | null = null;
  /** Inline mode: each pair's host disk, the simulated host's NBD connection to the pair's export. */
  readonly hostDisks = new Map<string, SimHostDisk>();
  readonly bays: RigBays = { path: (bay) => this.drivePath(bay), openDevice: (loc, options) => this.openDevice(loc, options) };

  constructor(private readonly opts: SimRigOptions) {
    this.dir = join(opts.stateDir, 'sim');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.pairs = opts.pairs ?? DEFAULT_PAIRS;
    this.bayNames = configuredBays(this.pairs);
    const rigPath = join(this.dir, 'rig.json');
    const existing = readJsonChecked<RigFile>(rigPath);
    this.#file = existing ? { ...existing, pulled: existing.pulled ?? {} } : { bays: {}, replacements: 0, pulled: {}, bootable: {} };
    // A bay the file does not know yet gets its drive now (first start, or a pair added to the config).
    this.createdPairs = [];
    for (const pair of this.pairs) {
      const [first, second] = pair.bays;
      if (first in this.#file.bays || second in this.#file.bays) continue;
      const a = join(this.dir, `bay-${first}.img`);
      if (pair.role === 'data') buildDataDrive(a, opts.driveSizeMiB);
      else if (opts.systemImage) copySystemImage(opts.systemImage, a, opts.driveSizeMiB);
      else buildSystemDrive(a, opts.driveSizeMiB);
      blankDrive(join(this.dir, `bay-${second}.img`), opts.driveSizeMiB);
      this.#file.bays[first] = `bay-${first}.img`;
      this.#file.bays[second] = `bay-${second}.img`;
      this.#file.bootable[first] = pair.role === 'boot';
      this.#file.bootable[second] = false;
      this.createdPairs.push(pair.id);
    }
    if (this.createdPairs.length) this.#save();
    this.created = this.createdPairs.includes(this.pairs.find((p) => p.role === 'boot')!.id);
    const rate = opts.bridgeMiBps > 0 ? (opts.bridgeMiBps * MiB) / 1000 : 0;
    for (const bay of this.bayNames) {
      this.#badReads.set(bay, []);
      this.#live.set(bay, new Set());
      if (rate) this.#throttles.set(bay, new Throttle(rate));
    }
    this.board = new SimBoard(systemClock);
    this.host = opts.host === 'external' ? null : new SimHost(this.board, systemClock, { bootMs: opts.hostBootMs, shutdownMs: opts.hostShutdownMs, heartbeatMs: opts.heartbeatMs });
    for (const bay of this.bayNames) {
      if (this.host && (bay === 'A' || bay === 'B')) this.host.bootable[bay] = this.#file.bootable[bay] === true && !!this.#file.bays[bay];
      this.smart.set(this.#smartKey(bay), { temperatureC: opts.driveTemperatureC[BAY_NAMES.indexOf(bay)] ?? 35, present: !!this.#file.bays[bay] });
    }
  }

  #save(): void {
    writeJsonDurably(join(this.dir, 'rig.json'), this.#file);
  }

  #smartKey(bay: BayName): string {
    return `sim-bay-${bay}`;
  }

  /** Path of the drive in a bay, or null when the bay is empty (pulled) or not configured. */
  drivePath(bay: BayName): string | null {
    const f = this.#file.bays[bay];
    return f ? join(this.dir, f) : null;
  }

  present(bay: BayName): boolean {
    return !!this.#file.bays[bay];
  }

  /** Checks a bay named in a request: one of the configured ones. */
  bay(name: string): BayName {
    if (!this.bayNames.includes(name as BayName)) throw new BadInputError(`path parameter bay is ${JSON.stringify(name)}; allowed: ${this.bayNames.map((b) => JSON.stringify(b)).join(', ')} (the bays the pairs use)`);
    return name as BayName;
  }

  smartDevice(bay: BayName): string | null {
    return this.present(bay) ? this.#smartKey(bay) : null;
  }

  /** Sets simulated SMART values of a bay's drive (also of a pulled one). */
  setSmart(bay: BayName, values: Parameters<SimulatedSmartSource['set']>[1]): void {
    this.smart.set(this.#smartKey(bay), values);
  }

  get banner(): string | null {
    if (!this.created) return null;
    const what = this.opts.systemImage ? `a copy of ${this.opts.systemImage}` : 'system drive (GPT, FAT EFI, ext4 root and data)';
    const data = this.pairs.filter((p) => p.role === 'data' && this.createdPairs.includes(p.id)).map((p) => `; data drive (GPT, ext4) in bay ${p.bays[0]}, blank drive in bay ${p.bays[1]} (pair ${p.id})`);
    return `simulated rig created in ${this.dir}: ${what} in bay A, blank drive in bay B${data.join('')} (${this.opts.driveSizeMiB} MiB each, host ${this.opts.host ?? 'simulated'})`;
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

  hostStatus(): Record<string, unknown> {
    return this.host ? { simState: this.host.state, bootedFrom: this.host.bootedFrom } : { simState: 'external', bootedFrom: null };
  }

  /** The simulated host's disk of `pair`'s export (inline mode). */
  hostDisk(pair: PairConfig): SimHostDisk {
    let d = this.hostDisks.get(pair.id);
    if (!d) this.hostDisks.set(pair.id, (d = new SimHostDisk()));
    return d;
  }

  routes(ctl: Controller): Route[] {
    return simRoutes(this, ctl);
  }

  async start(ctl: Controller): Promise<void> {
    const stopBeats = this.host?.onHeartbeat((bay) => void ctl.host.heartbeat('sim-host', bay).catch(() => {}));
    const stopNotices = this.host?.onShuttingDown((bay) => void ctl.host.shuttingDown('sim-host', bay).catch(() => {}));
    this.#stopHeartbeats = () => {
      stopBeats?.();
      stopNotices?.();
    };
    // Inline mode: the relays keep both drives on the controller; the host boots the drive the export serves.
    if (this.host && ctl.inline) {
      const inline = ctl.inline;
      const disk = this.hostDisks.get(inline.pairConfig.id);
      // The host reaches the drive its disk is attached to.
      this.host.exportedDisk = () => (inline.pair?.daemon.running && disk?.attached ? inline.pair.bay : null);
    }
    if (this.opts.initialClone) this.#firstClones(ctl);
    if (this.host && this.opts.hostPoweredAtStart && !this.host.powered) this.host.powerOn();
  }

  /** Each pair whose drives this start created is paired by a clone (queued one after the other). */
  #firstClones(ctl: Controller): void {
    for (const id of this.createdPairs) {
      try {
        ctl.pairs.get(id).copies.start('clone', {}, 'first-start');
      } catch (e) {
        ctl.bus.publish('alert', { level: 'warning', code: 'first-clone', pair: id, message: `the first clone of pair ${id} did not start: ${(e as Error).message}` });
      }
    }
  }

  bayOfPath(realPath: string): BayName | undefined {
    for (const bay of this.bayNames) {
      const p = this.drivePath(bay) ?? (this.#file.pulled[bay] ? join(this.dir, this.#file.pulled[bay]!) : null);
      if (p && existsSync(p) && realpathSync(p) === realPath) return bay;
    }
    return undefined;
  }

  /**
   * Stalls the bay's bridge (every read and write on it waits) until the
   * returned function is called. Needs a throttled bridge (sim.bridgeMiBps > 0).
   * @throws RangeError when the bay's bridge is not throttled.
   */
  holdBridge(bay: BayName): () => void {
    const t = this.#throttles.get(bay);
    if (!t) throw new RangeError(`bay ${bay}: the simulated bridge has no throttle to hold (set sim.bridgeMiBps)`);
    return t.hold();
  }

  /** The engine's openDevice hook: every handle on a bay's drive goes through its fault plan. */
  openDevice = async (loc: DriveLocation, options: OpenDriveOptions): Promise<BlockDevice> => {
    const bay = this.bayOfPath(loc.realPath);
    if (bay && !this.present(bay)) throw new DeviceError(`bay ${bay}: no drive (pulled)`, { hint: 'insert the drive again', fault: 'transport' });
    let dev: BlockDevice = await openLocated(loc, options);
    if (!bay) return dev;
    const t = this.#throttles.get(bay);
    if (t) dev = new ThrottledDevice(dev, t);
    const faulty = new FaultyDevice(dev, { badReadLbas: this.#badReads.get(bay) });
    const live = this.#live.get(bay)!;
    live.add(faulty);
    const close = faulty.close.bind(faulty);
    faulty.close = async () => {
      live.delete(faulty);
      await close();
    };
    return faulty;
  };

  setReadErrors(bay: BayName, lbas: number[]): void {
    this.#badReads.set(bay, [...lbas]);
    for (const d of this.#live.get(bay)!) d.setPlan({ badReadLbas: lbas });
    this.smart.set(this.#smartKey(bay), { pendingSectors: lbas.length });
  }

  readErrors(bay: BayName): number[] {
    return [...this.#badReads.get(bay)!];
  }

  sectors(_bay: BayName): number {
    return (this.opts.driveSizeMiB * MiB) / 512;
  }

  pull(bay: BayName): void {
    if (!this.present(bay)) throw new RefusedError(`bay ${bay} is already empty`);
    for (const d of this.#live.get(bay)!) d.pull();
    this.#file.pulled[bay] = this.#file.bays[bay];
    this.#file.bays[bay] = null;
    this.#save();
    this.smart.set(this.#smartKey(bay), { present: false });
    if (!this.host || (bay !== 'A' && bay !== 'B')) return; // an external host hears of it from the drive event
    this.host.bootable[bay] = false;
    // The OS loses its disk: it stops answering.
    if (this.host.bootedFrom === bay && this.host.state === 'running') this.host.hang();
  }

  /** Puts the pulled drive back, or a new blank drive when `replacement` is set. */
  insert(bay: BayName, replacement: boolean): string {
    if (this.present(bay)) throw new RefusedError(`bay ${bay} already holds a drive`, { hint: `pull it first: POST /api/sim/drive/${bay}/pull` });
    let name = this.#file.pulled[bay];
    if (replacement || !name) {
      this.#file.replacements++;
      name = `bay-${bay}-r${this.#file.replacements}.img`;
      blankDrive(join(this.dir, name), this.opts.driveSizeMiB);
      this.#file.bootable[bay] = false;
      this.#badReads.set(bay, []);
      this.smart.set(this.#smartKey(bay), { pendingSectors: 0, reallocatedSectors: 0, overall: 'passed' });
    }
    for (const d of this.#live.get(bay)!) d.reinsert();
    this.#file.bays[bay] = name;
    this.#file.pulled[bay] = null;
    this.#save();
    this.smart.set(this.#smartKey(bay), { present: true });
    if (this.host && (bay === 'A' || bay === 'B')) this.host.bootable[bay] = this.#file.bootable[bay] === true;
    return join(this.dir, name);
  }

  /** A completed copy made this bay's drive bootable. */
  markBootable(bay: BayName): void {
    if (this.#file.bootable[bay]) return;
    this.#file.bootable[bay] = true;
    this.#save();
    if (this.host && (bay === 'A' || bay === 'B')) this.host.bootable[bay] = this.present(bay);
  }

  /** The external host's power LED, as that host reports it; never a boot. */
  setHostPowerLed(lit: boolean): void {
    if (this.host) throw new RefusedError('the simulated host drives its own power LED', { hint: 'set sim.host "external" to run the host outside the daemon' });
    this.board.setPowerLed(lit);
  }

  /**
   * What a running OS does to its disk: random 64 KiB writes, kept off the
   * first and last MiB so the partition tables stay valid. In inline mode
   * (`through`: the pair's host disk) they go through its NBD connection to
   * the controller's export, as the host's writes do, so the simulation
   * exercises the real data path; else straight
   * to the bay's image, as over the host's SATA port, holding the drive's
   * write lock: while a copy or verify reads the drive they are refused
   * (BusyError), so a copy made while the simulated host runs is of one
   * instant (a real host cannot be held off: copy-jobs.ts refuses that case).
   */
  async hostWrite(bay: BayName, bytes: number, through?: SimHostDisk): Promise<number> {
    const path = this.drivePath(bay);
    if (!path) throw new RefusedError(`bay ${bay} holds no drive`);
    if (!this.host) throw new RefusedError('the host is external: random writes under its file systems would damage them', { hint: 'write through the external host (its agent)' });
    const size = this.opts.driveSizeMiB * MiB;
    const block = 64 * 1024;
    const slots = Math.floor((size - 2 * MiB) / block);
    const lock = through ? null : await acquireDriveLock(locateDrive(path), `writes of the simulated host to bay ${bay}`);
    let written = 0;
    let disk: BlockDevice;
    try {
      disk = through ? through.disk : await openDrive(path, { write: true });
    } catch (e) {
      lock?.release();
      throw e;
    }
    try {
      while (written < bytes) {
        await disk.write(randomBytes(block), MiB + randomInt(slots) * block, block);
        written += block;
      }
      await disk.flush();
    } finally {
      // The host keeps its disk; a bay image opened here is closed.
      if (!through) await disk.close();
      lock?.release();
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
