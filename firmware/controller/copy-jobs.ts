/**
 * The storage jobs on the drive pair (clone, sync, re-protect, verify,
 * recover, restore), started by one starter from a table: each kind says whether it
 * reads the active drive (and so may run in a sync window), what it records
 * as the job's options, and what it does with the source and target paths.
 * Every refusal comes before the job starts.
 */
import type { FileRestoreRecord } from './file-restore-record.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CancelledError, RefusedError } from '../../src/errors.ts';
import { clone, sync, restore, verify, verifyHeadline, recover, precheckGeometry, precheckWriteTarget, standbysOf, type ChangedBlocks, type CopyReport, type VerifyExclusion, type VerifyReport } from '../../src/sync/index.ts';
import { NbdFile, SnapshotDrive, openDrive, openLocated } from '../../src/sata-bridge/index.ts';
import type { Bay } from '../../src/bootswitch/index.ts';
import { filesInRanges, type DriveRange } from '../../src/file-view/index.ts';
import type { DaemonConfig } from './config.ts';
import type { InlineMode } from './inline.ts';
import type { EventBus } from './events.ts';
import type { JobContext, JobRecord, JobRunner } from './jobs.ts';
import type { Metrics } from './metrics.ts';
import type { Roles, RoleView } from './roles.ts';
import type { SyncWindow } from './sync-window.ts';

export interface SyncOptions {
  partitions?: number[];
  /** changed: only the blocks the host wrote since the last sync (inline mode; else manifest mode, saying why). */
  mode?: 'compare' | 'manifest' | 'changed';
  forceGeneration?: boolean;
  /** Run in a sync window (host shut down, both drives on the controller); default from config sync.window. */
  window?: boolean;
}

/** The options each kind takes (the API's request bodies). */
export interface CopyJobOptions {
  sync: SyncOptions;
  clone: { force?: boolean; addStandby?: boolean; window?: boolean };
  reprotect: { window?: boolean };
  verify: { partitions?: number[]; window?: boolean };
  recover: Record<string, never>;
  /** `partitions`: only these partitions (and the partition table) of the standby go back onto the active drive. */
  restore: { window?: boolean; partitions?: number[] };
}

export type CopyJobKind = keyof CopyJobOptions;

/** What a kind knows when it is started: roles, paths, and the job's helpers. */
interface Start<O> {
  opts: O;
  view: RoleView;
  /** Path of the standby's drive. */
  target: string;
  window: boolean;
  jobs: CopyJobs;
}

interface Plan {
  /** Recorded with the job (a restart resumes a sync with them). */
  options: Record<string, unknown>;
  /** `source` is the active drive's path ('' for kinds that do not read it). */
  run(ctx: JobContext, source: string): Promise<unknown>;
}

interface KindSpec<O> {
  /** Reads the active drive, so it may run in a sync window. */
  readsActive: boolean;
  /** Checks that depend on the kind (throwing refuses the job) and the plan. */
  plan(s: Start<O>): Plan;
}

