/**
 * The HIL rig: a controller (dpsrd), two drives, a host PC, chosen by
 * DPSR_HIL_RIG. Scenarios are written once against `Rig` and move the rig
 * between named states with `transition()` (labgrid's strategies), which
 * does nothing when the rig is already there.
 *
 * - sim (default): dpsrd's simulated rig with an external host. dpsrd keeps
 *   the board (relays, button, LEDs, ATX lines, power-LED input) and the
 *   drive files; the host is a QEMU VM run here, which follows dpsrd's relay
 *   events: an ATX power pulse powers it on with the drive file of the one
 *   bay the muxes connect to the host, a short pulse while it runs is the
 *   ACPI button (the agent powers off), a long one or the power held is a
 *   hard off, the reset line restarts it. Its power is reported as the power
 *   LED and its serial heartbeats are relayed to POST /api/host/heartbeat.
 * - real: dpsrd with a hardware config (relay board as wired in
 *   hw/schematics, drives behind USB bridges) started here on the controller
 *   board, the host's power through the ATX relays, its serial console on a
 *   USB serial adapter. Drive pulls are done by an operator when asked.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { EventEmitter } from 'node:events';
import { BadInputError, DeviceError, RefusedError } from './errors.ts';
import { Dpsrd, sleep, type ControllerEvent } from './controller.ts';
import { corruptFile, ensureImage, type EnsuredImage, type ImageFileName } from './image/build.ts';
import { QemuHost, type BootInfo, type CommandReply, type DataRecord, type RecordStat } from './qemu-host.ts';
import { SerialConsole } from './serial-console.ts';
import { bayOfSerial, QemuAtxHost, type DriveOnPort } from './atx-host.ts';

export type { Bay } from './atx-host.ts';
import type { Bay } from './atx-host.ts';
export type RigState = 'off' | 'booted:A' | 'booted:B';
export type RigKind = 'sim' | 'real';

/** What a scenario may tune; the rest of the controller config is the rig's. */
export interface RigOptions {
  /** Names log files and temp folders. */
  name: string;
  failover?: { bootTries?: number; confirmTimeoutMs?: number; hardOffOnButton?: boolean };
  /** Simulated bridge speed (sim rig only; the real bridges are as fast as they are). */
  bridgeMiBps?: number;
  recovery?: { interrupted?: 'resume' | 'rollback' };
  /**
   * Inline mode (sim rig only): the controller serves the selected bay's
   * drive over NBD (qemu-storage-daemon) and the host boots from that export
   * instead of a drive file on its port.
   */
  inline?: boolean;
  /** More of dpsrd's config, merged over the rig's (e.g. `sync.quiescence` for a live-sync scenario). */
  config?: Record<string, unknown>;
}

/** The agent's side of the host: the same calls on QEMU's stdio and on a real serial console. */
export interface HostConsole {
  command(verb: string, args?: Array<string | number>, timeoutMs?: number): Promise<CommandReply>;
  writeRecords(count: number, tag?: string, sync?: boolean): Promise<RecordStat>;
  readRecords(): Promise<RecordStat & { records: DataRecord[] }>;
  recordStat(): Promise<RecordStat>;
}

/** What the rig saw of the host, in performance.now() milliseconds. */
export interface HostRecord {
  kind: 'power-on' | 'power-off' | 'boot' | 'heartbeat' | 'no-drive';
  bay: Bay | null;
  at: number;
  detail?: string;
}

export interface TransitionReport {
  from: RigState | 'unknown';
  to: RigState;
  changed: boolean;
  ms: number;
  /** Power-on to the boot line, when the transition booted the host. */
  bootMs?: number;
}

export const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;


export abstract class Rig extends EventEmitter {
  abstract readonly kind: RigKind;
  readonly hostLog: HostRecord[] = [];
  image!: EnsuredImage;
  dpsrd!: Dpsrd;
  protected readonly dir: string;
  /** Booted bay of the current power cycle, once its boot line came. */
  protected booted: { bay: Bay | null; at: number } | null = null;
  readonly bootTimeoutMs = Number(process.env.DPSR_HIL_BOOT_TIMEOUT_S ?? 60) * 1000;

