/**
 * The status the API, the front panel and the CLI show: roles, standby
 * state, generations, the job, relays, LEDs, host and health. The parts that
 * change with state (not with progress) are cached briefly, since reading the
 * pair state is two checksummed files and many clients poll; a change of
 * them is published as `status.changed`.
 */
import type { Bay, BootSwitchSystem } from '../../src/bootswitch/index.ts';
import type { DaemonConfig } from './config.ts';
import type { EventBus } from './events.ts';
import type { HealthMonitor } from './health.ts';
import type { HostWatch } from './host-watch.ts';
import type { JobRunner } from './jobs.ts';
import type { Metrics } from './metrics.ts';
import type { Rig } from './rig.ts';
import type { Roles } from './roles.ts';
import type { DrivePair, Pairs } from './pairs.ts';
import type { InlineStatus } from './inline.ts';
import { geometryDrift, standbysOf, type PairRecord } from '../../src/sync/index.ts';

/** One standby of a rotation as the status shows it. */
function standbyEntry(p: PairRecord, inBays: (string | null)[]) {
  const d = p.drives[p.standbyKey];
  return {
    pairId: p.id,
    key: p.standbyKey,
    lastPath: d?.lastPath ?? null,
    generation: d?.generation ?? null,
    present: inBays.includes(p.standbyKey),
    lastSyncedAt: p.lastSuccess ?? null,
    ageSeconds: p.lastSuccess ? Math.max(0, Math.round((Date.now() - Date.parse(p.lastSuccess)) / 1000)) : null,
  };
}

export class StatusView {
  #core: { at: number; value: ReturnType<StatusView['computeCore']> } | null = null;
  #lastKey = '';
  readonly startedAt = Date.now();
  /** Inline mode's part of the status (the export and dirty bytes); null in switched mode. */
  inline: { status(): InlineStatus } | null = null;
  /** Every pair's inline object (inline mode): each pair's status shows its export. */
  inlines: Map<string, { status(): InlineStatus }> = new Map();
  /** The restores of files recorded per pair (an interrupted one shows as the pair's `fileRestore`). */
  fileRestore: { get(pair: string): unknown } | null = null;

  constructor(
    private readonly config: DaemonConfig,
    private readonly roles: Roles,
    private readonly bs: BootSwitchSystem,
    private readonly jobs: JobRunner,
    private readonly health: HealthMonitor,
    private readonly host: HostWatch,
    private readonly rig: Rig,
    private readonly bus: EventBus,
    private readonly metrics: Metrics,
    private readonly pairs: Pairs,
  ) {}

  /** Forget the cached status: something changed roles, drives or the pair state. */
  invalidate(): void {
    this.#core = null;
  }

