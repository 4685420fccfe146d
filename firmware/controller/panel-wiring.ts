/**
 * Puts the front panel into the daemon: the chips from the config (real I2C
 * bus on hardware, simulated chips on the simulated rig), the screen's
 * content from the appliance's status, and rail changes and alerts onto the
 * event bus.
 */
import { FrontPanel, SimPanelChips, panelParts } from './front-panel.ts';
import type { EventBus } from './events.ts';
import type { Appliance } from './appliance.ts';
import type { DaemonConfig } from './config.ts';
import type { SimRig } from './sim-rig.ts';
import { defaultOpenI2c, type Bay, type BootSwitchEmitter, type I2cBus } from '../../src/bootswitch/index.ts';

export interface PanelHandle {
  readonly panel: FrontPanel;
  /** The simulated chips, on the simulated rig only. */
  readonly sim: SimPanelChips | null;
  stop(): Promise<void>;
}

function shortTime(iso: string | null | undefined): string | null {
  if (!iso) return null;
  const d = new Date(iso);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getDate())}.${pad(d.getMonth() + 1)} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The fault LED follows the standby: lit while it is inconsistent (not a usable backup), as the front-panel legend says. */
function wireStandbyFaultLed(bus: EventBus, app: Appliance): () => void {
  const show = () => {
    const s = app.statusCore();
    app.bs.failover.setStandbyFault(s.paired && s.standbyState === 'inconsistent');
  };
  show();
  return bus.subscribe((e) => {
    if (e.type === 'status.changed' || e.type === 'job.done' || e.type === 'job.failed' || e.type === 'job.cancelled' || e.type === 'drive') show();
  });
}

export async function wirePanel(opts: { config: DaemonConfig; bus: EventBus; app: Appliance; rig: SimRig | null; bootSwitchEvents: BootSwitchEmitter; powered: (bay: Bay) => boolean }): Promise<PanelHandle | null> {
  const { config, bus, app, rig } = opts;
  // The LEDs hang off the relay board, not the I2C bus: this holds with or without a display.
  const stopFaultLed = wireStandbyFaultLed(bus, app);
  let i2c: I2cBus;
  let sim: SimPanelChips | null = null;
  let oledAddress: number | undefined;
  let rails: { bay: Bay; address: number; shuntOhms: number }[];
  if (rig) {
    sim = new SimPanelChips();
    i2c = sim.bus;
    oledAddress = SimPanelChips.OLED;
    rails = (['A', 'B'] as const).map((bay) => ({ bay, address: SimPanelChips.RAIL[bay], shuntOhms: 0.1 }));
  } else {
    const c = config.bootswitch.i2c;
    if (!c || (!c.oled && !(c.ina219 ?? []).length)) return null;
    i2c = await defaultOpenI2c(c.bus);
    oledAddress = c.oled?.address;
    rails = (c.ina219 ?? []).map((r) => ({ bay: r.bay, address: r.address, shuntOhms: r.shuntOhms }));
  }
  let lastAlert: { text: string; at: number } | null = null;
  const parts = panelParts(i2c, oledAddress, rails);
  const panel = new FrontPanel({
    ...parts,
    screen: () => {
      const s = app.status();
      const alert = lastAlert && Date.now() - lastAlert.at < 24 * 3600_000 ? lastAlert.text : null;
      return { activeBay: s.active, lastSync: shortTime(s.lastSuccess), progress: s.job?.progress ? (s.job.progress as { percent: number }).percent : s.job ? 0 : null, job: s.job?.kind, alert };
    },
    drivePowered: (bay) => {
      const on = opts.powered(bay);
      // The simulated rails follow the simulated drives: powered by the relay, drawing current when present.
      sim?.setRail(bay, on, rig ? rig.present(bay) : true);
      return on;
    },
    events: {
      rail: (e) => bus.publish('rail', { bay: e.bay, state: e.state, milliamps: Math.round(e.reading.milliamps), volts: Number(e.reading.busVolts.toFixed(2)), expectedOn: e.expectedOn }),
      alert: (a) => bus.publish('alert', a),
    },
    railIntervalMs: 2000,
  });
  const unsubscribe = bus.subscribe((e) => {
    if (e.type === 'alert') {
      const a = e.data as { code: string; level: string };
      if (a.level !== 'info') lastAlert = { text: a.code, at: Date.now() };
    }
    if (e.type === 'job.done' && lastAlert?.text.startsWith('sync')) lastAlert = null;
    if (['status.changed', 'job.started', 'job.progress', 'job.done', 'job.failed', 'job.cancelled', 'switched', 'failover', 'alert'].includes(e.type)) panel.refresh();
  });
  const onShow = () => panel.refresh();
  opts.bootSwitchEvents.on('show-status', onShow);
  await panel.start();
  return {
    panel,
    sim,
    async stop() {
      stopFaultLed();
      unsubscribe();
      opts.bootSwitchEvents.off('show-status', onShow);
      await panel.stop();
    },
  };
}
