/**
 * What a restarted daemon puts right before it serves: a failover the
 * machine finished but the pair state missed is recorded, the machine hears
 * which bays hold consistent copies, a sync window left open with no copy to
 * finish is closed, and a copy the previous process left half done is
 * resumed or rolled back (config recovery.interrupted), and a restore of
 * files the previous process left mounted is unmounted, detached and checked
 * (before any window hands the drive back to the host).
 */
import type { BootSwitchSystem } from '../../src/bootswitch/index.ts';
import { RefusedError } from '../../src/errors.ts';
import { effectiveStandbyState, spotCheckStandby, type PairRecord } from '../../src/sync/index.ts';
import type { Logger } from 'pino';
import type { DaemonConfig } from './config.ts';
import type { CopyJobs } from './copy-jobs.ts';
import type { EventBus } from './events.ts';
import type { FailoverLedger } from './failover-ledger.ts';
import type { Roles } from './roles.ts';
import type { StatusView } from './status-view.ts';
import type { SyncWindow } from './sync-window.ts';
import type { Pairs } from './pairs.ts';
import { statSync } from 'node:fs';
import { FileView, checkFilesystem, releaseWriteBack, removeRestoreLeftovers, type Released } from '../../src/file-view/index.ts';
import type { FileRestoreCleanup, FileRestoreRecord, FileRestoreState } from './file-restore-record.ts';

/**
 * Samples a pair's standby against its manifest (spotCheckStandby): one
 * written outside dpsrd (while it was down, or while the drive was out of
 * its bay) is recorded inconsistent, with the critical alert
 * `standby-written-elsewhere`. Never throws: a drive that cannot be read is
 * logged.
 */
