/**
 * The thin shell around the failover reducer: it feeds events in one at a
 * time, persists the new state before acting (so a restart resumes an
 * ordered switch instead of forgetting it), carries out the actions, and
 * keeps the boot-confirmation deadline timer.
 */
import { isDpsrError, RefusedError } from '../errors.ts';
import type { BootSwitch } from './boot-switch.ts';
import type { OutputChannel } from './channel.ts';
import type { Clock } from './clock.ts';
import type { Bay, FailoverConfig } from './config.ts';
import type { DurableRecord } from '../durable-file.ts';
import type { BootSwitchEmitter } from './events.ts';
import { reduce, type FailoverAction, type FailoverEvent, type FailoverState } from './failover.ts';
import type { Logger } from './io.ts';

/** Events as callers give them: the shell stamps the wall-clock time. */
export type FailoverInput = FailoverEvent extends infer E ? (E extends { at: number } ? Omit<E, 'at'> : never) : never;

/** An automatic action of the failover machine on the host's power: a power-on, or a boot retry (a reset of a powered host, else a power-on). */
export type HostAction = 'power-on' | 'retry-boot';

/** What is known when an automatic host action is due. */
export interface HostActionContext {
  /** The host's switches whose relay state is unknown (HostGate.unknownSwitches). */
  readonly unknown: readonly { readonly name: string; readonly why: string }[];
  /** What keeps the host off (HostGate.hostHeldBy), or null. */
  readonly heldBy: string | null;
  /** The job that needs the host off (HostGate.keptOffBy), or null. */
  readonly keptOffBy: string | null;
}

export type HostActionDecision =
  | { readonly action: 'go' }
  | { readonly action: 'skip'; readonly level: 'warning' | 'critical'; readonly code: string; readonly message: string; readonly owePowerOn: boolean };

/**
 * Whether the failover machine's automatic power-on or boot retry is made.
 * Skipped, with an alert:
 * - while a switch of the host is in an unknown state (critical,
 *   `<what>-relays-unknown`): its drives may be connected in any way, both
 *   to the host included, and the record is applied only while the host
 *   stays off, so the host is neither powered on nor reset onto them;
 * - while a move, a sync window or a job keeps the host off (warning,
 *   `<what>-held`): a move or window powers the host on itself when it
 *   ends; a job's claim has no such end, so a power-on skipped for a job
 *   is owed to it (`owePowerOn`), a boot retry is not.
 */
export function hostActionDecision(what: HostAction, c: HostActionContext): HostActionDecision {
  if (c.unknown.length > 0) {
    const which = c.unknown.map((u) => `the ${u.name} (${u.why})`).join('; ');
    return {
      action: 'skip',
      level: 'critical',
      code: `${what}-relays-unknown`,
      message: `${what} refused: the relays of ${which} are in an unknown state, so the host is neither powered on nor reset onto them. With the host off dpsr applies the recorded pattern and reads it back (alert relays-applied); power the host on after that`,
      owePowerOn: false,
    };
  }
  if (c.heldBy !== null) {
    const owed = what === 'power-on' && c.keptOffBy === c.heldBy;
    return { action: 'skip', level: 'warning', code: `${what}-held`, message: `${what} skipped: ${c.heldBy} keeps the host off${owed ? '; the host is powered on when it ends' : ''}`, owePowerOn: owed };
  }
  return { action: 'go' };
}

export interface Indicators {
  ledFault?: OutputChannel;
  ledBayA?: OutputChannel;
  ledBayB?: OutputChannel;
}

export class FailoverShell {
  #state: FailoverState;
  #queue: Promise<void> = Promise.resolve();
  #deadline: unknown = null;
  #background = new Set<Promise<void>>();
  #closed = false;

  constructor(
    state: FailoverState,
    private readonly cfg: FailoverConfig,
    private readonly store: DurableRecord<FailoverState>,
    private readonly bootSwitch: BootSwitch,
    private readonly clock: Clock,
    /** Wall-clock milliseconds: deadlines are persisted and must survive a restart. */
    private readonly wallNow: () => number,
    private readonly events: BootSwitchEmitter,
    private readonly log: Logger,
    private readonly indicators: Indicators = {},
  ) {
    this.#state = state;
  }

  get state(): Readonly<FailoverState> {
    return this.#state;
  }

