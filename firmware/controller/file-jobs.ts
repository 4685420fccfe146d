/**
 * The jobs on the drives' files: restoring selected files and folders from
 * the standby into the active drive's filesystem, restoring one whole
 * partition (the journaled restore of copy-jobs, limited to it), and the
 * whole-tree difference walk with its paged result. Each reads or writes the
 * active drive, so each needs the host off: in switched mode it is shut down
 * by a sync window when one is asked for, and refused otherwise; in inline
 * mode the host runs from the export of the active drive and writing its
 * filesystem under it is refused.
 */
import { createReadStream, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BadInputError, NotFoundError, RefusedError } from '../../src/errors.ts';
import { appendWhole } from '../../src/durable-file.ts';
import { ChangedFolders, FileView, diffTree, joinPath, walkCovers, type WalkMarks, splitPath, writeBack, writeBackPossible, releaseWriteBack, type TreeDifference, type WriteBackOptions, type WriteBackProgress, type WriteBackReport } from '../../src/file-view/index.ts';
import { acquireDriveLock, ProgressTracker } from '../../src/sync/index.ts';
import { locateDrive, openDrive } from '../../src/sata-bridge/index.ts';
import { readLayout } from '../../src/disk-layout/index.ts';
import { array, bool, int, obj, opt, str } from './schema.ts';
import { summary, type JobContext } from './jobs.ts';
import type { Controller } from './controller.ts';
import type { DrivePair } from './pairs.ts';
import { FileRestoreRecord, type FileRestoreState } from './file-restore-record.ts';
import { partitionConfirmation } from './confirmations.ts';
import { pairScoped, type PairScopedRoute } from './pair-scoped.ts';
import type { Route } from './http-server.ts';
import type { LivePictures } from './live-picture.ts';
import { driveState } from './browse.ts';

const windowField = opt(bool('run in a sync window: the host is shut down, both drives go to the controller, the host boots again afterwards (default: config sync.window)'));

const emptyBody = obj({});

export const fileBodies = {
  restoreFiles: obj({
    partition: int(1, 128, 'the partition, numbered as on both drives'),
    paths: array(str({ maxLength: 4096, description: 'a file or folder as the listing shows it, from the partition\'s root' }), { maxItems: 1000, unique: true, maxJsonBytes: 60_000, description: 'what to restore; folders with everything below them' }),
    window: windowField,
  }),
  restorePartition: obj({
    partition: int(1, 128, 'the partition to copy back from the standby'),
    confirm: str({ maxLength: 64, description: 'the typed confirmation: exactly "restore partition N" with N the partition' }),
    window: windowField,
  }),
  diff: obj({
    partition: int(1, 128, 'the partition, numbered as on both drives'),
    path: opt(str({ maxLength: 4096, description: 'the folder to walk, from the partition\'s root (default /)' })),
    hash: opt(bool('also compare the content (XXH3) of files whose size and time agree: reads every such file on both drives')),
    window: windowField,
  }),
};

/** Jobs that write no drive: a walk stays current across them. */
const READ_ONLY_JOBS = new Set<string>(['diff', 'verify']);

/** Difference walks whose pages are kept (the oldest go first). */
const KEEP_WALKS = 8;

export class FileJobs {
  readonly walkDir: string;
  /** What a running restore of files has mounted, and an interrupted one's record (per pair). */
  readonly record: FileRestoreRecord;

  /** When the host was last seen switched on (ms since 1970); what happened before the daemon started is not known. */
  #hostOnAt = Date.now();

  constructor(private readonly app: Controller) {
    this.walkDir = join(app.stateDir, 'diff-walks');
    this.record = new FileRestoreRecord(app.stateDir);
    app.bus.subscribe((e) => {
      if (e.type === 'host.power' && (e.data as { power?: string }).power === 'on') this.#hostOnAt = Date.now();
    });
  }

