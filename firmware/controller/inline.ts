/**
 * Inline mode (config `mode: inline`): the controller serves the active
 * drive to the host through qemu-storage-daemon (src/export) and tracks the
 * blocks the host writes (src/snapshot), so syncs run while the host runs and
 * a changed-block sync copies only what changed.
 *
 * One `InlinePair` (daemon + tracker) serves the drive the boot selection
 * names. A move of the boot selection (a failover, a maintenance boot)
 * re-points it: with the host off, the daemon is stopped and a new one is
 * built over the other drive with the same listen address and export name,
 * so the host boots the same address. Bitmaps and the tracker's state are
 * kept per drive (by identity), never per bay: a replaced drive starts
 * untracked.
 *
 * Every copy that changes a drive (clone, sync, re-protect; a restore would
 * write the active drive beside the export and is refused) runs in
 * an epoch (`around`): the live bitmap is frozen at its start and becomes
 * the baseline only when the copy completed whole from that start; a failed,
 * cancelled, resumed or partly unreadable copy merges it back, so the next
 * sync still sees those writes.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { BadInputError, BusyError, RefusedError } from '../../src/errors.ts';
import { readJsonChecked, writeJsonDurably } from '../../src/durable-file.ts';
import { StorageDaemon, SystemdDaemonProcess, unitQmpSocket, type HostDisk, type NbdListen } from '../../src/export/index.ts';
import { ChangedBlockTracker, cleanupLiveSync, liveSync, SnapshotBrokenError, type Epoch, type HookSpec, type LiveSyncOptions, type LiveSyncResult, type SnapshotCacheConfig } from '../../src/snapshot/index.ts';
import { LivePictures } from './live-picture.ts';
import { readFlaggedRanges, SnapshotDrive, STATE_DIRTY } from '../../src/sata-bridge/index.ts';
import type { ChangedBlocks, CopyReport, VerifyExclusion, VerifyReport } from '../../src/sync/index.ts';
import type { Bay, BootSwitch, BootSwitchEmitter } from '../../src/bootswitch/index.ts';
import type { BayName, PairConfig } from './pair-config.ts';
import type { DaemonConfig } from './config.ts';
import type { EventBus } from './events.ts';
import type { JobContext } from './jobs.ts';
import type { Metrics } from './metrics.ts';
import type { Roles } from './roles.ts';
import { HostLinkWatch } from './host-link.ts';

/** The per-pair inline object: the export of one drive and its changed-block tracker (part 2 adds snapshots on it). */
export interface InlinePair {
  /** The bay whose drive the host's export serves. */
  readonly bay: Bay;
  /** That drive's path and identity key. */
  readonly drive: string;
  readonly driveKey: string;
  readonly daemon: StorageDaemon;
  readonly tracker: ChangedBlockTracker;
}

/** What the controller's status and metrics show of inline mode. */
export interface InlineStatus {
  mode: 'inline';
  /** The pair this export serves. */
  pair: string;
  /** The URI the host boots from, or mounts the pair's data disk from (unchanged across a failover). */
  hostUri: string;
  /** The physical bay whose drive is exported, null while none is. */
  bay: BayName | null;
  running: boolean;
  /** qemu-storage-daemon starts since the controller started (a change: the export was restarted). */
  generation: number;
  /** Bytes the host wrote since the last sync started (the live dirty bitmap), null when unknown. */
  dirtyBytes: number | null;
  /** Changed-block syncs since the last verify that found the drives identical. */
  changedSyncsSinceVerify: number;
  /** Why no drive is served yet (the host still runs from its SATA port), or null. */
  waiting: string | null;
  /** What the host sees of the export (the board's USB disk, the simulated host's connection) as last checked, or null when the host reaches the export itself. */
  hostDisk: { kind: string; attached: boolean; connected: boolean; detail: string } | null;
}

interface VerifyFile {
  changedSyncsSinceVerify: number;
  lastChangedSyncAt: string | null;
}