  /** The state-dependent part of the status, cached for up to a second. */
  core(): ReturnType<StatusView['computeCore']> {
    const now = performance.now();
    if (!this.#core || now - this.#core.at > 1000) this.#core = { at: now, value: this.computeCore() };
    return this.#core.value;
  }

  computeCore() {
    const view = this.roles.current();
    const { active, standby, pair, store } = view;
    return {
      active,
      standby,
      standbyState: this.roles.standbyState(view),
      paired: !!pair,
      pairId: pair?.id ?? null,
      generations: { A: this.roles.generation('A', pair), B: this.roles.generation('B', pair) },
      pendingCopy: pair?.pendingCopy ?? null,
      lastSync: pair?.lastSync ?? null,
      lastSuccess: pair?.lastSuccess ?? null,
      /** Standby rotation: every standby of the active drive, the one in its bay and those elsewhere, with the age of its backup. */
      standbys: pair ? standbysOf(store.pairs(), pair.activeKey).map((q) => standbyEntry(q, [this.roles.keyOf('A'), this.roles.keyOf('B')])) : [],
      problems: store.problems,
      /** Rule 8: the pair's drives that show another size or sector size than at pairing (every copy and verify of the pair is refused meanwhile). */
      geometryChanged: pair ? geometryDrift(store.pairs(), pair) : [],
      fileRestore: this.fileRestore?.get(this.pairs.boot.id) ?? null,
      pairs: this.pairs.list.map((p) => this.#pairCore(p)),
    };
  }

  /** One pair as the status lists it: bays by their physical names. */
  #pairCore(p: DrivePair) {
    const { roles, config } = p;
    const view = roles.current();
    const { active, standby, pair, store } = view;
    return {
      id: config.id,
      label: config.label,
      role: config.role,
      mode: config.mode,
      bays: [...config.bays],
      active: roles.name(active),
      standby: roles.name(standby),
      standbyState: roles.standbyState(view),
      paired: !!pair,
      pairId: pair?.id ?? null,
      generations: { [roles.name(active)]: roles.generation(active, pair), [roles.name(standby)]: roles.generation(standby, pair) },
      pendingCopy: pair?.pendingCopy ?? null,
      lastSync: pair?.lastSync ?? null,
      lastSuccess: pair?.lastSuccess ?? null,
      schedule: config.schedule,
      /** Rule 8: the pair's drives that show another size or sector size than at pairing (every copy and verify of the pair is refused meanwhile). */
      geometryChanged: pair ? geometryDrift(store.pairs(), pair) : [],
      /** A restore of files onto the active drive that is running or was interrupted (the active drive half-restored; syncs onto the standby wait), or null. */
      fileRestore: this.fileRestore?.get(config.id) ?? null,
    };
  }

  /** Re-reads the state; sets the metrics and publishes `status.changed` when roles, states or generations moved. */
  publishChange(): void {
    this.invalidate();
    const s = this.core();
    const pairs = s.pairs.map((p) => ({ id: p.id, active: p.active, standby: p.standby, standbyState: p.standbyState, generations: p.generations }));
    const key = JSON.stringify([s.active, s.standby, s.standbyState, s.generations, pairs]);
    for (const p of s.pairs) {
      this.metrics.setStandbyState(p.paired ? p.standbyState : 'unpaired', p.id);
      for (const [bay, g] of Object.entries(p.generations)) if (g !== null) this.metrics.generation.set({ bay, role: bay === p.active ? 'active' : 'standby', pair: p.id }, g);
    }
    if (key !== this.#lastKey) {
      this.#lastKey = key;
      this.bus.publish('status.changed', { active: s.active, standby: s.standby, standbyState: s.standbyState, generations: s.generations, pairs });
    }
  }

  status() {
    const core = this.core();
    const fs = this.bs.failover.state;
    const rec = this.bs.bootSwitch.record;
    const job = this.jobs.current;
    const out = this.bs.board.outputs;
    const drive = (bay: Bay) => ({
      present: this.roles.bays.path(bay) !== null,
      path: this.roles.bays.path(bay),
      key: this.roles.keyOf(bay),
      role: bay === core.active ? 'active' : 'standby',
      generation: core.generations[bay],
      health: this.health.drives[bay],
    });
    return {
      rig: this.config.rig,
      mode: this.config.mode,
      ...core,
      bootBay: rec.bay,
      job: job ? { id: job.id, kind: job.kind, state: job.state, trigger: job.trigger, startedAt: job.startedAt, progress: job.progress, options: job.options, pair: job.pair ?? null } : null,
      // The pairs' jobs change with every start and finish, so they are not part of the cached core.
      pairs: core.pairs.map((p) => {
        const j = this.jobs.forPair(p.id);
        // A data pair's data port: the bay its relays give the host now (inline mode: the bay its export serves), whether they move, and a fault they left.
        const sw = this.pairs.get(p.id).failover?.port.sw;
        const port = sw ? { onHost: sw.bay === null ? null : sw.naming.bay(sw.bay), moving: sw.moving, fault: sw.record.fault, state: sw.unknown === null ? ('known' as const) : ('unknown' as const), unknown: sw.unknown } : null;
        // Inline mode: the pair's export (URI, drive served, bytes written since its last sync), else null.
        return { ...p, job: j ? { id: j.id, kind: j.kind, state: j.state } : null, port, inline: this.inlines.get(p.id)?.status() ?? null };
      }),
      /** Jobs waiting for their turn, oldest first. */
      queued: this.jobs.queued.map((j) => ({ id: j.id, kind: j.kind, pair: j.pair ?? null, createdAt: j.createdAt })),
      drives: { A: drive('A'), B: drive('B') },
      relays: {
        ...rec.relays,
        atxPower: out.atxPower?.commanded ?? false,
        atxReset: out.atxReset?.commanded ?? false,
        moving: this.bs.bootSwitch.moving,
        pending: rec.pending,
        fault: rec.fault,
        // 'unknown': start-up found them unreadable or not as recorded under a powered host and left them; the fields above are the record's.
        state: this.bs.bootSwitch.unknown === null ? ('known' as const) : ('unknown' as const),
        unknown: this.bs.bootSwitch.unknown,
      },
      leds: { status: out.ledStatus?.commanded ?? null, fault: out.ledFault?.commanded ?? null, bayA: out.ledBayA?.commanded ?? null, bayB: out.ledBayB?.commanded ?? null },
      host: {
        power: this.host.powered ? 'on' : 'off',
        lastHeartbeat: this.host.lastHeartbeat,
        ...this.rig.hostStatus(),
      },
      failover: { active: fs.active, standby: fs.standby, triesLeft: fs.triesLeft, failed: fs.failed, consistent: fs.consistent, pendingBoot: fs.pendingBoot, switching: fs.switching, halted: fs.halted, failovers: fs.failovers },
      health: { A: this.health.drives.A.status, B: this.health.drives.B.status },
      inline: this.inline?.status() ?? null,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
    };
  }
}

export type Status = ReturnType<StatusView['status']>;
