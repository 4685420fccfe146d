/**
 * What the controller knows about its drive pairs: both identities, roles,
 * generations and the standby's state. Kept in the state directory in two
 * checksummed copies (durable-file.ts), so a torn write is detected and the
 * other copy used.
 *
 * Every change is a transaction (rule 9): under the state directory's
 * transaction lock the file is read again, the change applied to what it
 * holds now, and both copies written durably. Several processes (the daemon,
 * CLIs, copies of different pairs) may share a state directory without
 * losing each other's changes. A PairStore's own view is a snapshot, fresh
 * after its last transaction.
 *
 * Generations: a drive's `lineage` lists the generations its data descends
 * from, newest last. A completed sync gives both drives a new generation (the
 * target takes the source's lineage); a drive that becomes active gets a new
 * one. A copy may go onto a target only when the target's generation is in
 * the source's lineage: otherwise the target holds changes the source never
 * saw (both moved on after a failover) and the copy would lose them.
 *
 * Standby rotation: one active drive may have several standbys, each its own
 * pair record. Generation numbers are handed out across the pairs that share
 * drives (never twice among them), and a drive's generation and lineage are the
 * same in every record that holds it, so the lineages of two standbys of one
 * active drive can be compared: a standby synced after another one's last
 * sync holds data the other's lineage does not contain.
 */
import { join } from 'node:path';
import { homedir } from 'node:os';
import { mkdirSync, statSync } from 'node:fs';
import { BadInputError, BusyError, DeviceError } from '../errors.ts';
import { DurableRecord, type WriteOptions } from '../durable-file.ts';
import { createHash } from 'node:crypto';
import { pairLockHeld, withStateTransaction } from './pair-lock.ts';
import type { CopyPlan } from './copy-plan.ts';
import { pairStateShapeProblem } from './pair-state-shape.ts';

export type StandbyState = 'consistent' | 'syncing' | 'inconsistent';

export interface DriveRecord {
  readonly key: string;
  sizeBytes: number;
  logicalSectorSize: number;
  /** Where it was last seen, for messages only; drives are matched by key. */
  lastPath: string;
  generation: number;
  lineage: number[];
}

export interface LastSync {
  readonly at: string;
  readonly kind: 'clone' | 'sync' | 'restore' | 'recover';
  readonly mode: string;
  readonly result: 'done' | 'done-with-errors' | 'failed' | 'cancelled';
  readonly from: string;
  readonly to: string;
  readonly bytesWritten: number;
  readonly seconds: number;
  readonly message?: string;
  readonly partitions?: number[];
}

export interface PairRecord {
  readonly id: string;
  readonly createdAt: string;
  activeKey: string;
  standbyKey: string;
  drives: Record<string, DriveRecord>;
  /** Highest generation handed out in this pair. */
  counter: number;
  /** State of the drive that is being (or was last) written by a copy. */
  standbyState: StandbyState;
  /** The copy that left the standby not consistent, while it is not. */
  pendingCopy?: PendingCopy;
  lastSync?: LastSync;
  lastSuccess?: string;
}

/** A copy that started and has not completed or been rolled back. */
export interface PendingCopy {
  kind: 'clone' | 'sync' | 'restore';
  from: string;
  to: string;
  startedAt: string;
  journaled: boolean;
  /** Its whole plan, recorded before its first write: only a request with the same plan digest resumes it. */
  plan?: CopyPlan;
}

interface PairsFile {
  pairs: PairRecord[];
}

export function defaultStateDir(): string {
  if (process.env.DPSR_STATE_DIR) return process.env.DPSR_STATE_DIR;
  if (typeof process.getuid === 'function' && process.getuid() === 0) return '/var/lib/dpsr';
  return join(homedir(), '.local/state/dpsr');
}

const LINEAGE_KEPT = 64;

/**
 * The pair a drive key belongs to. A standby is in one pair, an active drive
 * with several standbys in several: the pair with a copy writing the drive
 * comes first, then the one where it is the standby, then the first where it
 * is active.
 */
