/**
 * What the controller knows about its drive pairs: both identities, roles,
 * generations and the standby's state. Kept in the state directory in two
 * checksummed copies, so a torn write is detected and the other copy used.
 *
 * Generations: a drive's `lineage` lists the generations its data descends
 * from, newest last. A completed sync gives both drives a new generation (the
 * target takes the source's lineage); a drive that becomes active gets a new
 * one. A copy may go onto a target only when the target's generation is in
 * the source's lineage: otherwise the target holds changes the source never
 * saw (both moved on after a failover) and the copy would lose them.
 */
import { join } from 'node:path';
import { homedir } from 'node:os';
import { mkdirSync } from 'node:fs';
import { BadInputError, DeviceError } from '../errors.ts';
import { readJsonTwoCopies, writeJsonTwoCopies } from '../durable-file.ts';
import { createHash } from 'node:crypto';
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

interface StateFile {
  sequence: number;
  pairs: PairRecord[];
}

export function defaultStateDir(): string {
  if (process.env.DPSR_STATE_DIR) return process.env.DPSR_STATE_DIR;
  if (typeof process.getuid === 'function' && process.getuid() === 0) return '/var/lib/dpsr';
  return join(homedir(), '.local/state/dpsr');
}

const LINEAGE_KEPT = 64;

export function pairIdFor(keyA: string, keyB: string): string {
  return createHash('sha256').update([keyA, keyB].sort().join('\n')).digest('hex').slice(0, 12);
}

export class PairStore {
  readonly file: string;
  /** Problems found reading the two copies (torn, edited): shown by `dpsr status`. */
  readonly problems: string[];
  private state: StateFile;

  constructor(readonly dir: string) {
    if (!dir) throw new BadInputError('no state directory given', { hint: 'pass --state-dir DIR or set DPSR_STATE_DIR' });
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new DeviceError(`cannot create the state directory ${dir}: ${(e as Error).message}`, { hint: 'pass a writable --state-dir or set DPSR_STATE_DIR', cause: e });
    }
    this.file = join(dir, 'pairs.json');
    const read = readJsonTwoCopies<StateFile>(this.file);
    this.problems = read.problems;
    this.state = read.value ?? { sequence: 0, pairs: [] };
    if (read.problems.length === 2 && !read.value) {
      throw new DeviceError(`both copies of the pair state in ${dir} are damaged: ${read.problems.join('; ')}`, {
        hint: 'nothing was changed; inspect the files, or move them away to start over (the drives will have to be paired again with `dpsr clone`)',
      });
    }
    const wrong = read.value === undefined ? undefined : pairStateShapeProblem(read.value);
    if (wrong) {
      throw new BadInputError(`the pair state ${this.file} is not in dpsr's format: ${wrong}`, {
        hint: 'nothing was changed; undo the edit (or put back pairs.json.bak if it is whole), or move both files away to start over (the drives will have to be paired again with `dpsr clone`)',
      });
    }
  }

  pairs(): readonly PairRecord[] {
    return this.state.pairs;
  }

  pairDir(pair: PairRecord): string {
    const dir = join(this.dir, 'pairs', pair.id);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** The pair holding this drive key, if any. */
  pairOf(key: string): PairRecord | undefined {
    return this.state.pairs.find((p) => p.activeKey === key || p.standbyKey === key);
  }

  byId(id: string): PairRecord | undefined {
    return this.state.pairs.find((p) => p.id === id);
  }

  /** Records a new pair with `active` as the source of its first clone. */
  create(active: Omit<DriveRecord, 'generation' | 'lineage'>, standby: Omit<DriveRecord, 'generation' | 'lineage'>): PairRecord {
    const pair: PairRecord = {
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
    this.state.pairs = this.state.pairs.filter((p) => p.id !== pair.id).concat(pair);
    return pair;
  }

  remove(id: string): void {
    this.state.pairs = this.state.pairs.filter((p) => p.id !== id);
  }

  /** Persists every change made to the records (two copies, durable). */
  save(): void {
    this.state.sequence++;
    writeJsonTwoCopies(this.file, this.state);
  }
}

/** May data of `source` go over `target` without losing anything the target alone holds? */
export function descendsFrom(source: DriveRecord, target: DriveRecord): boolean {
  return source.lineage.includes(target.generation);
}

/** A completed copy: the target now holds the source's data under a new generation. */
export function recordCompletedCopy(pair: PairRecord, sourceKey: string, targetKey: string): number {
  const source = pair.drives[sourceKey]!;
  const target = pair.drives[targetKey]!;
  const generation = ++pair.counter;
  source.lineage = [...source.lineage, generation].slice(-LINEAGE_KEPT);
  source.generation = generation;
  target.lineage = [...source.lineage];
  target.generation = generation;
  return generation;
}

/** The drive `key` becomes the one the host boots and writes: its data moves on from here. */
export function recordBecameActive(pair: PairRecord, key: string): number {
  const drive = pair.drives[key]!;
  const generation = ++pair.counter;
  drive.lineage = [...drive.lineage, generation].slice(-LINEAGE_KEPT);
  drive.generation = generation;
  return generation;
}