/**
 * How dpsrd reaches the service manager that runs the export units (config
 * `inline.daemon: systemd`): by default `systemctl` and the unit's sockets
 * under /run; a manager in other namespaces (a container, the tests' systemd
 * sandbox) through a command prefix such as nsenter and its root as seen
 * from here (/proc/PID/root).
 */
export interface ServiceManager {
  systemctl?: readonly string[];
  /** Prefixed to the unit's socket path (/run/dpsr-export/<id>/qmp.sock). */
  root?: string;
  /** The journalctl command, or null for none. */
  journalctl?: readonly string[] | null;
}

/** Unix socket paths are limited to 107 bytes (sockaddr_un.sun_path). */
const SUN_PATH_MAX = 107;

const changedOf = (e: Epoch): ChangedBlocks => (e.trusted && e.ranges ? { ranges: e.ranges } : { untrusted: e.reason ?? 'the dirty bitmap is not trusted' });

/**
 * Whether a copy that returned may commit its changed-block epoch (the
 * frozen bitmap dropped, the live one the new baseline): only when the
 * standby now holds the whole drive as of the epoch's start. A partition
 * selection leaves the other partitions' writes uncopied; a resumed copy
 * kept chunks of an earlier instant; unreadable sectors were not copied.
 * Anything else merges the frozen bitmap back, so the next sync sees those
 * writes again (a superset is safe, a subset would lose writes).
 */
export function epochDecision(report: Pick<CopyReport, 'bytesResumed' | 'result'>, wholeDrive: boolean): { commit: true } | { commit: false; why: string } {
  if (!wholeDrive) return { commit: false, why: 'the copy covered chosen partitions only' };
  if (report.bytesResumed > 0) return { commit: false, why: 'the copy resumed an earlier one' };
  if (report.result !== 'done') return { commit: false, why: 'the copy left unreadable sectors' };
  return { commit: true };
}

/** The NBD listen address of config `inline.listen` (default: a unix socket in the state directory). */
export function inlineListen(config: DaemonConfig, stateDir: string): NbdListen {
  const l = config.inline.listen ?? join(stateDir, 'inline', 'nbd.sock');
  if (l.startsWith('/')) {
    if (Buffer.byteLength(l) > SUN_PATH_MAX) throw new BadInputError(`the NBD socket path ${l} is longer than ${SUN_PATH_MAX} bytes, the limit of a unix socket`, { hint: 'set inline.listen to a shorter absolute path, e.g. /run/dpsr/nbd.sock' });
    return { unix: l };
  }
  const m = /^(\[[0-9a-fA-F:]+\]|[^\s:]*):(\d{1,5})$/.exec(l)!;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new BadInputError(`inline.listen ${l}: the port must be 1–65535`, { hint: '10809 is NBD\'s own port' });
  return { tcp: { host: (m[1] || '0.0.0.0').replace(/^\[|\]$/g, ''), port, ...(config.inline.tlsPskDir ? { tlsPskDir: config.inline.tlsPskDir } : {}) } };
}

/**
 * A data pair's NBD listen address: `inline.dataPairs[].listen` for the
 * pair, else a unix socket `inline/pairs/<id>/nbd.sock` in the state
 * directory (network boot needs a TCP one configured per pair, since each
 * pair has its own daemon and so its own NBD server).
 */
export function dataPairListen(config: DaemonConfig, stateDir: string, pairId: string): NbdListen {
  const own = config.inline.dataPairs?.find((d) => d.pair === pairId);
  return inlineListen({ ...config, inline: { ...config.inline, listen: own?.listen ?? join(stateDir, 'inline', 'pairs', pairId, 'nbd.sock'), ...(own?.listen && !own.listen.startsWith('/') ? {} : { tlsPskDir: undefined }) } }, stateDir);
}

/**
 * Switched mode writes the active drive behind qemu-storage-daemon's back:
 * a bitmap kept from an earlier inline run no longer describes what changed.
 * Called at start in switched mode; the next inline sync is a full one.
 */
