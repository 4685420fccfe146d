/**
 * What the controller knows of the host: its power (the power LED, read at
 * start and followed through the boot switch's events) and its last
 * heartbeat, from whichever source reports them (the API, the simulated
 * host). Heartbeats confirm a boot to the failover machine.
 */
import type { Bay, BootSwitchSystem } from '../../src/bootswitch/index.ts';
import type { EventBus } from './events.ts';
import type { Metrics } from './metrics.ts';

export interface Heartbeat {
  at: string;
  bay: Bay | null;
  source: string;
}

export class HostWatch {
  #powered = false;
  #lastHeartbeat: Heartbeat | null = null;
  readonly #onHost = ({ powered }: { powered: boolean }) => {
    this.#setPowered(powered);
    this.bus.publish('host.power', { power: powered ? 'on' : 'off' });
  };

  constructor(
    private readonly bs: BootSwitchSystem,
    private readonly bus: EventBus,
    private readonly metrics: Metrics,
  ) {}

  get powered(): boolean {
    return this.#powered;
  }

  get lastHeartbeat(): Heartbeat | null {
    return this.#lastHeartbeat;
  }

  async start(): Promise<void> {
    this.bs.events.on('host', this.#onHost);
    this.#setPowered(await this.bs.bootSwitch.hostPowered());
  }

  stop(): void {
    this.bs.events.off('host', this.#onHost);
  }

  /** The host says it runs (from `bay`, when it knows): recorded, published, and told to the failover machine. */
  async heartbeat(source: string, bay: Bay | null = null): Promise<void> {
    this.#lastHeartbeat = { at: new Date().toISOString(), bay, source };
    this.bus.publish('host.heartbeat', { bay, source });
    await this.bs.failover.heartbeat();
  }

  /** The host's agent says its OS is shutting down cleanly: published, and told to the failover machine (not a failed boot). */
  async shuttingDown(source: string, bay: Bay | null = null): Promise<void> {
    this.bus.publish('host.shutting-down', { bay, source });
    await this.bs.failover.hostShuttingDown();
  }

  #setPowered(on: boolean): void {
    this.#powered = on;
    this.metrics.hostPowered.set(on ? 1 : 0);
  }
}