const KINDS: { [K in CopyJobKind]: KindSpec<CopyJobOptions[K]> } = {
  sync: {
    readsActive: true,
    plan({ opts, view: { active, standby }, target, window, jobs }) {
      const mode = opts.mode ?? jobs.config.sync.mode;
      const budget = jobs.config.sync.journalBudgetMiB;
      return {
        options: { ...opts, mode, window, source: active, target: standby },
        run: async (ctx, source) =>
          jobs.write(
            ctx,
            standby,
            target,
            true,
            async (changed, picture) =>
              withUnreadableFiles(
                ctx,
                jobs,
                source,
                picture,
                await sync({ ...jobs.common(ctx, source, picture), source, target, partitions: opts.partitions, mode, changed, forceGeneration: opts.forceGeneration, journalBudget: budget ? budget * 1024 * 1024 : undefined }),
              ),
            true,
            true,
            !opts.partitions?.length,
          ),
      };
    },
  },
  clone: {
    readsActive: true,
    plan({ opts, view: { active, standby }, target, window, jobs }) {
      return {
        options: { ...opts, window, source: active, target: standby },
        run: async (ctx, source) =>
          jobs.write(ctx, standby, target, false, async (_changed, picture) => withUnreadableFiles(ctx, jobs, source, picture, await clone({ ...jobs.common(ctx, source, picture), source, target, forceClone: opts.force, addStandby: opts.addStandby })), true, true),
      };
    },
  },
  /**
   * Re-protect: after a failover or a drive replacement, make the drive in
   * the standby bay a backup of the active one again. A drive the pair does
   * not know (a replacement) is paired anew with a clone.
   */
  reprotect: {
    readsActive: true,
    plan({ view: { active, standby, pair, store }, target, window, jobs }) {
      const roles = jobs.roles;
      if (pair && pair.activeKey !== roles.keyOf(active)) throw new RefusedError(`the drive in bay ${active} is not the active drive of pair ${pair.id}`, { hint: 'GET /api/status shows the roles' });
      const newDrive = !pair || pair.standbyKey !== roles.keyOf(standby);
      // Rotation: with several standbys the daemon cannot tell which one a new drive replaces, and forgetting the wrong pair loses an off-site backup's records.
      const rotation = pair && newDrive ? standbysOf(store.pairs(), pair.activeKey) : [];
      if (rotation.length > 1) {
        throw new RefusedError(`bay ${standby} holds a drive none of the ${rotation.length} standbys of the active drive is (${rotation.map((p) => `${p.drives[p.standbyKey]?.lastPath} in pair ${p.id}`).join(', ')}), so it is not known which one it replaces`, {
          hint: 'to add it as one more standby POST /api/clone with "addStandby": true; to replace one, forget that pair first (`dpsr forget <pair-id>`), then re-protect',
        });
      }
      return {
        options: { source: active, target: standby, newDrive, window },
        run: async (ctx, source) => {
          await roles.sw.driveReplaced(standby);
          if (!newDrive) return jobs.write(ctx, standby, target, true, (changed, picture) => sync({ ...jobs.common(ctx, source, picture), source, target, mode: jobs.config.sync.mode, changed }), false, true);
          const cloneNew = (addStandby: boolean) => jobs.write(ctx, standby, target, false, (_changed, picture) => clone({ ...jobs.common(ctx, source, picture), source, target, addStandby }), false, true);
          if (!pair) return cloneNew(false);
          // Cloned as one more standby of the active drive first, the old pair forgotten only once that clone is done: a clone
          // refused (a smaller or mounted drive) leaves the pair's records as they were.
          ctx.log('info', `bay ${standby} holds a new drive: it is cloned, then pair ${pair.id} with the old drive is forgotten`);
          const report = await cloneNew(true);
          store.forget(pair.id);
          return report;
        },
      };
    },
  },
  verify: {
    readsActive: true,
    plan({ opts, view: { active, standby }, target, window, jobs }) {
      return {
        options: { ...opts, window, source: active, target: standby },
        run: async (ctx, source) => {
          // A verify report can list many ranges; the job keeps the first ones, with the files they lie in on each drive (mapped while the picture is held).
          const run = async (picture?: string, exclude?: VerifyExclusion) => {
            const report: VerifyReport = await verify({ ...jobs.common(ctx, source, picture), source, target, partitions: opts.partitions, exclude });
            const differences = report.differences.slice(0, 100);
            return { ...report, differences, ...(differences.length ? { differenceFiles: await filesOnBoth(ctx, jobs, source, picture, target, differences) } : {}) };
          };
          const inline = jobs.inline;
          // Inline mode: the standby is compared with a live snapshot of the active drive, leaving out what the host wrote since the last sync.
          const { report, judged, why } = inline ? await inline.verify(ctx, active, run) : { report: await run(), judged: true, why: undefined };
          if (!report.identical) {
            jobs.bus.publish('alert', { level: 'warning', code: 'verify-differs', pair: jobs.pairId, message: `verify of bay ${jobs.roles.name(standby)} against bay ${jobs.roles.name(active)}: ${verifyHeadline(report)}` });
          }
          await inline?.afterVerify(report, standby, judged);
          return judged ? report : { ...report, notes: [...report.notes, `the differences cannot be told from host writes: ${why}`] };
        },
      };
    },
  },
  recover: {
    readsActive: false,
    plan({ view: { active, standby, pair }, target, jobs }) {
      // An interrupted restore wrote the active drive: that drive is rolled back, with the host off, never beside the export.
      const restoring = !!pair?.pendingCopy && pair.pendingCopy.to === pair.activeKey;
      if (restoring) {
        refuseActiveWriteInline(jobs.config, 'rolling back an interrupted restore');
        if (jobs.hostPowered()) {
          throw new RefusedError(`rolling back the interrupted restore writes the active drive in bay ${jobs.roles.name(active)}, which the powered host runs from; nothing was changed`, { hint: 'shut the host down first (POST /api/host/shutdown), then recover' });
        }
      }
      const bay = restoring ? active : standby;
      const path = restoring ? jobs.roles.require(active, 'active drive') : target;
      return {
        options: { target: bay },
        run: async (ctx) => {
          const r = await recover({ ...jobs.common(ctx), target: path });
          await jobs.roles.markConsistent(bay, true);
          ctx.log('info', r.message);
          return r;
        },
      };
    },
  },
  /**
   * Restore: the backup on the standby copied back over the active drive, the
   * journaled reverse of a sync; the standby is only read. The caller makes
   * sure the host is off or a window is used (the active drive is its disk).
   */
  restore: {
    readsActive: true,
    plan({ opts, view: { active, standby }, target, window, jobs }) {
      refuseActiveWriteInline(jobs.config, opts.partitions?.length ? `restoring partition${opts.partitions.length > 1 ? 's' : ''} ${opts.partitions.join(', ')}` : 'restoring the whole drive');
      const budget = jobs.config.sync.journalBudgetMiB;
      const partitions = opts.partitions?.length ? opts.partitions : undefined;
      return {
        options: { window, source: standby, target: active, ...(partitions ? { partitions } : {}) },
        run: async (ctx, activePath) => {
          const report = await restore({ ...jobs.common(ctx), source: target, target: activePath, partitions, journalBudget: budget ? budget * 1024 * 1024 : undefined });
          ctx.log('info', `${partitions ? `partition${partitions.length > 1 ? 's' : ''} ${partitions.join(', ')} of ` : ''}bay ${active} restored from the backup in bay ${standby}`);
          // Reached only when the restore completed (a failure or a cancel throws); sectors it could not read leave the record owed.
          const settled = jobs.fileRestore?.settleByRestore(jobs.pairId, { outcome: report.result === 'done' ? 'done' : 'failed', partitions, driveKey: jobs.roles.keyOf(active) });
          if (settled) {
            ctx.log('info', `the interrupted restore of files (job ${settled.jobId}, partition ${settled.partition}) is settled: this restore overwrote all it owed`);
            jobs.bus.publish('alert', { level: 'info', code: 'file-restore-settled', message: `the interrupted restore of files on pair ${jobs.pairId} (job ${settled.jobId}, partition ${settled.partition}) is settled by restore job ${ctx.job.id}: syncs onto the standby may run again` });
          }
          return report;
        },
      };
    },
  },
};

