/**
 * A drive that fails where it is told to: unreadable or unwritable LBAs, a
 * failure after N writes, or a drive that disappears. The simulated rig uses
 * it for "bad sectors" and "pulled drive"; tests use it to break the engine.
 */
import { DeviceError } from '../errors.ts';
import { DeviceWrapper, type BlockDevice } from './block-device.ts';

export interface FaultPlan {
  /** Logical sector numbers whose reads fail (EIO) every time. */
  readonly badReadLbas?: Iterable<number>;
  /** Logical sector numbers whose writes fail. */
  readonly badWriteLbas?: Iterable<number>;
  /** Reads of these LBAs fail this many times, then succeed (a weak sector). */
  readonly flakyReadLbas?: ReadonlyMap<number, number>;
  /** Every write after this many successful ones fails. */
  readonly failWritesAfter?: number;
  /** Every read after this many successful ones fails. */
  readonly failReadsAfter?: number;
}

/** The errors a real drive gives, with their fault set the way FileBlockDevice sets it. */
const mediaError = (message: string) => new DeviceError(message, { fault: 'media' });
const transportError = (message: string) => new DeviceError(message, { fault: 'transport' });

export class FaultyDevice extends DeviceWrapper {
  readonly badReads: Set<number>;
  readonly badWrites: Set<number>;
  private readonly flaky: Map<number, number>;
  private writes = 0;
  private reads = 0;
  private gone = false;
  /** Every failed read attempt, for tests that count retries. */
  readonly readFailures: number[] = [];

  constructor(
    inner: BlockDevice,
    private plan: FaultPlan = {},
  ) {
    super(inner);
    this.badReads = new Set(plan.badReadLbas ?? []);
    this.badWrites = new Set(plan.badWriteLbas ?? []);
    this.flaky = new Map(plan.flakyReadLbas ?? []);
  }

  /** The drive vanishes: every later call fails, as when a bridge drops it. */
  pull(): void { this.gone = true; }
  reinsert(): void { this.gone = false; }
  setPlan(plan: FaultPlan): void {
    this.plan = plan;
    this.badReads.clear();
    for (const l of plan.badReadLbas ?? []) this.badReads.add(l);
    this.badWrites.clear();
    for (const l of plan.badWriteLbas ?? []) this.badWrites.add(l);
    this.flaky.clear();
    for (const [l, n] of plan.flakyReadLbas ?? []) this.flaky.set(l, n);
  }

  private firstHit(set: Set<number>, position: number, length: number): number | undefined {
    if (set.size === 0) return undefined;
    const first = position / this.logicalSectorSize;
    const count = length / this.logicalSectorSize;
    if (set.size < count) {
      let hit: number | undefined;
      for (const lba of set) if (lba >= first && lba < first + count && (hit === undefined || lba < hit)) hit = lba;
      return hit;
    }
    for (let lba = first; lba < first + count; lba++) if (set.has(lba)) return lba;
    return undefined;
  }

  override async read(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    if (this.gone) throw transportError(`${this.path} is gone (drive pulled)`);
    if (this.plan.failReadsAfter !== undefined && this.reads >= this.plan.failReadsAfter) throw transportError(`${this.path}: read failed (drive stopped answering)`);
    const bad = this.firstHit(this.badReads, position, length);
    if (bad !== undefined) {
      this.readFailures.push(bad);
      throw mediaError(`${this.path}: unreadable sector ${bad}`);
    }
    for (const [lba, left] of this.flaky) {
      const first = position / this.logicalSectorSize;
      if (lba >= first && lba < first + length / this.logicalSectorSize && left > 0) {
        this.flaky.set(lba, left - 1);
        this.readFailures.push(lba);
        throw mediaError(`${this.path}: weak sector ${lba}`);
      }
    }
    this.reads++;
    await this.inner.read(buf, position, length);
  }

  override async write(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    if (this.gone) throw transportError(`${this.path} is gone (drive pulled)`);
    if (this.plan.failWritesAfter !== undefined && this.writes >= this.plan.failWritesAfter) throw transportError(`${this.path}: write failed (drive stopped accepting data)`);
    const bad = this.firstHit(this.badWrites, position, length);
    if (bad !== undefined) throw mediaError(`${this.path}: sector ${bad} cannot be written`);
    this.writes++;
    await this.inner.write(buf, position, length);
  }

  override async flush(): Promise<void> {
    if (this.gone) throw transportError(`${this.path} is gone (drive pulled)`);
    await this.inner.flush();
  }
}
