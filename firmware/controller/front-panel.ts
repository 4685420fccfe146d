/**
 * The front panel's I2C parts: the SSD1306 status screen (active bay, last
 * sync, job progress, the newest alert) and the INA219 monitors on the drive
 * power rails (a drive that draws nothing while powered is dead; one that
 * stays at spin-up current is stuck). On the simulated rig the same code
 * drives simulated chips whose rails follow the simulated drives.
 */
import type { Bay } from '../../src/bootswitch/index.ts';
import { Ssd1306, Ina219, renderStatus, classifyRail, SimI2cBus, SimSsd1306, SimIna219, type StatusScreen, type RailReading } from '../../src/bootswitch/index.ts';
import type { I2cBus } from '../../src/bootswitch/index.ts';

export type RailState = ReturnType<typeof classifyRail>;

export interface RailMonitor {
  readonly bay: Bay;
  readonly monitor: Ina219;
}

export interface PanelEvents {
  /** A rail changed state; `expectedOn` says whether the drive's power relay is closed. */
  rail(e: { bay: Bay; state: RailState; reading: RailReading; expectedOn: boolean }): void;
  alert(e: { level: 'warning' | 'critical' | 'info'; code: string; message: string }): void;
}

export interface FrontPanelOptions {
  readonly display?: Ssd1306;
  readonly rails: RailMonitor[];
  /** What the screen shows now. */
  readonly screen: () => StatusScreen;
  /** Whether a bay's power relay lets the drive run. */
  readonly drivePowered: (bay: Bay) => boolean;
  readonly events: PanelEvents;
  readonly railIntervalMs?: number;
  /** A spin-up longer than this is a stuck drive. */
  readonly stuckAfterMs?: number;
  readonly now?: () => number;
}

export class FrontPanel {
  private timer: NodeJS.Timeout | null = null;
  private drawing: Promise<void> = Promise.resolve();
  private redrawQueued = false;
  private readonly railStates = new Map<Bay, { state: RailState; since: number; stuckRaised: boolean }>();
  /** The last frame drawn, for the simulated rig's API and tests. */
  lastScreen: StatusScreen | null = null;
  displayError: string | null = null;

  constructor(private readonly opts: FrontPanelOptions) {}

  async start(): Promise<void> {
    if (this.opts.display) {
      try {
        await this.opts.display.init();
      } catch (e) {
        this.fail('display', e);
      }
    }
    for (const r of this.opts.rails) {
      try {
        await r.monitor.init();
      } catch (e) {
        this.fail(`rail monitor of bay ${r.bay}`, e);
      }
    }
    this.refresh();
    if (this.opts.rails.length) {
      await this.pollRails();
      this.timer = setInterval(() => void this.pollRails(), this.opts.railIntervalMs ?? 2000);
      this.timer.unref();
    }
  }

  /** Redraws soon; calls while a frame is being sent collapse into one more frame. */
  refresh(): void {
    if (this.redrawQueued) return;
    this.redrawQueued = true;
    this.drawing = this.drawing.then(async () => {
      this.redrawQueued = false;
      const screen = this.opts.screen();
      this.lastScreen = screen;
      if (!this.opts.display) return;
      try {
        await this.opts.display.show(renderStatus(screen));
        this.displayError = null;
      } catch (e) {
        if (this.displayError === null) this.fail('display', e);
        this.displayError = (e as Error).message;
      }
    });
  }

  async pollRails(): Promise<void> {
    const now = this.opts.now?.() ?? Date.now();
    for (const { bay, monitor } of this.opts.rails) {
      // Asked first: on the simulated rig this also sets what the simulated chip reads.
      const expectedOn = this.opts.drivePowered(bay);
      let reading: RailReading;
      try {
        reading = await monitor.read();
      } catch (e) {
        this.fail(`rail monitor of bay ${bay}`, e);
        continue;
      }
      const state = classifyRail(reading);
      const prev = this.railStates.get(bay);
      if (!prev || prev.state !== state) {
        this.railStates.set(bay, { state, since: now, stuckRaised: false });
        this.opts.events.rail({ bay, state, reading, expectedOn });
        if (expectedOn && state === 'dead') {
          this.opts.events.alert({ level: 'critical', code: 'drive-dead', message: `the drive in bay ${bay} draws no current although it is powered (${reading.milliamps.toFixed(0)} mA): dead drive or loose cable` });
        }
        if (!expectedOn && state !== 'off') {
          this.opts.events.alert({ level: 'warning', code: 'rail-unexpected', message: `bay ${bay}'s power rail reads ${reading.busVolts.toFixed(2)} V although its relay cuts it: check the power relay` });
        }
      } else if (state === 'spinning-up' && !prev.stuckRaised && now - prev.since > (this.opts.stuckAfterMs ?? 15_000)) {
        prev.stuckRaised = true;
        this.opts.events.alert({ level: 'critical', code: 'drive-stuck', message: `the drive in bay ${bay} has drawn spin-up current for ${Math.round((now - prev.since) / 1000)} s: stuck spindle` });
      }
    }
  }

  railState(bay: Bay): RailState | null {
    return this.railStates.get(bay)?.state ?? null;
  }

  private fail(what: string, e: unknown): void {
    this.opts.events.alert({ level: 'warning', code: 'panel-fault', message: `${what}: ${(e as Error).message}` });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.drawing;
  }
}

/** The panel's chips on the simulated rig: an OLED at 0x3c and a rail monitor per bay at 0x40 and 0x41. */
export class SimPanelChips {
  readonly bus = new SimI2cBus();
  readonly oled = new SimSsd1306();
  readonly rails: Record<Bay, SimIna219> = { A: new SimIna219(), B: new SimIna219() };
  static readonly OLED = 0x3c;
  static readonly RAIL: Record<Bay, number> = { A: 0x40, B: 0x41 };

  constructor() {
    this.bus.attach(SimPanelChips.OLED, this.oled);
    this.bus.attach(SimPanelChips.RAIL.A, this.rails.A).attach(SimPanelChips.RAIL.B, this.rails.B);
  }

  /** Models a rail: relay open → 0 V; powered with a drive → a running drive's current; empty bay → nothing drawn. */
  setRail(bay: Bay, powered: boolean, drivePresent: boolean, shuntOhms = 0.1): void {
    const chip = this.rails[bay];
    chip.busV = powered ? 5.02 : 0;
    const milliamps = powered && drivePresent ? 450 : 0;
    chip.shuntMv = (milliamps / 1000) * shuntOhms * 1000;
  }
}

export function panelParts(bus: I2cBus, oledAddress: number | undefined, rails: { bay: Bay; address: number; shuntOhms: number }[]): { display?: Ssd1306; rails: RailMonitor[] } {
  return {
    display: oledAddress === undefined ? undefined : new Ssd1306(bus, oledAddress),
    rails: rails.map((r) => ({ bay: r.bay, monitor: new Ina219(bus, r.address, r.shuntOhms) })),
  };
}
