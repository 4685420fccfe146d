/**
 * The simulated relay board: a real Driver kept in memory, wired like
 * hw/schematics/wiring.json (K_MUX_A, K_MUX_B, K_PWR_A, K_PWR_B, K_ATX_PWR,
 * K_ATX_RST, HOST_PWR_LED, BTN_FAILOVER, SENSE_MUX_*; other pin names are
 * plain lines). It models relay contacts separately from coils so a relay
 * can stick, and it watches the contacts for the data-protection rules so
 * tests and the simulated rig can ask whether one was ever broken.
 *
 * Electrical conventions: a relay line high = coil energised; the button
 * pulls its line low when pressed; the power LED line is high when lit.
 */
import { EventEmitter } from 'node:events';
import { DeviceError } from '../errors.ts';
import type { Clock } from './clock.ts';
import { systemClock } from './clock.ts';
import { DATA_PORTS, type Bay, type DataBay, type DataPort } from './config.ts';
import type { DigitalInput, DigitalOutput, Driver } from './io.ts';

export const SIM_RELAYS = ['K_MUX_A', 'K_MUX_B', 'K_PWR_A', 'K_PWR_B', 'K_ATX_PWR', 'K_ATX_RST'] as const;
/** The data ports' relays: a mux and a power relay per bay C to H. */
export const SIM_PORT_RELAYS = DATA_PORTS.flatMap((bays) => bays.flatMap((b) => [`K_MUX_${b}`, `K_PWR_${b}`] as const));
export type SimRelay = (typeof SIM_RELAYS)[number] | (typeof SIM_PORT_RELAYS)[number];
const ALL_RELAYS: readonly string[] = [...SIM_RELAYS, ...SIM_PORT_RELAYS];
/** The host's SATA ports by their two bays: the boot port, then the data ports. */
const HOST_PORTS: readonly (readonly [string, string])[] = [['A', 'B'], ...DATA_PORTS];

export interface Violation {
  at: number;
  rule: 'both-drives-to-host' | 'switched-while-powered';
  /** The host port it happened on: 'A' for the boot port, else the data port's first bay. */
  port?: string;
  detail: string;
}

/** What the host side sees: which drives reach its SATA port, powered or not. */
export interface HostPort {
  drivesOnHost(): Bay[];
  poweredDrivesOnHost(): Bay[];
}

interface SimBoardEvents {
  contact: [relay: SimRelay, energised: boolean];
  line: [pin: string, level: boolean];
  atx: [line: 'power' | 'reset', pressed: boolean];
}

export class SimBoard extends EventEmitter<SimBoardEvents> implements Driver, HostPort {
  readonly kind = 'sim' as const;
  readonly violations: Violation[] = [];
  /**
   * Mux moves a controller power loss forced under a powered host. Not the
   * controller's doing (the fail-safe wiring drops every coil), so not a
   * violation; kept so tests can see it happen and check it is only that.
   */
  readonly powerLossMoves: Violation[] = [];
  #losingPower = false;
  #coils = new Map<string, boolean>();
  #stuck = new Map<string, boolean>();
  #inputs = new Map<string, boolean>();
  #dropped = false;
  /** Bumped by each power loss: lines claimed before it belong to a controller that died with it. */
  #powerEpoch = 0;
  #hostPowered = () => this.#inputs.get('HOST_PWR_LED') === true;
  #buttonTimer: unknown = null;
  /** How many times each line was claimed: a new controller process claims them again. */
  readonly claims = new Map<string, number>();

  constructor(readonly clock: Clock = systemClock) {
    super();
    this.#inputs.set('BTN_FAILOVER', true); // pulled up, not pressed
    this.#inputs.set('HOST_PWR_LED', false);
  }

  // ---- Driver ----

  async output(pin: string | number, initial: boolean): Promise<DigitalOutput> {
    const name = String(pin);
    this.#check(name);
    this.claims.set(name, (this.claims.get(name) ?? 0) + 1);
    this.#setCoil(name, initial);
    const epoch = this.#powerEpoch;
    return {
      name,
      write: async (level: boolean) => {
        this.#check(name, epoch);
        this.#setCoil(name, level);
      },
      read: async () => {
        this.#check(name, epoch);
        return this.#coils.get(name) ?? false;
      },
      close: async () => {},
    };
  }