export function pairHolding<P extends Pick<PairRecord, 'activeKey' | 'standbyKey' | 'pendingCopy'>>(pairs: readonly P[], key: string): P | undefined {
  return pairs.find((p) => p.pendingCopy?.to === key) ?? pairs.find((p) => p.standbyKey === key) ?? pairs.find((p) => p.activeKey === key);
}

/** The pair of exactly these two drives (either role), if recorded. */
export function pairOfDrives<P extends Pick<PairRecord, 'activeKey' | 'standbyKey'>>(pairs: readonly P[], keyA: string, keyB: string): P | undefined {
  return pairs.find((p) => (p.activeKey === keyA && p.standbyKey === keyB) || (p.activeKey === keyB && p.standbyKey === keyA));
}

/** The pairs whose active drive is `activeKey`: one per standby of a rotation. */
export function standbysOf<P extends Pick<PairRecord, 'activeKey'>>(pairs: readonly P[], activeKey: string): P[] {
  return pairs.filter((p) => p.activeKey === activeKey);
}

/**
 * The pairs that share drives with `pair`, directly or through others (an
 * active drive and its standbys, also after failovers), `pair` included:
 * the pairs whose generations must be comparable.
 */
export function rotationGroup(pair: PairRecord, all: readonly PairRecord[]): PairRecord[] {
  const keys = new Set(Object.keys(pair.drives));
  const group = new Set<PairRecord>([pair]);
  for (let grown = true; grown; ) {
    grown = false;
    for (const p of all) {
      if (group.has(p) || p.id === pair.id || !Object.keys(p.drives).some((k) => keys.has(k))) continue;
      group.add(p);
      for (const k of Object.keys(p.drives)) keys.add(k);
      grown = true;
    }
  }
  return [...group];
}

/** The next generation number: above every counter and generation recorded in `pairs`. */
export function nextGeneration(pairs: readonly PairRecord[]): number {
  let max = 0;
  for (const p of pairs) {
    max = Math.max(max, p.counter);
    for (const d of Object.values(p.drives)) max = Math.max(max, d.generation, ...d.lineage);
  }
  return max + 1;
}

export function pairIdFor(keyA: string, keyB: string): string {
  return createHash('sha256').update([keyA, keyB].sort().join('\n')).digest('hex').slice(0, 12);
}

/** A pair not yet recorded, with `active` as the source of its first clone. */
export function newPairRecord(active: Omit<DriveRecord, 'generation' | 'lineage'>, standby: Omit<DriveRecord, 'generation' | 'lineage'>): PairRecord {
  return {
    id: pairIdFor(active.key, standby.key),
    createdAt: new Date().toISOString(),
    activeKey: active.key,
    standbyKey: standby.key,
    drives: {
      [active.key]: { ...active, generation: 1, lineage: [1] },
      [standby.key]: { ...standby, generation: 0, lineage: [0] },
    },
    counter: 1,
    standbyState: 'inconsistent',
  };
}

/** The pairs as a transaction sees them: read under the lock, written when it ends. */
export class PairsTransaction {
  constructor(private readonly file: PairsFile) {}

  pairs(): readonly PairRecord[] {
    return this.file.pairs;
  }

  /** The pair holding this drive key, if any (see pairHolding for an active drive with several standbys). */
  pairOf(key: string): PairRecord | undefined {
    return pairHolding(this.file.pairs, key);
  }

  byId(id: string): PairRecord | undefined {
    return this.file.pairs.find((p) => p.id === id);
  }

  /** Records a new pair with `active` as the source of its first clone. */
  create(active: Omit<DriveRecord, 'generation' | 'lineage'>, standby: Omit<DriveRecord, 'generation' | 'lineage'>): PairRecord {
    return this.insert(newPairRecord(active, standby));
  }

  /** Records `pair`, replacing a record of the same id. */
  insert(pair: PairRecord): PairRecord {
    this.file.pairs = this.file.pairs.filter((p) => p.id !== pair.id).concat(pair);
    return pair;
  }

  remove(id: string): void {
    this.file.pairs = this.file.pairs.filter((p) => p.id !== id);
  }
}

export class PairStore {
  readonly file: string;
  /** Problems found reading the two copies (torn, edited): shown by `dpsr status`. */
  problems: string[];
  readonly #record: DurableRecord<PairsFile>;
  #state: PairsFile;

