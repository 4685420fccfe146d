/**
 * The composition root: builds the rig (config `rig` picks the hardware or
 * the simulated one), the boot switch on it, and the controller's parts —
 * roles, sync window, copy jobs, boot commands, host watch, status — and
 * starts and stops its features, each a small class that listens on the
 * event bus or the boot switch's events. Nothing here or in the parts
 * branches on which rig runs.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { openBootSwitch, BootSwitchEmitter, type AlertEvent, type BootSwitchSystem } from '../../src/bootswitch/index.ts';
import type { DaemonConfig } from './config.ts';
import type { EventBus } from './events.ts';
import type { Metrics } from './metrics.ts';
import { JobRunner } from './jobs.ts';
import { HealthMonitor } from './health.ts';
import { HardwareRig } from './hardware-rig.ts';
import { SimRig } from './sim/rig.ts';
import type { Rig } from './rig.ts';
import { Roles, failoverSwitch } from './roles.ts';
import { DrivePair, PortPairSwitch, Pairs, pairBays } from './pairs.ts';
import { bayAt, configuredBays, type PairConfig } from './pair-config.ts';
import { HostHolds, SyncWindow } from './sync-window.ts';
import { DataPairFailover } from './pair-failover.ts';
import { CopyJobs } from './copy-jobs.ts';
import { BootControl } from './boot-control.ts';
import { HostWatch } from './host-watch.ts';
import { StatusView } from './status-view.ts';
import { FailoverLedger, PairFailoverLedger } from './failover-ledger.ts';
import { BootSwitchEventsFeature, DataPortEventsFeature } from './bootswitch-events.ts';
import { StartupRecovery, checkStandby } from './startup-recovery.ts';
import { JobEvents } from './job-events.ts';
import { PanelFeature } from './panel-wiring.ts';
import { StandbyFaultLed } from './standby-fault-led.ts';
import { FileBrowser } from './browse.ts';
import { FileJobs } from './file-jobs.ts';
import { InlineMode, forgetTracking, type ServiceManager } from './inline.ts';
import { HostLinkWatch } from './host-link.ts';
import { DriveKeeper } from './drive-keeper.ts';

/** A part with a lifetime: started in order, stopped in reverse. */
interface Feature {
  start(): void | Promise<void>;
  stop?(): void | Promise<void>;
}

export function createRig(config: DaemonConfig, stateDir: string): Rig {
  return config.rig === 'sim' ? new SimRig({ stateDir, ...config.sim, pairs: config.pairs }) : new HardwareRig(config);
}

export class Controller {
  readonly jobs: JobRunner;
  readonly health: HealthMonitor;
  /** The boot pair's roles, window and copies (the routes without a pair use them when it is the only one). */
  readonly roles: Roles;
  readonly window: SyncWindow;
  readonly copies: CopyJobs;
  /** Every pair, the boot pair among them. */
  readonly pairs: Pairs;
  readonly boot: BootControl;
  /** The pairs whose sync windows hold the host off now (shared by every pair's window). */
  readonly holds = new HostHolds();
  readonly pairLedger: PairFailoverLedger;
  readonly host: HostWatch;
  readonly status: StatusView;
  readonly panel: PanelFeature;
  readonly browser: FileBrowser;
  readonly files: FileJobs;
  /** Inline mode's export and changed-block tracking of the boot pair (config `mode: inline`); null in switched mode. */
  readonly inline: InlineMode | null;
  /** The daemon's keep on its bays' drives: no other process writes them. */
  readonly keeper: DriveKeeper;
  /** Every pair's inline object by pair id (empty in switched mode). */
  readonly inlines: Map<string, InlineMode>;
  readonly #features: Feature[];
  #early: AlertEvent[];

  /** Opens the rig's boot switch and builds the controller on it; `start()` sets it going. */
  static async open(config: DaemonConfig, stateDir: string, bus: EventBus, metrics: Metrics, log: Logger, manager: ServiceManager = {}): Promise<Controller> {
    const rig = createRig(config, stateDir);
    if (rig.banner) log.info(rig.banner);
    // Alerts raised while the boot switch starts (adopted relays, an interrupted move) reach the bus once it is wired.
    const emitter = new BootSwitchEmitter();
    const early: AlertEvent[] = [];
    const onEarly = (a: AlertEvent) => early.push(a);
    emitter.on('alert', onEarly);
    try {
      // Inline mode: both drives stay on the controller's bridges, a move re-points the export (the same on both rigs).
      const hostLink = config.mode === 'inline' ? 'export' : 'sata';
      const bs = await openBootSwitch({ config: config.bootswitch, stateDir: join(stateDir, 'bootswitch'), sim: rig.board, logger: log.child({ room: 'bootswitch' }), events: emitter, hostLink });
      return new Controller(config, stateDir, bus, metrics, log, rig, bs, early, manager);
    } catch (e) {
      await rig.stop();
      throw e;
    } finally {
      emitter.off('alert', onEarly);
    }
  }

