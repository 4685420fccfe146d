/**
 * The sync map: which chunks of a sync are finished, checkpointed every few
 * seconds so that running the same sync again after a crash does not write
 * them again. A resumed copy still compares them (the engine's chunkMode):
 * either drive may have been written since. A chunk counts only once its
 * writes are flushed to the target.
 */
import { readJsonChecked, writeJsonDurably } from '../durable-file.ts';
import { rmSync } from 'node:fs';

export interface SyncMapKey {
  readonly sourceKey: string;
  readonly targetKey: string;
  readonly sourceSize: number;
  readonly targetSize: number;
  readonly chunkSize: number;
  /** Normalised ranges of the sync, as text: a different selection is a different sync. */
  readonly ranges: string;
  readonly mode: string;
  /** Digest of the copy's plan: a map belongs to exactly one plan. */
  readonly plan: string;
}

interface SyncMapFile extends SyncMapKey {
  readonly chunks: number;
  /** Bitmap of finished chunks, base64. */
  readonly done: string;
  readonly savedAt: string;
}

export class SyncMap {
  private readonly bits: Uint8Array;
  private doneCount = 0;

  private constructor(
    readonly path: string,
    readonly key: SyncMapKey,
    readonly chunks: number,
    bits?: Uint8Array,
  ) {
    this.bits = bits ?? new Uint8Array(Math.ceil(chunks / 8));
    for (let i = 0; i < chunks; i++) if (this.isDone(i)) this.doneCount++;
  }

  /**
   * Loads the map of the same sync (same drives, sizes, ranges, mode) or
   * starts an empty one. A map of another sync, or a corrupt one, is ignored:
   * the only cost is comparing those chunks again.
   */
  static load(path: string, key: SyncMapKey, chunks: number): { map: SyncMap; resumed: boolean; note?: string } {
    let file: SyncMapFile | undefined;
    try {
      file = readJsonChecked<SyncMapFile>(path);
    } catch (e) {
      return { map: new SyncMap(path, key, chunks), resumed: false, note: `ignored the sync map: ${(e as Error).message}` };
    }
    if (!file) return { map: new SyncMap(path, key, chunks), resumed: false };
    const same = (Object.keys(key) as (keyof SyncMapKey)[]).every((k) => file![k] === key[k]) && file.chunks === chunks;
    if (!same) return { map: new SyncMap(path, key, chunks), resumed: false, note: 'the sync map belongs to another sync: starting from the beginning' };
    const bits = new Uint8Array(Buffer.from(file.done, 'base64'));
    if (bits.byteLength !== Math.ceil(chunks / 8)) return { map: new SyncMap(path, key, chunks), resumed: false, note: 'the sync map has the wrong length: starting from the beginning' };
    return { map: new SyncMap(path, key, chunks, bits), resumed: true };
  }

  isDone(index: number): boolean {
    return (this.bits[index >> 3]! & (1 << (index & 7))) !== 0;
  }

  markDone(index: number): void {
    if (this.isDone(index)) return;
    this.bits[index >> 3]! |= 1 << (index & 7);
    this.doneCount++;
  }

  get done(): number {
    return this.doneCount;
  }

  /** A copy of the bitmap now, to save after the target was flushed. */
  snapshot(): Uint8Array {
    return this.bits.slice();
  }

  save(bits: Uint8Array = this.bits): void {
    const file: SyncMapFile = { ...this.key, chunks: this.chunks, done: Buffer.from(bits).toString('base64'), savedAt: new Date().toISOString() };
    writeJsonDurably(this.path, file);
  }

  remove(): void {
    SyncMap.discard(this.path);
  }

  static discard(path: string): void {
    rmSync(path, { force: true });
  }
}