export async function checkStandby(roles: Roles, which: string, bus: EventBus, log: Logger): Promise<void> {
  const v = roles.current();
  const path = v.pair ? roles.bays.path(v.standby) : null;
  if (!v.pair || !path) return;
  try {
    const r = await spotCheckStandby({ stateDir: v.store.dir, pairId: v.pair.id, standby: path, openDevice: roles.bays.openDevice });
    if (!r?.blocksDiffering) return;
    await roles.markConsistent(v.standby, false);
    bus.publish('alert', {
      level: 'critical',
      code: 'standby-written-elsewhere',
      pair: v.pair.id,
      message: r.geometryChanged
        ? `the standby${which} (${path}) is ${r.geometryChanged.nowBytes} bytes with ${r.geometryChanged.nowSectorSize}-byte sectors, where its last sync left ${r.geometryChanged.recordedBytes} bytes with ${r.geometryChanged.recordedSectorSize}-byte sectors: its size was changed outside dpsrd (a host protected area, a resized image) and what the copy held past the new end may be gone. It is no backup now: failover and restore refuse it; make it show the size it was paired with again (an image's length, a host protected area removed with hdparm -N, the bridge it was paired through), or, if the change is meant, dpsr forget ${v.pair.id} and pair the drives anew (POST /api/clone)`
        : `the standby${which} (${path}) differs from what its last sync left in ${r.blocksDiffering} of ${r.blocksChecked} sampled blocks (the first at byte ${r.firstDiffering}): it was written outside dpsrd, e.g. by a dpsr of another state directory while the daemon was down or the drive out of its bay. It is no backup now: failover and restore refuse it; run a sync (POST /api/sync) to make it one again`,
    });
  } catch (e) {
    log.warn({ err: e, standby: path }, 'the standby could not be sampled against its manifest');
  }
}

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
    private readonly fileRestore?: FileRestoreRecord,
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
    // A standby written while the daemon was down (its keep on the drives lasts only while it runs) is no backup.
    await checkStandby(this.roles, '', this.bus, this.log);
    for (const p of this.pairs?.list ?? []) if (p.config.role !== 'boot') await checkStandby(p.roles, ` of pair ${p.id}`, this.bus, this.log);

    // Before any window closes: a partition still mounted here must never reach the host.
    const stillMounted = await this.#releaseFileRestores();
    const view = this.roles.current();
    const pair = view.pair;
    const interrupted = !!pair?.pendingCopy && effectiveStandbyState(view.store, pair) === 'inconsistent';
    if (this.window.open && stillMounted) {
      this.bus.publish('alert', { level: 'critical', code: 'window-kept-open', message: `both drives stay on the controller: the active partition a restore of files had mounted could not be released (${stillMounted}); handing the drive to the host now would let two systems write one filesystem` });
    } else if (this.window.open && !interrupted) {
      // The daemon stopped inside a sync window with no copy left to finish: give the host its drive back.
      this.bus.publish('alert', { level: 'warning', code: 'window-left-open', message: `both drives were on the controller at start-up: giving bay ${active} back to the host` });
      await this.window.closeLeftOpen((m) => this.log.info(m)).catch(() => {});
    }
    if (pair?.pendingCopy && interrupted) this.#resume(pair.pendingCopy, view.standby, this.copies);
    // A data pair: its failover cut short is recorded or reported, a window left open closed, an interrupted copy resumed or rolled back (queued behind the boot pair's).
    for (const p of this.pairs?.list ?? []) {
      if (p.config.role === 'boot') continue;
      p.failover?.reconcile();
      const v = p.roles.current();
      const pending = !!v.pair?.pendingCopy && effectiveStandbyState(v.store, v.pair) === 'inconsistent';
      if (p.window.open && !pending) {
        this.bus.publish('alert', { level: 'warning', code: 'window-left-open', pair: p.id, message: `both drives of pair ${p.id} were on the controller at start-up: giving bay ${p.roles.name(v.active)} back to the host` });
        await p.window.closeLeftOpen((m) => this.log.info({ pair: p.id }, m)).catch(() => {});
      } else if (p.failover && !p.window.open && p.failover.port.sw.bay !== null && p.failover.port.sw.bay !== v.active) {
        this.bus.publish('alert', { level: 'warning', code: 'roles-differ', pair: p.id, message: `the relays give the host bay ${p.roles.name(p.failover.port.sw.bay)} as pair ${p.id}'s data disk but the pair state says bay ${p.roles.name(v.active)} is active: syncs follow the pair state; its failover is refused until they agree` });
      }
      if (v.pair?.pendingCopy && effectiveStandbyState(v.store, v.pair) === 'inconsistent') this.#resume(v.pair.pendingCopy, `${p.roles.name(v.standby)} (pair ${p.id})`, p.copies);
    }
    this.status.publishChange();
  }

  /**
   * A restore of files the previous process left mounted (its record says
   * "running"): its mounts and loop devices are released, the partition
   * checked read-only, and the record kept as "interrupted" for the pair's
   * status and the sync refusal. Interrupted ones from earlier starts are
   * released again (idempotent) and reported.
   * @returns what could not be released, or null when nothing is left mounted.
   */
  async #releaseFileRestores(): Promise<string | null> {
    const left: string[] = [];
    for (const r of this.fileRestore?.all() ?? []) {
      let released: Released;
      try {
        released = await releaseWriteBack({ dev: r.drive.dev, ino: r.drive.ino, startByte: r.startByte });
      } catch (e) {
        released = { unmounted: [], detached: [], failed: [`the clean-up could not run: ${(e as Error).message}`] };
      }
      left.push(...released.failed);
      const touched = released.unmounted.length + released.detached.length > 0;
      if (r.state === 'interrupted' && !touched && released.failed.length === 0) {
        this.log.warn({ pair: r.pair, job: r.jobId }, `the restore of files onto pair ${r.pair}'s active drive (job ${r.jobId}) is still recorded as interrupted: syncs onto its standby wait until it is finished or dismissed`);
        continue;
      }
      const { fsck, skipped, temporary, notReleased } = released.failed.length === 0 ? await this.#checkRestored(r) : { fsck: null, skipped: 'what the restore left mounted could not all be released', temporary: null, notReleased: [] };
      left.push(...notReleased);
      const rec = this.fileRestore!.interrupted(r, { at: new Date().toISOString(), ...released, fsck, ...(skipped ? { fsckSkipped: skipped } : {}), ...(temporary ? { temporary } : {}) });
      const what = `${released.unmounted.length} mount(s) unmounted (${released.unmounted.join(', ') || 'none'}), ${released.detached.length} loop device(s) detached (${released.detached.join(', ') || 'none'})${temporary ? `, ${temporary.removed.length} temporary file(s) removed${temporary.removed.length ? ` (${temporary.removed.slice(0, 5).join(', ')}${temporary.removed.length > 5 ? ', …' : ''})` : ''}${temporary.failed ? ` (${temporary.failed})` : ''}` : ''}`;
      const checked = fsck ? `${fsck.tool}: ${fsck.clean ? 'clean' : `problems (exit ${fsck.exitCode})`}` : `not checked: ${skipped}`;
      this.log.warn({ fileRestore: rec }, `a restore of files onto pair ${r.pair}'s active drive (job ${r.jobId}, partition ${r.partition}) was interrupted: ${what}; ${checked}`);
      this.bus.publish('alert', {
        level: fsck?.clean && released.failed.length === 0 ? 'warning' : 'critical',
        code: 'interrupted-file-restore',
        message: `the restore of files into partition ${r.partition} of pair ${r.pair}'s active drive (job ${r.jobId}, started ${r.startedAt}) was interrupted: some of ${r.paths.length} path(s) may be the backup's and others not${temporary?.removed ? '' : ' (a file being written may sit beside its target as .dpsr-restore-*)'}. ${what}${released.failed.length ? `; not released: ${released.failed.join('; ')}` : ''}; ${checked}. Syncs onto the standby wait: finish the restore (the same paths again) or dismiss it`,
      });
    }
    return left.length ? left.join('; ') : null;
  }

  /**
   * The read-only fsck of the restored partition, on the same storage only
   * (matched by device and inode numbers, or the pair's drive key); before
   * it, with the host off, the temporary files (`.dpsr-restore-*`) the
   * interrupted restore left beside its targets are removed (the partition
   * mounted read-write for it only when there are some). A failure there is
   * released again (`releaseWriteBack`) so nothing stays mounted.
   */
  async #checkRestored(r: FileRestoreState): Promise<{ fsck: FileRestoreCleanup['fsck']; skipped?: string; temporary: FileRestoreCleanup['temporary'] | null; notReleased: string[] }> {
    let path: string | null = null;
    try {
      const st = statSync(r.drive.path);
      if (st.dev === r.drive.dev && st.ino === r.drive.ino) path = r.drive.path;
    } catch {
      /* gone: look for the drive by its key below */
    }
    if (!path && r.drive.key) {
      const p = this.pairs?.list.find((x) => x.id === r.pair);
      const active = p?.roles.current().active;
      if (p && active && p.roles.keyOf(active) === r.drive.key) path = p.roles.bays.path(active);
    }
    if (!path) return { fsck: null, skipped: `the active drive (${r.drive.path}) is not on the controller now; check the partition before the host uses it`, temporary: null, notReleased: [] };
    const { temporary, notReleased } = await this.#removeTemporary(r, path);
    try {
      return { fsck: await checkFilesystem(await FileView.open(path, r.partition)), temporary, notReleased };
    } catch (e) {
      return { fsck: null, skipped: `the check could not run: ${(e as Error).message}`, temporary, notReleased };
    }
  }

  async #removeTemporary(r: FileRestoreState, path: string): Promise<{ temporary: NonNullable<FileRestoreCleanup['temporary']>; notReleased: string[] }> {
    if (await this.bs.bootSwitch.hostPowered().catch(() => true)) return { temporary: { removed: [], failed: 'not removed: the host is running (the partition is its disk); re-run the restore with the host off, which removes them' }, notReleased: [] };
    try {
      return { temporary: { removed: (await removeRestoreLeftovers(await FileView.open(path, r.partition), r.paths)).removed }, notReleased: [] };
    } catch (e) {
      const again = await releaseWriteBack({ dev: r.drive.dev, ino: r.drive.ino, startByte: r.startByte }).catch((x: unknown) => ({ failed: [(x as Error).message] }));
      return { temporary: { removed: [], failed: `not removed: ${(e as Error).message}` }, notReleased: again.failed };
    }
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
      else if (pending.kind === 'restore') this.log.warn('an interrupted restore is pending: with the host off, POST /api/restore finishes it, POST /api/recover rolls the active drive back');
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
