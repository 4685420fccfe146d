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

  /**
   * Another port's move or window keeps the host off (it powers the host on
   * itself when it ends), or a job that uses the active drive with no window
   * needs it off: the automatic power-on is not made, and said so.
   */
  #hostHeld(what: string): boolean {
    const gate = this.bootSwitch.gate;
    const by = gate.hostHeldBy();
    if (by) {
      // A job's claim has no end of its own that powers the host on: the power-on is owed to it (a move or window makes its own).
      const owed = what === 'power-on' && gate.keptOffBy() === by;
      if (owed) gate.deferPowerOn('the power-on after the failover');
      const message = `${what} skipped: ${by} keeps the host off${owed ? '; the host is powered on when it ends' : ''}`;
      this.log.warn({ what, by }, message);
      this.events.emit('alert', { level: 'warning', code: `${what}-held`, message });
    }
    return by !== null;
  }

  async #powerOn(): Promise<void> {
    try {
      if (this.#hostHeld('power-on')) return;
      await this.bootSwitch.powerOnHost();
    } catch (e) {
      this.#actionFailed('power-on', e);
    }
  }

  async #retryBoot(bay: Bay): Promise<void> {
    try {
      if (this.bootSwitch.bay !== bay) return;
      if (this.#hostHeld('retry-boot')) return;
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