  /** Queue one event; resolves once its state is persisted and its quick actions are done. */
  dispatch(input: FailoverInput): Promise<void> {
    const event = { ...input, at: this.wallNow() } as FailoverEvent;
    const run = this.#queue.then(() => this.#step(event));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Resolves when every queued event and every action started by them has finished. */
  async idle(): Promise<void> {
    for (;;) {
      await this.#queue;
      if (this.#background.size === 0) return;
      await Promise.allSettled([...this.#background]);
    }
  }

  heartbeat(): Promise<void> {
    return this.dispatch({ type: 'heartbeat' });
  }

  /** The host's agent says its OS is shutting down cleanly (not a failed boot; a power cut sends no such notice). */
  hostShuttingDown(): Promise<void> {
    return this.dispatch({ type: 'host-shutting-down' });
  }

  close(): void {
    this.#closed = true;
    if (this.#deadline !== null) this.clock.clearTimeout(this.#deadline);
    this.#deadline = null;
  }

  async #step(event: FailoverEvent): Promise<void> {
    if (this.#closed) return;
    const { state, actions } = reduce(this.cfg, this.#state, event);
    if (JSON.stringify(state) !== JSON.stringify(this.#state)) {
      this.store.save(state);
      this.#state = state;
      this.events.emit('state', structuredClone(state));
      this.#showIndicators();
    }
    this.#armDeadline();
    for (const a of actions) this.#perform(a);
  }

  #perform(a: FailoverAction): void {
    switch (a.type) {
      case 'alert':
        this.log[a.level === 'critical' ? 'error' : a.level === 'warning' ? 'warn' : 'info']({ code: a.code }, a.message);
        this.events.emit('alert', { level: a.level, code: a.code, message: a.message });
        return;
      case 'boot':
        this.events.emit('boot', { bay: a.bay, status: a.status });
        return;
      case 'failover':
        this.events.emit('failover', { from: a.from, to: a.to, reason: a.reason });
        return;
      case 'show-status':
        this.events.emit('show-status');
        return;
      case 'switch':
        this.#background_(this.#switch(a.to, a.hardOff));
        return;
      case 'power-on':
        this.#background_(this.#powerOn());
        return;
      case 'retry-boot':
        this.#background_(this.#retryBoot(a.bay));
        return;
    }
  }

  #background_(p: Promise<void>): void {
    this.#background.add(p);
    void p.finally(() => this.#background.delete(p));
  }

  async #switch(to: Bay, hardOff: boolean): Promise<void> {
    try {
      await this.bootSwitch.moveTo(to, { hardOff });
      await this.dispatch({ type: 'switch-result', to, ok: true, bay: this.bootSwitch.bay });
    } catch (e) {
      await this.dispatch({ type: 'switch-result', to, ok: false, bay: this.bootSwitch.bay, refused: e instanceof RefusedError || (isDpsrError(e) && e.kind === 'busy'), error: (e as Error).message });
    }
  }

  /** Whether an automatic host action is made now (hostActionDecision); when not, the alert says why. */
  #hostActionAllowed(what: HostAction): boolean {
    const gate = this.bootSwitch.gate;
    const d = hostActionDecision(what, { unknown: gate.unknownSwitches(), heldBy: gate.hostHeldBy(), keptOffBy: gate.keptOffBy() });
    if (d.action === 'go') return true;
    if (d.owePowerOn) gate.deferPowerOn('the power-on after the failover');
    this.log[d.level === 'critical' ? 'error' : 'warn']({ what }, d.message);
    this.events.emit('alert', { level: d.level, code: d.code, message: d.message });
    return false;
  }

  async #powerOn(): Promise<void> {
    try {
      if (!this.#hostActionAllowed('power-on')) return;
      await this.bootSwitch.powerOnHost();
    } catch (e) {
      this.#actionFailed('power-on', e);
    }
  }

  async #retryBoot(bay: Bay): Promise<void> {
    try {
      if (this.bootSwitch.bay !== bay) return;
      if (!this.#hostActionAllowed('retry-boot')) return;
      // A hung host ignores ACPI: the reset line restarts it without a power cycle.
      if (await this.bootSwitch.hostPowered()) {
        await this.bootSwitch.resetHost();
        await this.dispatch({ type: 'host-reset' });
      } else await this.bootSwitch.powerOnHost();
    } catch (e) {
      this.#actionFailed('retry-boot', e);
    }
  }

  #actionFailed(what: string, e: unknown): void {
    const message = `${what} failed: ${(e as Error).message}`;
    this.log.error({ what }, message);
    this.events.emit('alert', { level: 'critical', code: `${what}-failed`, message });
  }

  #armDeadline(): void {
    if (this.#deadline !== null) this.clock.clearTimeout(this.#deadline);
    this.#deadline = null;
    const p = this.#state.pendingBoot;
    if (!p || this.#closed) return;
    const ms = Math.max(0, p.deadline - this.wallNow());
    this.#deadline = this.clock.setTimeout(() => {
      this.#deadline = null;
      void this.dispatch({ type: 'tick' });
    }, ms + 1);
  }

  #standbyFault = false;

  /**
   * The fault LED also lights for what the failover state does not know: a
   * standby that is not a usable backup (inconsistent after an interrupted
   * sync), set by the controller, which owns the pair records.
   */
  setStandbyFault(fault: boolean): void {
    if (this.#standbyFault === fault) return;
    this.#standbyFault = fault;
    this.#showIndicators();
  }

  #showIndicators(): void {
    const s = this.#state;
    const { ledFault, ledBayA, ledBayB } = this.indicators;
    ledFault?.set(s.halted !== null || s.failed.A || s.failed.B || this.#standbyFault).catch(() => {});
    ledBayA?.set(s.active === 'A').catch(() => {});
    ledBayB?.set(s.active === 'B').catch(() => {});
  }

  /** Push the indicators once at start, before any state change. */
  refreshIndicators(): void {
    this.#showIndicators();
  }
}