export function forgetTracking(stateDir: string, log: Logger): void {
  const pairs = join(stateDir, 'inline', 'pairs');
  const dirs = [join(stateDir, 'inline', 'drives'), ...(existsSync(pairs) ? readdirSync(pairs).map((id) => join(pairs, id, 'drives')) : [])].filter((d) => existsSync(d) && readdirSync(d).length > 0);
  if (!dirs.length) return;
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  log.info('switched mode: the changed-block tracking of an earlier inline run was dropped (the host writes the drive directly now)');
}

export class InlineMode {
  readonly dir: string;
  readonly listen: NbdListen;
  readonly exportName: string;
  /** The URI the host boots from (or mounts its data disk from); the same whichever drive is served. */
  readonly hostUri: string;
  /** The active drive's files for the explorer, read from a shared live snapshot. */
  readonly pictures: LivePictures;
  #pair: InlinePair | null = null;
  #dirty: number | null = null;
  #timer: NodeJS.Timeout | null = null;
  #verifyFile: string;
  #verify: VerifyFile;
  /** Serializes re-pointing: a move and a stop never race. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Starts of daemons before the current one, so `generation` counts across re-pointing. */
  #generations = 0;
  readonly #link: HostLinkWatch;
  #disk: InlineStatus['hostDisk'] = null;

  /**
   * The inline object of one pair: `sw` is the switch whose moves re-point
   * its export (the boot switch for the boot pair, the data port's for a
   * data pair); `hostEvents` carries the host's power. The boot pair keeps
   * its state in `inline/` and listens where `inline.listen` says; a data
   * pair in `inline/pairs/<id>/` at `dataPairListen`, export name its id
   * unless `inline.dataPairs` names one.
   */
  constructor(
    private readonly config: DaemonConfig,
    stateDir: string,
    readonly pairConfig: PairConfig,
    private readonly roles: Roles,
    private readonly sw: BootSwitch,
    hostEvents: BootSwitchEmitter,
    private readonly bus: EventBus,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly manager: ServiceManager = {},
    /** What makes the host see the export as its disk (Rig.hostDisk), or null (network boot). */
    private readonly hostDisk: HostDisk | null = null,
  ) {
    const boot = pairConfig.role === 'boot';
    this.dir = boot ? join(stateDir, 'inline') : join(stateDir, 'inline', 'pairs', pairConfig.id);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.listen = boot ? inlineListen(config, stateDir) : dataPairListen(config, stateDir, pairConfig.id);
    this.exportName = boot ? config.inline.exportName : (config.inline.dataPairs?.find((d) => d.pair === pairConfig.id)?.exportName ?? pairConfig.id);
    this.#link = new HostLinkWatch(sw, hostEvents, bus, log, async (how) => {
      if (how === 'ready' && !this.#pair) await this.serve(this.sw.bay ?? this.roles.current().active);
    });
    // Built once for its checks (port, keys.psk) and its address: nothing starts until serve().
    this.hostUri = new StorageDaemon({ drive: '', runDir: join(this.dir, 'run'), listen: this.listen, exportName: this.exportName }).hostUri;
    this.#verifyFile = join(this.dir, 'verify.json');
    this.pictures = new LivePictures({ source: () => (this.#pair ? { daemon: this.#pair.daemon, drive: this.#pair.drive } : null), dir: this.dir, cache: () => this.#cacheConfig(), log });
    this.#verify = readJsonChecked<VerifyFile>(this.#verifyFile) ?? { changedSyncsSinceVerify: 0, lastChangedSyncAt: null };
    if (hostDisk) this.#disk = { kind: hostDisk.kind, attached: false, connected: false, detail: 'not attached yet' };
  }

  /**
   * Attaches the host's disk to the export `daemon` serves (after it started,
   * or restarted after a crash). A failure does not stop the export (syncs go
   * on) but the host has no disk: a critical alert naming what to do.
   */
  async #attachHost(daemon: StorageDaemon, why: string): Promise<void> {
    const d = this.hostDisk;
    if (!d) return;
    try {
      await d.attach({ listen: this.listen, name: this.exportName, uri: daemon.hostUri });
      const st = await d.status();
      this.#disk = { kind: d.kind, attached: st.attached, connected: st.connected, detail: st.detail };
      this.log.info({ hostDisk: st.detail }, `the host's disk is attached to the export (${why})`);
    } catch (e) {
      const err = e as Error & { hint?: string };
      this.#disk = { kind: d.kind, attached: false, connected: false, detail: err.message };
      this.log.error({ err }, `the host's disk could not be attached to the export (${why})`);
      this.bus.publish('alert', { level: 'critical', code: 'host-disk', message: `${err.message}${err.hint ? `: ${err.hint}` : ''}. The host has no disk until this is fixed (${why})` });
    }
  }

  /** The host's disk lets go of the export before the export stops (a failover re-points it, dpsrd stops). */
  async #detachHost(): Promise<void> {
    const d = this.hostDisk;
    if (!d) return;
    try {
      await d.detach();
      this.#disk = { kind: d.kind, attached: false, connected: false, detail: 'detached' };
    } catch (e) {
      this.log.error({ err: e }, "the host's disk could not be detached from the export");
      this.bus.publish('alert', { level: 'warning', code: 'host-disk', message: `the host's disk could not be detached from the export: ${(e as Error).message}` });
    }
  }