/**
 * In inline mode qemu-storage-daemon holds the active drive for the host:
 * a write beside it (a restore) bypasses its changed-block tracking, so the
 * next changed-block sync would leave those blocks off the standby, and its
 * cache and the host's view would go stale. Refused (409) even with the host
 * off; the way there is a failover, which boots the backup through the
 * export, and a re-protect.
 */
export function refuseActiveWriteInline(config: DaemonConfig, what: string): void {
  if (config.mode !== 'inline') return;
  throw new RefusedError(`${what} onto the active drive is not done in inline mode: the controller's export (qemu-storage-daemon) holds it, and writes beside the export would bypass its changed-block tracking; nothing was changed`, {
    hint: 'to run the host from the backup, fail over (POST /api/failover): the export then serves the standby; re-protect (POST /api/reprotect) makes the other drive a backup again. For a copy back onto this drive, run dpsrd in mode "switched" with the host off',
  });
}

/**
 * Runs `fn` with a path the file reader can open for the active drive at
 * `source`: the drive itself, or in inline mode (`picture`: the live
 * snapshot's NBD URI, held by the caller) that picture mounted as a file,
 * with the drive's sector size (the file does not say it).
 */
async function activeFile<T>(jobs: CopyJobs, source: string, picture: string | undefined, fn: (path: string, sectorSize?: number) => Promise<T>): Promise<T> {
  if (!picture) return fn(source);
  const dev = await openDrive(source);
  const sectorSize = dev.logicalSectorSize;
  await dev.close();
  const file = await NbdFile.mount(picture, join(jobs.stateDir, 'inline', 'pictures'));
  try {
    return await fn(file.path, sectorSize);
  } finally {
    await file.close();
  }
}

