/**
 * Puts the front panel into the daemon: the rig's panel chips (real I2C bus
 * on hardware, simulated chips on the simulated rig), the screen's content
 * from the status, and rail changes and alerts onto the event bus.
 */
import { FrontPanel, panelParts } from './front-panel.ts';
import type { EventBus } from './events.ts';
import type { Rig } from './rig.ts';
import type { StatusView } from './status-view.ts';
import type { Bay, BootSwitchEmitter } from '../../src/bootswitch/index.ts';

function shortTime(iso: string | null | undefined): string | null {
  if (!iso) return null;
  const d = new Date(iso);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getDate())}.${pad(d.getMonth() + 1)} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A data pair's word on the screen: its standby's state, or the failover moving its drives. */
function pairLine(p: { paired: boolean; standbyState: string; job: { kind: string } | null; port?: { moving: boolean; fault: string | null } | null }): string {
  if (p.port?.moving) return 'MOVING';
  if (p.port?.fault) return 'RELAY FAULT';
  if (!p.paired) return 'UNPAIRED';
  if (p.job) return p.job.kind;
  return p.standbyState === 'consistent' ? 'OK' : p.standbyState;
}

export class PanelFeature {
  /** Null until started, and on a rig without a panel. */
  panel: FrontPanel | null = null;
  #unsubscribe: (() => void)[] = [];
  readonly #onShow = () => this.panel?.refresh();

  constructor(
    private readonly rig: Rig,
    private readonly bus: EventBus,
    private readonly status: StatusView,
    private readonly bootSwitchEvents: BootSwitchEmitter,
    /** Whether a bay's drive power relay lets power through. */
    private readonly powered: (bay: Bay) => boolean,
  ) {}

  async start(): Promise<void> {
    const chips = await this.rig.panelChips();
    if (!chips) return;
    const { bus } = this;
    const bootPair = this.status.status().pairs.find((p) => p.role === 'boot')?.id;
    let lastAlert: { text: string; at: number } | null = null;
    const panel = new FrontPanel({
      ...panelParts(chips.i2c, chips.oledAddress, chips.rails),
      screen: () => {
        const s = this.status.status();
        const alert = lastAlert && Date.now() - lastAlert.at < 24 * 3600_000 ? lastAlert.text : null;
        // A data pair's job is named with its pair; the boot pair's keeps the short name.
        const job = s.job ? (s.job.pair && s.job.pair !== bootPair ? `${s.job.kind} ${s.job.pair}` : s.job.kind) : undefined;
        const pairs = s.pairs.filter((p) => p.role !== 'boot').map((p) => ({ id: p.id, active: p.active, state: pairLine(p) }));
        return { activeBay: s.active, lastSync: shortTime(s.lastSuccess), progress: s.job?.progress ? s.job.progress.percent : s.job ? 0 : null, job, alert, ...(pairs.length ? { pairs } : {}) };
      },
      drivePowered: (bay) => {
        const on = this.powered(bay);
        chips.drivePower?.(bay, on);
        return on;
      },
      events: {
        rail: (e) => bus.publish('rail', { bay: e.bay, state: e.state, milliamps: Math.round(e.reading.milliamps), volts: Number(e.reading.busVolts.toFixed(2)), expectedOn: e.expectedOn }),
        alert: (a) => bus.publish('alert', a),
      },
      railIntervalMs: 2000,
    });
    this.panel = panel;
    this.#unsubscribe = [
      bus.on('alert', (a) => {
        if (a.level !== 'info') lastAlert = { text: a.code, at: Date.now() };
      }),
      bus.on('job.done', () => {
        if (lastAlert?.text.startsWith('sync')) lastAlert = null;
      }),
      // Listened to last, so the screen shows what the listeners above made of the event.
      bus.on(['status.changed', 'job.started', 'job.progress', 'job.done', 'job.failed', 'job.cancelled', 'switched', 'failover', 'alert'], () => panel.refresh()),
    ];
    this.bootSwitchEvents.on('show-status', this.#onShow);
    await panel.start();
  }

  async stop(): Promise<void> {
    for (const off of this.#unsubscribe) off();
    this.#unsubscribe = [];
    this.bootSwitchEvents.off('show-status', this.#onShow);
    await this.panel?.stop();
  }
}