  #gauge(which: 'up' | 'dirty', v: number): void {
    (which === 'up' ? this.metrics.inlineExportUp : this.metrics.inlineDirtyBytes).set({ pair: this.pairConfig.id }, v);
  }

  /** The export and tracker now serving the host, or null while none is (stopped, or between two drives). */
  get pair(): InlinePair | null {
    return this.#pair;
  }

  /**
   * Serves the selected bay once both drives are on the controller (see
   * HostLinkWatch: relays a switched start or a power loss left are moved
   * with the host off; under a powered host the export starts when it is off).
   */
  async start(): Promise<void> {
    // Moves of the boot selection (failover, maintenance) re-point the export while the host is off.
    this.sw.setConnectHook(async (to) => {
      await this.serve(to);
    });
    // 'moved' served the bay through the connect hook; 'host-on' serves it once the host is off.
    if ((await this.#link.start()) === 'ready') await this.serve(this.sw.bay ?? this.roles.current().active);
    this.#timer = setInterval(() => void this.refreshDirty(), 2000);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#link.stop();
    this.sw.setConnectHook(null);
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#serial(() => this.#close());
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Serves the drive in `bay` to the host (idempotent): the running daemon
   * is stopped cleanly (its bitmap saved), a new one built over that drive
   * with the same listen address and export name. When the new one cannot
   * start, the previous drive is served again and the error thrown.
   */
  serve(bay: Bay): Promise<InlinePair> {
    return this.#serial(async () => {
      const cur = this.#pair;
      const path = this.roles.bays.path(bay);
      const key = this.roles.keyOf(bay);
      if (cur && cur.bay === bay && cur.drive === path && cur.daemon.running) return cur;
      if (!path || !key) throw new RefusedError(`bay ${bay} holds no drive: the host's export cannot serve it`, { hint: 'insert the drive, then select the bay again' });
      const previous = cur?.bay;
      await this.#close();
      try {
        return await this.#open(bay, path, key);
      } catch (e) {
        if (previous !== undefined && previous !== bay) {
          const p = this.roles.bays.path(previous);
          const k = this.roles.keyOf(previous);
          if (p && k) await this.#open(previous, p, k).catch((re: Error) => this.log.error({ err: re }, `the export of bay ${previous} could not be restored either`));
        }
        throw e;
      }
    });
  }

  async #open(bay: Bay, drive: string, driveKey: string): Promise<InlinePair> {
    // Bitmaps and trust belong to one drive: keyed by its identity, never by the bay it sits in.
    const driveDir = join(this.dir, 'drives', createHash('sha256').update(driveKey).digest('hex').slice(0, 16));
    mkdirSync(driveDir, { recursive: true, mode: 0o700 });
    const persistent = this.config.inline.persistentBitmaps;
    const pairId = this.pairConfig.id;
    const unit = (this.config.inline.daemon ?? (this.config.rig === 'sim' ? 'child' : 'systemd')) === 'systemd';
    const daemon = new StorageDaemon({
      drive,
      runDir: join(this.dir, 'run'),
      // On the board: the pair's instance of deploy/dpsr-export@.service, restarted by systemd after a crash.
      ...(unit ? { process: new SystemdDaemonProcess({ unit: `dpsr-export@${pairId}.service`, qmpSocket: `${this.manager.root ?? ''}${unitQmpSocket(pairId)}`, systemctl: this.manager.systemctl, journalctl: this.manager.journalctl }) } : {}),
      listen: this.listen,
      exportName: this.exportName,
      directIo: this.config.inline.directIo,
      ...(persistent ? { metadata: join(driveDir, 'bitmaps.qcow2') } : {}),
    });
    const tracker = new ChangedBlockTracker({ daemon, stateFile: join(driveDir, 'cbt.json'), readRanges: (uri, ctx) => readFlaggedRanges(uri, ctx, STATE_DIRTY), persistent });
    daemon.on('crashed', (info) => {
      this.#gauge('up', 0);
      if (this.#disk) this.#disk = { ...this.#disk, connected: false, detail: 'the export died: the host\'s disk reconnects once it is restarted' };
      this.log.error({ code: info.code, signal: info.signal, stderr: info.stderr }, 'qemu-storage-daemon crashed: restarting the host export');
      this.bus.publish('alert', { level: 'warning', code: 'export-crashed', bay: this.roles.name(bay), message: `qemu-storage-daemon serving bay ${this.roles.name(bay)} to the host died (${info.signal ?? (info.code === null ? 'how is unknown' : `exit ${info.code}`)}): the export is being restarted at ${daemon.hostUri}; the next sync copies the whole drive` });
    });
    daemon.on('restart-failed', (e) => this.log.error({ err: e }, 'qemu-storage-daemon could not be restarted: trying again'));
    daemon.on('ready', (generation) => {
      this.#gauge('up', 1);
      this.log.info({ bay: this.roles.name(bay), drive, uri: daemon.hostUri, generation: this.#generations + generation }, 'host export ready');
    });
    await daemon.start();
    // What a live sync interrupted by a crash of dpsrd left (a daemon restart leaves only the snapshot's cache file).
    await cleanupLiveSync(daemon, this.dir);
    daemon.on('ready', () => void cleanupLiveSync(daemon, this.dir).catch((e: Error) => this.log.warn({ err: e }, 'the snapshot left by the crashed export could not be cleaned up')));
    const pair: InlinePair = { bay, drive, driveKey, daemon, tracker };
    this.#pair = pair;
    // Drops what a crash left and makes sure a bitmap records from now on.
    await tracker.reconcile();
    // The host's disk last, on the ready export (a failover: host off, detach, re-point, attach, host on).
    await this.#attachHost(daemon, `bay ${bay} served`);
    // A restart after a crash: the disk's dead connection is made again on the same address.
    daemon.on('ready', () => {
      if (this.#pair?.daemon === daemon) void this.#serial(() => this.#attachHost(daemon, 'the export restarted after a crash'));
    });
    void this.refreshDirty();
    return pair;
  }

  async #close(): Promise<void> {
    const cur = this.#pair;
    if (!cur) return;
    await this.pictures.revoke('the export stops');
    await this.#detachHost();
    this.#pair = null;
    this.#generations += cur.daemon.generation;
    this.#gauge('up', 0);
    await cur.daemon.stop();
    cur.daemon.removeAllListeners();
    this.log.info({ bay: this.roles.name(cur.bay), drive: cur.drive }, 'host export stopped');
  }

  /** The pair serving `active`, or a RefusedError naming why a copy cannot run in inline mode now. */
  #pairFor(active: Bay): InlinePair {
    const p = this.#pair;
    if (!p) throw new RefusedError('inline mode: the host export is not running, so changed blocks cannot be tracked', { hint: 'see the daemon log; restart dpsrd' });
    if (p.bay !== active) {
      throw new RefusedError(`inline mode: the host export serves bay ${p.bay}, not the active drive in bay ${active}`, { hint: `select bay ${active} again (POST /api/bootselect) before syncing` });
    }
    return p;
  }

  /**
   * Runs a copy that changes a drive in one changed-block epoch: the live
   * bitmap is frozen first; `copy` gets its changed blocks (for a
   * changed-mode sync). The frozen bitmap is dropped (the new one is the
   * baseline) only when `epochDecision` says so: the copy covered the whole
   * drive (`wholeDrive`: no partition selection) and ran whole from this
   * start without unreadable sectors; otherwise it is merged back. A lost
   * bitmap (the daemon restarted under the copy) fails nothing: the next
   * sync is a full one.
   *
   * `live` (clone, sync, re-protect), with `inline.snapshot.live`: the copy
   * reads a live snapshot started with the epoch (`#live`).
   */
  async around(ctx: JobContext, active: Bay, copy: (changed: ChangedBlocks, picture?: string) => Promise<CopyReport>, live = false, wholeDrive = true): Promise<CopyReport> {
    const pair = this.#pairFor(active);
    if (live && this.config.inline.snapshot.live) return this.#live(ctx, pair, copy, wholeDrive);
    const { tracker } = pair;
    const epoch = await tracker.beginEpoch();
    ctx.log('info', epoch.trusted ? `changed-block epoch: ${epoch.dirtyBytes} bytes written by the host since the last sync` : `changed-block tracking not trusted (${epoch.reason}): it starts a new baseline now`);
    let report: CopyReport;
    try {
      report = await copy(changedOf(epoch));
    } catch (e) {
      await tracker.abort(epoch).catch((ae: Error) => ctx.log('warn', `the dirty bitmap could not be merged back (${ae.message}): the next sync copies the whole drive`));
      throw e;
    }
    const decision = epochDecision(report, wholeDrive);
    try {
      if (decision.commit) await tracker.commit(epoch);
      else {
        await tracker.abort(epoch);
        ctx.log('info', `${decision.why}: the dirty bitmap keeps its writes for the next sync`);
      }
    } catch (e) {
      ctx.log('warn', `changed-block tracking lost its bitmap during the copy (${(e as Error).message}): the next sync copies the whole drive`);
    }
    this.#recordCopy(report, decision.commit);
    void this.refreshDirty();
    return report;
  }

  /** The snapshot cache's budget and timeout (config inline.snapshot). */
  #cacheConfig(): SnapshotCacheConfig {
    const s = this.config.inline.snapshot;
    return { budgetBytes: s.cacheBudgetMiB ? s.cacheBudgetMiB * 1024 * 1024 : undefined, budgetFraction: s.cacheBudgetPercent / 100, cbwTimeoutS: s.cbwTimeoutSeconds };
  }

  /** The settings every live snapshot of a job shares: quiescence, cache, hooks (config sync.quiescence and inline.snapshot). */
  #snapshotSettings(ctx: JobContext) {
    const q = this.config.sync.quiescence;
    const s = this.config.inline.snapshot;
    const hook = (h: typeof s.preHook): HookSpec | undefined => (h ? (h.command ? { command: h.command, timeoutMs: h.timeoutSeconds * 1000 } : { url: h.url!, timeoutMs: h.timeoutSeconds * 1000 }) : undefined);
    return {
      cacheDir: this.dir,
      cache: this.#cacheConfig(),
      quiescence: { quietMs: q.quietSeconds * 1000, maxWaitMs: q.maxWaitSeconds * 1000, fallback: q.fallback },
      hooks: { pre: hook(s.preHook), post: hook(s.postHook) },
      probe: SnapshotDrive.probe,
      signal: ctx.signal,
      onNote: (n: string) => ctx.log('info', n),
    };
  }

  /** liveSync, with the alert for a broken snapshot and a BusyError for a run skipped on a busy drive. */
  async #runLive<R>(ctx: JobContext, { daemon, tracker }: InlinePair, o: Pick<LiveSyncOptions<R>, 'copy' | 'complete'>): Promise<Extract<LiveSyncResult<R>, { outcome: 'done' }>> {
    let result: LiveSyncResult<R>;
    try {
      // The explorer's picture gives way: the daemon holds one snapshot at a time.
      result = await this.pictures.forJob(ctx.job.kind, () => liveSync<R>({ daemon, tracker, ...this.#snapshotSettings(ctx), ...o }));
    } catch (e) {
      if (e instanceof SnapshotBrokenError) this.bus.publish('alert', { level: 'warning', code: 'snapshot-broken', message: `live ${ctx.job.kind}: ${e.message}` });
      throw e;
    }
    if (result.outcome === 'skipped') throw new BusyError(result.reason, { hint: `the next ${ctx.job.kind} tries again; sync.quiescence.fallback "crash-consistent" reads a busy drive anyway` });
    return result;
  }

  /**
   * A live copy (src/snapshot's liveSync): quiescence, the pre-snapshot hook,
   * a copy-before-write snapshot started with the epoch, the post-snapshot
   * hook, then `copy` reads the frozen picture (`picture`: its NBD URI)
   * while the host writes on; teardown in every path. A whole-drive copy
   * (any mode, a clone too) commits the epoch, so the changed set restarts
   * at the picture's instant. A broken snapshot raises the alert
   * `snapshot-broken`; a run skipped for a busy drive is a BusyError. The
   * caller rolls the standby back after any failure.
   */
  async #live(ctx: JobContext, pair: InlinePair, copy: (changed: ChangedBlocks, picture?: string) => Promise<CopyReport>, wholeDrive: boolean): Promise<CopyReport> {
    const result = await this.#runLive<CopyReport>(ctx, pair, {
      copy: (picture, epoch) => copy(changedOf(epoch), picture),
      complete: (r) => {
        const d = epochDecision(r, wholeDrive);
        if (!d.commit) ctx.log('info', `${d.why}: the dirty bitmap keeps its writes for the next sync`);
        return d.commit;
      },
    });
    ctx.log('info', `live ${ctx.job.kind} from a ${result.consistency} snapshot; ${(result.cacheBytes / 2 ** 20).toFixed(1)} MiB of old blocks went through the snapshot's cache`);
    this.#recordCopy(result.report, epochDecision(result.report, wholeDrive).commit);
    void this.refreshDirty();
    return result.report;
  }

  /**
   * A verify in inline mode: the standby (the picture of the last sync's
   * instant) is compared with a live snapshot of the active drive, so host
   * writes during the verify are not differences. The snapshot starts with
   * an epoch whose frozen bitmap holds every write since the last sync's
   * instant: those ranges are left out of the comparison (`exclude`: the
   * next sync copies them), so a difference found lies where the tracker
   * says nothing changed. The epoch is always merged back (nothing was
   * copied). With `inline.snapshot.live` false the live drive is read as it
   * is (the operator's choice), with no exclusion.
   *
   * `run` gets the picture's NBD URI (undefined: read the drive) and the
   * exclusion (undefined: the tracker cannot say what changed).
   */
  async verify<R extends VerifyReport>(ctx: JobContext, active: Bay, run: (picture: string | undefined, exclude: VerifyExclusion | undefined) => Promise<R>): Promise<{ report: R; judged: boolean; why?: string }> {
    const pair = this.#pairFor(active);
    if (!this.config.inline.snapshot.live) {
      ctx.log('warn', 'inline.snapshot.live is off: the verify reads the active drive while the host may write it, so host writes show as differences');
      return { report: await run(undefined, undefined), judged: false, why: 'inline.snapshot.live is off: the verify read the live drive' };
    }
    let epoch: Epoch | null = null;
    const result = await this.#runLive<R>(ctx, pair, {
      copy: (picture, e) => {
        epoch = e;
        const exclude = e.trusted && e.ranges ? { ranges: e.ranges, why: 'written by the host since the last sync (the next sync copies them)' } : undefined;
        if (!exclude) ctx.log('info', `changed-block tracking cannot say what the host wrote since the last sync (${e.reason}): differences may be host writes`);
        return run(picture, exclude);
      },
      // Nothing was copied: the frozen bitmap goes back into the live one.
      complete: () => false,
    });
    ctx.log('info', `verify from a ${result.consistency} snapshot of the active drive`);
    const e = epoch as Epoch | null;
    return e?.trusted ? { report: result.report, judged: true } : { report: result.report, judged: false, why: e?.reason ?? 'no changed-block epoch' };
  }

  /**
   * After a copy: a changed-block sync is counted until the next verify; a
   * whole-drive copy that committed its epoch (compare, manifest, clone)
   * read every block from one instant, which repairs whatever an earlier
   * changed-block sync missed, so the count starts again.
   */
  #recordCopy(report: CopyReport, committed: boolean): void {
    if (report.mode === 'changed') this.#recordChangedSync();
    else if (committed && this.#verify.changedSyncsSinceVerify > 0) {
      this.#verify = { changedSyncsSinceVerify: 0, lastChangedSyncAt: this.#verify.lastChangedSyncAt };
      writeJsonDurably(this.#verifyFile, this.#verify);
    }
  }

  #recordChangedSync(): void {
    this.#verify = { changedSyncsSinceVerify: this.#verify.changedSyncsSinceVerify + 1, lastChangedSyncAt: new Date().toISOString() };
    writeJsonDurably(this.#verifyFile, this.#verify);
  }

  /**
   * A verify finished. Identical drives clear the count of changed-block
   * syncs; a difference after one means the tracker missed writes (trackers
   * can fail silently): a critical alert, and the next sync copies the whole drive.
   */
  async afterVerify(report: VerifyReport, standby: Bay, judged = true): Promise<void> {
    const n = this.#verify.changedSyncsSinceVerify;
    // Not judged: the differences may be host writes the tracker cannot account for (its bitmap was lost); the next sync is a full one anyway.
    if (!judged && !report.identical) return;
    if (!report.identical && n > 0) {
      this.bus.publish('alert', {
        level: 'critical',
        code: 'changed-blocks-missed',
        bay: standby,
        message: `a verify found ${report.differingBytes} differing bytes on the standby in bay ${standby} after ${n} changed-block sync${n === 1 ? '' : 's'} (the last at ${this.#verify.lastChangedSyncAt}): the changed-block tracker missed writes. The tracking is reset; run a sync (it copies the whole drive in manifest mode)`,
      });
      await this.#distrust();
    }
    if (report.identical || n > 0) {
      this.#verify = { changedSyncsSinceVerify: 0, lastChangedSyncAt: this.#verify.lastChangedSyncAt };
      writeJsonDurably(this.#verifyFile, this.#verify);
    }
  }

  /** Forgets the baseline of the drive served now: the next sync is a full one, and says why. */
  async #distrust(): Promise<void> {
    this.#pair?.tracker.forget('a verify found a difference after a changed-block sync: the tracker missed writes');
  }

  async refreshDirty(): Promise<number | null> {
    const p = this.#pair;
    try {
      this.#dirty = p?.daemon.running ? await p.tracker.dirtyBytes() : null;
    } catch {
      this.#dirty = null;
    }
    if (this.#dirty !== null) this.#gauge('dirty', this.#dirty);
    return this.#dirty;
  }

  status(): InlineStatus {
    const p = this.#pair;
    return {
      mode: 'inline',
      hostUri: this.hostUri,
      pair: this.pairConfig.id,
      bay: p ? this.roles.name(p.bay) : null,
      running: p?.daemon.running ?? false,
      generation: this.#generations + (p?.daemon.generation ?? 0),
      dirtyBytes: this.#dirty,
      changedSyncsSinceVerify: this.#verify.changedSyncsSinceVerify,
      waiting: this.#link.waiting,
      hostDisk: this.#disk,
    };
  }
}