/** Ranges mapped on a drive, or none with a log line: a map that cannot be made never fails the job it describes. */
async function mapped(ctx: JobContext, path: string, ranges: readonly DriveRange[], imageSectorSize?: number) {
  if (!existsSync(path)) return null;
  try {
    return await filesInRanges(path, ranges, { imageSectorSize });
  } catch (e) {
    ctx.log('warn', `the ranges could not be mapped to files on ${path}: ${(e as Error).message}`);
    return null;
  }
}

/** Ranges mapped on the active drive (its picture in inline mode), or none with a log line. */
async function mappedOnActive(ctx: JobContext, jobs: CopyJobs, source: string, picture: string | undefined, ranges: readonly DriveRange[]) {
  try {
    return await activeFile(jobs, source, picture, (path, sectorSize) => mapped(ctx, path, ranges, sectorSize));
  } catch (e) {
    ctx.log('warn', `the ranges could not be mapped to files on the picture of ${source}: ${(e as Error).message}`);
    return null;
  }
}

/** The unreadable sectors of a copy's source, with the partitions and files they lie in (`unreadableFiles`); in inline mode mapped on the picture the copy read. */
async function withUnreadableFiles(ctx: JobContext, jobs: CopyJobs, source: string, picture: string | undefined, report: CopyReport): Promise<CopyReport & { unreadableFiles?: unknown }> {
  if (report.unreadable.length === 0) return report;
  const files = await mappedOnActive(ctx, jobs, source, picture, report.unreadable.slice(0, 100));
  return files ? { ...report, unreadableFiles: files } : report;
}

/** Differing ranges with the files they lie in on the active drive (its picture in inline mode) and on the standby. */
async function filesOnBoth(ctx: JobContext, jobs: CopyJobs, active: string, picture: string | undefined, standby: string, ranges: readonly DriveRange[]) {
  const [a, s] = [await mappedOnActive(ctx, jobs, active, picture, ranges), await mapped(ctx, standby, ranges)];
  return ranges.map((r, i) => ({ start: r.start, length: r.length, partition: a?.[i]?.partition ?? s?.[i]?.partition, active: a?.[i]?.files ?? [], standby: s?.[i]?.files ?? [], ...(a?.[i]?.sampled || s?.[i]?.sampled ? { sampled: true } : {}) }));
}

export class CopyJobs {
  /** Inline mode: every copy that changes a drive runs in a changed-block epoch; null in switched mode. */
  inline: InlineMode | null = null;
  /** Whether the host is powered now (the power LED as last read); the controller sets it. */
  hostPowered: () => boolean = () => false;
  /** The pair's record of interrupted restores of files, settled by a restore that writes back all it owes (set by the controller). */
  fileRestore: FileRestoreRecord | null = null;

