/**
 * The appliance: drives in bays, the pair state of the sync engine, the boot
 * switch and its failover state machine, and the job runner, kept in step.
 * Roles live in two places (the pair state says which drive is active, the
 * failover machine which bay): every failover the machine reports is
 * recorded in the pair state, and the machine hears from every copy whether
 * the standby is consistent, so neither can fail over to a half-written copy.
 */
import { existsSync, rmSync } from 'node:fs';
import { BadInputError, BusyError, CancelledError, RefusedError } from '../../src/errors.ts';
import { identityOf, locateDrive, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { clone, sync, verify, verifyHeadline, recover, recordFailover, PairStore, effectiveStandbyState, type PairRecord, type CopyReport, type VerifyReport } from '../../src/sync/index.ts';
import type { Bay, BootSwitchSystem } from '../../src/bootswitch/index.ts';
import type { DaemonConfig } from './config.ts';
import type { EventBus } from './events.ts';
import type { HealthMonitor } from './health.ts';
import { summary, type JobContext, type JobRecord, type JobRunner } from './jobs.ts';
import type { Metrics } from './metrics.ts';
import type { SimRig } from './sim-rig.ts';
import type { Logger } from 'pino';
import { readJsonChecked, readJsonTwoCopies, writeJsonDurably, writeJsonTwoCopies } from '../../src/durable-file.ts';
import { join } from 'node:path';

export const other = (b: Bay): Bay => (b === 'A' ? 'B' : 'A');

export type StandbyStateView = 'consistent' | 'syncing' | 'inconsistent';

/** Where each bay's drive is and how to open it: the rig's business. */
export interface DriveBays {
  /** Path of the drive in the bay, or null when the bay is empty. */
  path(bay: Bay): string | null;
  openDevice?: (loc: DriveLocation, options: OpenDriveOptions) => Promise<BlockDevice>;
}

export interface SyncOptions {
  partitions?: number[];
  mode?: 'compare' | 'manifest';
  forceGeneration?: boolean;
  /** Run in a sync window (host shut down, both drives on the controller); default from config sync.window. */
  window?: boolean;
}

/** How long a drive may take to appear on its bridge after the relays connect and power it. */
const DRIVE_APPEAR_MS = 30_000;

interface DaemonStateFile {
  sequence: number;
  /** Failovers of the state machine already recorded as role swaps in the pair state. */
  failoversRecorded: number;
}

export class Appliance {
  #keys = new Map<string, string>();
  #hostPowered = false;
  #lastHeartbeat: { at: string; bay: Bay | null; source: string } | null = null;
  #daemonState: DaemonStateFile;
  readonly #daemonStateFile: string;
  readonly startedAt = Date.now();

  constructor(
    readonly config: DaemonConfig,
    readonly stateDir: string,
    readonly bus: EventBus,
    readonly metrics: Metrics,
    readonly jobs: JobRunner,
    readonly bs: BootSwitchSystem,
    readonly bays: DriveBays,
    readonly health: HealthMonitor,
    readonly log: Logger,
    readonly rig: SimRig | null,
  ) {
    this.#daemonStateFile = join(stateDir, 'daemon.json');
    this.#daemonState = readJsonTwoCopies<DaemonStateFile>(this.#daemonStateFile).value ?? { sequence: 0, failoversRecorded: bs.failover.state.failovers };
  }

  // ---- drives and roles ----

  /** The identity key of the drive in a bay (the pair state's name for it). */
  keyOf(bay: Bay): string | null {
    const path = this.bays.path(bay);
    if (!path || !existsSync(path)) return null;
    let key = this.#keys.get(path);
    if (!key) {
      key = identityOf(locateDrive(path)).key;
      this.#keys.set(path, key);
    }
    return key;
  }

  pair(store = new PairStore(this.stateDir)): PairRecord | undefined {
    for (const bay of ['A', 'B'] as const) {
      const key = this.keyOf(bay);
      const p = key ? store.pairOf(key) : undefined;
      if (p) return p;
    }
    return undefined;
  }

  /** Active and standby bays: from the pair state when paired, else from the relays. */
  roles(store = new PairStore(this.stateDir)): { active: Bay; standby: Bay; pair: PairRecord | undefined; store: PairStore } {
    const pair = this.pair(store);
    let active: Bay = this.bs.failover.state.active;
    if (pair) {
      if (this.keyOf('A') === pair.activeKey) active = 'A';
      else if (this.keyOf('B') === pair.activeKey) active = 'B';
      else if (this.keyOf('A') === pair.standbyKey) active = 'B';
      else if (this.keyOf('B') === pair.standbyKey) active = 'A';
    }
    return { active, standby: other(active), pair, store };
  }

  standbyState(): StandbyStateView {
    const { standby, pair, store } = this.roles();
    if (!pair || this.keyOf(standby) !== pair.standbyKey) return 'inconsistent';
    return effectiveStandbyState(store, pair);
  }

  #require(bay: Bay, role: string): string {
    const p = this.bays.path(bay);
    if (!p) throw new RefusedError(`bay ${bay} (the ${role}) holds no drive`, { hint: 'insert the drive first' });
    return p;
  }

  // ---- jobs ----

  #common(ctx: JobContext) {
    const s = this.config.sync;
    return {
      stateDir: this.stateDir,
      signal: ctx.signal,
      onProgress: ctx.progress,
      onNote: ctx.note,
      openDevice: this.bays.openDevice,
      chunkSize: s.chunkKiB * 1024,
      direct: s.direct,
      retries: s.retries,
    };
  }

  /** The failover machine must never see a standby as consistent while a copy writes it. */
  async #consistency(bay: Bay, consistent: boolean): Promise<void> {
    if (this.bs.failover.state.consistent[bay] !== consistent) await this.bs.failover.dispatch({ type: 'consistency', bay, consistent });
  }

  async #afterCopy(ctx: JobContext, target: Bay, report: CopyReport): Promise<CopyReport> {
    await this.#consistency(target, true);
    this.rig?.markBootable(target);
    ctx.log('info', `standby bay ${target} now holds generation ${report.generation}`);
    return report;
  }

  async #onCopyError(ctx: JobContext, target: Bay, targetPath: string, e: unknown): Promise<never> {
    if (e instanceof CancelledError && ctx.job.cancel?.rollback && ctx.job.kind !== 'clone') {
      try {
        const r = await recover({ ...this.#common({ ...ctx, signal: new AbortController().signal }), target: targetPath });
        ctx.log('warn', `cancelled: ${r.message}`);
        await this.#consistency(target, true);
        ctx.job.result = { rolledBack: true, recover: r };
      } catch (re) {
        ctx.log('error', `cancelled, and the rollback failed: ${(re as Error).message}; POST /api/recover to try again`);
      }
    }
    throw e;
  }

  // ---- sync windows (switched mode) ----

  #windowWanted(requested: boolean | undefined): boolean {
    if (requested !== undefined) return requested;
    const w = this.config.sync.window;
    return w === 'always' || (w === 'auto' && this.config.rig === 'hardware');
  }

  get #windowFile(): string {
    return join(this.stateDir, 'sync-window.json');
  }

  /**
   * Runs `fn` with both drives on the controller: the host is shut down (a
   * refusal leaves everything as it was), the relays take the active drive
   * off the host, and afterwards the active bay goes back to the host, which
   * is powered on again if it was running. Whether it was is persisted, so a
   * daemon restarted inside the window still knows.
   */
  async #inWindow<T>(ctx: JobContext, use: boolean, fn: () => Promise<T>): Promise<T> {
    if (!use) return fn();
    const bsw = this.bs.bootSwitch;
    let hostWasOn: boolean;
    const saved = bsw.isolated ? readJsonChecked<{ hostWasOn: boolean }>(this.#windowFile) : undefined;
    if (saved) hostWasOn = saved.hostWasOn;
    else {
      hostWasOn = await bsw.hostPowered();
      writeJsonDurably(this.#windowFile, { hostWasOn, openedAt: new Date().toISOString() });
    }
    ctx.log('info', `sync window: ${hostWasOn ? 'shutting the host down and ' : ''}taking both drives onto the controller`);
    try {
      const r = await bsw.isolate({ signal: ctx.signal });
      if (r.changed) ctx.log('info', `both drives on the controller after ${r.totalMs} ms (host: ${r.host})`);
    } catch (e) {
      rmSync(this.#windowFile, { force: true });
      throw e;
    }
    try {
      return await fn();
    } finally {
      await this.#closeWindow(hostWasOn, (m) => ctx.log('info', m));
    }
  }

  async #closeWindow(hostWasOn: boolean, note: (m: string) => void): Promise<void> {
    const { active } = this.roles();
    try {
      await this.bs.bootSwitch.moveTo(active, { powerOn: hostWasOn });
      rmSync(this.#windowFile, { force: true });
      note(`sync window closed: bay ${active} back on the host${hostWasOn ? ', host powered on' : ''}`);
    } catch (e) {
      this.bus.publish('alert', { level: 'critical', code: 'window-not-closed', message: `after the copy the relays could not give bay ${active} back to the host: ${(e as Error).message}`, });
      throw e;
    }
  }

  /** A drive's path once it has appeared on its bridge (after a window connects it). */
  async #drivePath(bay: Bay, role: string, signal: AbortSignal): Promise<string> {
    const deadline = Date.now() + DRIVE_APPEAR_MS;
    for (;;) {
      const p = this.bays.path(bay);
      if (p) return p;
      if (Date.now() > deadline || signal.aborted) return this.#require(bay, role);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  startSync(opts: SyncOptions, trigger = 'api'): JobRecord {
    this.jobs.checkIdle();
    const { active, standby } = this.roles();
    const window = this.#windowWanted(opts.window);
    // In a window the active drive reaches the controller only once the host is off.
    if (!window) this.#require(active, 'active drive');
    const target = this.#require(standby, 'standby');
    const mode = opts.mode ?? this.config.sync.mode;
    return this.#run('sync', { ...opts, mode, window, source: active, target: standby }, trigger, (ctx) => this.#inWindow(ctx, window, async () => {
      const source = await this.#drivePath(active, 'active drive', ctx.signal);
      await this.#consistency(standby, false);
      try {
        const report = await sync({
          ...this.#common(ctx),
          source,
          target,
          partitions: opts.partitions,
          mode,
          forceGeneration: opts.forceGeneration,
          journalBudget: this.config.sync.journalBudgetMiB ? this.config.sync.journalBudgetMiB * 1024 * 1024 : undefined,
        });
        return await this.#afterCopy(ctx, standby, report);
      } catch (e) {
        return this.#onCopyError(ctx, standby, target, e);
      }
    }));
  }

  startClone(opts: { force?: boolean; window?: boolean }, trigger = 'api'): JobRecord {
    this.jobs.checkIdle();
    const { active, standby } = this.roles();
    const window = this.#windowWanted(opts.window);
    if (!window) this.#require(active, 'active drive');
    const target = this.#require(standby, 'standby');
    return this.#run('clone', { ...opts, window, source: active, target: standby }, trigger, (ctx) => this.#inWindow(ctx, window, async () => {
      const source = await this.#drivePath(active, 'active drive', ctx.signal);
      await this.#consistency(standby, false);
      const report = await clone({ ...this.#common(ctx), source, target, forceClone: opts.force });
      return this.#afterCopy(ctx, standby, report);
    }));
  }

  /**
   * Re-protect: after a failover or a drive replacement, make the drive in
   * the standby bay a backup of the active one again. A drive the pair does
   * not know (a replacement) is paired anew with a clone.
   */
  startReprotect(trigger = 'api', opts: { window?: boolean } = {}): JobRecord {
    this.jobs.checkIdle();
    const { active, standby, pair, store } = this.roles();
    const window = this.#windowWanted(opts.window);
    if (!window) this.#require(active, 'active drive');
    const target = this.#require(standby, 'standby');
    const activeKey = this.keyOf(active);
    if (pair && pair.activeKey !== activeKey) throw new RefusedError(`the drive in bay ${active} is not the active drive of pair ${pair.id}`, { hint: 'GET /api/status shows the roles' });
    const newDrive = !pair || pair.standbyKey !== this.keyOf(standby);
    return this.#run('reprotect', { source: active, target: standby, newDrive, window }, trigger, (ctx) => this.#inWindow(ctx, window, async () => {
      const source = await this.#drivePath(active, 'active drive', ctx.signal);
      await this.bs.failover.dispatch({ type: 'drive-replaced', bay: standby });
      if (newDrive) {
        if (pair) {
          ctx.log('info', `bay ${standby} holds a new drive: pair ${pair.id} with the old drive is forgotten and the new one cloned`);
          store.remove(pair.id);
          store.save();
        }
        const report = await clone({ ...this.#common(ctx), source, target });
        return this.#afterCopy(ctx, standby, report);
      }
      try {
        const report = await sync({ ...this.#common(ctx), source, target, mode: this.config.sync.mode });
        return await this.#afterCopy(ctx, standby, report);
      } catch (e) {
        return this.#onCopyError(ctx, standby, target, e);
      }
    }));
  }

  startVerify(opts: { partitions?: number[]; window?: boolean }, trigger = 'api'): JobRecord {
    this.jobs.checkIdle();
    const { active, standby } = this.roles();
    const window = this.#windowWanted(opts.window);
    if (!window) this.#require(active, 'active drive');
    const target = this.#require(standby, 'standby');
    return this.#run('verify', { ...opts, window, source: active, target: standby }, trigger, (ctx) => this.#inWindow(ctx, window, async () => {
      const source = await this.#drivePath(active, 'active drive', ctx.signal);
      const report: VerifyReport = await verify({ ...this.#common(ctx), source, target, partitions: opts.partitions });
      // A verify report can list many ranges; the job keeps the first ones.
      const kept = { ...report, differences: report.differences.slice(0, 100) };
      if (!report.identical) {
        this.bus.publish('alert', { level: 'warning', code: 'verify-differs', message: `verify of bay ${standby} against bay ${active}: ${verifyHeadline(report)}` });
      }
      return kept;
    }));
  }

  startRecover(trigger = 'api'): JobRecord {
    this.jobs.checkIdle();
    const { standby } = this.roles();
    const target = this.#require(standby, 'standby');
    return this.#run('recover', { target: standby }, trigger, async (ctx) => {
      const r = await recover({ ...this.#common(ctx), target });
      await this.#consistency(standby, true);
      ctx.log('info', r.message);
      return r;
    });
  }

  #run(kind: JobRecord['kind'], options: Record<string, unknown>, trigger: string, fn: (ctx: JobContext) => Promise<unknown>): JobRecord {
    const job = this.jobs.start(kind, options, trigger, fn);
    this.metrics.setJob(job);
    return job;
  }

  /** Called on every finished job: metrics, and a status event when roles or states moved. */
  jobFinished(job: JobRecord): void {
    this.metrics.jobFinished(job);
    this.publishStatusChange();
  }

  #lastStatusKey = '';
  publishStatusChange(): void {
    this.invalidate();
    const s = this.statusCore();
    const key = JSON.stringify([s.active, s.standby, s.standbyState, s.generations]);
    this.metrics.setStandbyState(s.paired ? s.standbyState : 'unpaired');
    for (const bay of ['A', 'B'] as const) {
      const g = s.generations[bay];
      if (g !== null) this.metrics.generation.set({ bay, role: bay === s.active ? 'active' : 'standby' }, g);
    }
    if (key !== this.#lastStatusKey) {
      this.#lastStatusKey = key;
      this.bus.publish('status.changed', { active: s.active, standby: s.standby, standbyState: s.standbyState, generations: s.generations });
    }
  }

  // ---- start-up ----

  /**
   * After a restart: record a failover the machine finished but the pair
   * state missed, tell the machine which bays hold consistent copies, and
   * resume or roll back a copy the previous process left half done.
   */
  async startup(): Promise<void> {
    this.#hostPowered = await this.bs.bootSwitch.hostPowered();
    this.metrics.hostPowered.set(this.#hostPowered ? 1 : 0);
    const fs = this.bs.failover.state;
    if (fs.failovers > this.#daemonState.failoversRecorded) {
      this.log.warn({ failovers: fs.failovers, recorded: this.#daemonState.failoversRecorded }, 'a failover finished while the daemon was down: recording the role swap');
      this.#recordRoles(fs.active, 'failover finished before the restart');
    }
    this.#saveDaemonState(fs.failovers);
    const { active, standby } = this.roles();
    if (fs.active !== active && !fs.switching) {
      this.bus.publish('alert', {
        level: 'warning',
        code: 'roles-differ',
        message: `the relays boot bay ${fs.active} but the pair state says bay ${active} is active (a maintenance boot selection?): failover and sync follow the pair state`,
      });
    }
    await this.#consistency(active, true);
    await this.#consistency(standby, this.standbyState() === 'consistent');

    const pair = this.pair();
    const interrupted = !!pair?.pendingCopy && effectiveStandbyState(new PairStore(this.stateDir), pair) === 'inconsistent';
    if (this.bs.bootSwitch.isolated && !interrupted) {
      // The daemon stopped inside a sync window with no copy left to finish: give the host its drive back.
      const saved = readJsonChecked<{ hostWasOn: boolean }>(this.#windowFile);
      this.bus.publish('alert', { level: 'warning', code: 'window-left-open', message: `both drives were on the controller at start-up: giving bay ${active} back to the host` });
      await this.#closeWindow(saved?.hostWasOn ?? false, (m) => this.log.info(m)).catch(() => {});
    }
    if (pair?.pendingCopy && interrupted) {
      const pending = pair.pendingCopy;
      const how = pending.kind === 'clone' ? 'resume' : this.config.recovery.interrupted;
      this.bus.publish('alert', {
        level: 'warning',
        code: 'interrupted-copy',
        message: `an interrupted ${pending.kind} onto bay ${standby} (started ${pending.startedAt}) was found: ${how === 'resume' ? 'resuming it' : 'rolling it back to the previous backup'}`,
      });
      try {
        if (pending.kind === 'clone') this.startClone({ force: true }, 'restart-resume');
        else if (pending.kind === 'restore') this.log.warn('an interrupted restore is pending: finish it with `dpsr restore` or roll back with `dpsr recover`');
        else if (how === 'rollback') this.startRecover('restart-rollback');
        else {
          // The copy's own recorded plan, never the options of another job: only the identical plan resumes it.
          const plan = pending.plan;
          if (!plan) throw new RefusedError('it was recorded without its plan, so it cannot be resumed; roll it back with `dpsr recover`');
          this.startSync({ partitions: [...plan.partitions], mode: plan.mode === 'manifest' ? 'manifest' : 'compare' }, 'restart-resume');
        }
      } catch (e) {
        this.bus.publish('alert', { level: 'critical', code: 'interrupted-copy', message: `could not ${how} the interrupted ${pending.kind}: ${(e as Error).message}` });
      }
    }
    this.publishStatusChange();
  }

  #saveDaemonState(failovers: number): void {
    this.#daemonState = { sequence: this.#daemonState.sequence + 1, failoversRecorded: failovers };
    writeJsonTwoCopies(this.#daemonStateFile, this.#daemonState);
  }

  /** The failover machine says `to` is active now: make the pair state agree (idempotent). */
  #recordRoles(to: Bay, why: string): number | null {
    const store = new PairStore(this.stateDir);
    const pair = this.pair(store);
    const key = this.keyOf(to);
    if (!pair || !key || pair.activeKey === key) return null;
    try {
      const r = recordFailover(this.stateDir, pair.id);
      this.log.info({ pair: pair.id, active: to, generation: r.generation, why }, 'roles swapped in the pair state');
      return r.generation;
    } catch (e) {
      this.bus.publish('alert', { level: 'critical', code: 'roles-not-recorded', message: `bay ${to} boots now but the pair state could not record it: ${(e as Error).message}` });
      return null;
    }
  }

  /** Wiring of the boot switch's events into ours. */
  attachBootSwitch(): void {
    const ev = this.bs.events;
    ev.on('relay', (r) => this.bus.publish('relay', r));
    ev.on('button', (b) => this.bus.publish('button', b));
    ev.on('switch-step', (s) => this.bus.publish('switch.step', s));
    ev.on('switched', (s) => {
      this.bus.publish('switched', s);
      this.#updateBootBay();
    });
    ev.on('state', (s) => this.bus.publish('failover.state', s));
    ev.on('boot', (b) => this.bus.publish('boot', b));
    ev.on('alert', (a) => this.bus.publish('alert', a));
    ev.on('host', ({ powered }) => {
      this.#hostPowered = powered;
      this.metrics.hostPowered.set(powered ? 1 : 0);
      this.bus.publish('host.power', { power: powered ? 'on' : 'off' });
    });
    ev.on('failover', (f) => {
      const generation = this.#recordRoles(f.to, f.reason);
      this.#saveDaemonState(this.bs.failover.state.failovers);
      this.metrics.failovers.inc();
      this.bus.publish('failover', { ...f, generation });
      this.publishStatusChange();
    });
    this.#updateBootBay();
  }

  #updateBootBay(): void {
    const bay = this.bs.bootSwitch.bay;
    for (const b of ['A', 'B'] as const) this.metrics.bootBay.set({ bay: b }, bay === b ? 1 : 0);
  }

  // ---- failover, boot selection, heartbeat ----

  /** Why no storage job may start now, or null. */
  blockedBy(): string | null {
    const s = this.bs.failover.state.switching;
    if (s) return `a failover from bay ${s.from} to bay ${s.to} is moving the drives`;
    if (this.bs.bootSwitch.moving) return 'the boot selection is being moved';
    return null;
  }

  async failover(opts: { hardOff?: boolean }): Promise<{ from: Bay; to: Bay; accepted: true }> {
    const job = this.jobs.current;
    if (job) throw new BusyError(`a ${job.kind} job (id ${job.id}) is running: failing over now would boot a half-written standby`, { hint: `wait for it, or cancel it: POST /api/jobs/${job.id}/cancel` });
    const fs = this.bs.failover.state;
    if (fs.switching) throw new BusyError(`a failover from bay ${fs.switching.from} to bay ${fs.switching.to} is already running`);
    if (this.bs.bootSwitch.moving) throw new BusyError('the boot selection is being moved');
    const { active, standby, pair } = this.roles();
    if (!pair) throw new RefusedError('the drives are not paired: there is no backup to fail over to', { hint: 'POST /api/clone first' });
    const state = this.standbyState();
    if (state !== 'consistent') {
      throw new RefusedError(`the standby in bay ${standby} is ${state}: failing over to it would boot a half-written copy`, {
        hint: state === 'syncing' ? 'wait for the sync to finish' : 'POST /api/recover to roll it back to the previous backup, or POST /api/sync to finish it',
      });
    }
    if (!this.bays.path(standby)) throw new RefusedError(`bay ${standby} holds no drive`);
    if (fs.active !== active) throw new RefusedError(`the failover state machine has bay ${fs.active} active but the pair state bay ${active}`, { hint: 'select the active bay again with POST /api/bootselect, then fail over' });
    if (fs.halted) throw new RefusedError(`automatic and manual failover are halted: ${fs.halted}`, { hint: 'POST /api/failover/reset after repairing, then try again' });
    if (fs.failed[standby]) throw new RefusedError(`bay ${standby} failed before and is marked failed`, { hint: 'POST /api/reprotect (after replacing or re-syncing the drive) or POST /api/failover/reset clears it' });
    await this.#consistency(standby, true);
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

  async bootselect(bay: Bay, opts: { force?: boolean; powerOn?: boolean }) {
    const job = this.jobs.current;
    if (job) throw new BusyError(`a ${job.kind} job (id ${job.id}) is running on the drives`, { hint: 'wait for it or cancel it' });
    if (this.bs.failover.state.switching) throw new BusyError('a failover is moving the drives');
    if (!opts.force && (await this.bs.bootSwitch.hostPowered())) {
      throw new RefusedError(`the host is powered: moving its boot drive would pull the disk from under a running system`, { hint: 'shut the host down first, or pass "force": true (the host may crash)' });
    }
    // The simulated board records a move under a powered host as a rule violation unless it was forced on purpose.
    if (opts.force && this.rig) this.rig.board.forced = true;
    try {
      return await this.bs.bootSwitch.moveTo(bay, { force: opts.force, powerOn: opts.powerOn });
    } finally {
      if (this.rig) this.rig.board.forced = false;
    }
  }

  /** Ask the host to shut down through the ATX power relay (ACPI), or force it off. */
  async shutdownHost(opts: { hardOff?: boolean }): Promise<{ how: 'was-off' | 'acpi' | 'hard-off' }> {
    if (this.bs.failover.state.switching) throw new BusyError('a failover is moving the drives: it shuts the host down itself');
    if (this.bs.bootSwitch.moving) throw new BusyError('the boot selection is being moved');
    return { how: await this.bs.bootSwitch.shutdownHost({ hardOff: opts.hardOff }) };
  }

  async heartbeat(source: string, bay: Bay | null = null): Promise<void> {
    this.#lastHeartbeat = { at: new Date().toISOString(), bay, source };
    this.bus.publish('host.heartbeat', { bay, source });
    await this.bs.failover.heartbeat();
  }

  // ---- status ----

  #core: { at: number; value: ReturnType<Appliance['computeCore']> } | null = null;

  /** Forget the cached status: something changed roles, drives or the pair state. */
  invalidate(): void {
    this.#core = null;
  }

  /**
   * The parts of the status that change with state, not with progress:
   * cached briefly, since reading the pair state is two checksummed files
   * and many clients poll.
   */
  statusCore(): ReturnType<Appliance['computeCore']> {
    const now = performance.now();
    if (!this.#core || now - this.#core.at > 1000) this.#core = { at: now, value: this.computeCore() };
    return this.#core.value;
  }

  computeCore() {
    const { active, standby, pair, store } = this.roles();
    const standbyState: StandbyStateView = !pair || this.keyOf(standby) !== pair.standbyKey ? 'inconsistent' : effectiveStandbyState(store, pair);
    const gen = (bay: Bay): number | null => {
      const k = this.keyOf(bay);
      return pair && k && pair.drives[k] ? pair.drives[k]!.generation : null;
    };
    return {
      active,
      standby,
      standbyState,
      paired: !!pair,
      pairId: pair?.id ?? null,
      generations: { A: gen('A'), B: gen('B') },
      pendingCopy: pair?.pendingCopy ?? null,
      lastSync: pair?.lastSync ?? null,
      lastSuccess: pair?.lastSuccess ?? null,
      problems: store.problems,
    };
  }

  status() {
    const core = this.statusCore();
    const fs = this.bs.failover.state;
    const rec = this.bs.bootSwitch.record;
    const job = this.jobs.current;
    const out = this.bs.board.outputs;
    const drive = (bay: Bay) => ({
      present: this.bays.path(bay) !== null,
      path: this.bays.path(bay),
      key: this.keyOf(bay),
      role: bay === core.active ? 'active' : 'standby',
      generation: core.generations[bay],
      health: this.health.drives[bay],
    });
    return {
      rig: this.config.rig,
      ...core,
      bootBay: rec.bay,
      job: job ? { id: job.id, kind: job.kind, state: job.state, trigger: job.trigger, startedAt: job.startedAt, progress: job.progress, options: job.options } : null,
      drives: { A: drive('A'), B: drive('B') },
      relays: {
        ...rec.relays,
        atxPower: out.atxPower?.commanded ?? false,
        atxReset: out.atxReset?.commanded ?? false,
        moving: this.bs.bootSwitch.moving,
        pending: rec.pending,
        fault: rec.fault,
      },
      leds: { status: out.ledStatus?.commanded ?? null, fault: out.ledFault?.commanded ?? null, bayA: out.ledBayA?.commanded ?? null, bayB: out.ledBayB?.commanded ?? null },
      host: {
        power: this.#hostPowered ? 'on' : 'off',
        lastHeartbeat: this.#lastHeartbeat,
        ...(this.rig ? (this.rig.host ? { simState: this.rig.host.state, bootedFrom: this.rig.host.bootedFrom } : { simState: 'external', bootedFrom: null }) : {}),
      },
      failover: { active: fs.active, standby: fs.standby, triesLeft: fs.triesLeft, failed: fs.failed, consistent: fs.consistent, pendingBoot: fs.pendingBoot, switching: fs.switching, halted: fs.halted, failovers: fs.failovers },
      health: { A: this.health.drives.A.status, B: this.health.drives.B.status },
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
    };
  }

  checkBay(v: string): Bay {
    if (v !== 'A' && v !== 'B') throw new BadInputError(`bay is ${JSON.stringify(v)}; allowed: "A", "B"`);
    return v;
  }
}

export { summary };
