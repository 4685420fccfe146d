/**
 * A data pair's failover: the host's data port is moved from the pair's
 * active drive to its standby with the boot switch's interlocked sequence
 * (host shut down first, drives powered down, break before make, every
 * relay and contact read back, rolled back on any failure), then the roles
 * swap in the pair state and the host is powered on again if it was running.
 * Every refusal comes before anything moves. The failover is written to the
 * ledger before the first relay moves, so a restart half-way knows it.
 */
import type { Logger } from 'pino';
import { BusyError, RefusedError } from '../../src/errors.ts';
import type { Bay, DataPortSwitch } from '../../src/bootswitch/index.ts';
import type { EventBus } from './events.ts';
import type { PairFailoverLedger } from './failover-ledger.ts';
import type { JobRunner } from './jobs.ts';
import type { Metrics } from './metrics.ts';
import type { PairConfig } from './pair-config.ts';
import type { Roles } from './roles.ts';
import type { HostHolds } from './sync-window.ts';

export interface PairFailoverDeps {
  jobs: JobRunner;
  ledger: PairFailoverLedger;
  holds: HostHolds;
  bus: EventBus;
  metrics: Metrics;
  /** Publishes the changed roles (status.changed). */
  changed(): void;
  log: Logger;
}

export class DataPairFailover {
  #running: Promise<void> | null = null;

  constructor(
    readonly pair: PairConfig,
    readonly port: DataPortSwitch,
    private readonly roles: Roles,
    private readonly deps: PairFailoverDeps,
  ) {}

  /** True while the pair's drives are moving. */
  get moving(): boolean {
    return this.#running !== null;
  }

  /** Resolves when the failover under way (if any) has finished. */
  async idle(): Promise<void> {
    await this.#running;
  }