  constructor(
    readonly config: DaemonConfig,
    readonly stateDir: string,
    readonly roles: Roles,
    readonly window: SyncWindow,
    readonly jobs: JobRunner,
    readonly bus: EventBus,
    readonly metrics: Metrics,
    /** A completed copy made this bay's drive a bootable system (the rig may care). */
    private readonly onCopied: (bay: Bay) => void,
    /** The pair (config pairs[].id) these copies work on. */
    readonly pairId: string = config.pairs.find((p) => p.role === 'boot')!.id,
  ) {}

  /** Resolves when the daemon's own checks of drives that just came into a bay are done (DriveKeeper.arrivalsChecked); set by the composition. */
  arrivalsChecked: () => Promise<void> = async () => {};

  /**
   * Starts a job of `kind`, or queues it behind the copies of other pairs
   * (config jobs.parallel), and returns its record at once. Throws BusyError
   * while the pair has a job running or waiting or the drives are moving,
   * RefusedError when a drive is missing or the kind refuses.
   */
  start<K extends CopyJobKind>(kind: K, opts: CopyJobOptions[K], trigger = 'api'): JobRecord {
    this.jobs.checkPair(this.pairId);
    const spec = KINDS[kind] as KindSpec<CopyJobOptions[K]>;
    // Planned from the roles when the job starts: a job that waited may find them changed (a failover meanwhile).
    const prepare = () => {
      this.window.requireKnown(`a ${kind} on pair ${this.pairId}`);
      const view = this.roles.current();
      const window = spec.readsActive && this.window.wanted((opts as { window?: boolean }).window);
      if (spec.readsActive && !window) this.#refuseReadingRunningHost(kind, (opts as { window?: boolean }).window);
      // In a window the active drive reaches the controller only once the host is off.
      if (spec.readsActive && !window) this.roles.require(view.active, 'active drive');
      const target = this.roles.require(view.standby, 'standby');
      const plan = spec.plan({ opts, view, target, window, jobs: this });
      // The record names the physical bays (a data pair's positions A and B are bays like C and D).
      const options = { ...plan.options };
      for (const k of ['source', 'target'] as const) if (options[k] === 'A' || options[k] === 'B') options[k] = this.roles.name(options[k]);
      return {
        options,
        run: async (ctx: JobContext) => {
          // A drive just put into a bay is being sampled by the daemon's own check, which holds its read lock: the copy waits for it rather than failing as busy.
          await this.arrivalsChecked();
          const geometry = (path: string) => precheckGeometry({ stateDir: this.stateDir, openDevice: this.roles.bays.openDevice, path, action: kind === 'verify' ? 'verify' : 'copy' });
          // In inline mode a copy or verify reads the active drive through a live snapshot of the export, whose size is what the
          // export opened: both drives are checked first (rule 8), so a changed drive is refused as such, before a snapshot is taken.
          const live = this.config.mode === 'inline' && spec.readsActive;
          // Rule 7: a standby the copy would refuse (rule 8; rule 1: in use on the controller) is refused before the window shuts the host down for it.
          if (window || live) await geometry(target);
          if (window && kind !== 'verify' && kind !== 'restore') precheckWriteTarget(target);
          return this.window.run(
            ctx,
            window,
            async () => {
              const source = spec.readsActive ? await this.window.drivePath(view.active, 'active drive', ctx.signal) : '';
              if (live) await geometry(source);
              return plan.run(ctx, source);
            },
            kind === 'restore' ? 'writes' : spec.readsActive ? 'reads' : false,
          );
        },
      };
    };
    prepare(); // every refusal now, before the job is recorded or queued
    const pair = this.config.pairs.find((p) => p.id === this.pairId);
    return this.jobs.enqueue(kind, trigger, { pair: this.pairId, bays: [this.roles.name('A'), this.roles.name('B')], bridge: pair?.bridge ?? null }, prepare);
  }