  /**
   * `options.create: false` is for readers (`dpsr status`, a lookup that may fail on bad input):
   * a missing state directory reads as no pairs and is created only by the first write.
   */
  constructor(
    readonly dir: string,
    options: { create?: boolean } = {},
  ) {
    if (!dir) throw new BadInputError('no state directory given', { hint: 'pass --state-dir DIR or set DPSR_STATE_DIR' });
    if (options.create !== false) this.#ensureDir();
    // The shape is checked after the checksum (#read), so a wrong shape is reported as such, not as a torn copy.
    this.#record = new DurableRecord(dir, 'pairs', (raw) => raw as PairsFile);
    this.file = this.#record.path;
    const read = this.#read();
    this.#state = read.state;
    this.problems = read.problems;
  }

  /** A file given as the state directory is a wrong option, not damaged state nor a device fault. */
  #refuseNonDirectory(): void {
    const st = statSync(this.dir, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) throw new BadInputError(`the state directory ${this.dir} is not a directory`, { hint: 'pass a directory with --state-dir (or DPSR_STATE_DIR); nothing was changed' });
  }

  #ensureDir(): void {
    this.#refuseNonDirectory();
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new DeviceError(`cannot create the state directory ${this.dir}: ${(e as Error).message}`, { hint: 'pass a writable --state-dir or set DPSR_STATE_DIR', cause: e });
    }
  }

  #read(): { state: PairsFile; problems: string[] } {
    this.#refuseNonDirectory();
    let loaded;
    try {
      loaded = this.#record.load();
    } catch (e) {
      throw new DeviceError(`both copies of the pair state in ${this.dir} are damaged: ${(e as Error).message}`, {
        hint: 'nothing was changed; inspect the files, or move them away to start over (the drives will have to be paired again with `dpsr clone`)',
        cause: e,
      });
    }
    const wrong = loaded ? pairStateShapeProblem({ sequence: loaded.seq, ...loaded.data }) : undefined;
    if (wrong) {
      throw new BadInputError(`the pair state ${this.file} is not in dpsr's format: ${wrong}`, {
        hint: 'nothing was changed; undo the edit (or put back pairs.json.bak if it is whole), or move both files away to start over (the drives will have to be paired again with `dpsr clone`)',
      });
    }
    return { state: loaded?.data ?? { pairs: [] }, problems: loaded?.problems ?? [] };
  }

  pairs(): readonly PairRecord[] {
    return this.#state.pairs;
  }

  pairDir(pair: PairRecord | string): string {
    const dir = join(this.dir, 'pairs', typeof pair === 'string' ? pair : pair.id);
    this.#ensureDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** The pair holding this drive key, if any (see pairHolding for an active drive with several standbys). */
  pairOf(key: string): PairRecord | undefined {
    return pairHolding(this.#state.pairs, key);
  }

  /** The pair of a copy from `sourceKey` onto `targetKey`: the pair of both drives, else the target's. */
  pairFor(sourceKey: string, targetKey: string): PairRecord | undefined {
    return pairOfDrives(this.#state.pairs, sourceKey, targetKey) ?? pairHolding(this.#state.pairs, targetKey);
  }

  byId(id: string): PairRecord | undefined {
    return this.#state.pairs.find((p) => p.id === id);
  }

  /**
   * One change of the pair state: exclusive (the state directory's
   * transaction lock), re-read, `change` applied to what the file holds now,
   * durable write of both copies. When `change` throws, nothing is written.
   * `options.reserve` lets a recovery use the space reserve on a full disk.
   * Returns what `change` returns; this store's snapshot is the new state.
   */
  transact<R>(what: string, change: (tx: PairsTransaction) => R, options: WriteOptions = {}): R {
    this.#ensureDir();
    return withStateTransaction(this.dir, what, () => {
      const read = this.#read();
      const fresh = read.state;
      const result = change(new PairsTransaction(fresh));
      this.#record.save(fresh, options);
      this.#state = fresh;
      this.problems = read.problems;
      return result;
    });
  }

  /** A transaction on one pair; refused when another process forgot it meanwhile. Returns the pair as written. */
  update(pairId: string, what: string, change: (pair: PairRecord) => void, options?: WriteOptions): PairRecord {
    return this.transact(
      what,
      (tx) => {
        const pair = tx.byId(pairId);
        if (!pair) throw new BusyError(`pair ${pairId} was forgotten by another process while ${what} ran`, { hint: 'run `dpsr status` to see the recorded pairs' });
        change(pair);
        return pair;
      },
      options,
    );
  }

  /** Drops a pair's record; refused while a copy or recovery of it runs. */
  forget(pairId: string): void {
    this.transact(`forget pair ${pairId}`, (tx) => {
      if (pairLockHeld(this.dir, pairId)) throw new BusyError(`a copy or recovery of pair ${pairId} is running right now`, { hint: 'wait for it to finish or stop it, then forget the pair' });
      tx.remove(pairId);
    });
  }
}

/** May data of `source` go over `target` without losing anything the target alone holds? */
export function descendsFrom(source: DriveRecord, target: DriveRecord): boolean {
  return source.lineage.includes(target.generation);
}

/**
 * A completed copy: the target now holds the source's data under a new
 * generation. `all` are every pair of the state directory (the transaction's
 * view, `pair` among them): the number is new across the pairs that share
 * drives with `pair` (its rotation group), and the drives' new generation and
 * lineage are written into every record of them.
 */
export function recordCompletedCopy(pair: PairRecord, sourceKey: string, targetKey: string, all: readonly PairRecord[] = [pair]): number {
  const source = pair.drives[sourceKey]!;
  const target = pair.drives[targetKey]!;
  const generation = nextGeneration(rotationGroup(pair, all));
  pair.counter = generation;
  source.lineage = [...source.lineage, generation].slice(-LINEAGE_KEPT);
  source.generation = generation;
  target.lineage = [...source.lineage];
  target.generation = generation;
  shareDriveRecord(all, source);
  shareDriveRecord(all, target);
  return generation;
}

/** The drive `key` becomes the one the host boots and writes: its data moves on from here. */
export function recordBecameActive(pair: PairRecord, key: string, all: readonly PairRecord[] = [pair]): number {
  const drive = pair.drives[key]!;
  const generation = nextGeneration(rotationGroup(pair, all));
  pair.counter = generation;
  drive.lineage = [...drive.lineage, generation].slice(-LINEAGE_KEPT);
  drive.generation = generation;
  shareDriveRecord(all, drive);
  return generation;
}

/** A drive's data is the same whichever pair records it: its generation and lineage go into every record of it. */
function shareDriveRecord(all: readonly PairRecord[], drive: DriveRecord): void {
  for (const p of all) {
    const d = p.drives[drive.key];
    if (!d || d === drive) continue;
    d.generation = drive.generation;
    d.lineage = [...drive.lineage];
  }
}

/**
 * A drive about to be recorded in a new pair as it is known from the other
 * pairs (a second standby's active drive keeps its generation and lineage),
 * or undefined when no pair knows it.
 */
export function knownDrive(pairs: readonly PairRecord[], key: string): DriveRecord | undefined {
  for (const p of pairs) if (p.drives[key]) return p.drives[key];
  return undefined;
}

/**
 * After a failover of `pair`, the other standbys of its old active drive
 * follow the host to the new active drive: their pairs get the new active
 * drive's record (generation and lineage as in `pair`), so re-protecting the
 * new system onto a rotated standby is an ordinary sync, and the generation
 * check decides whether the standby's data is contained in the new active
 * drive's (it is not when the standby was synced after the failed-over one).
 * Returns the ids of the pairs that moved.
 */
export function moveStandbysToNewActive(pair: PairRecord, oldActiveKey: string, all: PairRecord[]): string[] {
  const moved: string[] = [];
  const active = pair.drives[pair.activeKey]!;
  for (const p of all) {
    if (p === pair || p.id === pair.id || p.activeKey !== oldActiveKey || p.standbyKey === pair.activeKey) continue;
    delete p.drives[oldActiveKey];
    p.drives[active.key] = { ...active, lineage: [...active.lineage] };
    p.activeKey = active.key;
    moved.push(p.id);
  }
  return moved;
}
