/**
 * Moving boot to a bay with the interlocked sequence of DESIGN rule 4:
 * host off (read back from its power LED; ACPI request, hard off only when
 * asked), drives powered down, break the old mux connection, settle, make
 * the new one, power up, read back every relay, persist, then power the host
 * on if asked. Both bays never reach the host together: break is confirmed
 * before make, and any failed read-back rolls back to the old bay.
 */
import { BusyError, DeviceError, RefusedError } from '../errors.ts';
import type { OutputChannel, InputChannel } from './channel.ts';
import type { Clock } from './clock.ts';
import type { Bay, RelayName, TimingConfig } from './config.ts';
import type { DurableRecord } from '../durable-file.ts';
import type { BootSwitchEmitter } from './events.ts';
import type { Logger } from './io.ts';
import { ISOLATED, SWITCH_RELAYS, bayOf, baysOnHost, patternFor, samePattern, type SwitchRelays } from './relay-pattern.ts';
import { BadInputError } from '../errors.ts';

export interface SwitchRecord {
  /** The bay the relays select, or null after a fault left them selecting none. */
  bay: Bay | null;
  relays: SwitchRelays;
  /** Set while a move runs: a restart that finds it knows the move was cut short. */
  pending: { to: Bay; from: Bay | null } | null;
  fault: string | null;
}

export function validateSwitchRecord(raw: unknown): SwitchRecord {
  const r = raw as SwitchRecord;
  const isBay = (b: unknown) => b === 'A' || b === 'B';
  if (typeof r !== 'object' || r === null) throw new BadInputError('switch record: not an object');
  if (!(r.bay === null || isBay(r.bay))) throw new BadInputError(`switch record: bay ${JSON.stringify(r.bay)} is not A, B or null`);
  if (typeof r.relays !== 'object' || r.relays === null || !SWITCH_RELAYS.every((k) => typeof r.relays[k] === 'boolean')) {
    throw new BadInputError('switch record: relays must hold booleans muxA, muxB, pwrA, pwrB');
  }
  if (baysOnHost(r.relays).length > 1) throw new BadInputError('switch record: relays connect both bays to the host');
  if (r.pending !== null && (typeof r.pending !== 'object' || !isBay(r.pending.to))) throw new BadInputError('switch record: bad pending move');
  if (!(r.fault === null || typeof r.fault === 'string')) throw new BadInputError('switch record: fault must be a string or null');
  return { bay: r.bay, relays: { ...r.relays }, pending: r.pending ? { to: r.pending.to, from: r.pending.from ?? null } : null, fault: r.fault };
}

export const INITIAL_SWITCH_RECORD: SwitchRecord = { bay: 'A', relays: patternFor('A'), pending: null, fault: null };

export interface SwitchLines {
  relays: Record<RelayName, OutputChannel>;
  powerLed: InputChannel;
  /** Contact sense of the mux relays, when wired: the read-back that catches a welded contact. */
  sense: { muxA?: InputChannel; muxB?: InputChannel };
}

export interface MoveOptions {
  /** Pulse the host's power button once the drive is in place. */
  powerOn?: boolean;
  /** If the host ignores the ACPI request, hold power to force it off. */
  hardOff?: boolean;
  signal?: AbortSignal;
}

/**
 * Where a relay step of a move stands against the host's power (DESIGN
 * rule 4: the boot selection never changes under a powered host, and no
 * caller can waive that):
 * - `before`: the move has not touched a relay yet;
 * - `during`: a relay was changed, the next is due;
 * - `roll-back`: a step failed, the relays would be driven back;
 * - `start-up`: the controller starts and would write the recorded pattern
 *   onto relays it found (see startupRelayDecision).
 */
export type MovePhase = 'before' | 'during' | 'roll-back' | 'start-up';

/**
 * What a move does at `phase` given the power LED (`null`: it cannot be
 * read): `proceed` (the host is off), `shut-down` (ask the host to shut
 * down, then proceed once its LED is dark), `stop` (refuse the next step,
 * roll back), `leave` (touch no relay, record a fault). No answer moves a
 * relay while the host is, or may be, powered.
 */
export function hostPowerDecision(phase: MovePhase, hostPowered: boolean | null): 'proceed' | 'shut-down' | 'stop' | 'leave' {
  if (hostPowered === false) return 'proceed';
  if (phase === 'before') return hostPowered === null ? 'stop' : 'shut-down';
  return phase === 'during' ? 'stop' : 'leave';
}

/**
 * What start-up does with a switch's relays, given the latches it found
 * (`null`: at least one cannot be read back), the recorded pattern and the
 * power LED (`null`: unknown):
 * - `apply`: the host is off; write the recorded pattern (break first) and read it back;
 * - `keep`: the host is, or may be, powered and the latches hold the recorded pattern; nothing moves;
 * - `hold`: the host is, or may be, powered and the latches are unreadable
 *   (`found: 'unreadable'`), connect both drives to the host (`'both-on-host'`)
 *   or differ from the record (`'differs'`): no relay is driven, the switch's
 *   state is unknown and everything using its drives is refused until the
 *   host is off and the recorded pattern is applied and read back.
 * Whether the host counts as off is hostPowerDecision's, at phase `start-up`.
 */