  /**
   * Refuses (409) a job that needs the host off while it runs and no window is asked for, or in inline mode.
   * @returns whether the job runs in a sync window.
   */
  #hostOff(p: DrivePair, what: string, requested: boolean | undefined): boolean {
    const app = this.app;
    p.window.requireKnown(what);
    if ((app.config as { mode?: string }).mode === 'inline') {
      // Even with the host off: the export holds the active drive, and its changed-block tracking would not see writes made beside it, so the next changed-block sync would leave them off the standby.
      throw new RefusedError(`${what} is not done in inline mode: the controller's export holds the active drive, and its changed-block tracking would miss these writes`, {
        hint: 'download what you need (GET /api/browse/file or /api/browse/archive with side=standby) and copy it in on the host, or fail over to run the host from the backup (POST /api/failover)',
      });
    }
    const window = p.window.wanted(requested);
    if (!window && app.host.powered) {
      throw new RefusedError(`${what} needs the host off: the active drive (bay ${p.bays().active}) is a disk the running host uses`, {
        hint: 'shut the host down first (POST /api/host/shutdown), or ask for a sync window: "window": true in the request',
      });
    }
    return window;
  }

  /**
   * Refuses (409) writing files into a drive that is not the pair's active
   * drive, or reading them back from a standby that is not consistent (never
   * restore from an Inconsistent drive); checked when asked and again when the
   * job starts, before the active drive is opened for writing.
   */
  #standbyConsistent(p: DrivePair, what: string): void {
    const view = p.roles.current();
    // Files go only into the drive the pair knows as its active one (another drive put in its bay holds other data).
    if (view.pair && p.roles.keyOf(view.active) !== view.pair.activeKey) {
      throw new RefusedError(`${what}: the drive in bay ${p.roles.name(view.active)} is not the pair's active drive (it was replaced or is absent)`, {
        hint: 'put the pair\'s active drive back, or restore the whole drive onto the new one (POST /api/reprotect or POST /api/restore)',
      });
    }
    const state = p.roles.standbyState(view);
    if (state !== 'consistent') {
      throw new RefusedError(`${what}: the standby in bay ${p.roles.name(view.standby)} is ${state}, so its files may be half-written`, {
        hint: state === 'syncing' ? 'wait for the sync to finish' : 'POST /api/recover to roll it back to the previous backup, or POST /api/sync to finish it',
      });
    }
  }

  /**
   * Refuses (409) a restore of files that does not cover an interrupted one
   * of the pair (the same partition, each of its paths or a folder above it):
   * completing it clears the record, which would let a sync overwrite the
   * standby's only copy of what the interrupted one had not written back.
   * @returns the interrupted record, or null.
   */
  #owed(p: DrivePair, partition: number, paths: readonly string[]): FileRestoreState | null {
    const owed = this.record.get(p.id);
    if (owed?.state !== 'interrupted') return null;
    const activeKey = p.roles.keyOf(p.roles.current().active);
    if (owed.drive.key !== null && owed.drive.key !== activeKey) {
      // Roles changed since (a failover): the drive it wrote into is the standby now, and the files it owed are on the active drive.
      throw new RefusedError(`a restore of files onto another drive than the active one now (job ${owed.jobId}, into ${owed.drive.path}) was interrupted: restoring files from the standby now would copy that half-restored drive's files back`, {
        hint: `when the active drive is as wanted, dismiss it (POST /api/pairs/${p.id}/restore/files/dismiss), then re-protect the standby (POST /api/pairs/${p.id}/reprotect)`,
      });
    }
    const covered = owed.partition === partition && owed.paths.every((o) => paths.some((x) => o === x || o.startsWith(`${x}/`)));
    if (!covered) {
      throw new RefusedError(`a restore of files onto partition ${owed.partition} of pair ${p.id}'s active drive (job ${owed.jobId}) was interrupted: this one must finish it`, {
        hint: `include its paths on partition ${owed.partition} (${owed.paths.slice(0, 5).join(', ')}${owed.paths.length > 5 ? ', …' : ''}), or, when the active drive is as wanted, dismiss it first (POST /api/pairs/${p.id}/restore/files/dismiss)`,
      });
    }
    return owed;
  }

  /**
   * Refuses (409) writing into an active drive at `path` whose size or
   * logical sector size is not what the pair recorded (DESIGN rule 8): its
   * partition table may describe space the drive no longer has.
   */
  async #activeGeometry(p: DrivePair, path: string): Promise<void> {
    const view = p.roles.current();
    const rec = view.pair?.drives[view.pair.activeKey];
    if (!rec) return;
    const dev = await openDrive(path);
    try {
      if (dev.size === rec.sizeBytes && dev.logicalSectorSize === rec.logicalSectorSize) return;
      throw new RefusedError(`the active drive ${path} now reports ${dev.size} bytes in ${dev.logicalSectorSize}-byte sectors, but had ${rec.sizeBytes} bytes in ${rec.logicalSectorSize}-byte sectors when the pair was made: files are not written into a drive whose geometry changed`, {
        hint: 'make the drive show the geometry it was paired with (an image\'s length, a host protected area, the bridge it was paired through); nothing was changed',
      });
    } finally {
      await dev.close();
    }
  }

  /** BadInputError (400) when the standby's partition table has no partition `n` (the standby is only read). */
  async #standbyHasPartition(p: DrivePair, n: number): Promise<void> {
    const path = p.roles.require(p.roles.current().standby, 'standby');
    const dev = await openDrive(path);
    try {
      const layout = await readLayout(dev);
      if (!layout.partitions.some((x) => x.number === n && !x.extended)) {
        throw new BadInputError(`the standby has no partition ${n}`, { hint: `partitions on the standby: ${layout.partitions.filter((x) => !x.extended).map((x) => x.number).join(', ') || 'none'}; nothing was changed` });
      }
    } finally {
      await dev.close();
    }
  }

  /**
   * Starts a job on the pair's active drive (in a window when asked) and
   * returns its reply. `picture` (inline mode, a job that only reads): the
   * active drive is read from a live snapshot held for the whole job
   * (`activeSectorSize`: its sectors, which the picture's file does not say).
   */
  #start(p: DrivePair, kind: 'restore-files' | 'diff', options: Record<string, unknown>, window: boolean, run: (ctx: JobContext, activePath: string, standbyPath: string, activeSectorSize?: number) => Promise<unknown>, picture?: LivePictures) {
    const app = this.app;
    app.jobs.checkIdle();
    p.window.requireKnown(`a ${kind} on pair ${p.id}`);
    const view = p.roles.current();
    if (!window) p.roles.require(view.active, 'active drive');
    const standbyPath = p.roles.require(view.standby, 'standby');
    const job = app.jobs.start(kind, { ...options, window, active: p.roles.name(view.active), standby: p.roles.name(view.standby) }, 'api', (ctx) =>
      picture ? picture.use(async (lease) => {
        ctx.log('info', `the active drive is read from a picture of it taken at ${lease.takenAt.toISOString()} (a live snapshot: the host writes on)`);
        return run(ctx, lease.file, standbyPath, lease.sectorSize);
      }) : p.window.run(ctx, window, async () => {
        const activePath = await p.window.drivePath(view.active, 'active drive', ctx.signal);
        // The window's move is read back; without one the host may have been switched on since the request.
        if (await app.bs.bootSwitch.hostPowered()) throw new RefusedError(`the host was switched on: ${kind} does not touch the active drive while it runs`, { hint: 'shut the host down and try again' });
        return run(ctx, activePath, standbyPath);
      }),
      p.id,
    );
    app.metrics.setJob(job);
    return { status: 202, body: { id: job.id, job: summary(job) } };
  }

  /**
   * Writes files back with the mounts recorded: the record is durable before
   * the partition is attached, and removed once writeBack has unmounted and
   * detached it, so a daemon that dies in between leaves what the next
   * start needs to clean up (startup-recovery.ts).
   */
  async #writeBackRecorded(p: DrivePair, ctx: JobContext, from: FileView, active: FileView, paths: string[], options: WriteBackOptions): Promise<WriteBackReport> {
    const part = active.partition!;
    const st = statSync(active.source.path);
    const entry = { pair: p.id, jobId: ctx.job.id, partition: part.number, paths, startedAt: new Date().toISOString(), drive: { path: active.source.path, dev: st.dev, ino: st.ino, key: p.roles.keyOf(p.roles.current().active) }, startByte: part.startByte, sizeBytes: part.sizeBytes, filesystem: part.filesystem ?? '' };
    // What an earlier restore left owed stays owed unless this one writes everything back (not cancelled, not failed).
    const owed = this.#owed(p, part.number, paths);
    const settle = () => (owed ? this.record.interrupted(owed, owed.cleanup ?? { at: new Date().toISOString(), unmounted: [], detached: [], failed: [], fsck: null }) : this.record.clear(p.id));
    this.record.begin(entry);
    let report: WriteBackReport;
    try {
      report = await writeBack(from, active, paths, options);
    } catch (e) {
      // writeBack unmounts in its own finally; should that have failed, release what is left before forgetting it.
      const left = await releaseWriteBack({ dev: st.dev, ino: st.ino, startByte: part.startByte }).catch(() => null);
      if (left && left.failed.length === 0) settle();
      else ctx.log('error', `the active partition may still be mounted or attached (${left?.failed.join('; ') ?? 'the clean-up did not run'}): the next start of dpsrd releases it`);
      throw e;
    }
    // Finished, or cancelled between files: what was asked is known to the operator through the job's result.
    if (report.cancelled) settle();
    else this.record.clear(p.id);
    return report;
  }

  routes(): Route[] {
    const app = this.app;
    const scoped: PairScopedRoute[] = [
      {
        method: 'POST', at: '/restore/files', tag: 'jobs', body: fileBodies.restoreFiles,
        summary: "Write files and folders from the standby into the same partition of the active drive (the host off): the partition is mounted read-write on the controller (the kernel's driver, ntfs-3g, or mtools for FAT where the kernel has none), files replace files of the same name, folders are merged, then the filesystem is checked read-only with its fsck. The job's result lists what was overwritten. The standby is only read (The Sleuth Kit), never mounted. What is mounted is recorded first, so a daemon killed half-way has it unmounted, detached and checked at its next start, and the pair's status shows the restore as interrupted (fileRestore) until one completes or it is dismissed",
        responses: {
          202: 'the job started; { id, job }. Result: { filesystem, driver, restored: {files, folders, symlinks, bytes}, overwritten: [{path, type, size, mtime}], overwrittenCount, skipped: [{path, why}], fsck: {tool, exitCode, clean, output}, cancelled, leftoversRemoved: [path] (temporary files .dpsr-restore-* an interrupted restore of these paths had left) }',
          400: 'a bad path or body',
          404: 'no such partition, or a path not on the standby',
          409: 'the host runs and no window was asked for, inline mode, another job runs, the partitions hold different filesystems, or the controller cannot mount (not root)',
        },
        handler: async (p, { body }) => {
          const b = body as { partition: number; paths: string[]; window?: boolean };
          const paths = b.paths.map((x) => joinPath(splitPath(x)));
          if (paths.length === 0) throw new BadInputError('request body: paths is empty; allowed: 1 to 1000 files or folders', { hint: 'give what to restore as the listing shows it' });
          if (paths.includes('/')) throw new BadInputError('the partition\'s root cannot be restored as files', { hint: 'restore its folders and files, or the whole partition (POST /api/restore/partition)' });
          this.#standbyConsistent(p, 'restoring files onto the active drive');
          this.#owed(p, b.partition, paths);
          const window = this.#hostOff(p, 'restoring files onto the active drive', b.window);
          // Without a window the active drive is on the controller now; in one, it is checked once the window brought it.
          if (!window) await this.#activeGeometry(p, p.roles.require(p.roles.current().active, 'active drive'));
          const why = writeBackPossible();
          if (why) throw new RefusedError(why, { hint: 'run dpsrd as root (its systemd unit does)' });
          // Checked before the job starts: every path is on the standby, which is always readable.
          const standby = await FileView.open(p.roles.require(p.roles.current().standby, 'standby'), b.partition);
          for (const x of paths) await standby.stat(x);
          return this.#start(p, 'restore-files', { partition: b.partition, paths }, window, async (ctx, activePath, standbyPath) => {
            this.#standbyConsistent(p, 'restoring files onto the active drive');
            await this.#activeGeometry(p, activePath);
            const active = await FileView.open(activePath, b.partition);
            const from = await FileView.open(standbyPath, b.partition);
            const lock = await acquireDriveLock(locateDrive(activePath), `restore of files onto ${activePath}`);
            try {
              let tracker: ProgressTracker | null = null;
              let last = 0;
              const report = await this.#writeBackRecorded(p, ctx, from, active, paths, {
                signal: ctx.signal,
                onProgress: (x: WriteBackProgress) => {
                  tracker ??= new ProgressTracker('copying', x.bytesTotal, ctx.progress);
                  tracker.advance(x.bytes - last, x.bytes - last);
                  last = x.bytes;
                },
              });
              // writeBack stops between files on a cancel and returns what it wrote: a partial restore is a cancelled job.
              if (report.cancelled) ctx.stoppedEarly();
              ctx.log('info', `restored ${report.restored.files} files, ${report.restored.folders} folders into partition ${b.partition} of the active drive (${report.overwrittenCount} overwritten); ${report.fsck.tool}: ${report.fsck.clean ? 'clean' : `exit ${report.fsck.exitCode}`}`);
              if (!report.fsck.clean) {
                app.bus.publish('alert', { level: 'warning', code: 'restore-fsck', message: `after restoring files into partition ${b.partition} of pair ${p.id}'s active drive, ${report.fsck.tool} reports problems (exit ${report.fsck.exitCode}): see job ${ctx.job.id}` });
              }
              app.status.publishChange();
              return { partition: b.partition, ...report };
            } finally {
              lock.release();
            }
          });
        },
      },
      {
        method: 'POST', at: '/restore/files/dismiss', tag: 'jobs', body: emptyBody,
        summary: 'Forget an interrupted restore of files (the pair status\'s fileRestore): the active drive is as the operator wants it, so syncs onto the standby may go on. The alternative is finishing it: POST restore/files again with its paths',
        responses: { 200: '{ dismissed: the record that was dropped, or null when there was none }', 409: 'a restore of files is running on the pair' },
        handler: (p) => {
          const r = this.record.get(p.id);
          if (r?.state === 'running' && app.jobs.forPair(p.id)?.kind === 'restore-files') throw new RefusedError(`a restore of files is running on pair ${p.id}`, { hint: `wait for job ${r.jobId} or cancel it` });
          if (r) {
            this.record.clear(p.id);
            app.bus.publish('alert', { level: 'info', code: 'file-restore-dismissed', message: `the interrupted restore of files on pair ${p.id} (job ${r.jobId}) was dismissed: syncs onto its standby may run again` });
            app.status.publishChange();
          }
          return { status: 200, body: { dismissed: r } };
        },
      },
      {
        method: 'POST', at: '/restore/partition', tag: 'jobs', body: fileBodies.restorePartition,
        summary: 'Copy one partition of the standby back over the active drive, journaled like every copy (dpsr recover rolls it back), with the direction and consistency checks of dpsr restore; the partition table goes with it. Needs the typed confirmation "restore partition N", and the host off or a window',
        responses: {
          202: 'the job started (kind restore, options.partitions [N]); { id, job }',
          400: 'a bad body, or the confirmation does not match',
          409: 'the host runs and no window was asked for, another job runs, or the restore is refused to protect data (e.g. the standby is not consistent)',
        },
        handler: async (p, { body }) => {
          const b = body as { partition: number; confirm: string; window?: boolean };
          const want = partitionConfirmation(b.partition);
          if (b.confirm !== want) throw new BadInputError(`the confirmation is ${JSON.stringify(b.confirm)}; it must be exactly ${JSON.stringify(want)}`, { hint: 'type the confirmation as asked; nothing was changed' });
          const window = this.#hostOff(p, `restoring partition ${b.partition} onto the active drive`, b.window);
          // Asked here, not in the job: a window would shut the host down and boot it again for a partition that is not there.
          await this.#standbyHasPartition(p, b.partition);
          const job = p.copies.start('restore', { window, partitions: [b.partition] });
          return { status: 202, body: { id: job.id, job: summary(job) } };
        },
      },
      {
        method: 'POST', at: '/browse/diff', tag: 'files', body: fileBodies.diff,
        summary: 'Start the whole-tree "show only differences" walk of a folder on both drives (the active drive is read: in switched mode the host must be off or a window asked for; in inline mode a live snapshot of it is read, held for the job). Progress counts entries (bytesDone: compared, bytesTotal: listed); the differences are paged by GET browse/diff/{job}',
        responses: { 202: 'the job started (kind diff); result: { partition, path, compared, counts, differences }', 400: 'a bad path or body', 409: 'the host runs and no window was asked for (switched mode), or another job runs' },
        handler: (p, { body }) => {
          const b = body as { partition: number; path?: string; hash?: boolean; window?: boolean };
          const path = joinPath(splitPath(b.path ?? '/'));
          const pictures = p.copies.inline?.pictures;
          if (pictures && b.window) throw new BadInputError('inline mode has no sync window: the walk reads a live snapshot of the active drive while the host runs', { hint: 'leave out "window"' });
          const window = pictures ? false : this.#hostOff(p, 'the difference walk', b.window);
          return this.#start(p, 'diff', { partition: b.partition, path, hash: b.hash === true }, window, async (ctx, activePath, standbyPath, activeSectorSize) => {
            const [active, standby] = [await FileView.open(activePath, b.partition, { imageSectorSize: activeSectorSize }), await FileView.open(standbyPath, b.partition)];
            mkdirSync(this.walkDir, { recursive: true });
            this.#prune();
            const file = join(this.walkDir, `${ctx.job.id}.jsonl`);
            rmSync(file, { force: true });
            // The folders holding differences, for the listing's folder marks; written only once the walk is whole.
            const foldersFile = join(this.walkDir, `${ctx.job.id}.folders`);
            const foldersPart = `${foldersFile}.part`;
            rmSync(foldersFile, { force: true });
            rmSync(foldersPart, { force: true });
            // Which drives the walk compared, and how they looked: a swap or a write since makes its marks stale.
            writeFileSync(join(this.walkDir, `${ctx.job.id}.drives`), JSON.stringify(this.#drivesNow(p)));
            appendWhole(foldersPart, '');
            const folders = new ChangedFolders(path);
            let batch: string[] = [];
            let folderBatch: string[] = [];
            const flush = () => {
              if (batch.length) appendWhole(file, batch.join(''));
              if (folderBatch.length) appendWhole(foldersPart, folderBatch.join(''));
              batch = [];
              folderBatch = [];
            };
            let differences = 0;
            const result = await diffTree(active, standby, path, (d: TreeDifference) => {
              differences++;
              batch.push(`${JSON.stringify(d)}\n`);
              for (const f of folders.add(d.path)) folderBatch.push(`${JSON.stringify(f)}\n`);
              if (batch.length >= 1000) flush();
            }, {
              hash: b.hash,
              signal: ctx.signal,
              tmpDir: this.walkDir,
              onProgress: (compared, listed) => ctx.progress({ phase: 'comparing', bytesDone: compared, bytesTotal: listed, bytesWritten: 0, rate: 0, etaSeconds: null, percent: listed ? (100 * compared) / listed : 100 }),
            });
            flush();
            renameSync(foldersPart, foldersFile);
            return { partition: b.partition, ...result, differences };
          }, pictures);
        },
      },
      {
        method: 'GET', at: '/browse/diff/:job', tag: 'files', summary: 'One page of a difference walk\'s differences, in path order',
        query: { offset: 'first row (default 0)', limit: 'rows per page, 1–5000 (default 500)' },
        responses: { 200: '{ id, state, path, rows: [{path, state, active?, standby?, hashed?}], total, offset, limit, counts }', 400: 'a bad query, or the job is not a difference walk', 404: 'no such job (or not one of this pair), or its pages are no longer kept' },
        handler: async (p, { params, query }) => {
          const job = app.jobs.get(params.job!);
          if (job.kind !== 'diff') throw new BadInputError(`job ${job.id} is a ${job.kind}, not a difference walk`);
          if ((job.pair ?? app.pairs.boot.id) !== p.id) throw new NotFoundError(`job ${job.id} is a walk of pair ${job.pair}, not of pair ${p.id}`, { hint: `GET /api/pairs/${job.pair}/browse/diff/${job.id}` });
          const offset = pageQuery(query, 'offset', 0, Number.MAX_SAFE_INTEGER, 0);
          const limit = pageQuery(query, 'limit', 1, 5000, 500);
          const file = join(this.walkDir, `${job.id}.jsonl`);
          const result = job.result as { path: string; counts: Record<string, number>; differences: number } | null;
          if (!existsSync(file)) {
            if (job.state === 'running' || (job.state === 'done' && result?.differences === 0)) return { status: 200, body: { id: job.id, state: job.state, path: job.options.path, rows: [], total: 0, offset, limit, counts: result?.counts ?? null } };
            throw new NotFoundError(`the differences of job ${job.id} are not kept`, { hint: `the last ${KEEP_WALKS} walks are kept; start another (POST /api/browse/diff)` });
          }
          const rows: unknown[] = [];
          let i = 0;
          for await (const line of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) {
            if (line === '') continue;
            if (i >= offset && rows.length < limit) {
              // A line torn by a crash mid-write is left out, not answered with 500.
              const row = parseRow(line);
              if (row === undefined) continue;
              rows.push(row);
            }
            i++;
          }
          return { status: 200, body: { id: job.id, state: job.state, path: job.options.path, rows, total: i, offset, limit, counts: result?.counts ?? null } };
        },
      },
    ];
    return pairScoped(app.pairs, scoped);
  }

  /** The pair's drives now, each as its path and `driveState` (null: unknown, never equal to a recorded one). */
  #drivesNow(p: DrivePair): { active: string | null; standby: string | null } {
    const { active, standby } = p.roles.current();
    const at = (bay: typeof active) => {
      const path = p.roles.bays.path(bay);
      const state = path ? driveState(path) : null;
      return path && state ? `${path}|${state}` : null;
    };
    return { active: at(active), standby: at(standby) };
  }

  /** Keeps the newest KEEP_WALKS walks' pages and folder lists. */
  #prune(): void {
    const files = readdirSync(this.walkDir).filter((f) => /^\d+\.jsonl$/.test(f)).sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10));
    for (const f of files.slice(0, Math.max(0, files.length - (KEEP_WALKS - 1)))) {
      const id = f.replace(/\.jsonl$/, '');
      for (const name of [f, `${id}.folders`, `${id}.folders.part`, `${id}.drives`]) rmSync(join(this.walkDir, name), { force: true });
    }
  }

  /**
   * The newest walk of pair `p`'s partition `partition` that covered `folder`
   * and is still current, with the sub-folders of `folder` holding
   * differences; null when there is none. A walk stops being current when the
   * host has been on since it started (the active drive may have changed),
   * when another job of the pair that writes a drive started after it, or
   * when either drive is not the one it compared or was written since it
   * started (a drive swapped in its bay, a tool on the controller):
   * `driveState`, as the listing cache keys its entries.
   */
  async folderMarks(p: DrivePair, partition: number, folder: string): Promise<WalkMarks | null> {
    const jobs = this.app.jobs.list().filter((j) => (j.pair ?? this.app.pairs.boot.id) === p.id);
    const walk = jobs.find((j) => j.kind === 'diff' && j.state === 'done' && j.options.partition === partition && typeof j.options.path === 'string' && walkCovers(j.options.path, folder));
    if (!walk?.startedAt || !walk.finishedAt) return null;
    const started = Date.parse(walk.startedAt);
    // The host on now (inline mode) or since the walk: the active drive may have changed under it.
    if (this.app.host.powered || this.#hostOnAt >= started) return null;
    if (jobs.some((j) => !READ_ONLY_JOBS.has(j.kind) && j.startedAt !== null && Date.parse(j.startedAt) >= started)) return null;
    const file = join(this.walkDir, `${walk.id}.folders`);
    if (!existsSync(file)) return null;
    const drivesFile = join(this.walkDir, `${walk.id}.drives`);
    const now = this.#drivesNow(p);
    if (!now.active || !now.standby || !existsSync(drivesFile) || readFileSync(drivesFile, 'utf8') !== JSON.stringify(now)) return null;
    const prefix = folder === '/' ? '/' : `${folder}/`;
    const changed = new Set<string>();
    for await (const line of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) {
      if (line === '') continue;
      const f = JSON.parse(line) as string;
      // Only the folder's own sub-folders are asked about: deeper ones stay on disk.
      if (f.startsWith(prefix) && f.length > prefix.length && !f.slice(prefix.length).includes('/')) changed.add(f);
    }
    return { job: walk.id, path: walk.options.path as string, finishedAt: walk.finishedAt, hashed: walk.options.hash === true, changed };
  }
}

/** A line of a walk's pages, or undefined when it does not parse (torn by a crash). */
function parseRow(line: string): unknown {
  try {
    return JSON.parse(line) as unknown;
  } catch {
    return undefined;
  }
}

function pageQuery(query: URLSearchParams, name: string, min: number, max: number, fallback: number): number {
  const text = query.get(name);
  if (text === null) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new BadInputError(`query ${name} is ${JSON.stringify(text)}; allowed: an integer from ${min} to ${max}`);
  return n;
}
