/**
 * The daemon's keep on the drives of its bays (rule 9): for as long as a
 * drive sits in a configured bay, dpsrd holds a keep on it (src/sync's
 * acquireDriveKeep), so a `dpsr clone`, `sync`, `restore`, `recover` or
 * `migrate` from any state directory, or another dpsrd's job, is refused
 * before it writes, naming this daemon; the daemon's own jobs write as
 * before. The keeps follow the bays: a drive pulled is let go, a drive
 * inserted is kept within a refresh.
 *
 * A keep cannot undo what happened while the daemon was down: a drive found
 * being written by another process when it is kept raises the critical alert
 * `drive-written-elsewhere`.
 */
import type { Logger } from 'pino';
import { locateDrive } from '../../src/sata-bridge/index.ts';
import { acquireDriveKeep, type DriveKeep } from '../../src/sync/index.ts';
import type { BayName } from './pair-config.ts';
import type { EventBus } from './events.ts';

const REFRESH_MS = 1000;

export class DriveKeeper {
  readonly #held = new Map<BayName, { path: string; keep: DriveKeep }>();
  #timer: NodeJS.Timeout | null = null;
  #url: string | null = null;
  #refreshing: Promise<void> = Promise.resolve();
  #started = false;
  /** The checks of arrived drives still running (onArrived). */
  readonly #checking = new Set<Promise<void>>();

  constructor(
    private readonly bays: readonly BayName[],
    private readonly pathOf: (bay: BayName) => string | null,
    private readonly stateDir: string,
    private readonly bus: EventBus,
    private readonly log: Logger,
    /** Called for a drive that came into a bay after the start (not awaited by the refresh; start-up checks its own). */
    private readonly onArrived: (bay: BayName) => Promise<void> = async () => {},
  ) {}

  async start(): Promise<void> {
    await this.refresh();
    this.#started = true;
    this.#timer = setInterval(() => void this.refresh(), REFRESH_MS);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#refreshing;
    for (const { keep } of this.#held.values()) keep.release();
    this.#held.clear();
  }

  /** The daemon's address, told to a refused writer so it can use the API instead. */
  setUrl(url: string): void {
    this.#url = url;
    for (const { keep } of this.#held.values()) keep.owner.url = url;
  }

  /** The bays whose drive is kept now, with its path. */
  kept(): Partial<Record<BayName, string>> {
    return Object.fromEntries([...this.#held].map(([bay, h]) => [bay, h.path]));
  }

  /**
   * Resolves once every drive now in a bay was noticed and its arrival check
   * (onArrived) is done. A job that writes a drive waits for it: the check
   * reads the drive for a moment, and a write lock asked for meanwhile would
   * be refused as busy by this daemon's own check.
   */
  async arrivalsChecked(): Promise<void> {
    if (!this.#started) return;
    await this.refresh();
    await Promise.all(this.#checking);
  }

  /** Keeps the drive now in each bay, lets go of drives that left. Serialized: one refresh at a time. */
  refresh(): Promise<void> {
    this.#refreshing = this.#refreshing.then(() => this.#refresh());
    return this.#refreshing;
  }

  async #refresh(): Promise<void> {
    for (const bay of this.bays) {
      const path = this.pathOf(bay);
      const cur = this.#held.get(bay);
      if (cur && cur.path === path) continue;
      cur?.keep.release();
      this.#held.delete(bay);
      if (!path) continue;
      let keep: DriveKeep;
      try {
        keep = await acquireDriveKeep(locateDrive(path), `dpsrd of the state directory ${this.stateDir} (bay ${bay})`, { bay, ...(this.#url ? { url: this.#url } : {}) });
      } catch (e) {
        // A drive that vanished between the bay's listing and the keep is kept at the next refresh, if it comes back.
        this.log.warn({ err: e, bay, path }, 'the drive in the bay could not be kept against other writers');
        continue;
      }
      this.#held.set(bay, { path, keep });
      if (this.#started) {
        const check = this.onArrived(bay).catch((e: Error) => this.log.warn({ err: e, bay }, 'the check of the drive that came into the bay failed'));
        this.#checking.add(check);
        void check.finally(() => this.#checking.delete(check));
      }
      if (keep.writtenBy) {
        this.bus.publish('alert', {
          level: 'critical',
          code: 'drive-written-elsewhere',
          bay,
          message: `the drive in bay ${bay} (${path}) is being written by ${keep.writtenBy}, outside this daemon: whatever it held may be gone; once that process ends, verify the pair (POST /api/verify) before trusting the drive`,
        });
      }
      if (keep.alsoKeptBy.length) {
        this.bus.publish('alert', {
          level: 'critical',
          code: 'drive-written-elsewhere',
          bay,
          message: `the drive in bay ${bay} (${path}) is also in a bay of ${keep.alsoKeptBy.join(', ')}: each daemon refuses the other's writes; give each daemon its own drives`,
        });
      }
    }
  }
}
