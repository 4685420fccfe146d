/**
 * What a restarted daemon puts right before it serves: a failover the
 * machine finished but the pair state missed is recorded, the machine hears
 * which bays hold consistent copies, a sync window left open with no copy to
 * finish is closed, and a copy the previous process left half done is
 * resumed or rolled back (config recovery.interrupted).
 */
import type { BootSwitchSystem } from '../../src/bootswitch/index.ts';
import { RefusedError } from '../../src/errors.ts';
import { effectiveStandbyState, type PairRecord } from '../../src/sync/index.ts';
import type { Logger } from 'pino';
import type { DaemonConfig } from './config.ts';
import type { CopyJobs } from './copy-jobs.ts';
import type { EventBus } from './events.ts';
import type { FailoverLedger } from './failover-ledger.ts';
import type { Roles } from './roles.ts';
import type { StatusView } from './status-view.ts';
import type { SyncWindow } from './sync-window.ts';
import type { Pairs } from './pairs.ts';

export class StartupRecovery {
  constructor(
    private readonly config: DaemonConfig,
    private readonly bs: BootSwitchSystem,
    private readonly roles: Roles,
    private readonly ledger: FailoverLedger,
    private readonly window: SyncWindow,
    private readonly copies: CopyJobs,
    private readonly status: StatusView,
    private readonly bus: EventBus,
    private readonly log: Logger,
    private readonly pairs?: Pairs,
  ) {}

  async start(): Promise<void> {
    const fs = this.bs.failover.state;
    if (fs.failovers > this.ledger.recorded) {
      this.log.warn({ failovers: fs.failovers, recorded: this.ledger.recorded }, 'a failover finished while the daemon was down: recording the role swap');
      this.roles.recordSwap(fs.active, 'failover finished before the restart');
    }
    this.ledger.save(fs.failovers);
    const { active, standby } = this.roles.current();
    if (fs.active !== active && !fs.switching) {
      this.bus.publish('alert', {
        level: 'warning',
        code: 'roles-differ',
        message: `the relays boot bay ${fs.active} but the pair state says bay ${active} is active (a maintenance boot selection?): failover and sync follow the pair state`,
      });
    }
    await this.roles.markConsistent(active, true);
    await this.roles.markConsistent(standby, this.roles.standbyState() === 'consistent');

    const view = this.roles.current();
    const pair = view.pair;
    const interrupted = !!pair?.pendingCopy && effectiveStandbyState(view.store, pair) === 'inconsistent';
    if (this.window.open && !interrupted) {
      // The daemon stopped inside a sync window with no copy left to finish: give the host its drive back.
      this.bus.publish('alert', { level: 'warning', code: 'window-left-open', message: `both drives were on the controller at start-up: giving bay ${active} back to the host` });
      await this.window.closeLeftOpen((m) => this.log.info(m)).catch(() => {});
    }
    if (pair?.pendingCopy && interrupted) this.#resume(pair.pendingCopy, view.standby, this.copies);
    // A data pair's interrupted copy is resumed or rolled back the same way (queued behind the boot pair's).
    for (const p of this.pairs?.list ?? []) {
      if (p.config.role === 'boot') continue;
      const v = p.roles.current();
      if (v.pair?.pendingCopy && effectiveStandbyState(v.store, v.pair) === 'inconsistent') this.#resume(v.pair.pendingCopy, `${p.roles.name(v.standby)} (pair ${p.id})`, p.copies);
    }
    this.status.publishChange();
  }

  #resume(pending: NonNullable<PairRecord['pendingCopy']>, standby: string, copies: CopyJobs): void {
    // Changed-block tracking does not survive a restart, so a changed-mode sync can never be the same plan again: roll it back.
    const how = pending.kind === 'clone' ? 'resume' : pending.plan?.mode === 'changed' ? 'rollback' : this.config.recovery.interrupted;
    this.bus.publish('alert', {
      level: 'warning',
      code: 'interrupted-copy',
      message: `an interrupted ${pending.kind} onto bay ${standby} (started ${pending.startedAt}) was found: ${how === 'resume' ? 'resuming it' : 'rolling it back to the previous backup'}`,
    });
    try {
      if (pending.kind === 'clone') copies.start('clone', { force: true }, 'restart-resume');
      else if (pending.kind === 'restore') this.log.warn('an interrupted restore is pending: finish it with `dpsr restore` or roll back with `dpsr recover`');
      else if (how === 'rollback') copies.start('recover', {}, 'restart-rollback');
      else {
        // The copy's own recorded plan, never the options of another job: only the identical plan resumes it.
        const plan = pending.plan;
        if (!plan) throw new RefusedError('it was recorded without its plan, so it cannot be resumed; roll it back with `dpsr recover`');
        copies.start('sync', { partitions: [...plan.partitions], mode: plan.mode === 'manifest' ? 'manifest' : 'compare' }, 'restart-resume');
      }
    } catch (e) {
      this.bus.publish('alert', { level: 'critical', code: 'interrupted-copy', message: `could not ${how} the interrupted ${pending.kind}: ${(e as Error).message}` });
    }
  }
}