  private constructor(
    readonly config: DaemonConfig,
    readonly stateDir: string,
    readonly bus: EventBus,
    readonly metrics: Metrics,
    readonly log: Logger,
    readonly rig: Rig,
    readonly bs: BootSwitchSystem,
    early: AlertEvent[],
    manager: ServiceManager,
  ) {
    this.#early = early;
    this.health = new HealthMonitor(rig.smart, (bay) => rig.smartDevice(bay), config.health, bus, metrics, configuredBays(config.pairs));
    this.jobs = new JobRunner(stateDir, config.jobs, bus, () => this.boot.blockedBy());
    this.roles = new Roles(stateDir, rig.bays, failoverSwitch(bs), bus, log);
    const bootPair = config.pairs.find((p) => p.role === 'boot')!;
    this.window = new SyncWindow(config, stateDir, bs.bootSwitch, this.roles, bus, this.holds, bootPair.id, true);
    this.pairLedger = new PairFailoverLedger(stateDir);
    this.copies = new CopyJobs(config, stateDir, this.roles, this.window, this.jobs, bus, metrics, (bay) => rig.markBootable(bay));
    this.pairs = new Pairs(config.pairs.map((pc) => (pc.role === 'boot' ? new DrivePair(pc, this.roles, this.window, this.copies) : this.#dataPair(pc))));
    metrics.definePairs(this.pairs.ids);
    this.boot = new BootControl(bs, this.roles, this.jobs, this.pairs.boot.id, () => this.#dataMoves(), this.holds);
    this.host = new HostWatch(bs, bus, metrics);
    for (const pair of this.pairs.list) pair.copies.hostPowered = () => this.host.powered;
    this.browser = new FileBrowser(this.pairs, bs, (p, partition, folder) => this.files.folderMarks(p, partition, folder));
    // A kept folder listing may be stale after anything the daemon reports (a job, a host power change, a drive or role
    // change); a heartbeat only says the host still runs.
    bus.subscribe((e) => {
      if (e.type !== 'host.heartbeat') this.browser.listings.invalidate();
    });
    this.files = new FileJobs(this);
    // Inline mode: every pair's active drive is served by its own qemu-storage-daemon, re-pointed by its own switch's moves.
    this.inlines = new Map(
      config.mode === 'inline'
        ? this.pairs.list.map((p) => [p.id, new InlineMode(config, stateDir, p.config, p.roles, p.failover ? p.failover.port.sw : bs.bootSwitch, bs.events, bus, metrics, log.child({ room: 'inline', pair: p.id }), manager, rig.hostDisk?.(p.config) ?? null)])
        : [],
    );
    this.inline = this.inlines.get(this.pairs.boot.id) ?? null;
    for (const p of this.pairs.list) p.copies.inline = this.inlines.get(p.id) ?? null;
    this.status = new StatusView(config, this.roles, bs, this.jobs, this.health, this.host, rig, bus, metrics, this.pairs);
    this.status.inline = this.inline;
    this.status.inlines = this.inlines;
    this.status.fileRestore = this.files.record;
    for (const p of this.pairs.list) p.copies.fileRestore = this.files.record;
    const ledger = new FailoverLedger(stateDir, bs.failover.state.failovers);
    // Relay energised = drive power cut (DESIGN: de-energised is the safe default, both drives powered).
    this.panel = new PanelFeature(rig, bus, this.status, bs.events, (bay) => !bs.bootSwitch.record.relays[bay === 'A' ? 'pwrA' : 'pwrB']);
    // A drive put back into a standby bay may have been written while it was out: sampled against its manifest.
    this.keeper = new DriveKeeper(configuredBays(config.pairs), (bay) => rig.bays.path(bay), stateDir, bus, log, async (bay) => {
      for (const p of this.pairs.list) {
        if (p.roles.name(p.roles.current().standby) === bay) await checkStandby(p.roles, p.config.role === 'boot' ? '' : ` of pair ${p.id}`, bus, log);
      }
    });
    for (const p of this.pairs.list) p.copies.arrivalsChecked = () => this.keeper.arrivalsChecked();
    this.#features = [
      new JobEvents(bus, this.jobs, metrics, this.status, log),
      new BootSwitchEventsFeature(bs, bus, metrics, this.roles, ledger, this.status, this.pairs.boot.id),
      ...this.pairs.list.filter((p) => p.failover).map((p) => new DataPortEventsFeature(p.failover!.port, p.id, bus)),
      this.host,
      // Before any job (start-up recovery's) and stopped after them: from here on only this daemon writes its drives.
      this.keeper,
      { start: () => this.#publishEarlyAlerts() },
      // The host's export is up before anything may copy or boot: start-up recovery's jobs run in its epochs.
      ...(this.inline ? [...this.inlines.values()] : [this.#switchedLinks()]),
      new StartupRecovery(config, bs, this.roles, ledger, this.window, this.copies, this.status, bus, log, this.pairs, this.files.record),
      { start: () => rig.start(this) },
      this.health,
      new StandbyFaultLed(bus, this.status, bs),
      this.panel,
      // Stopping leaves an interrupted copy to resume at the next start, not a rolled-back one.
      { start: () => {}, stop: () => this.#stopJob() },
    ];
  }

  /** A data pair: its data port's switch, roles from its pair state, its window, copies and failover. */
  #dataPair(pc: PairConfig): DrivePair {
    const port = this.bs.ports.find((p) => p.bays[0] === pc.bays[0]);
    // The config check makes sure of it; a missing port here is a bug, not an operator's mistake.
    if (!port) throw new Error(`no relays for the data port of pair ${pc.id} (bays ${pc.bays.join(', ')})`);
    const log = this.log.child({ pair: pc.id });
    const roles = new Roles(this.stateDir, pairBays(this.rig.bays, pc), new PortPairSwitch(port), this.bus, log);
    const window = new SyncWindow(this.config, this.stateDir, port.sw, roles, this.bus, this.holds, pc.id, false);
    const copies = new CopyJobs(this.config, this.stateDir, roles, window, this.jobs, this.bus, this.metrics, (pos) => this.rig.markBootable(bayAt(pc, pos)), pc.id);
    const failover = new DataPairFailover(pc, port, roles, { jobs: this.jobs, ledger: this.pairLedger, holds: this.holds, bus: this.bus, metrics: this.metrics, changed: () => this.status.publishChange(), log });
    return new DrivePair(pc, roles, window, copies, failover);
  }

  /** Why a data pair's drives are moving now, or null: no job may start meanwhile. */
  #dataMoves(): string | null {
    const moving = this.pairs.list.find((p) => p.failover?.moving);
    return moving ? `a failover of pair ${moving.id} is moving its drives` : null;
  }

  /** Switched mode: relays inline mode left (both drives on the controller) go back to the selected bay, on every switch; its tracking is dropped. */
  #switchedLinks(): Feature {
    const links = [this.bs.bootSwitch, ...this.bs.ports.map((p) => p.sw)].map((sw) => new HostLinkWatch(sw, this.bs.events, this.bus, this.log.child({ room: 'bootswitch' })));
    return {
      start: async () => {
        forgetTracking(this.stateDir, this.log);
        for (const l of links) await l.start();
      },
      stop: () => links.forEach((l) => l.stop()),
    };
  }

  #publishEarlyAlerts(): void {
    for (const a of this.#early) this.bus.publish('alert', a);
    this.#early = [];
  }

  async #stopJob(): Promise<void> {
    await this.jobs.stopAll();
  }

  async start(): Promise<void> {
    for (const f of this.#features) await f.start();
  }

  /**
   * Stops the features in reverse order (the running job is cancelled
   * without rollback, so the next start resumes it), runs `beforeHardware`
   * (the daemon closes its server there), then closes the boot switch and
   * only then the rig, so a simulated host losing power is no event the
   * failover machine records.
   */
  async stop(beforeHardware: () => Promise<void> = async () => {}): Promise<void> {
    for (const f of [...this.#features].reverse()) await f.stop?.();
    await beforeHardware();
    await this.bs.close();
    await this.rig.stop();
  }
}
