/**
 * The controller's drive pairs as it runs them: each with its own roles,
 * sync window and copy jobs on the shared job runner. The boot pair's parts
 * are the ones the failover machine and the boot switch listen to; a data
 * pair's roles come from its pair state alone.
 */
import { BadInputError, NotFoundError } from '../../src/errors.ts';
import type { Bay } from '../../src/bootswitch/index.ts';
import type { CopyJobs } from './copy-jobs.ts';
import { bayAt, type BayName, type PairConfig } from './pair-config.ts';
import type { DriveBays, PairSwitch, RigBays, Roles } from './roles.ts';
import type { SyncWindow } from './sync-window.ts';

export class DrivePair {
  constructor(
    readonly config: PairConfig,
    readonly roles: Roles,
    readonly window: SyncWindow,
    readonly copies: CopyJobs,
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
 * A data pair's switch while the controller drives no relays for it: the
 * host keeps the pair's first bay, and nobody but the pair state decides
 * which copy is consistent.
 */
export class FixedPairSwitch implements PairSwitch {
  readonly selected: Bay = 'A';
  readonly consistent: Record<Bay, boolean> = { A: true, B: false };

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
