/**
 * The simulated host PC: it follows the ATX power and reset relays of a
 * SimBoard, lights the power LED input while powered, boots from whatever
 * drive reaches its SATA port (or inline mode's export), and sends heartbeats while its OS runs.
 * Controls let tests make a drive unbootable, hang the OS, or ignore ACPI.
 * As a `Host`, its buttons can also be pressed directly (not through relays).
 */
import { EventEmitter } from 'node:events';
import type { Clock } from './clock.ts';
import type { Bay } from './config.ts';
import type { Host } from './host.ts';
import type { SimBoard } from './sim-board.ts';

export type HostState = 'off' | 'booting' | 'running' | 'hung' | 'shutting-down';

export interface SimHostOptions {
  bootMs?: number;
  shutdownMs?: number;
  heartbeatMs?: number;
  /** ATX: holding power this long forces the supply off. */
  forceOffMs?: number;
  /** How long after the OS is up its agent sends the first heartbeat (an agent started late in the boot). */
  firstHeartbeatMs?: number;
}

interface SimHostEvents {
  heartbeat: [bay: Bay];
  /** The agent's notice that the OS is shutting down cleanly (sent from its stop hook); a power cut sends none. */
  'shutting-down': [bay: Bay | null];
  state: [state: HostState, bay: Bay | null];
}

export class SimHost extends EventEmitter<SimHostEvents> implements Host {
  #state: HostState = 'off';
  #bootedFrom: Bay | null = null;
  #timer: unknown = null;
  #beat: unknown = null;
  #forceTimer: unknown = null;
  #powerPressedAt: number | null = null;
  readonly bootable: Record<Bay, boolean> = { A: true, B: true };
  /** A host whose OS ignores the ACPI power button (hung, or configured to). */
  ignoresAcpi = false;
  /**
   * The drive the host reaches besides its SATA port, or null: inline mode's
   * export (the controller's USB mass-storage gadget or network boot) serving
   * that bay's drive. It counts like one more disk at boot.
   */
  exportedDisk: () => Bay | null = () => null;
  readonly opts: Required<SimHostOptions>;

  constructor(
    readonly board: SimBoard,
    readonly clock: Clock,
    opts: SimHostOptions = {},
  ) {
    super();
    this.opts = { bootMs: 2000, shutdownMs: 3000, heartbeatMs: 1000, forceOffMs: 4000, firstHeartbeatMs: 0, ...opts };
    board.on('atx', (line, pressed) => (line === 'power' ? this.#powerButton(pressed) : pressed && this.#reset()));
  }

  get state(): HostState {
    return this.#state;
  }

  get bootedFrom(): Bay | null {
    return this.#bootedFrom;
  }

  get powered(): boolean {
    return this.#state !== 'off';
  }

  async powerLed(): Promise<boolean> {
    return this.powered;
  }

  async powerButton(pressed: boolean): Promise<void> {
    this.#powerButton(pressed);
  }

  async resetButton(pressed: boolean): Promise<void> {
    if (pressed) this.#reset();
  }

  onHeartbeat(listener: (bay: Bay | null) => void): () => void {
    this.on('heartbeat', listener);
    return () => this.off('heartbeat', listener);
  }

  /** Power on as if someone pressed the case button (not through our relay). */
  powerOn(): void {
    if (this.#state === 'off') this.#boot();
  }

  /** Cut power as if the plug were pulled or the PSU forced off. */
  forceOff(): void {
    this.#set('off', null);
  }

  /** Calls `listener` on each notice of the agent that the OS is shutting down cleanly. Returns a function that stops the calls. */
  onShuttingDown(listener: (bay: Bay | null) => void): () => void {
    this.on('shutting-down', listener);
    return () => this.off('shutting-down', listener);
  }

  /** The OS shuts down by itself (its menu, or its own reaction to the case button): the agent's notice, then power off. */
  shutDownFromOs(): void {
    if (this.#state === 'running') this.#shutdown();
  }

  /** The OS stops answering: no heartbeats, no ACPI. */
  hang(): void {
    if (this.#state !== 'off') this.#set('hung', this.#bootedFrom);
  }

  #powerButton(pressed: boolean): void {
    if (pressed) {
      this.#powerPressedAt = this.clock.now();
      if (this.#state !== 'off') this.#forceTimer = this.clock.setTimeout(() => this.forceOff(), this.opts.forceOffMs);
      return;
    }
    if (this.#forceTimer !== null) this.clock.clearTimeout(this.#forceTimer);
    this.#forceTimer = null;
    const held = this.#powerPressedAt === null ? 0 : this.clock.now() - this.#powerPressedAt;
    this.#powerPressedAt = null;
    if (held >= this.opts.forceOffMs) return; // already forced off while held
    if (this.#state === 'off') this.#boot();
    else if (this.#state === 'running' && !this.ignoresAcpi) this.#shutdown();
  }

  #reset(): void {
    if (this.#state !== 'off') this.#boot();
  }

  #boot(): void {
    this.#set('booting', null);
    this.#timer = this.clock.setTimeout(() => {
      const exported = this.exportedDisk();
      const drives = [...this.board.poweredDrivesOnHost(), ...(exported ? [exported] : [])];
      // Two drives with one disk signature, or none at all: the firmware finds nothing sane to boot.
      if (drives.length === 1 && this.bootable[drives[0]]) this.#set('running', drives[0]);
      else this.#set('hung', drives.length === 1 ? drives[0] : null);
    }, this.opts.bootMs);
  }

  #shutdown(): void {
    this.#set('shutting-down', this.#bootedFrom);
    this.emit('shutting-down', this.#bootedFrom);
    this.#timer = this.clock.setTimeout(() => this.#set('off', null), this.opts.shutdownMs);
  }

  #set(state: HostState, bay: Bay | null): void {
    if (this.#timer !== null) this.clock.clearTimeout(this.#timer);
    if (this.#beat !== null) this.clock.clearTimeout(this.#beat);
    this.#timer = this.#beat = null;
    this.#state = state;
    this.#bootedFrom = bay;
    this.board.setPowerLed(state !== 'off');
    this.emit('state', state, bay);
    if (state === 'running') {
      if (this.opts.firstHeartbeatMs > 0) this.#beat = this.clock.setTimeout(() => this.#heartbeat(), this.opts.firstHeartbeatMs);
      else this.#heartbeat();
    }
  }

  #heartbeat(): void {
    if (this.#state !== 'running' || this.#bootedFrom === null) return;
    this.emit('heartbeat', this.#bootedFrom);
    this.#beat = this.clock.setTimeout(() => this.#heartbeat(), this.opts.heartbeatMs);
  }
}
