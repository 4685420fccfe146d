/**
 * The controller's drive pairs as it runs them: each with its own roles,
 * sync window and copy jobs on the shared job runner. The boot pair's parts
 * are the ones the failover machine and the boot switch listen to; a data
 * pair has its data port's switch and its own failover, and its roles come
 * from its pair state (the relays where the pair state cannot tell).
 */
import { BadInputError, NotFoundError } from '../../src/errors.ts';
import type { Bay, DataPortSwitch } from '../../src/bootswitch/index.ts';
import type { CopyJobs } from './copy-jobs.ts';
import type { DataPairFailover } from './pair-failover.ts';
import { bayAt, type BayName, type PairConfig } from './pair-config.ts';
import type { DriveBays, PairSwitch, RigBays, Roles } from './roles.ts';
import type { SyncWindow } from './sync-window.ts';

export class DrivePair {
  constructor(
    readonly config: PairConfig,
    readonly roles: Roles,
    readonly window: SyncWindow,
    readonly copies: CopyJobs,
    /** A data pair's failover on its data port; null for the boot pair (the failover machine's). */
    readonly failover: DataPairFailover | null = null,
  ) {}

  get id(): string {
    return this.config.id;
  }

  /** The physical bays of the pair's active and standby drive. */
  bays(): { active: BayName; standby: BayName } {
    const { active, standby } = this.roles.current();
    return { active: this.roles.name(active), standby: this.roles.name(standby) };
  }
}

/** A pair's drives by position, on the rig's bays. */
export function pairBays(rig: RigBays, pair: PairConfig): DriveBays {
  return {
    path: (pos) => rig.path(bayAt(pair, pos)),
    openDevice: rig.openDevice,
    name: (pos) => bayAt(pair, pos),
  };
}

/**
 * A data pair's switch as roles see it: the position its data port's relays
 * give the host, and which copy is consistent as the copies report it (the
 * pair's failover asks the pair state itself).
 */
export class PortPairSwitch implements PairSwitch {
  readonly consistent: Record<Bay, boolean> = { A: true, B: false };

  constructor(private readonly port: DataPortSwitch) {}

  get selected(): Bay {
    return this.port.sw.bay ?? 'A';
  }

  async markConsistent(bay: Bay, consistent: boolean): Promise<void> {
    this.consistent[bay] = consistent;
  }

  async driveReplaced(bay: Bay): Promise<void> {
    this.consistent[bay] = false;
  }
}

export class Pairs {
  readonly boot: DrivePair;

  constructor(readonly list: DrivePair[]) {
    this.boot = list.find((p) => p.config.role === 'boot')!;
  }

  get ids(): string[] {
    return this.list.map((p) => p.id);
  }

  /** The pair with this id; NotFoundError naming the pairs there are. */
  get(id: string): DrivePair {
    const p = this.list.find((x) => x.id === id);
    if (!p) throw new NotFoundError(`no pair ${JSON.stringify(id)}; the pairs are ${this.ids.join(', ')}`, { hint: 'GET /api/pairs lists them' });
    return p;
  }

  /**
   * The pair a route without one means: the only one. With several the
   * request is ambiguous, and the error names the pairs and the route to use.
   */
  only(route: string): DrivePair {
    if (this.list.length === 1) return this.list[0]!;
    throw new BadInputError(`this controller has ${this.list.length} pairs (${this.ids.join(', ')}): ${route} does not say which`, {
      hint: `use ${route.replace('/api/', '/api/pairs/{id}/')} with one of ${this.ids.join(', ')}`,
    });
  }
}
