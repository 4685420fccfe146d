/**
 * The relays agree with the mode before anything serves or copies: in
 * inline mode both drives on the controller's bridges, in switched mode the
 * selected drive on the host's SATA port (BootSwitch.ensureLink). Relays
 * another mode or a power loss left are moved only with the host off; while
 * a powered host runs from the drive they connect, a warning says so and the
 * move is made when the host is next off.
 */
import type { Logger } from 'pino';
import type { BootSwitch, BootSwitchEmitter } from '../../src/bootswitch/index.ts';
import type { EventBus } from './events.ts';

export class HostLinkWatch {
  #waiting: string | null = null;
  #onHost: ((e: { powered: boolean }) => void) | null = null;

  /** `linked` runs once the relays agree after a wait (inline mode then serves the drive, unless the move's connect hook did). */
  /** `sw`: the boot switch or a data port's; `hostEvents`: where the host's power is heard. */
  constructor(
    private readonly sw: BootSwitch,
    private readonly hostEvents: BootSwitchEmitter,
    private readonly bus: EventBus,
    private readonly log: Logger,
    private readonly linked: (how: 'ready' | 'moved') => Promise<void> = async () => {},
  ) {}

  /** Why the relays do not agree with the mode yet, or null. */
  get waiting(): string | null {
    return this.#waiting;
  }

  /** Brings the relays to the mode now when the host is off; else waits for it to be off. Throws what the move throws. */
  async start(): Promise<'ready' | 'moved' | 'host-on'> {
    const link = await this.sw.ensureLink();
    if (link === 'host-on') this.#wait();
    return link;
  }

  stop(): void {
    if (this.#onHost) this.hostEvents.off('host', this.#onHost);
    this.#onHost = null;
  }

  #wait(): void {
    const bsw = this.sw;
    const bay = bsw.bay === null ? '?' : bsw.naming.bay(bsw.bay);
    this.#waiting =
      bsw.hostLink === 'export'
        ? `${bsw.naming.name}: the host runs with a drive on its SATA port (relays ${JSON.stringify(bsw.record.relays)}); the export of bay ${bay} starts once the host is off`
        : `${bsw.naming.name}: the relays do not connect bay ${bay} to the host (left by inline mode); they are switched once the host is off`;
    this.log.warn(this.#waiting);
    this.bus.publish('alert', { level: 'warning', code: 'host-link-waiting', message: `${this.#waiting}. Shut the host down, then power it on again` });
    this.#onHost = ({ powered }) => {
      if (powered) return;
      void bsw
        .ensureLink()
        .then(async (link) => {
          if (link === 'host-on') return;
          this.stop();
          this.#waiting = null;
          await this.linked(link);
        })
        .catch((e: Error) => this.log.error({ err: e }, 'the relays could not be brought to the mode; trying again when the host is next off'));
    };
    this.hostEvents.on('host', this.#onHost);
  }
}
