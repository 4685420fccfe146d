/**
 * The HIL tier's host PC behind its ATX header: a QemuHost driven by the
 * power and reset button lines as a PC's board drives its supply. A short
 * power press powers an off PC on (QEMU starts on the drive the rig says is
 * on the host port) or is the ACPI button of a running OS (its agent powers
 * off; a boot-loader prompt, a panicked or frozen guest ignore it); held
 * `forceOffMs`, the supply cuts out; reset restarts QEMU on the drive on the
 * port now. Powered with no drive on the port it is a PC at its firmware's
 * "no boot device": lit, silent.
 *
 * It has the shape of src/bootswitch's `Host` (the contract suite in
 * test/support/host-contract.ts runs against it in this tier); the rig
 * drives it from dpsrd's relay events.
 */
import { EventEmitter } from 'node:events';
import type { QemuHost } from './qemu-host.ts';

export type Bay = 'A' | 'B';

/** A drive file on the host port, and the bay it is in (the guest reads it as the disk serial BAY-X). */
export interface DriveOnPort {
  bay: Bay;
  path: string;
}

/** What the host did, for the rig's host log. */
export interface AtxRecord {
  kind: 'power-on' | 'power-off' | 'no-drive';
  bay: Bay | null;
  detail?: string;
}

interface AtxHostEvents {
  /** The power LED changed. */
  led: [lit: boolean];
  record: [AtxRecord];
  /** Something failed in the host's wiring (QEMU would not start, …). */
  'error-note': [Error];
}

export function bayOfSerial(serial: string): Bay | null {
  const m = /^BAY-([AB])$/.exec(serial);
  return m ? (m[1] as Bay) : null;
}

export class QemuAtxHost extends EventEmitter<AtxHostEvents> {
  /** ATX: a real PSU turns off after 4 s of power button. */
  readonly forceOffMs: number;
  #queue: Promise<void> = Promise.resolve();
  #pressedAt: number | null = null;
  #forceTimer: NodeJS.Timeout | null = null;
  #poweredBay: Bay | null = null;
  #noDrive = false;
  #frozen = false;
  #resetting = false;
  #led = false;

  constructor(
    readonly qemu: QemuHost,
    /** Which drive the relays connect to the host port now, or null (none, or a rule broken). */
    private readonly driveOnPort: () => Promise<DriveOnPort | null>,
    opts: { forceOffMs?: number } = {},
  ) {
    super();
    this.forceOffMs = opts.forceOffMs ?? 4000;
    qemu.on('exit', () => {
      if (this.#resetting) return;
      this.#enqueue(async () => {
        this.#poweredBay = null;
        this.#frozen = false;
        this.#setLed(false);
        this.emit('record', { kind: 'power-off', bay: null });
      });
    });
  }

  /** The bay of the drive the host was powered on with, while powered. */
  get poweredBay(): Bay | null {
    return this.#poweredBay;
  }

  get led(): boolean {
    return this.#led;
  }

  async powerLed(): Promise<boolean> {
    return this.#powered;
  }

  /** Resolves once the host has acted on the edge. */
  powerButton(pressed: boolean): Promise<void> {
    const now = performance.now();
    if (pressed) {
      this.#pressedAt = now;
      if (this.#powered) this.#forceTimer = setTimeout(() => void this.#enqueue(() => this.#hardOff('power held')), this.forceOffMs);
      return this.#queue;
    }
    if (this.#forceTimer) clearTimeout(this.#forceTimer);
    this.#forceTimer = null;
    const held = this.#pressedAt === null ? 0 : now - this.#pressedAt;
    this.#pressedAt = null;
    if (held >= this.forceOffMs) return this.#queue;
    return this.#enqueue(() => (this.#powered ? this.#acpi() : this.#powerOn()));
  }

  resetButton(pressed: boolean): Promise<void> {
    return pressed ? this.#enqueue(() => this.#reset()) : this.#queue;
  }

  onHeartbeat(listener: (bay: Bay | null) => void): () => void {
    const on = (hb: { bay: string }) => listener(bayOfSerial(hb.bay));
    this.qemu.on('heartbeat', on);
    return () => this.qemu.off('heartbeat', on);
  }

  /** The OS loses its disk (the drive in `bay` was pulled) and stops answering; the PC stays on. */
  driveGone(bay: Bay): void {
    if (bay !== this.#poweredBay || !this.qemu.isPowered()) return;
    this.#frozen = true;
    this.qemu.freeze();
  }

  /** The OS stops answering (no output, no heartbeats, ACPI ignored); the PC stays on. */
  hang(): void {
    if (!this.qemu.isPowered()) return;
    this.#frozen = true;
    this.qemu.freeze();
  }

  /** Pulls the plug: QEMU killed, no records (the rig is being taken down). */
  async unplug(): Promise<void> {
    if (this.#forceTimer) clearTimeout(this.#forceTimer);
    this.#resetting = true;
    await this.qemu.powerOff();
  }

  get #powered(): boolean {
    return this.qemu.isPowered() || this.#noDrive;
  }

  #enqueue(fn: () => Promise<void>): Promise<void> {
    this.#queue = this.#queue.then(fn).catch((e) => {
      this.emit('error-note', e as Error);
    });
    return this.#queue;
  }

  #setLed(on: boolean): void {
    if (this.#led === on) return;
    this.#led = on;
    this.emit('led', on);
  }

  async #powerOn(): Promise<void> {
    if (this.#powered) return;
    const drive = await this.driveOnPort();
    if (!drive) {
      this.#noDrive = true;
      this.#setLed(true);
      this.emit('record', { kind: 'no-drive', bay: null });
      return;
    }
    await this.qemu.powerOn(drive.path, { serial: `BAY-${drive.bay}` });
    this.#poweredBay = drive.bay;
    this.emit('record', { kind: 'power-on', bay: drive.bay });
    this.#setLed(true);
  }

  /** The ACPI power button: only a running agent acts on it. */
  async #acpi(): Promise<void> {
    if (!this.qemu.isPowered() || this.#frozen || !this.qemu.bootInfo) return;
    this.qemu.command('poweroff', [], 10_000).catch(() => {});
  }

  async #hardOff(why: string): Promise<void> {
    if (this.#noDrive) {
      this.#noDrive = false;
      this.#setLed(false);
      this.emit('record', { kind: 'power-off', bay: null, detail: why });
      return;
    }
    // The exit handler reports the LED and the power-off.
    await this.qemu.powerOff();
  }

  async #reset(): Promise<void> {
    if (!this.#powered) return;
    this.#resetting = true;
    try {
      await this.qemu.powerOff();
    } finally {
      this.#resetting = false;
    }
    this.#noDrive = false;
    this.#frozen = false;
    const drive = await this.driveOnPort();
    if (!drive) {
      this.#noDrive = true;
      this.emit('record', { kind: 'no-drive', bay: null, detail: 'reset' });
      return;
    }
    await this.qemu.powerOn(drive.path, { serial: `BAY-${drive.bay}` });
    this.#poweredBay = drive.bay;
    this.emit('record', { kind: 'power-on', bay: drive.bay, detail: 'reset' });
  }
}