  constructor(readonly opts: RigOptions) {
    super();
    this.dir = mkdtempSync(join(tmpdir(), `dpsr-hil-${opts.name}-`));
  }

  abstract get console(): HostConsole;
  abstract start(): Promise<void>;
  /** Makes a file of the test OS on a bay's drive unreadable (the host must be off). */
  abstract damageBootFiles(bay: Bay, which: ImageFileName): Promise<void>;
  abstract pullDrive(bay: Bay): Promise<void>;
  abstract insertDrive(bay: Bay, replacement: boolean): Promise<void>;
  protected abstract stopHost(): Promise<void>;

  protected record(r: Omit<HostRecord, 'at'>, at = performance.now()): void {
    const rec = { ...r, at };
    this.hostLog.push(rec);
    this.emit('host', rec);
  }

  /** The first host record after `since` matching `pred`. */
  waitHost(pred: (r: HostRecord) => boolean, timeoutMs: number, what: string, since = -1): Promise<HostRecord> {
    const found = this.hostLog.find((r) => r.at >= since && pred(r));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const on = (r: HostRecord) => {
        if (r.at < since || !pred(r)) return;
        clearTimeout(t);
        this.off('host', on);
        resolve(r);
      };
      const t = setTimeout(() => {
        this.off('host', on);
        reject(new DeviceError(`${this.opts.name}: no ${what} within ${seconds(timeoutMs)}; host log: ${this.hostLog.slice(-6).map((r) => `${r.kind}${r.bay ? `:${r.bay}` : ''}`).join(', ')}`));
      }, timeoutMs);
      this.on('host', on);
    });
  }

  /** The controller's config for this rig and scenario. */
  protected baseConfig(): Record<string, unknown> {
    return {
      bootswitch: {
        timing: {
          // A hung host ignores ACPI: the hard off (power held past the ATX 4 s) should not wait long for that.
          shutdownTimeoutMs: 3000,
          hardOffPulseMs: 4500,
        },
        failover: { bootTries: 3, confirmTimeoutMs: 60_000, hardOffOnButton: false, ...this.opts.failover },
      },
      recovery: { interrupted: this.opts.recovery?.interrupted ?? 'resume', rollbackOnCancel: true },
    };
  }

  async state(): Promise<RigState | 'unknown'> {
    const s = await this.dpsrd.status();
    if (s.host.power !== 'on') return 'off';
    const hb = [...this.hostLog].reverse().find((r) => r.kind === 'heartbeat');
    if (this.booted?.bay && hb && hb.bay === this.booted.bay && hb.at >= this.booted.at && performance.now() - hb.at < 5000) return `booted:${this.booted.bay}`;
    return 'unknown';
  }

  /**
   * Moves the rig to `to`, doing nothing when it is there. Off: the
   * controller's ACPI request through the ATX relay (a hung host is forced
   * off); booted:X: off first, then boot selection X with power-on, until the
   * host's boot line from bay X and its first heartbeat (relayed to dpsrd).
   */
  async transition(to: RigState): Promise<TransitionReport> {
    const started = performance.now();
    const from = await this.state();
    const report = (changed: boolean, bootMs?: number): TransitionReport => ({ from, to, changed, ms: performance.now() - started, bootMs });
    if (from === to) return report(false);
    if (from !== 'off') {
      const since = performance.now();
      const r = await this.dpsrd.api('POST', '/api/host/shutdown', { hardOff: from === 'unknown' });
      if (r.status === 409 && from !== 'unknown') await this.dpsrd.ok('POST', '/api/host/shutdown', { hardOff: true });
      else if (r.status !== 200) throw new DeviceError(`shutting the host down: HTTP ${r.status}: ${JSON.stringify(r.body)}`);
      await this.waitHost((h) => h.kind === 'power-off', 30_000, 'power-off', since);
      await this.waitControllerSees('off');
    }
    if (to === 'off') return report(true);
    const bay = to === 'booted:A' ? 'A' : 'B';
    const since = performance.now();
    await this.dpsrd.ok('POST', '/api/bootselect', { bay, powerOn: true });
    const { bootMs } = await this.waitBooted(bay, since);
    return report(true, bootMs);
  }

  /** The controller's debounced view of the power LED lags the line a little. */
  async waitControllerSees(power: 'on' | 'off', timeoutMs = 5000): Promise<void> {
    const end = performance.now() + timeoutMs;
    while ((await this.dpsrd.status()).host.power !== power) {
      if (performance.now() > end) throw new DeviceError(`the controller does not see the host ${power} after ${seconds(timeoutMs)}`);
      await sleep(50);
    }
  }

  /**
   * Waits for the host to come up from `bay` after `since`: its boot line
   * and its first heartbeat, which dpsrd has then heard too.
   */
  async waitBooted(bay: Bay, since: number, timeoutMs = this.bootTimeoutMs + 30_000): Promise<{ on: HostRecord; boot: HostRecord; heartbeat: HostRecord; bootMs: number }> {
    const on = await this.waitHost((r) => r.kind === 'power-on' && r.bay === bay, timeoutMs, `power-on from bay ${bay}`, since);
    const boot = await this.waitHost((r) => r.kind === 'boot', this.bootTimeoutMs, `boot line from bay ${bay}`, on.at);
    if (boot.bay !== bay) throw new DeviceError(`${this.opts.name}: the host booted from ${boot.detail ?? boot.bay}, expected bay ${bay}`);
    const heartbeat = await this.waitHost((r) => r.kind === 'heartbeat' && r.bay === bay, 20_000, `heartbeat from bay ${bay}`, boot.at);
    return { on, boot, heartbeat, bootMs: boot.at - on.at };
  }

  /** A sync of the active drive onto the standby, with the host shut down first (switched mode). */
  async sync(body: Record<string, unknown> = {}): Promise<any> {
    await this.transition('off');
    const { id } = await this.dpsrd.ok('POST', '/api/sync', body);
    const job = await this.dpsrd.waitJob(id);
    if (job.state !== 'done') throw new DeviceError(`sync ${id} ${job.state}: ${job.error?.message ?? ''}`);
    return job;
  }

  async verify(): Promise<any> {
    await this.transition('off');
    const { id } = await this.dpsrd.ok('POST', '/api/verify', {});
    const job = await this.dpsrd.waitJob(id);
    if (job.state !== 'done') throw new DeviceError(`verify ${id} ${job.state}: ${job.error?.message ?? ''}`);
    return job.result;
  }

  /** Presses the failover button for `ms` (sim: the board's button; real: asks the operator). */
  async holdButton(ms: number): Promise<void> {
    await this.dpsrd.ok('POST', '/api/sim/button', { holdMs: ms });
  }

  /** The controller loses power (SIGKILL) and boots again. */
  async powerCycleController(killAt?: () => Promise<void>): Promise<{ downMs: number }> {
    if (killAt) await killAt();
    const t = performance.now();
    await this.dpsrd.kill();
    await this.dpsrd.start();
    await this.dpsrd.events().ready();
    return { downMs: performance.now() - t };
  }

  async close(): Promise<void> {
    await this.stopHost().catch(() => {});
    await this.dpsrd?.stop().catch(() => {});
    if (!process.env.DPSR_HIL_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- simulated

/** dpsrd's simulated board and drive files; the host a QEMU VM following the board's relays. */
export class SimulatedRig extends Rig {
  readonly kind = 'sim' as const;
  readonly qemu: QemuHost;
  /** The PC behind the ATX header, driven by dpsrd's relay events. */
  readonly host: QemuAtxHost;
  /** Things the host side saw that break the relay rules (both drives on the host port). */
  readonly violations: string[] = [];
  private queue: Promise<void> = Promise.resolve();

  constructor(opts: RigOptions) {
    super(opts);
    this.qemu = new QemuHost({ name: opts.name });
    this.host = new QemuAtxHost(this.qemu, () => this.driveOnHost());
    this.qemu.on('boot', (b: BootInfo) => {
      this.booted = { bay: bayOfSerial(b.bay), at: performance.now() };
      this.record({ kind: 'boot', bay: bayOfSerial(b.bay), detail: b.bay });
    });
    this.host.onHeartbeat((bay) => {
      // Relayed before it is recorded: a scenario that saw the heartbeat knows the controller has it.
      void this.dpsrd
        .api('POST', '/api/host/heartbeat', bay ? { bay } : {})
        .catch(() => {})
        .finally(() => this.record({ kind: 'heartbeat', bay }));
    });
    this.host.on('record', (r) => {
      if (r.kind !== 'no-drive') this.booted = null;
      this.record(r);
    });
    this.host.on('led', () => this.enqueue(() => this.reportLed()));
    this.host.on('error-note', (e) => this.note(e));
  }

  get console(): HostConsole {
    return this.qemu;
  }

  async start(): Promise<void> {
    this.image = await ensureImage();
    const config = {
      ...this.baseConfig(),
      rig: 'sim',
      sim: { host: 'external', systemImage: this.image.path, driveSizeMiB: Math.ceil(this.image.sizeBytes / 1024 / 1024), bridgeMiBps: this.opts.bridgeMiBps ?? 0, initialClone: true },
      ...(this.opts.inline ? { mode: 'inline' } : {}),
      ...(this.opts.config ?? {}),
    };
    const configFile = join(this.dir, 'dpsrd.json');
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    this.dpsrd = new Dpsrd({ stateDir: join(this.dir, 'state'), configFile, name: this.opts.name });
    await this.dpsrd.start();
    const es = this.dpsrd.events();
    es.on('event', (e: ControllerEvent) => this.onControllerEvent(e));
    await es.ready();
    // A controller that boots again has lost the LED input's level: tell it again.
    this.dpsrd.on('started', () => this.enqueue(() => this.reportLed()));
    await this.dpsrd.idle();
  }

  private note(e: unknown): void {
    this.emit('error-note', e);
    console.log(`  rig ${this.opts.name}: host wiring: ${(e as Error).message}`);
  }

  private enqueue(fn: () => Promise<void>): void {
    this.queue = this.queue.then(fn).catch((e) => this.note(e));
  }

  /** The host's power LED, as dpsrd's simulated board's input. */
  private async reportLed(): Promise<void> {
    if (!this.dpsrd.running) return;
    await this.dpsrd.ok('POST', '/api/sim/host/power', { power: this.host.led ? 'on' : 'off' });
  }

  private onControllerEvent(e: ControllerEvent): void {
    if (e.type === 'relay' && e.data.channel === 'atxPower') void this.host.powerButton(e.data.on);
    else if (e.type === 'relay' && e.data.channel === 'atxReset') void this.host.resetButton(e.data.on);
    else if (e.type === 'drive' && e.data.action === 'pulled') this.host.driveGone(e.data.bay);
  }

  /**
   * Which drive file the relays connect to the host port, from the
   * controller's read-back; in inline mode the controller's NBD export and
   * the bay whose drive it serves.
   */
  private async driveOnHost(): Promise<DriveOnPort | null> {
    const s = await this.dpsrd.status();
    if (s.mode === 'inline') return s.inline.running && s.inline.bay ? { bay: s.inline.bay, path: s.inline.hostUri } : null;
    const r = s.relays;
    const onHost: Bay[] = [];
    if (!r.muxA) onHost.push('A');
    if (r.muxB) onHost.push('B');
    if (onHost.length > 1) {
      // Never boot with both: clones share disk signatures.
      this.violations.push(`both bays on the host port at power-on (relays ${JSON.stringify(r)})`);
      return null;
    }
    const bay = onHost[0];
    if (!bay || (bay === 'A' ? r.pwrA : r.pwrB) || !s.drives[bay].present) return null;
    return { bay, path: s.drives[bay].path };
  }

  protected async stopHost(): Promise<void> {
    await this.host.unplug();
  }

  async damageBootFiles(bay: Bay, which: ImageFileName): Promise<void> {
    const s = await this.dpsrd.status();
    if (s.host.power === 'on' && this.host.poweredBay === bay) throw new RefusedError(`bay ${bay} is in use by the running host`);
    corruptFile(s.drives[bay].path, this.image, which);
  }

  async pullDrive(bay: Bay): Promise<void> {
    await this.dpsrd.ok('POST', `/api/sim/drive/${bay}/pull`, {});
  }

  async insertDrive(bay: Bay, replacement: boolean): Promise<void> {
    await this.dpsrd.ok('POST', `/api/sim/drive/${bay}/insert`, { replacement });
  }
}

// ---------------------------------------------------------------- real

/**
 * The real rig. Needs (environment):
 * - DPSR_HIL_RIG=real
 * - DPSR_HIL_REAL_CONFIG: a dpsrd config with `rig: hardware`, the drives
 *   (`drives.A/B`, by a path that names the bay, e.g. /dev/disk/by-path/…,
 *   so a replacement drive is found in the same bay) and the relay board
 *   (`bootswitch`, see hw/schematics/example-config.json). The scenario's
 *   failover settings are merged in.
 * - DPSR_HIL_SERIAL: the USB serial adapter on the host's COM port
 *   (DPSR_HIL_SERIAL_BAUD, default 115200); the host runs the test OS's
 *   kernel command line with console=ttyS0,115200.
 * - root (to write the drives) and an operator for drive pulls and inserts
 *   (prompted on the terminal; DPSR_HIL_OPERATOR_TIMEOUT_S, default 600).
 * This process runs on the controller board: dpsrd is started here.
 */
export class RealRig extends Rig {
  readonly kind = 'real' as const;
  private serial!: SerialConsole;
  private hardware!: { drives: Record<Bay, string> } & Record<string, unknown>;

  get console(): HostConsole {
    return this.serial;
  }

  static missing(): string[] {
    const out: string[] = [];
    if (!process.env.DPSR_HIL_REAL_CONFIG) out.push('DPSR_HIL_REAL_CONFIG (dpsrd hardware config)');
    if (!process.env.DPSR_HIL_SERIAL) out.push("DPSR_HIL_SERIAL (the host's serial console adapter)");
    return out;
  }

  async start(): Promise<void> {
    const missing = RealRig.missing();
    if (missing.length) throw new BadInputError(`the real rig needs ${missing.join(', ')}`);
    this.image = await ensureImage();
    const raw = JSON.parse(readFileSync(process.env.DPSR_HIL_REAL_CONFIG!, 'utf8')) as Record<string, any>;
    if (raw.rig !== 'hardware' || !raw.drives) throw new BadInputError('DPSR_HIL_REAL_CONFIG must be a JSON dpsrd config with rig "hardware" and drives');
    const base = this.baseConfig() as { bootswitch: { failover: object }; recovery: object };
    this.hardware = raw as typeof this.hardware;
    const config = { ...raw, recovery: base.recovery, bootswitch: { ...raw.bootswitch, failover: { ...raw.bootswitch?.failover, ...base.bootswitch.failover } } };
    const configFile = join(this.dir, 'dpsrd.json');
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    const logDir = process.env.DPSR_HIL_LOG_DIR;
    if (logDir) mkdirSync(logDir, { recursive: true });
    this.serial = new SerialConsole(process.env.DPSR_HIL_SERIAL!, Number(process.env.DPSR_HIL_SERIAL_BAUD ?? 115200), logDir ? join(logDir, `${this.opts.name}.serial.log`) : undefined);
    await this.serial.open();
    this.serial.on('boot', (b: BootInfo) => {
      this.booted = { bay: bayOfSerial(b.bay), at: performance.now() };
      this.record({ kind: 'boot', bay: bayOfSerial(b.bay), detail: b.bay });
    });
    this.serial.on('heartbeat', (hb: { bay: string }) => {
      const bay = bayOfSerial(hb.bay);
      void this.dpsrd.api('POST', '/api/host/heartbeat', bay ? { bay } : {}).catch(() => {}).finally(() => this.record({ kind: 'heartbeat', bay }));
    });
    this.dpsrd = new Dpsrd({ stateDir: join(this.dir, 'state'), configFile, name: this.opts.name });
    await this.dpsrd.start();
    const es = this.dpsrd.events();
    // The host's power is what its power LED says; which bay it boots is what the relays selected.
    es.on('event', (e: ControllerEvent) => {
      if (e.type !== 'host.power') return;
      if (e.data.power === 'on') {
        this.serial.powerCycle();
        this.booted = null;
        void this.dpsrd.status().then((s) => this.record({ kind: 'power-on', bay: s.bootBay }, e.received));
      } else {
        this.booted = null;
        this.record({ kind: 'power-off', bay: null }, e.received);
      }
    });
    await es.ready();
    await this.prepareDrives();
  }

  /**
   * The test OS onto bay A's drive, then a clone onto B. Bay A must be on
   * its bridge for that: boot selection B (host off) while writing.
   */
  private async prepareDrives(): Promise<void> {
    await this.transition('off');
    await this.dpsrd.ok('POST', '/api/bootselect', { bay: 'B' });
    const { copyFileSync } = await import('node:fs');
    copyFileSync(this.image.path, this.hardware.drives.A);
    await this.dpsrd.ok('POST', '/api/bootselect', { bay: 'A' });
    const { id } = await this.dpsrd.ok('POST', '/api/clone', { force: true });
    const job = await this.dpsrd.waitJob(id, 3_600_000);
    if (job.state !== 'done') throw new DeviceError(`clone onto bay B ${job.state}: ${job.error?.message ?? ''}`);
  }

  async damageBootFiles(bay: Bay, which: ImageFileName): Promise<void> {
    await this.transition('off');
    const s = await this.dpsrd.status();
    const other: Bay = bay === 'A' ? 'B' : 'A';
    // The drive is only reachable from here while its mux connects it to the controller's bridge.
    if (s.bootBay === bay) await this.dpsrd.ok('POST', '/api/bootselect', { bay: other });
    corruptFile(this.hardware.drives[bay], this.image, which);
    if (s.bootBay === bay) await this.dpsrd.ok('POST', '/api/bootselect', { bay });
  }

  private async operator(task: string, done: () => Promise<boolean>): Promise<void> {
    const timeoutMs = Number(process.env.DPSR_HIL_OPERATOR_TIMEOUT_S ?? 600) * 1000;
    console.log(`\n  OPERATOR: ${task} (waiting up to ${seconds(timeoutMs)})`);
    const rl = process.stdin.isTTY ? createInterface({ input: process.stdin }) : null;
    const end = performance.now() + timeoutMs;
    try {
      while (!(await done())) {
        if (performance.now() > end) throw new DeviceError(`operator task not done within ${seconds(timeoutMs)}: ${task}`);
        await sleep(500);
      }
    } finally {
      rl?.close();
    }
  }

  async pullDrive(bay: Bay): Promise<void> {
    await this.operator(`pull the drive out of bay ${bay}`, async () => !(await this.dpsrd.status()).drives[bay].present);
  }

  async insertDrive(bay: Bay, replacement: boolean): Promise<void> {
    await this.operator(`insert ${replacement ? 'a blank replacement drive (at least as large)' : 'the pulled drive'} into bay ${bay}`, async () => (await this.dpsrd.status()).drives[bay].present);
  }

  override async holdButton(ms: number): Promise<void> {
    await this.operator(`hold the failover button for ${seconds(ms)}`, async () => (await this.dpsrd.status()).failover.switching !== null || (await this.dpsrd.status()).failover.failovers > 0);
  }

  protected async stopHost(): Promise<void> {
    await this.transition('off').catch(() => {});
    await this.serial?.close();
  }
}

/**
 * The rig DPSR_HIL_RIG selects (sim by default; anything but sim and real is
 * bad input). The real rig is never chosen implicitly; scenarios check first
 * with rigAvailable (support/scenario.ts), which skips them loudly when it
 * was asked for but is not configured.
 */
export function createRig(opts: RigOptions): Rig {
  const kind = process.env.DPSR_HIL_RIG ?? 'sim';
  if (kind === 'sim') return new SimulatedRig(opts);
  if (kind === 'real') return new RealRig(opts);
  throw new BadInputError(`DPSR_HIL_RIG is "${kind}"; allowed: sim, real`);
}
