/**
 * Which bay is active and which is standby: the one place that derives roles.
 * Roles live in two places (the pair state says which drive is active, the
 * failover machine which bay): every failover the machine reports is
 * recorded in the pair state (`recordSwap`), and the machine hears from every
 * copy whether the standby is consistent (`markConsistent`), so neither can
 * fail over to a half-written copy.
 */
import { existsSync } from 'node:fs';
import { RefusedError } from '../../src/errors.ts';
import { identityOf, locateDrive, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { PairStore, effectiveStandbyState, pairOfDrives, recordFailover, type PairRecord } from '../../src/sync/index.ts';
import type { Bay, BootSwitchSystem } from '../../src/bootswitch/index.ts';
import type { EventBus } from './events.ts';
import type { BayName } from './pair-config.ts';
import type { Logger } from 'pino';

export const other = (b: Bay): Bay => (b === 'A' ? 'B' : 'A');

export type StandbyStateView = 'consistent' | 'syncing' | 'inconsistent';

/** Where each bay's drive is and how to open it: the rig's business. */
export interface RigBays {
  /** Path of the drive in the bay, or null when the bay is empty. */
  path(bay: BayName): string | null;
  openDevice?: (loc: DriveLocation, options: OpenDriveOptions) => Promise<BlockDevice>;
}

/** A pair's two drives by switch position (A: the pair's first bay, B: its second). */
export interface DriveBays {
  path(bay: Bay): string | null;
  openDevice?: (loc: DriveLocation, options: OpenDriveOptions) => Promise<BlockDevice>;
  /** The physical bay at a position, for messages (the boot pair's positions are its bays). */
  name?(bay: Bay): BayName;
}

/**
 * What roles need from a pair's switching: which position the relays give
 * the host (the roles when the pair state cannot tell), and the ears of
 * whoever decides failover (the boot pair's failover machine).
 */
export interface PairSwitch {
  readonly selected: Bay;
  /** Whether the drive at a position is a consistent copy (never while a copy writes it). */
  markConsistent(bay: Bay, consistent: boolean): Promise<void>;
  /** A new drive went into the position (re-protect pairs it anew). */
  driveReplaced(bay: Bay): Promise<void>;
}

/** The boot pair's switch: the failover machine of the boot switch. */
export function failoverSwitch(bs: BootSwitchSystem): PairSwitch {
  return {
    get selected() {
      return bs.failover.state.active;
    },
    async markConsistent(bay, consistent) {
      if (bs.failover.state.consistent[bay] !== consistent) await bs.failover.dispatch({ type: 'consistency', bay, consistent });
    },
    async driveReplaced(bay) {
      await bs.failover.dispatch({ type: 'drive-replaced', bay });
    },
  };
}

export interface RoleView {
  active: Bay;
  standby: Bay;
  pair: PairRecord | undefined;
  store: PairStore;
}

export class Roles {
  #keys = new Map<string, string>();

  constructor(
    readonly stateDir: string,
    readonly bays: DriveBays,
    readonly sw: PairSwitch,
    readonly bus: EventBus,
    readonly log: Logger,
  ) {}

  /** The identity key of the drive in a bay (the pair state's name for it). */
  keyOf(bay: Bay): string | null {
    const path = this.bays.path(bay);
    if (!path || !existsSync(path)) return null;
    let key = this.#keys.get(path);
    if (!key) {
      key = identityOf(locateDrive(path)).key;
      this.#keys.set(path, key);
    }
    return key;
  }

  /** The pair of the drives in the bays: with standby rotation, the pair of the standby that is in its bay now. */
  pair(store = new PairStore(this.stateDir)): PairRecord | undefined {
    const a = this.keyOf('A');
    const b = this.keyOf('B');
    const both = a && b ? pairOfDrives(store.pairs(), a, b) : undefined;
    if (both) return both;
    for (const bay of ['A', 'B'] as const) {
      const key = this.keyOf(bay);
      const p = key ? store.pairOf(key) : undefined;
      if (p) return p;
    }
    return undefined;
  }

  /** Active and standby bays: from the pair state when paired, else from the relays. */
  current(store = new PairStore(this.stateDir)): RoleView {
    const pair = this.pair(store);
    let active: Bay = this.sw.selected;
    if (pair) {
      if (this.keyOf('A') === pair.activeKey) active = 'A';
      else if (this.keyOf('B') === pair.activeKey) active = 'B';
      else if (this.keyOf('A') === pair.standbyKey) active = 'B';
      else if (this.keyOf('B') === pair.standbyKey) active = 'A';
    }
    return { active, standby: other(active), pair, store };
  }

  /** The standby's state as the pair state has it; a drive the pair does not know is inconsistent. */
  standbyState(view: RoleView = this.current()): StandbyStateView {
    const { standby, pair, store } = view;
    if (!pair || this.keyOf(standby) !== pair.standbyKey) return 'inconsistent';
    return effectiveStandbyState(store, pair);
  }

  /** The generation of the data in a bay's drive, or null when the pair does not know the drive. */
  generation(bay: Bay, pair: PairRecord | undefined): number | null {
    const k = this.keyOf(bay);
    return pair && k && pair.drives[k] ? pair.drives[k]!.generation : null;
  }

  /** The physical bay at a position (A and B for the boot pair, e.g. C and D for a data pair). */
  name(bay: Bay): BayName {
    return this.bays.name?.(bay) ?? bay;
  }

  /** The path of the drive in a bay; RefusedError when the bay is empty. */
  require(bay: Bay, role: string): string {
    const p = this.bays.path(bay);
    if (!p) throw new RefusedError(`bay ${this.name(bay)} (the ${role}) holds no drive`, { hint: 'insert the drive first' });
    return p;
  }

  /** The failover machine must never see a standby as consistent while a copy writes it. */
  async markConsistent(bay: Bay, consistent: boolean): Promise<void> {
    await this.sw.markConsistent(bay, consistent);
  }

  /**
   * The failover machine says `to` is active now: make the pair state agree
   * (idempotent). Returns the new generation, or null when nothing was recorded.
   */
  recordSwap(to: Bay, why: string): number | null {
    const store = new PairStore(this.stateDir);
    const pair = this.pair(store);
    const key = this.keyOf(to);
    if (!pair || !key || pair.activeKey === key) return null;
    try {
      const r = recordFailover(this.stateDir, pair.id);
      // `pairRecord`: the recorded pair's id (a data pair's log already carries its config id as `pair`).
      this.log.info({ pairRecord: pair.id, active: this.name(to), generation: r.generation, why }, 'roles swapped in the pair state');
      return r.generation;
    } catch (e) {
      this.bus.publish('alert', { level: 'critical', code: 'roles-not-recorded', message: `bay ${this.name(to)} boots now but the pair state could not record it: ${(e as Error).message}` });
      return null;
    }
  }
}
