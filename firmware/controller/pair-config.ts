/**
 * The drive pairs one controller protects (the white paper's three-drive
 * scheme: a small system drive with its standby, a data drive with its own).
 * Each pair names two bays; the first is where its active drive starts. The
 * boot pair holds the host's boot drive and is wired to bays A and B (the
 * boot switch and the failover machine); a data pair holds one of the
 * host's data disks on the two bays the wiring gives one data port (C and
 * D, E and F, or G and H), switched by that port's relays.
 * Without a `pairs` key the controller has the one boot pair on bays A and B,
 * exactly as before pairs existed.
 */
import { DATA_PORTS, type Bay } from '../../src/bootswitch/index.ts';
import { fail } from './schema.ts';

/** Physical drive bays: two per pair, A and B the boot pair's. */
export const BAY_NAMES = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'] as const;
export type BayName = (typeof BAY_NAMES)[number];

export const PAIR_ROLES = ['boot', 'data'] as const;
export type PairRole = (typeof PAIR_ROLES)[number];

export interface PairConfig {
  /** Short name used in routes (`/api/pairs/{id}/…`), metrics labels and events. */
  id: string;
  label: string;
  /** [first, second]: the first bay is position A of the pair's switch, the second position B. */
  bays: [BayName, BayName];
  role: PairRole;
  /** How the pair's drives reach the host: switched (direct SATA through the pair's muxes). */
  mode: 'switched';
  /** Bays whose copies share this bridge bandwidth budget run one at a time even when parallel copies are allowed. */
  bridge: string;
  /** When flows are meant to sync and verify the pair; hints for the Node-RED examples and the operator, not a timer of the daemon. */
  schedule: { sync?: string; verify?: string };
}

export const DEFAULT_PAIRS: PairConfig[] = [{ id: 'system', label: 'system drive', bays: ['A', 'B'], role: 'boot', mode: 'switched', bridge: 'usb', schedule: {} }];

export type RawPair = {
  id: string;
  label?: string;
  bays: BayName[];
  role?: PairRole;
  mode: 'switched';
  bridge: string;
  schedule?: { sync?: string; verify?: string };
};

/**
 * Cross-checks of the `pairs` list the schema cannot make: two bays per
 * pair, no bay or id twice, exactly one boot pair and it on bays A and B.
 * Throws BadInputError naming the key.
 */
export function resolvePairs(raw: RawPair[] | undefined): PairConfig[] {
  if (raw === undefined) return DEFAULT_PAIRS;
  if (raw.length === 0) fail('pairs', raw, 'at least one pair (or no pairs key: one boot pair on bays A and B)', 'config');
  const seenBays = new Map<string, string>();
  const seenIds = new Set<string>();
  const out = raw.map((p, i): PairConfig => {
    const key = `pairs[${i}]`;
    if (seenIds.has(p.id)) fail(`${key}.id`, p.id, 'an id no other pair has', 'config');
    seenIds.add(p.id);
    if (p.bays.length !== 2) fail(`${key}.bays`, p.bays, 'two different bays, e.g. ["C", "D"]', 'config');
    for (const b of p.bays) {
      if (seenBays.has(b)) fail(`${key}.bays`, p.bays, `bays no other pair uses (bay ${b} belongs to pair ${seenBays.get(b)})`, 'config');
      seenBays.set(b, p.id);
    }
    const bays = p.bays as [BayName, BayName];
    const onBootBays = bays[0] === 'A' && bays[1] === 'B';
    const role = p.role ?? (onBootBays ? 'boot' : 'data');
    if (role === 'boot' && !onBootBays) fail(`${key}.bays`, p.bays, '["A", "B"] for the boot pair: the boot switch and the failover machine are wired to bays A and B', 'config');
    if (role === 'data' && (bays.includes('A') || bays.includes('B'))) fail(`${key}.bays`, p.bays, 'bays C to H for a data pair: A and B hold the boot pair', 'config');
    if (role === 'data' && !DATA_PORTS.some(([c, d]) => bays[0] === c && bays[1] === d)) {
      fail(`${key}.bays`, p.bays, `the two bays of one host data port, first bay first: ${DATA_PORTS.map((d) => JSON.stringify(d).replace(',', ', ')).join(', ')} (the port's first bay is on the host with every relay released)`, 'config');
    }
    return { id: p.id, label: p.label ?? p.id, bays, role, mode: p.mode, bridge: p.bridge, schedule: { ...p.schedule } };
  });
  const boot = out.filter((p) => p.role === 'boot');
  if (boot.length !== 1) fail('pairs', raw.map((p) => p.id), `exactly one pair with role "boot" on bays ["A", "B"] (it holds the host's boot drive); found ${boot.length}`, 'config');
  return out;
}

/** Every bay the pairs use, in bay order. */
export function configuredBays(pairs: PairConfig[]): BayName[] {
  const used = new Set<string>(pairs.flatMap((p) => p.bays));
  return BAY_NAMES.filter((b) => used.has(b));
}

/** The data port a data pair's bays share (resolvePairs made sure they are one). */
export function portOf(pair: PairConfig): (typeof DATA_PORTS)[number] {
  return DATA_PORTS.find(([c]) => c === pair.bays[0])!;
}

/** The physical bay behind a pair's switch position (A: its first bay, B: its second). */
export function bayAt(pair: PairConfig, position: Bay): BayName {
  return pair.bays[position === 'A' ? 0 : 1];
}
