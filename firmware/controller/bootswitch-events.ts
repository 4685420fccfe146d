/**
 * The boot switch's events onto the daemon's bus: relay clicks, button
 * gestures, moves, boots and alerts are republished; a failover is recorded
 * as a role swap in the pair state, counted, and published with the new
 * generation.
 */
import type { BootSwitchEvents, BootSwitchSystem, DataPortSwitch } from '../../src/bootswitch/index.ts';
import type { EventBus } from './events.ts';
import type { FailoverLedger } from './failover-ledger.ts';
import type { Metrics } from './metrics.ts';
import type { Roles } from './roles.ts';
import type { StatusView } from './status-view.ts';

type Handlers = { [K in keyof BootSwitchEvents]?: (...args: BootSwitchEvents[K]) => void };

export class BootSwitchEventsFeature {
  readonly #handlers: Handlers;

  constructor(
    private readonly bs: BootSwitchSystem,
    bus: EventBus,
    metrics: Metrics,
    roles: Roles,
    ledger: FailoverLedger,
    status: StatusView,
    bootPair = 'system',
  ) {
    this.#handlers = {
      relay: (r) => bus.publish('relay', r),
      button: (b) => bus.publish('button', b),
      'switch-step': (s) => bus.publish('switch.step', s),
      switched: (s) => {
        bus.publish('switched', s);
        this.#updateBootBay(metrics);
      },
      state: (s) => bus.publish('failover.state', s),
      boot: (b) => bus.publish('boot', b),
      alert: (a) => bus.publish('alert', a),
      failover: (f) => {
        const generation = roles.recordSwap(f.to, f.reason);
        ledger.save(bs.failover.state.failovers);
        metrics.failovers.inc({ pair: bootPair });
        bus.publish('failover', { ...f, generation, pair: bootPair });
        status.publishChange();
      },
    };
    this.#updateBootBay(metrics);
  }

  start(): void {
    for (const [name, fn] of Object.entries(this.#handlers)) this.bs.events.on(name as keyof BootSwitchEvents, fn as never);
  }

  stop(): void {
    for (const [name, fn] of Object.entries(this.#handlers)) this.bs.events.off(name as keyof BootSwitchEvents, fn as never);
  }

  #updateBootBay(metrics: Metrics): void {
    const bay = this.bs.bootSwitch.bay;
    for (const b of ['A', 'B'] as const) metrics.bootBay.set({ bay: b }, bay === b ? 1 : 0);
  }
}

/**
 * A data port's switch events onto the bus, named by its pair and with the
 * physical bays: each step of a move, its end, and its alerts (a failed
 * move and its roll-back).
 */
export class DataPortEventsFeature {
  readonly #handlers: Handlers;

  constructor(
    private readonly port: DataPortSwitch,
    pair: string,
    bus: EventBus,
  ) {
    const bay = (b: 'A' | 'B') => (b === 'A' ? port.bays[0] : port.bays[1]);
    this.#handlers = {
      'switch-step': (s) => bus.publish('switch.step', { ...s, to: bay(s.to), pair }),
      switched: (s) => bus.publish('switched', { ...s, from: s.from === null ? null : bay(s.from), to: bay(s.to), pair }),
      alert: (a) => bus.publish('alert', { ...a, pair }),
    };
  }

  start(): void {
    for (const [name, fn] of Object.entries(this.#handlers)) this.port.events.on(name as keyof BootSwitchEvents, fn as never);
  }

  stop(): void {
    for (const [name, fn] of Object.entries(this.#handlers)) this.port.events.off(name as keyof BootSwitchEvents, fn as never);
  }
}
