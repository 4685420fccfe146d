/**
 * The fault LED follows the standbys: lit while one of any pair is
 * inconsistent (not a usable backup), as the front-panel legend says. The LEDs hang off the
 * relay board, not the I2C bus: this holds with or without a display.
 */
import type { BootSwitchSystem } from '../../src/bootswitch/index.ts';
import type { EventBus } from './events.ts';
import type { StatusView } from './status-view.ts';

export class StandbyFaultLed {
  #unsubscribe: (() => void) | null = null;

  constructor(
    private readonly bus: EventBus,
    private readonly status: StatusView,
    private readonly bs: BootSwitchSystem,
  ) {}

  start(): void {
    this.#show();
    this.#unsubscribe = this.bus.on(['status.changed', 'job.done', 'job.failed', 'job.cancelled', 'drive'], () => this.#show());
  }

  stop(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  #show(): void {
    const s = this.status.core();
    this.bs.failover.setStandbyFault(s.pairs.some((p) => p.paired && p.standbyState === 'inconsistent'));
  }
}