export type StartupRelayAction = { action: 'apply' } | { action: 'keep' } | { action: 'hold'; found: 'unreadable' | 'both-on-host' | 'differs' };

export function startupRelayDecision(found: SwitchRelays | null, recorded: SwitchRelays, hostPowered: boolean | null): StartupRelayAction {
  if (hostPowerDecision('start-up', hostPowered) === 'proceed') return { action: 'apply' };
  if (found === null) return { action: 'hold', found: 'unreadable' };
  if (baysOnHost(found).length > 1) return { action: 'hold', found: 'both-on-host' };
  return samePattern(found, recorded) ? { action: 'keep' } : { action: 'hold', found: 'differs' };
}

export interface MoveReport {
  from: Bay | null;
  to: Bay;
  changed: boolean;
  steps: { step: string; atMs: number; tookMs: number }[];
  totalMs: number;
  /** Sum of the configured waits inside the move, so overhead = totalMs - waitedMs. */
  waitedMs: number;
}

/**
 * Connects the selected bay's drive to the host by other means than the mux
 * (inline mode: the host's export is re-pointed to that drive). Runs during
 * every move while the host is off, before the read-back; a throw rolls the
 * relays back as a failed relay step would.
 */
export type ConnectHook = (to: Bay, signal?: AbortSignal) => Promise<void>;

/**
 * How the selected bay's drive reaches the host. `sata` (switched mode): its
 * mux connects it to the host's SATA port. `export` (inline mode): both
 * drives stay on the controller's bridges (the ISOLATED pattern) and the
 * connect hook serves the selected one to the host (qemu-storage-daemon's
 * export over USB or the network); a move then changes no relay, unless the
 * relays are not isolated yet (the first inline start, or a power loss
 * released them), and the drives keep their power under the running export.
 */
export type HostLink = 'sata' | 'export';

/**
 * One move at a time across every switch of one host: each move may shut
 * the host down and power it on again, so a data port's move and the boot
 * port's must not interleave.
 */
export class HostGate {
  #holder: string | null = null;
  /** Switches whose drives are all on the controller (a sync window): the host must stay off. */
  readonly #isolated = new Set<string>();

  get holder(): string | null {
    return this.#holder;
  }

  /** Jobs writing or reading the host's drives with the host off and no window, by claim: who, and the switch whose drives they use. */
  readonly #keptOff = new Map<symbol, { who: string; switchName?: string }>();
  /** Power-on pulses under way: the power LED lights only when the pulse ends. */
  #poweringOn = 0;
  /** An automatic power-on skipped while a job kept the host off (what it was for), owed once the last such job ends. */
  #pendingPowerOn: string | null = null;
  /** Called when the last job that kept the host off releases its claim. */
  readonly #onReleased = new Set<() => void>();
  /** A shutdown the operator asked the controller for (what asked), until the power LED is seen dark or lit again. */
  #operatorOff: string | null = null;