  /**
   * Checks everything, records the failover and starts moving the drives;
   * resolves once it is under way (202). The outcome arrives as a `failover`
   * event, or a `failover-failed` alert after the relays were rolled back.
   * BusyError while a job, a move or a window is in the way; RefusedError
   * when the standby is no consistent copy or the relays disagree with the
   * pair state.
   */
  async start(opts: { hardOff?: boolean }, source = 'api'): Promise<{ pair: string; from: string; to: string; accepted: true }> {
    const { jobs, holds } = this.deps;
    const id = this.pair.id;
    const sw = this.port.sw;
    if (this.#running) throw new BusyError(`a failover of pair ${id} is already running`, { hint: 'watch the failover event' });
    const job = jobs.forPair(id);
    if (job) throw new BusyError(`a ${job.kind} job (id ${job.id}) is ${job.state} on pair ${id}: failing over now would give the host a half-written data disk`, { hint: `wait for it, or cancel it: POST /api/jobs/${job.id}/cancel` });
    if (sw.gate.holder) throw new BusyError(`${sw.gate.holder} is running: the host's drives move one port at a time`, { hint: 'wait for it to finish' });
    if (holds.pairs.length) throw new BusyError(`the sync window of pair ${holds.pairs.join(', ')} holds the host off`, { hint: 'wait for the copy to finish; the window closes with it' });
    if (sw.isolated) throw new RefusedError(`both drives of pair ${id} are on the controller (a sync window left open)`, { hint: 'restart the daemon: it gives the active drive back to the host' });
    const view = this.roles.current();
    const { active, standby, pair } = view;
    const [from, to] = [this.roles.name(active), this.roles.name(standby)];
    if (!pair) throw new RefusedError(`the drives of pair ${id} are not paired: there is no backup to fail over to`, { hint: `POST /api/pairs/${id}/clone first` });
    const state = this.roles.standbyState(view);
    if (state !== 'consistent') {
      throw new RefusedError(`the standby of pair ${id} in bay ${to} is ${state}: the host would get a half-written data disk`, {
        hint: state === 'syncing' ? 'wait for the sync to finish' : `POST /api/pairs/${id}/recover to roll it back to the previous backup, or POST /api/pairs/${id}/sync to finish it`,
      });
    }
    if (!this.roles.bays.path(standby)) throw new RefusedError(`bay ${to} (the standby of pair ${id}) holds no drive`, { hint: 'insert the drive first' });
    if (sw.bay !== null && sw.bay !== active) {
      throw new RefusedError(`the relays give the host bay ${sw.naming.bay(sw.bay)} but the pair state says bay ${from} is pair ${id}'s active drive`, {
        hint: 'restart the daemon to reconcile an interrupted failover, then try again',
      });
    }
    const hostWasOn = await sw.hostPowered();
    this.deps.ledger.begin(id, active, standby);
    this.deps.log.info({ pair: id, from, to, hostWasOn }, 'data pair failover: moving the host\'s data port');
    this.#running = this.#run(active, standby, hostWasOn, opts, `${source} request`).finally(() => (this.#running = null));
    return { pair: id, from, to, accepted: true };
  }

  async #run(active: Bay, standby: Bay, hostWasOn: boolean, opts: { hardOff?: boolean }, reason: string): Promise<void> {
    const { bus, ledger, log } = this.deps;
    const id = this.pair.id;
    const sw = this.port.sw;
    const [from, to] = [this.roles.name(active), this.roles.name(standby)];
    try {
      await sw.moveTo(standby, { powerOn: hostWasOn, hardOff: opts.hardOff });
    } catch (e) {
      ledger.abandon(id);
      // The switch rolled back: the host gets its old data disk, and its power, back as they were.
      let note = '';
      try {
        if (hostWasOn && sw.bay === active && !(await sw.hostPowered())) {
          await sw.powerOnHost();
          note = '; host powered on again with its old data disk';
        }
      } catch (pe) {
        note = `; powering the host on again failed: ${(pe as Error).message}`;
      }
      log.error({ pair: id, error: (e as Error).message }, 'data pair failover failed');
      bus.publish('alert', { level: 'critical', code: 'failover-failed', pair: id, message: `the failover of pair ${id} from bay ${from} to bay ${to} failed: ${(e as Error).message}; the relays give the host bay ${sw.bay === null ? 'none' : sw.naming.bay(sw.bay)}${note}` });
      return;
    }
    this.record(active, standby, reason);
  }

  /** The relays reached the standby: the pair state records the swap, the ledger closes it, everyone hears. */
  record(active: Bay, standby: Bay, reason: string): void {
    const { bus, ledger, metrics } = this.deps;
    const generation = this.roles.recordSwap(standby, reason);
    ledger.done(this.pair.id);
    metrics.failovers.inc({ pair: this.pair.id });
    bus.publish('failover', { pair: this.pair.id, from: this.roles.name(active), to: this.roles.name(standby), reason, generation });
    this.deps.changed();
  }

  /**
   * At start-up: a failover the ledger has under way is recorded when the
   * relays reached its standby, else reported as cut short.
   */
  reconcile(): void {
    const { ledger, bus } = this.deps;
    const p = ledger.pending(this.pair.id);
    if (!p) return;
    const sw = this.port.sw;
    const [from, to] = [this.roles.name(p.from), this.roles.name(p.to)];
    if (sw.bay === p.to) {
      bus.publish('alert', { level: 'warning', code: 'failover-finished-before-restart', pair: this.pair.id, message: `the failover of pair ${this.pair.id} to bay ${to} finished before the restart: recording the role swap` });
      this.record(p.from, p.to, 'failover finished before the restart');
    } else {
      ledger.abandon(this.pair.id);
      bus.publish('alert', { level: 'warning', code: 'failover-interrupted', pair: this.pair.id, message: `the failover of pair ${this.pair.id} from bay ${from} to bay ${to} was cut short; the relays give the host bay ${sw.bay === null ? 'none' : sw.naming.bay(sw.bay)} and the roles are unchanged` });
    }
  }
}