  /**
   * Switched mode without a window while the host is powered: the host
   * writes the active drive directly, so a copy of it is of no one instant
   * and must not be recorded as a consistent backup. Refused (409) when the
   * window was refused (the request's "window": false, config sync.window
   * "never") or the host is a real one (the hardware rig, an external host).
   * The simulated host writes only when asked, and those writes wait for no
   * copy: they are refused while a copy reads the drive (sim/rig.ts).
   */
  #refuseReadingRunningHost(kind: CopyJobKind, requested: boolean | undefined): void {
    const c = this.config;
    if (c.mode !== 'switched' || !this.hostPowered()) return;
    const realHost = c.rig === 'hardware' || c.sim.host === 'external';
    if (requested !== false && c.sync.window !== 'never' && !realHost) return;
    const why = requested === false ? 'no sync window was asked for ("window": false)' : c.sync.window === 'never' ? 'config sync.window is "never"' : 'no sync window was asked for';
    throw new RefusedError(`a ${kind} reads the active drive, which the powered host writes directly in switched mode, and ${why}: the copy would hold no single instant of the drive, so it is not started; nothing was changed`, {
      hint: 'ask for a sync window ("window": true, or `--window`): the host is shut down for the copy and booted again; or shut the host down first (POST /api/host/shutdown)',
    });
  }

  /** The options every engine call shares; with `picture` (a live sync's snapshot export) the active drive at `source` is read through it. */
  common(ctx: JobContext, source?: string, picture?: string) {
    const s = this.config.sync;
    return {
      stateDir: this.stateDir,
      signal: ctx.signal,
      onProgress: ctx.progress,
      onNote: ctx.note,
      openDevice: source && picture ? SnapshotDrive.opener(source, picture, this.roles.bays.openDevice ?? openLocated) : this.roles.bays.openDevice,
      chunkSize: s.chunkKiB * 1024,
      direct: s.direct,
      retries: s.retries,
    };
  }

  /**
   * A copy onto the standby in `bay`: the failover machine hears it is not
   * consistent while written (unless the kind told it already), and
   * consistent once done. A cancelled sync with rollback asked for is
   * rolled back to the previous backup (`journaled`: a clone has no journal).
   */
  async write(ctx: JobContext, bay: Bay, targetPath: string, journaled: boolean, copy: (changed?: ChangedBlocks, picture?: string) => Promise<CopyReport>, markFirst = true, live = false, wholeDrive = true): Promise<CopyReport> {
    if (markFirst) await this.roles.markConsistent(bay, false);
    let report: CopyReport;
    const inline = this.inline;
    try {
      report = inline ? await inline.around(ctx, this.roles.current().active, copy, live, wholeDrive) : await copy();
    } catch (e) {
      const cancelled = e instanceof CancelledError;
      // Inline mode: the failed epoch's writes went back into the live bitmap, which describes the previous backup; the standby goes back to it too, or the next sync's changed blocks would make another plan than the pending copy's (rule 7).
      // A cancelled live sync too: its snapshot is gone, and a standby holding parts of two instants is consistent with neither.
      const liveSync = live && inline !== null && this.config.inline.snapshot.live;
      if (journaled && (cancelled ? ctx.job.cancel?.rollback || liveSync : inline !== null && !!this.roles.current().pair?.pendingCopy)) await this.#rollBack(ctx, bay, targetPath, cancelled ? 'cancelled' : 'failed');
      throw e;
    }
    await this.roles.markConsistent(bay, true);
    this.onCopied(bay);
    ctx.log('info', `standby bay ${this.roles.name(bay)} now holds generation ${report.generation}`);
    return report;
  }

  async #rollBack(ctx: JobContext, bay: Bay, targetPath: string, why: 'cancelled' | 'failed' = 'cancelled'): Promise<void> {
    try {
      const r = await recover({ ...this.common({ ...ctx, signal: new AbortController().signal }), target: targetPath });
      ctx.log('warn', `${why}: ${r.message}`);
      await this.roles.markConsistent(bay, true);
      ctx.job.result = { rolledBack: true, recover: r };
    } catch (re) {
      ctx.log('error', `${why}, and the rollback failed: ${(re as Error).message}; POST /api/recover to try again`);
    }
  }
}