  /** What keeps the host from being powered on by anyone but the mover: a move under way, a window, or a job that needs it off. */
  hostHeldBy(): string | null {
    if (this.#holder) return this.#holder;
    const job = this.keptOffBy();
    if (job) return job;
    const w = [...this.#isolated];
    return w.length ? `the sync window of the ${w.join(', ')} (both drives on the controller)` : null;
  }

  /** The job that needs the host off now (it holds a claim from keepOff), or null. */
  keptOffBy(): string | null {
    const [first] = this.#keptOff.values();
    return first?.who ?? null;
  }

  /**
   * Claims that the host stays off for `who` (a job using the active drive
   * with no window): every power-on is refused until the returned release is
   * called. Throws RefusedError when a power-on pulse is under way.
   */
  keepOff(who: string, switchName?: string): () => void {
    if (this.#poweringOn > 0) throw new RefusedError(`the host is being powered on: ${who} needs it off`, { hint: 'shut the host down and try again' });
    const key = Symbol(who);
    this.#keptOff.set(key, { who, ...(switchName ? { switchName } : {}) });
    return () => {
      if (this.#keptOff.delete(key) && this.#keptOff.size === 0) for (const fn of this.#onReleased) fn();
    };
  }

  /** Calls `fn` each time the last job that kept the host off ends; returns the unsubscribe. */
  onKeptOffReleased(fn: () => void): () => void {
    this.#onReleased.add(fn);
    return () => void this.#onReleased.delete(fn);
  }

  /**
   * Records that an automatic power-on (`what`: after a failover, after a
   * sync window) was skipped because a job kept the host off: it is owed
   * when that job ends (BootSwitch.resumePowerOn). The first one skipped is
   * kept.
   */
  deferPowerOn(what: string): void {
    this.#pendingPowerOn ??= what;
  }

  /** The power-on skipped while a job kept the host off, or null. */
  get pendingPowerOn(): string | null {
    return this.#pendingPowerOn;
  }

  /** Forgets an owed power-on: the host was powered on, or the operator decided on its power since. */
  clearPendingPowerOn(): void {
    this.#pendingPowerOn = null;
  }

  /** Marks a shutdown the operator asked for (`who`), so its dark power LED is the controller's own, not a failed boot. */
  expectOperatorOff(who: string): void {
    this.#operatorOff = who;
  }

  /** The operator's shutdown the power LED going dark belongs to (and forgets it), or null. */
  takeOperatorOff(): string | null {
    const who = this.#operatorOff;
    this.#operatorOff = null;
    return who;
  }

  /**
   * Runs a power-on pulse. RefusedError naming the job when one keeps the
   * host off, or naming the switches whose relay state is unknown
   * (requireKnownRelays).
   */
  async poweringOn<T>(pulse: () => Promise<T>): Promise<T> {
    const job = this.keptOffBy();
    if (job) throw new RefusedError(`the host is not powered on: ${job} needs it off`, { hint: 'wait for it to finish, or cancel it' });
    this.requireKnownRelays('powered on');
    this.#poweringOn++;
    try {
      const r = await pulse();
      this.#pendingPowerOn = null;
      return r;
    } finally {
      this.#poweringOn--;
    }
  }

  /**
   * Throws RefusedError naming the switches whose relay state is unknown: the
   * host is not powered on or reset (`done`) onto them, where it could find
   * both drives, or none, on its port.
   */
  requireKnownRelays(done: string): void {
    const unknown = this.unknownSwitches();
    if (unknown.length === 0) return;
    throw new RefusedError(`the host is not ${done}: the relay state of ${unknown.map((u) => `${u.name} is unknown (${u.why})`).join('; ')}`, {
      hint: 'check the relay board; dpsr applies the recorded pattern while the host is off, and the host may be started once the relays read back as recorded',
    });
  }

  /** Switches whose relay state is unknown (BootSwitch.unknown), by name: why. */
  readonly #unknown = new Map<string, string>();

  /** Records that a switch's relay state is unknown (`why`), or known again (null). */
  setUnknown(name: string, why: string | null): void {
    if (why === null) this.#unknown.delete(name);
    else this.#unknown.set(name, why);
  }

  /** The switches of this host whose relay state is unknown, with why; empty when all are known. */
  unknownSwitches(): { name: string; why: string }[] {
    return [...this.#unknown].map(([name, why]) => ({ name, why }));
  }

  /** Records whether a switch has its drives on the controller. */
  setIsolated(name: string, isolated: boolean): void {
    if (isolated) this.#isolated.add(name);
    else this.#isolated.delete(name);
  }

  /**
   * Takes the gate for `who`, a move of `switchName`; BusyError naming the
   * holder when another move runs, or naming the job when one uses that
   * switch's drives with the host off (a move may cut their power or hand
   * the drive a restore is writing to the host: every path that moves
   * relays, the failover button and an automatic failover included, comes
   * through here).
   */
  enter(who: string, switchName?: string): void {
    if (this.#holder) throw new BusyError(`${this.#holder} is already running`, { hint: 'wait for it to finish' });
    const job = switchName ? [...this.#keptOff.values()].find((c) => c.switchName === switchName) : undefined;
    if (job) throw new BusyError(`${job.who} is using the drives of the ${switchName} with the host off: ${who} would move them under it`, { hint: 'wait for the job to finish, or cancel it, then try again' });
    this.#holder = who;
  }

  leave(who: string): void {
    if (this.#holder === who) this.#holder = null;
  }
}

export interface SwitchNaming {
  /** What the switch is called in messages and logs ("boot switch", "data port C/D"). */
  name: string;
  /** The physical bay at a position (the boot port's positions are its bays). */
  bay(position: Bay): string;
}

export const BOOT_PORT_NAMING: SwitchNaming = { name: 'boot switch', bay: (b) => b };

export class BootSwitch {
  #record: SwitchRecord;
  #moving: Bay | null = null;
  #connect: ConnectHook | null = null;
  /** Why the relays' state is unknown (start-up found them unreadable or not as recorded under a powered host), or null. */
  #unknown: string | null = null;
  /** Claims the relay lines start-up left unclaimed (unreadable), before the recorded pattern is applied. */
  #claimLeft: (() => Promise<void>) | null = null;
  #applying: Promise<boolean> | null = null;

  constructor(
    private readonly lines: SwitchLines,
    private readonly timing: TimingConfig,
    private readonly store: DurableRecord<SwitchRecord>,
    record: SwitchRecord,
    private readonly clock: Clock,
    private readonly events: BootSwitchEmitter,
    private readonly log: Logger,
    readonly hostLink: HostLink = 'sata',
    readonly gate: HostGate = new HostGate(),
    readonly naming: SwitchNaming = BOOT_PORT_NAMING,
  ) {
    this.#record = record;
    gate.setIsolated(naming.name, this.isolated);
  }

  #enter(to: Bay): string {
    const who = `a move of the ${this.naming.name} to bay ${this.naming.bay(to)}`;
    this.requireKnown(who);
    this.gate.enter(who, this.naming.name);
    return who;
  }

  /** Why the relays' state is unknown since start-up (see startupRelayDecision), or null once the recorded pattern is applied and read back. */
  get unknown(): string | null {
    return this.#unknown;
  }

  /**
   * RefusedError (409) naming why when the relays' state is unknown: `what`
   * (a move, a job on this switch's drives) would use drives whose
   * connection nobody knows.
   */
  requireKnown(what: string): void {
    if (this.#unknown === null) return;
    throw new RefusedError(`${what} is refused: the relays of the ${this.naming.name} are in an unknown state (${this.#unknown}); nothing was changed`, {
      hint: 'shut the host down: the recorded relay pattern is then applied (break before make) and read back, and this works again',
    });
  }

  /**
   * Marks the relays' state unknown (start-up under a powered host found
   * them unreadable or not as recorded, and left them as they were).
   * `claimLeft` claims the lines start-up could not read, once the host is
   * off; applyRecorded clears the mark.
   */
  hold(why: string, claimLeft: () => Promise<void>): void {
    this.#unknown = why;
    this.#claimLeft = claimLeft;
    this.gate.setUnknown(this.naming.name, why);
  }

  /**
   * Ends an unknown state: with the host off (hostPowerDecision at
   * `start-up`), claims the lines left unclaimed, then drives the recorded
   * pattern with the interlock of a move (drives powered down, both muxes
   * away from the host, confirmed, then the recorded one connected, drives
   * powered as recorded) and reads it back. True when the state is known
   * (or was); false when the host is, or may be, powered, or a step failed
   * (a critical alert says which; the state stays unknown), or `signal`
   * aborted it (the controller closes; no alert). Never throws. Concurrent
   * callers share one attempt.
   */
  applyRecorded(signal?: AbortSignal): Promise<boolean> {
    if (this.#unknown === null) return Promise.resolve(true);
    this.#applying ??= this.#applyRecorded(signal).finally(() => (this.#applying = null));
    return this.#applying;
  }

  async #applyRecorded(signal?: AbortSignal): Promise<boolean> {
    const who = `applying the recorded relay pattern of the ${this.naming.name}`;
    const target = { ...this.#record.relays };
    let powered: boolean | null;
    try {
      powered = await this.hostPowered();
    } catch {
      powered = null;
    }
    if (hostPowerDecision('start-up', powered) !== 'proceed') return false;
    try {
      this.gate.enter(who, this.naming.name);
    } catch {
      return false; // another port's move runs: tried again when the host is next seen off
    }
    try {
      await this.#claimLeft?.();
      this.#claimLeft = null;
      await this.#apply('pwrA', true);
      await this.#apply('pwrB', true);
      await this.clock.sleep(this.timing.powerOffMs, signal);
      await this.#stillOff('while its drives were powered down');
      await this.#apply('muxA', true);
      await this.#apply('muxB', false);
      await this.clock.sleep(this.timing.settleMs, signal);
      await this.#checkContacts({ muxA: true, muxB: false }, 'after break');
      await this.#stillOff('after both drives were disconnected');
      await this.#apply('muxA', target.muxA);
      await this.#apply('muxB', target.muxB);
      await this.clock.sleep(this.timing.settleMs, signal);
      await this.#checkContacts(target, 'after make');
      await this.#apply('pwrA', target.pwrA);
      await this.#apply('pwrB', target.pwrB);
      await this.clock.sleep(this.timing.powerOnMs, signal);
      const read = await this.readRelays();
      if (!samePattern(read, target)) throw new DeviceError(`read-back: ${JSON.stringify(read)}, expected ${JSON.stringify(target)}`);
      await this.#checkContacts(target, 'in the final read-back');
    } catch (e) {
      if (signal?.aborted) {
        // The controller is closing: the relays stay as far as they got (no drive is made before the break is confirmed), the state unknown.
        this.log.info({ switch: this.naming.name }, 'applying the recorded relay pattern stopped: the controller is closing');
        return false;
      }
      const msg = `${this.naming.name}: the recorded relay pattern ${JSON.stringify(target)} could not be applied with the host off: ${(e as Error).message}; its state stays unknown and its drives are not used`;
      this.log.error({ switch: this.naming.name, error: (e as Error).message }, 'recorded relay pattern not applied');
      this.events.emit('alert', { level: 'critical', code: 'relays-not-applied', message: msg });
      return false;
    } finally {
      this.gate.leave(who);
    }
    this.#unknown = null;
    this.gate.setUnknown(this.naming.name, null);
    this.#persist({ ...this.#record, relays: target, pending: null, fault: null });
    this.log.info({ switch: this.naming.name, relays: target }, 'recorded relay pattern applied and read back with the host off');
    this.events.emit('alert', { level: 'info', code: 'relays-applied', message: `${this.naming.name}: the host is off; the recorded relay pattern ${JSON.stringify(target)} was applied (break before make) and read back, and its drives are in use again` });
    return true;
  }

  /** The relays that select `bay`: its mux pattern, or in export mode always ISOLATED. */
  patternFor(bay: Bay): SwitchRelays {
    return this.hostLink === 'export' ? { ...ISOLATED } : patternFor(bay);
  }

  get record(): Readonly<SwitchRecord> {
    return this.#record;
  }

  get bay(): Bay | null {
    return this.#record.bay;
  }

  get moving(): boolean {
    return this.#moving !== null;
  }

  /** Sets (or clears with null) the hook that connects a bay's drive besides the mux. */
  setConnectHook(hook: ConnectHook | null): void {
    this.#connect = hook;
  }

  /** Read straight from the line: a debounced level can be tens of milliseconds stale. */
  async hostPowered(): Promise<boolean> {
    return this.lines.powerLed.readNow();
  }

  async #stillOff(when: string): Promise<void> {
    if (hostPowerDecision('during', await this.hostPowered()) !== 'proceed') {
      throw new RefusedError(`host powered on ${when}; switch stopped without connecting another drive`, { hint: 'shut the host down and switch again' });
    }
  }

  /** The four switch relays' output latches, read back from the hardware. */
  async readRelays(): Promise<SwitchRelays> {
    const r = this.lines.relays;
    return { muxA: await r.muxA.readBack(), muxB: await r.muxB.readBack(), pwrA: await r.pwrA.readBack(), pwrB: await r.pwrB.readBack() };
  }

  /** Where the mux contacts really are, from the sense inputs, or the latches where none is wired. */
  async #muxContacts(latch: SwitchRelays): Promise<Pick<SwitchRelays, 'muxA' | 'muxB'>> {
    const { sense } = this.lines;
    return {
      muxA: sense.muxA ? await sense.muxA.value() : latch.muxA,
      muxB: sense.muxB ? await sense.muxB.value() : latch.muxB,
    };
  }

  /**
   * Ask the host to shut down and wait for its power LED to go dark.
   * Returns how it went off; throws RefusedError when it stays on.
   */
  async shutdownHost(opts: { hardOff?: boolean; signal?: AbortSignal } = {}): Promise<'was-off' | 'acpi' | 'hard-off'> {
    if (!(await this.hostPowered())) return 'was-off';
    const t = this.timing;
    const bounds = { minMs: t.pulseMinMs, maxMs: t.pulseMaxMs };
    this.log.info({ pulseMs: t.shutdownPulseMs }, 'host powered: requesting ACPI shutdown');
    await this.lines.relays.atxPower.pulse(t.shutdownPulseMs, bounds, opts.signal);
    if (await this.#waitPower(false, t.shutdownTimeoutMs, opts.signal)) return 'acpi';
    if (!opts.hardOff) {
      throw new RefusedError(`host still powered ${t.shutdownTimeoutMs} ms after the shutdown request; boot selection not changed`, {
        hint: 'shut the host down, or repeat with a hard off (may lose unsaved data on the host)',
      });
    }
    this.log.warn({ pulseMs: t.hardOffPulseMs }, 'host ignored shutdown: forcing it off');
    await this.lines.relays.atxPower.pulse(t.hardOffPulseMs, bounds, opts.signal);
    if (await this.#waitPower(false, Math.max(2000, t.debounceMs * 4), opts.signal)) return 'hard-off';
    throw new DeviceError('host power LED still lit after a forced power-off', { hint: 'check the ATX power wiring and the power-LED sense line' });
  }

  /** Powers the host on (ATX pulse) unless it is on; RefusedError while a job keeps it off (HostGate.keepOff). */
  async powerOnHost(signal?: AbortSignal): Promise<void> {
    await this.gate.poweringOn(async () => {
      if (await this.hostPowered()) return;
      const t = this.timing;
      await this.lines.relays.atxPower.pulse(t.powerOnPulseMs, { minMs: t.pulseMinMs, maxMs: t.pulseMaxMs }, signal);
    });
  }

  /**
   * Keeps the host off for `who` (a job that uses the active drive with no
   * window) until the returned release is called: claimed first, then the
   * power LED is read, so a power-on either is refused or is seen here.
   * Throws RefusedError when the host is on or being powered on.
   */
  async keepHostOff(who: string): Promise<() => void> {
    this.requireKnown(who);
    const release = this.gate.keepOff(who, this.naming.name);
    try {
      if (await this.hostPowered()) throw new RefusedError(`the host is powered: ${who} needs it off`, { hint: 'shut the host down and try again' });
    } catch (e) {
      release();
      throw e;
    }
    return release;
  }

  /**
   * Makes the power-on a job's claim made the controller skip
   * (HostGate.deferPowerOn), once nothing holds the host off any more, and
   * says so with an info alert (`power-on-resumed`). Returns what it was
   * owed for, or null when none is owed, something still holds the host
   * off, or the host is on already. Throws what the power-on pulse throws.
   */
  async resumePowerOn(): Promise<string | null> {
    const what = this.gate.pendingPowerOn;
    if (!what || this.gate.hostHeldBy() !== null) return null;
    this.gate.clearPendingPowerOn();
    if (await this.hostPowered()) return null;
    await this.powerOnHost();
    this.log.info({ what }, 'owed power-on made: the job that kept the host off has ended');
    this.events.emit('alert', { level: 'info', code: 'power-on-resumed', message: `host powered on: ${what} was skipped while a job kept the host off, and that job has ended` });
    return what;
  }

  /** Pulses the host's reset line; RefusedError while a switch's relay state is unknown (HostGate.requireKnownRelays). */
  async resetHost(signal?: AbortSignal): Promise<void> {
    this.gate.requireKnownRelays('reset');
    const t = this.timing;
    await this.lines.relays.atxReset.pulse(t.powerOnPulseMs, { minMs: t.pulseMinMs, maxMs: t.pulseMaxMs }, signal);
  }

  async #waitPower(on: boolean, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const started = this.clock.now();
    const step = Math.max(this.timing.pollMs, 5);
    while (this.clock.now() - started < timeoutMs) {
      if ((await this.hostPowered()) === on) return true;
      await this.clock.sleep(step, signal);
    }
    return (await this.hostPowered()) === on;
  }

  /** A position's relay by the channel name the config gives it (muxB, or muxD on the port of bays C and D). */
  #relayName(relay: keyof SwitchRelays): string {
    return `${relay.slice(0, 3)}${this.naming.bay(relay.endsWith('A') ? 'A' : 'B')}`;
  }

  async #apply(relay: keyof SwitchRelays, on: boolean): Promise<void> {
    const ch = this.lines.relays[relay];
    await ch.set(on);
    if ((await ch.readBack()) !== on) throw new DeviceError(`relay ${this.#relayName(relay)}: latch reads ${!on} after writing ${on}`);
  }

  async #checkContacts(expect: Pick<SwitchRelays, 'muxA' | 'muxB'>, when: string): Promise<void> {
    const latch = await this.readRelays();
    const contacts = await this.#muxContacts(latch);
    for (const k of ['muxA', 'muxB'] as const) {
      if (latch[k] !== expect[k]) throw new DeviceError(`relay ${this.#relayName(k)}: latch reads ${latch[k]} ${when}, expected ${expect[k]}`);
      if (contacts[k] !== expect[k]) throw new DeviceError(`relay ${this.#relayName(k)}: contact sense reads ${contacts[k]} ${when}, expected ${expect[k]} (welded or stuck relay?)`, { hint: 'replace the relay module; boot selection was rolled back' });
    }
  }

  #persist(rec: SwitchRecord): void {
    this.store.save(rec);
    this.#record = rec;
    this.gate.setIsolated(this.naming.name, this.isolated);
  }

  /**
   * Move boot to `to`. Idempotent: when the relays already select it, only
   * the read-back runs. One move at a time: a second caller gets BusyError.
   */
  async moveTo(to: Bay, opts: MoveOptions = {}): Promise<MoveReport> {
    if (to !== 'A' && to !== 'B') throw new BadInputError(`bay ${JSON.stringify(to)}: allowed are A and B`);
    if (this.#moving) throw new BusyError(`a move to bay ${this.naming.bay(this.#moving)} is already running`, { hint: 'wait for it to finish' });
    const who = this.#enter(to);
    this.#moving = to;
    try {
      return await this.#move(to, opts);
    } finally {
      this.#moving = null;
      this.gate.leave(who);
    }
  }

  async #move(to: Bay, opts: MoveOptions): Promise<MoveReport> {
    const t = this.timing;
    const started = this.clock.now();
    const steps: MoveReport['steps'] = [];
    let waited = 0;
    let stepStart = started;
    const mark = (step: string) => {
      const now = this.clock.now();
      const s = { step, atMs: now - started, tookMs: now - stepStart };
      stepStart = now;
      steps.push(s);
      this.events.emit('switch-step', { to, ...s });
      this.log.info({ switch: this.naming.name, ...s, to: this.naming.bay(to) }, `switch: ${step}`);
    };
    const wait = async (ms: number) => {
      waited += ms;
      if (ms > 0) await this.clock.sleep(ms, opts.signal);
    };
    const from = this.#record.bay;
    const target = this.patternFor(to);

    const current = await this.readRelays();
    if (from === to && samePattern(current, target)) {
      await this.#checkContacts(target, 'on an unchanged bay');
      mark('already selected');
      if (opts.powerOn) {
        await this.powerOnHost(opts.signal);
        mark('host powered on');
      }
      const totalMs = this.clock.now() - started;
      this.events.emit('switched', { from, to, totalMs, changed: false });
      return { from, to, changed: false, steps, totalMs, waitedMs: waited };
    }

    if (hostPowerDecision('before', await this.hostPowered()) === 'shut-down') {
      const how = await this.shutdownHost({ hardOff: opts.hardOff, signal: opts.signal });
      mark(`host off (${how})`);
    } else {
      mark('host confirmed off');
    }

    this.#persist({ ...this.#record, relays: current, pending: { to, from } });
    mark('intent persisted');

    try {
      if (this.hostLink === 'export' && samePattern(current, target)) {
        // Only the export moves: both drives stay on the controller and powered (the running export has one open).
        mark('relays unchanged (both drives on the controller)');
      } else {
        await this.#apply('pwrA', true);
        await this.#apply('pwrB', true);
        mark('drives powered down');
        await wait(t.powerOffMs);
        await this.#stillOff('while its drives were powered down');

        // Break: take every drive off the host port before the new one is connected.
        await this.#apply('muxA', true);
        await this.#apply('muxB', false);
        await wait(t.settleMs);
        await this.#checkContacts({ muxA: true, muxB: false }, 'after break');
        await this.#stillOff('after the old drive was disconnected');
        mark('old connection broken');

        // Make: connect only the target (in export mode nothing: the target is the break pattern).
        if (this.hostLink === 'sata') {
          if (to === 'A') await this.#apply('muxA', false);
          else await this.#apply('muxB', true);
          await wait(t.settleMs);
          await this.#checkContacts(target, 'after make');
          mark('new connection made');
        }

        await this.#apply('pwrA', false);
        await this.#apply('pwrB', false);
        await wait(t.powerOnMs);
        mark('drives powered up');
      }

      if (this.#connect) {
        await this.#connect(to, opts.signal);
        await this.#stillOff('while the drive was connected');
        mark('drive connected');
      }

      const read = await this.readRelays();
      if (!samePattern(read, target)) throw new DeviceError(`read-back after the move: ${JSON.stringify(read)}, expected ${JSON.stringify(target)}`);
      await this.#checkContacts(target, 'in the final read-back');
      mark('read back');
    } catch (e) {
      await this.#rollBack(from, e);
      throw e;
    }

    this.#persist({ bay: to, relays: target, pending: null, fault: null });
    mark('persisted');
    if (opts.powerOn) {
      await this.powerOnHost(opts.signal);
      mark('host powered on');
    }
    const totalMs = this.clock.now() - started;
    this.events.emit('switched', { from, to, totalMs, changed: true });
    return { from, to, changed: true, steps, totalMs, waitedMs: waited };
  }

  /**
   * Whether the relays connect the selected bay the way `hostLink` says:
   * export mode, both drives on the controller's bridges (ISOLATED); sata
   * mode, the selected bay's pattern (or a sync window). Relays left by the
   * other mode (a switched start before an inline one, or the reverse) or
   * released by a power loss are brought there with the interlocked sequence
   * of a move to the selected bay, which also runs the connect hook; never
   * under a powered host, which may run from the drive they connect: then
   * `host-on`, and the caller tries again once the host is off.
   */
  async ensureLink(signal?: AbortSignal): Promise<'ready' | 'moved' | 'host-on'> {
    // Unknown relays are brought to the record first, which needs the host off as well.
    if (this.#unknown !== null && !(await this.applyRecorded())) return 'host-on';
    const rec = this.#record;
    const relays = await this.readRelays();
    const atRest = this.hostLink === 'export' ? samePattern(relays, ISOLATED) : rec.bay === null || samePattern(relays, patternFor(rec.bay));
    if (atRest) return 'ready';
    if (await this.hostPowered()) return 'host-on';
    await this.moveTo(rec.bay ?? bayOf(relays) ?? 'A', { signal });
    return 'moved';
  }

  /** True while neither bay is connected to the host (a sync window). */
  get isolated(): boolean {
    return this.#record.bay === null && this.#record.fault === null && samePattern(this.#record.relays, ISOLATED);
  }

  /**
   * Takes both drives off the host and onto the controller's bridges, for a
   * sync in switched mode. The host is shut down first, exactly as for a
   * move (never forced: a sync is never worth a crashed host). Idempotent.
   * `moveTo(bay)` ends the window.
   */
  async isolate(opts: { hardOff?: boolean; signal?: AbortSignal } = {}): Promise<{ changed: boolean; host: 'was-off' | 'acpi' | 'hard-off'; totalMs: number }> {
    if (this.hostLink === 'export') throw new RefusedError('inline mode keeps both drives on the controller: there is no sync window', { hint: 'copies run while the host runs' });
    if (this.#moving) throw new BusyError(`a move to bay ${this.naming.bay(this.#moving)} is already running`, { hint: 'wait for it to finish' });
    const from = this.#record.bay;
    const who = this.#enter(from ?? 'A');
    this.#moving = from ?? 'A';
    const started = this.clock.now();
    try {
      const current = await this.readRelays();
      if (samePattern(current, ISOLATED)) {
        await this.#checkContacts(ISOLATED, 'while isolated');
        if (await this.hostPowered()) throw new RefusedError('the host is powered although no drive is connected to it', { hint: 'shut the host down' });
        return { changed: false, host: 'was-off', totalMs: this.clock.now() - started };
      }
      const host = await this.shutdownHost(opts);
      this.#persist({ ...this.#record, relays: current, pending: from ? { to: from, from } : null });
      try {
        await this.#apply('pwrA', true);
        await this.#apply('pwrB', true);
        await this.clock.sleep(this.timing.powerOffMs, opts.signal);
        await this.#stillOff('while its drives were powered down');
        await this.#apply('muxA', true);
        await this.#apply('muxB', false);
        await this.clock.sleep(this.timing.settleMs, opts.signal);
        await this.#checkContacts(ISOLATED, 'after isolating');
        await this.#apply('pwrA', false);
        await this.#apply('pwrB', false);
        await this.clock.sleep(this.timing.powerOnMs, opts.signal);
        const read = await this.readRelays();
        if (!samePattern(read, ISOLATED)) throw new DeviceError(`read-back after isolating: ${JSON.stringify(read)}, expected ${JSON.stringify(ISOLATED)}`);
      } catch (e) {
        await this.#rollBack(from, e);
        throw e;
      }
      this.#persist({ bay: null, relays: { ...ISOLATED }, pending: null, fault: null });
      const totalMs = this.clock.now() - started;
      this.log.info({ switch: this.naming.name, from: from === null ? null : this.naming.bay(from), totalMs }, 'switch: both drives on the controller (sync window)');
      this.events.emit('isolated', { from, totalMs });
      return { changed: true, host, totalMs };
    } finally {
      this.#moving = null;
      this.gate.leave(who);
    }
  }

  /**
   * After a failed step: drive the relays back to the old bay (break first
   * again), then persist what the latches really hold, so a restart
   * restores exactly what is on the wires.
   */
  async #rollBack(from: Bay | null, cause: unknown): Promise<void> {
    const msg = (cause as Error).message;
    this.log.error({ switch: this.naming.name, from: from === null ? null : this.naming.bay(from), error: msg }, 'switch failed: rolling back');
    let fault = `move failed: ${msg}`;
    let powered: boolean | null;
    try {
      powered = await this.hostPowered();
    } catch {
      powered = null; // cannot tell: behave as if it were running
    }
    if (hostPowerDecision('roll-back', powered) === 'leave') fault += '; host powered, relays left where they are';
    else try {
      // Away-from-host first, and the other mux only once that contact is confirmed away.
      const back = this.patternFor(from ?? 'A');
      const away = from === 'B' ? 'muxA' : 'muxB';
      const toward = away === 'muxA' ? 'muxB' : 'muxA';
      await this.lines.relays[away].set(back[away]);
      const contacts = await this.#muxContacts(await this.readRelays());
      if (from !== null && contacts[away] === back[away]) await this.lines.relays[toward].set(back[toward]);
      else fault += `; ${this.#relayName(away)} did not release, bay ${from === null ? 'none' : this.naming.bay(from)} left disconnected`;
      await this.lines.relays.pwrA.set(false);
      await this.lines.relays.pwrB.set(false);
    } catch (e) {
      fault += `; roll-back failed: ${(e as Error).message}`;
    }
    let relays: SwitchRelays;
    let contacts: Pick<SwitchRelays, 'muxA' | 'muxB'>;
    try {
      relays = await this.readRelays();
      contacts = await this.#muxContacts(relays);
    } catch {
      // The board is gone: record what we last commanded, which is what it will be given again at reconnect.
      const r = this.lines.relays;
      relays = { muxA: r.muxA.commanded, muxB: r.muxB.commanded, pwrA: r.pwrA.commanded, pwrB: r.pwrB.commanded };
      contacts = relays;
    }
    const onHost = baysOnHost(contacts);
    // In export mode isolated relays are the selection's own pattern: the bay stays the one the export serves again.
    const bay =
      this.hostLink === 'export' && samePattern({ ...relays, ...contacts }, ISOLATED) ? from
      : onHost.length === 1 && samePattern({ ...relays, ...contacts }, patternFor(onHost[0])) ? onHost[0]
      : null;
    if (baysOnHost(relays).length > 1) relays = { ...relays, muxA: true, muxB: false };
    this.#persist({ bay, relays, pending: null, fault });
    this.events.emit('alert', { level: 'critical', code: 'switch-failed', message: this.naming === BOOT_PORT_NAMING ? fault : `${this.naming.name}: ${fault}` });
  }

  /** Clear a recorded interrupted move after the relays were restored to the recorded state. */
  clearPending(note: string): void {
    if (this.#record.pending) this.#persist({ ...this.#record, pending: null, fault: note });
  }
}
