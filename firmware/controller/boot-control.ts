/**
 * The operator's boot commands: fail over to the standby, reset the failover
 * machine, select a boot bay for maintenance, shut the host down. Each
 * refuses while a job writes the drives or the drives are moving, and a
 * failover refuses anything but a consistent standby of the pair.
 */
import { BusyError, RefusedError } from '../../src/errors.ts';
import type { Bay, BootSwitchSystem, MoveReport } from '../../src/bootswitch/index.ts';
import type { JobRunner } from './jobs.ts';
import type { Roles } from './roles.ts';
import type { HostHolds } from './sync-window.ts';

export class BootControl {
  constructor(
    private readonly bs: BootSwitchSystem,
    private readonly roles: Roles,
    private readonly jobs: JobRunner,
    /** The boot pair's id: its jobs (and jobs of no pair) keep its drives from moving; other pairs' copies do not. */
    private readonly bootPair = 'system',
    /** Why a data pair's drives are moving (its failover), or null. */
    private readonly dataMoves: () => string | null = () => null,
    /** The pairs whose sync windows hold the host off. */
    private readonly holds: HostHolds | null = null,
  ) {}

  /** A data pair's window holds the host off, or another port's move runs: the boot drive must not move now. */
  #hostInUse(): void {
    const others = this.holds?.pairs.filter((p) => p !== this.bootPair) ?? [];
    if (others.length) throw new BusyError(`the sync window of pair ${others.join(', ')} holds the host off: booting it now would start it without that data disk`, { hint: 'wait for the copy to finish; the window closes with it' });
    const gate = this.bs.gate?.holder;
    if (gate) throw new BusyError(`${gate} is running: the host's drives move one port at a time`, { hint: 'wait for it to finish' });
  }

  /** A job on the boot pair's drives, running or waiting, or null. */
  #bootJob() {
    return this.jobs.running.find((j) => !j.pair || j.pair === this.bootPair) ?? this.jobs.queued.find((j) => j.pair === this.bootPair) ?? null;
  }

  /** Why no storage job may start now, or null. */
  blockedBy(): string | null {
    const s = this.bs.failover.state.switching;
    if (s) return `a failover from bay ${s.from} to bay ${s.to} is moving the drives`;
    // A sync window's own move (its hold is registered first) is part of a running copy, not a boot selection.
    if (this.bs.bootSwitch.moving && !this.holds?.pairs.includes(this.bootPair)) return 'the boot selection is being moved';
    return this.dataMoves();
  }

  /** Starts a failover to the standby; resolves once the machine has accepted it. */
  async failover(opts: { hardOff?: boolean }): Promise<{ from: Bay; to: Bay; accepted: true }> {
    this.bs.bootSwitch.requireKnown('a failover');
    const job = this.#bootJob();
    if (job) throw new BusyError(`a ${job.kind} job (id ${job.id}) is ${job.state}: failing over now would boot a half-written standby`, { hint: `wait for it, or cancel it: POST /api/jobs/${job.id}/cancel` });
    const fs = this.bs.failover.state;
    if (fs.switching) throw new BusyError(`a failover from bay ${fs.switching.from} to bay ${fs.switching.to} is already running`);
    if (this.bs.bootSwitch.moving) throw new BusyError('the boot selection is being moved');
    this.#hostInUse();
    const view = this.roles.current();
    const { active, standby, pair } = view;
    if (!pair) throw new RefusedError('the drives are not paired: there is no backup to fail over to', { hint: 'POST /api/clone first' });
    const state = this.roles.standbyState(view);
    if (state !== 'consistent') {
      throw new RefusedError(`the standby in bay ${standby} is ${state}: failing over to it would boot a half-written copy`, {
        hint: state === 'syncing' ? 'wait for the sync to finish' : 'POST /api/recover to roll it back to the previous backup, or POST /api/sync to finish it',
      });
    }
    if (!this.roles.bays.path(standby)) throw new RefusedError(`bay ${standby} holds no drive`);
    if (fs.active !== active) throw new RefusedError(`the failover state machine has bay ${fs.active} active but the pair state bay ${active}`, { hint: 'select the active bay again with POST /api/bootselect, then fail over' });
    if (fs.halted) throw new RefusedError(`automatic and manual failover are halted: ${fs.halted}`, { hint: 'POST /api/failover/reset after repairing, then try again' });
    if (fs.failed[standby]) throw new RefusedError(`bay ${standby} failed before and is marked failed`, { hint: 'POST /api/reprotect (after replacing or re-syncing the drive) or POST /api/failover/reset clears it' });
    await this.roles.markConsistent(standby, true);
    const alerts: string[] = [];
    const onAlert = (a: { code: string; message: string }) => alerts.push(a.message);
    this.bs.events.on('alert', onAlert);
    try {
      await this.bs.failover.dispatch({ type: 'failover-request', source: 'api', hardOff: opts.hardOff });
    } finally {
      this.bs.events.off('alert', onAlert);
    }
    if (!this.bs.failover.state.switching) throw new RefusedError(alerts.join('; ') || 'the failover state machine did not start a failover');
    return { from: active, to: standby, accepted: true };
  }

  async resetFailover(): Promise<void> {
    await this.bs.failover.dispatch({ type: 'reset' });
  }

  /**
   * Maintenance: connect `bay` to the host; roles are unchanged. Only with
   * the host off (DESIGN rule 4, which no option waives): RefusedError while
   * its power LED is lit.
   */
  async bootselect(bay: Bay, opts: { powerOn?: boolean }): Promise<MoveReport> {
    this.bs.bootSwitch.requireKnown(`selecting bay ${bay}`);
    const job = this.#bootJob();
    if (job) throw new BusyError(`a ${job.kind} job (id ${job.id}) is ${job.state} on the drives`, { hint: 'wait for it or cancel it' });
    if (this.bs.failover.state.switching) throw new BusyError('a failover is moving the drives');
    this.#hostInUse();
    const keptOff = opts.powerOn ? this.bs.gate?.keptOffBy() : null;
    if (keptOff) throw new RefusedError(`the host is not powered on: ${keptOff} uses the active drive and needs the host off`, { hint: 'wait for the job to finish (or cancel it), then power the host on' });
    if (await this.bs.bootSwitch.hostPowered()) {
      throw new RefusedError(`the host is powered: the boot selection never changes under a running host (its disk would be pulled from under it)`, { hint: `shut the host down first (POST /api/host/shutdown), then select bay ${bay}; "powerOn": true boots it from there` });
    }
    // The operator decides on the host's power now: a power-on owed since a job kept it off no longer holds.
    this.bs.bootSwitch.gate.clearPendingPowerOn();
    return this.bs.bootSwitch.moveTo(bay, { powerOn: opts.powerOn });
  }

  /** Ask the host to shut down through the ATX power relay (ACPI), or force it off. */
  async shutdownHost(opts: { hardOff?: boolean }): Promise<{ how: 'was-off' | 'acpi' | 'hard-off' }> {
    if (this.bs.failover.state.switching) throw new BusyError('a failover is moving the drives: it shuts the host down itself');
    if (this.bs.bootSwitch.moving) throw new BusyError('the boot selection is being moved');
    const gate = this.bs.bootSwitch.gate;
    // The operator decided on the host's power: a power-on owed since a job kept it off is no longer wanted.
    gate.clearPendingPowerOn();
    // Its power LED going dark is the operator's doing, not a boot that failed (it is not retried, no try is spent).
    gate.expectOperatorOff('the operator\'s shutdown');
    try {
      const how = await this.bs.bootSwitch.shutdownHost({ hardOff: opts.hardOff });
      if (how === 'was-off') gate.takeOperatorOff();
      return { how };
    } catch (e) {
      gate.takeOperatorOff();
      throw e;
    }
  }
}
