/**
 * Drive health: SMART read per bay on an interval (smartctl on real drives,
 * simulated values on the simulated rig), judged against the configured
 * thresholds. A change of verdict is an event; a worse verdict an alert.
 */
import type { Bay } from '../../src/bootswitch/index.ts';
import type { BayName } from './pair-config.ts';
import type { SmartReport, SmartSource } from '../../src/sata-bridge/index.ts';
import type { EventBus } from './events.ts';
import type { Metrics } from './metrics.ts';
import type { DaemonConfig } from './config.ts';

export type HealthStatus = 'ok' | 'warning' | 'critical' | 'missing' | 'unknown';

export interface DriveHealth {
  status: HealthStatus;
  problems: string[];
  smart: SmartReport | null;
  checkedAt: string | null;
}

const RANK: Record<HealthStatus, number> = { unknown: 0, ok: 0, warning: 1, critical: 2, missing: 2 };

export function judge(r: SmartReport, t: DaemonConfig['health']): { status: HealthStatus; problems: string[] } {
  const problems: string[] = [];
  let status: HealthStatus = 'ok';
  const worse = (s: HealthStatus) => {
    if (RANK[s] > RANK[status]) status = s;
  };
  if (r.overall === 'failed') {
    problems.push('the drive reports its SMART overall health as FAILED');
    worse('critical');
  }
  if (r.temperatureC !== null && r.temperatureC >= t.temperatureCriticalC) {
    problems.push(`temperature ${r.temperatureC} °C is at or above ${t.temperatureCriticalC} °C`);
    worse('critical');
  } else if (r.temperatureC !== null && r.temperatureC >= t.temperatureWarnC) {
    problems.push(`temperature ${r.temperatureC} °C is at or above ${t.temperatureWarnC} °C`);
    worse('warning');
  }
  if (r.reallocatedSectors !== null && r.reallocatedSectors >= t.reallocatedWarn) {
    problems.push(`${r.reallocatedSectors} reallocated sectors`);
    worse('warning');
  }
  if (r.pendingSectors !== null && r.pendingSectors >= t.pendingWarn) {
    problems.push(`${r.pendingSectors} pending (unreadable) sectors`);
    worse('warning');
  }
  return { status, problems };
}

export class HealthMonitor {
  /** Every configured bay's drive (A and B always; the data pairs' bays when configured). */
  readonly drives: Record<Bay, DriveHealth> & Partial<Record<BayName, DriveHealth>> = {
    A: { status: 'unknown', problems: [], smart: null, checkedAt: null },
    B: { status: 'unknown', problems: [], smart: null, checkedAt: null },
  };
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;

  constructor(
    private readonly source: SmartSource,
    /** The device to ask about for a bay, or null when the bay is empty. */
    private readonly deviceOf: (bay: BayName) => string | null,
    private readonly thresholds: DaemonConfig['health'],
    private readonly bus: EventBus,
    private readonly metrics: Metrics,
    /** The bays the configured pairs use. */
    private readonly bays: readonly BayName[] = ['A', 'B'],
  ) {
    for (const b of bays) this.drives[b] ??= { status: 'unknown', problems: [], smart: null, checkedAt: null };
  }

  start(): void {
    void this.check();
    this.#timer = setInterval(() => void this.check(), this.thresholds.intervalSeconds * 1000);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Reads every bay now (one read at a time; a second caller waits for the running one). */
  check(): Promise<void> {
    this.#running ??= (async () => {
      try {
        for (const bay of this.bays) await this.#checkBay(bay);
      } finally {
        this.#running = null;
      }
    })();
    return this.#running;
  }

  async #checkBay(bay: BayName): Promise<void> {
    const device = this.deviceOf(bay);
    let next: DriveHealth;
    if (!device) next = { status: 'missing', problems: [`bay ${bay} holds no drive`], smart: null, checkedAt: new Date().toISOString() };
    else {
      try {
        const smart = await this.source.read(device);
        next = { ...judge(smart, this.thresholds), smart, checkedAt: smart.readAt };
      } catch (e) {
        next = { status: 'missing', problems: [(e as Error).message], smart: null, checkedAt: new Date().toISOString() };
      }
    }
    const prev = this.drives[bay] ?? { status: 'unknown', problems: [], smart: null, checkedAt: null };
    this.drives[bay] = next;
    this.metrics.driveHealthy.set({ bay }, next.status === 'ok' ? 1 : 0);
    if (next.smart?.temperatureC != null) this.metrics.driveTemperature.set({ bay }, next.smart.temperatureC);
    if (next.smart?.reallocatedSectors != null) this.metrics.driveReallocated.set({ bay }, next.smart.reallocatedSectors);
    if (next.smart?.pendingSectors != null) this.metrics.drivePending.set({ bay }, next.smart.pendingSectors);
    if (prev.status === next.status && prev.problems.join() === next.problems.join()) return;
    this.bus.publish('health', { bay, status: next.status, problems: next.problems, smart: next.smart });
    if (RANK[next.status] > RANK[prev.status] || (RANK[next.status] > 0 && prev.problems.join() !== next.problems.join())) {
      this.bus.publish('alert', {
        level: next.status === 'warning' ? 'warning' : 'critical',
        code: next.status === 'missing' ? 'drive-missing' : 'drive-health',
        message: `drive in bay ${bay}: ${next.problems.join('; ')}`,
        bay,
      });
    } else if (RANK[next.status] < RANK[prev.status] && prev.status !== 'unknown') {
      this.bus.publish('alert', { level: 'info', code: 'drive-health-recovered', message: `drive in bay ${bay} is ${next.status} again`, bay });
    }
  }
}