  /** The latch before a claim: null for a line never driven since the board powered up. */
  async peek(pin: string | number): Promise<boolean | null> {
    const name = String(pin);
    this.#check(name);
    return this.#coils.has(name) ? this.#coils.get(name)! : null;
  }

  async input(pin: string | number): Promise<DigitalInput> {
    const name = String(pin);
    this.#check(name);
    const epoch = this.#powerEpoch;
    return {
      name,
      read: async () => {
        this.#check(name, epoch);
        return this.level(name);
      },
      close: async () => {},
    };
  }

  async close(): Promise<void> {
    if (this.#buttonTimer !== null) this.clock.clearTimeout(this.#buttonTimer);
  }

  /** `claimedAt`: the power epoch of the handle used; a controller that lost power drives and reads nothing (its actions still in flight in the test's process fail). */
  #check(name: string, claimedAt = this.#powerEpoch): void {
    if (claimedAt !== this.#powerEpoch) throw new DeviceError(`simulated controller lost power (line ${name} was claimed before the power loss)`, { fault: 'transport' });
    if (this.#dropped) throw new DeviceError(`simulated board unreachable (line ${name})`, { fault: 'transport' });
  }

  // ---- physics ----

  /** The electrical level of any line as the controller would read it. */
  level(pin: string): boolean {
    if (pin.startsWith('SENSE_MUX_')) return this.contact(`K_MUX_${pin.slice('SENSE_MUX_'.length)}`);
    if (this.#inputs.has(pin)) return this.#inputs.get(pin)!;
    return this.#coils.get(pin) ?? false;
  }

  coil(relay: string): boolean {
    return this.#coils.get(relay) ?? false;
  }

  /** Where the contact really is: the coil, unless the relay is stuck. */
  contact(relay: string): boolean {
    return this.#stuck.has(relay) ? this.#stuck.get(relay)! : this.coil(relay);
  }

  #setCoil(name: string, level: boolean): void {
    const beforeContact = this.contact(name);
    this.#coils.set(name, level);
    this.emit('line', name, level);
    const after = this.contact(name);
    if (ALL_RELAYS.includes(name) && after !== beforeContact) this.#contactMoved(name as SimRelay, after);
  }

  #contactMoved(relay: SimRelay, energised: boolean): void {
    const at = this.clock.now();
    const port = HOST_PORTS.find((p) => p.some((b) => relay === `K_MUX_${b}`));
    if (port && this.#hostPowered()) {
      (this.#losingPower ? this.powerLossMoves : this.violations).push({ at, rule: 'switched-while-powered', port: port[0], detail: `${relay} moved to ${energised ? 'energised' : 'released'} while the host power LED was lit` });
    }
    if (port && this.#onPort(port).length > 1) {
      this.violations.push({ at, rule: 'both-drives-to-host', port: port[0], detail: `after ${relay} moved, bays ${port.join(' and ')} both reach the host's ${port[0] === 'A' ? 'boot' : 'data'} port` });
    }
    this.emit('contact', relay, energised);
    if (relay === 'K_ATX_PWR') this.emit('atx', 'power', energised);
    if (relay === 'K_ATX_RST') this.emit('atx', 'reset', energised);
  }

  /** A port's first bay is on the host with its mux released, its second with its mux energised (fail-safe wiring). */
  #onPort([first, second]: readonly [string, string]): string[] {
    const bays: string[] = [];
    if (!this.contact(`K_MUX_${first}`)) bays.push(first);
    if (this.contact(`K_MUX_${second}`)) bays.push(second);
    return bays;
  }

  /** De-energised K_MUX_A = bay A to host; energised K_MUX_B = bay B to host (fail-safe wiring). */
  drivesOnHost(): Bay[] {
    return this.#onPort(['A', 'B']) as Bay[];
  }

  poweredDrivesOnHost(): Bay[] {
    return this.drivesOnHost().filter((b) => !this.contact(b === 'A' ? 'K_PWR_A' : 'K_PWR_B'));
  }

  /** The bays a data port's muxes connect to the host's data port (C or D for the port of bays C and D). */
  drivesOnDataPort(port: DataPort): DataBay[] {
    return this.#onPort(port) as DataBay[];
  }

  /** Those of them that are powered: the data disk the host sees. */
  poweredDrivesOnDataPort(port: DataPort): DataBay[] {
    return this.drivesOnDataPort(port).filter((b) => !this.contact(`K_PWR_${b}`));
  }

  // ---- test and rig controls ----

  /** Drive the host's power-LED input (normally done by SimHost). */
  setPowerLed(lit: boolean): void {
    this.setInput('HOST_PWR_LED', lit);
  }

  setInput(pin: string, level: boolean): void {
    if (this.#inputs.get(pin) === level) return;
    this.#inputs.set(pin, level);
    this.emit('line', pin, level);
  }

  pressButton(): void {
    this.setInput('BTN_FAILOVER', false);
  }

  releaseButton(): void {
    if (this.#buttonTimer !== null) this.clock.clearTimeout(this.#buttonTimer);
    this.#buttonTimer = null;
    this.setInput('BTN_FAILOVER', true);
  }

  /** Press now and release after `ms` on the board's clock. */
  holdButton(ms: number): void {
    this.pressButton();
    this.#buttonTimer = this.clock.setTimeout(() => this.releaseButton(), ms);
  }

  get buttonPressed(): boolean {
    return this.#inputs.get('BTN_FAILOVER') === false;
  }

  /** Weld a relay's contact where it is now (or at `energised`): the coil moves, the contact does not. */
  stick(relay: SimRelay, energised = this.contact(relay)): void {
    const before = this.contact(relay);
    this.#stuck.set(relay, energised);
    if (before !== energised) this.#contactMoved(relay, energised);
  }

  unstick(relay: SimRelay): void {
    const before = this.contact(relay);
    this.#stuck.delete(relay);
    const after = this.contact(relay);
    if (before !== after) this.#contactMoved(relay, after);
  }

  /** The board stops answering (USB unplugged, I2C bus hung): every access throws DeviceError. */
  drop(): void {
    this.#dropped = true;
  }

  reconnect(): void {
    this.#dropped = false;
  }

  get dropped(): boolean {
    return this.#dropped;
  }

  /**
   * A controller power loss: every coil drops to de-energised (the
   * fail-safe state). K_MUX_B drops first (and each data port's second mux):
   * the wiring gives K_MUX_A's coil (and each port's first) a hold-up
   * capacitor so bay A is never connected while bay B still is. A
   * host running from bay B (or powered during a sync window) therefore
   * finds bay A under it: physics of the fail-safe wiring, recorded in
   * `powerLossMoves`; both bays on the host stays a violation.
   * `latchesLost`: the board's output latches reset too (lines back to
   * inputs, as GPIO after a board reset), so the next start cannot read
   * them back (`peek` gives null); the coils stay de-energised.
   * The controller that claimed the lines died with the power: its handles
   * throw from now on, so nothing it still had in flight moves a relay.
   */
  powerLoss(opts: { latchesLost?: boolean } = {}): void {
    const seconds = HOST_PORTS.map(([, second]) => `K_MUX_${second}`);
    const order = [...seconds, ...[...this.#coils.keys()].filter((r) => !seconds.includes(r))];
    this.#powerEpoch++;
    this.#losingPower = true;
    try {
      for (const relay of order) if (this.#coils.has(relay)) this.#setCoil(relay, false);
    } finally {
      this.#losingPower = false;
    }
    if (opts.latchesLost) for (const relay of ALL_RELAYS) this.#coils.delete(relay);
  }

  snapshot(): Record<string, boolean> {
    const out: Record<string, boolean> = {};
    for (const r of SIM_RELAYS) out[r] = this.contact(r);
    for (const r of SIM_PORT_RELAYS) if (this.#coils.has(r) || this.#stuck.has(r)) out[r] = this.contact(r);
    return out;
  }
}
