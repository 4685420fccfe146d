/**
 * A small memory of recent folder listings, so the pages of one large folder
 * and the folders above it (a path is looked up in its parent's listing) are
 * read from the drive once, not once per request. A stale listing could hide
 * a difference from the operator, so an entry is used only while all of these
 * hold: the owner's generation has not moved since the listing was read (the
 * owner moves it on anything that may write a drive: a job, a host power
 * change, a drive swap), the scope the owner gave (which drive, and how it
 * looked: an image file's size and times, a block device's write counters)
 * is the same, and it is younger than `ttlMs`. A listing read while the
 * generation moved is not kept.
 */
import type { FileEntry } from './listing.ts';

export interface ListingCacheOptions {
  /** Most entries kept over all folders; a folder larger than this is never kept. */
  readonly maxEntries?: number;
  /** Age past which a listing is read again, ms. */
  readonly ttlMs?: number;
  /** Clock, ms (tests). */
  readonly now?: () => number;
}

interface Kept {
  readonly entries: readonly FileEntry[];
  readonly at: number;
}

export class ListingCache {
  readonly maxEntries: number;
  readonly ttlMs: number;
  #now: () => number;
  #kept = new Map<string, Kept>();
  #size = 0;
  #generation = 0;

  constructor(options: ListingCacheOptions = {}) {
    this.maxEntries = options.maxEntries ?? 100_000;
    this.ttlMs = options.ttlMs ?? 30_000;
    this.#now = options.now ?? Date.now;
  }

  /** Moves when anything kept may be stale; a read started under an older generation is not kept. */
  get generation(): number {
    return this.#generation;
  }

  /** Forgets everything and moves the generation: call on anything that may have written a drive. */
  invalidate(): void {
    this.#generation++;
    this.#kept.clear();
    this.#size = 0;
  }

  /** The listing kept under `key`, or undefined (also when too old). */
  get(key: string): readonly FileEntry[] | undefined {
    const k = this.#kept.get(key);
    if (!k) return undefined;
    if (this.#now() - k.at > this.ttlMs) {
      this.#drop(key, k);
      return undefined;
    }
    // Most recently used last: eviction takes from the front.
    this.#kept.delete(key);
    this.#kept.set(key, k);
    return k.entries;
  }

  /**
   * Keeps `entries` under `key` if the generation is still `generation` (the
   * one read before the listing started) and they fit; evicts the least
   * recently used listings to make room.
   */
  set(key: string, entries: readonly FileEntry[], generation: number): void {
    if (generation !== this.#generation || entries.length > this.maxEntries) return;
    const old = this.#kept.get(key);
    if (old) this.#drop(key, old);
    for (const [k, v] of this.#kept) {
      if (this.#size + entries.length <= this.maxEntries) break;
      this.#drop(k, v);
    }
    this.#kept.set(key, { entries, at: this.#now() });
    this.#size += entries.length;
  }

  /** Entries kept over all folders. */
  get size(): number {
    return this.#size;
  }

  #drop(key: string, k: Kept): void {
    this.#kept.delete(key);
    this.#size -= k.entries.length;
  }
}

/** A view's place in a cache: the cache and the scope string its keys start with (see `FileView.cached`). */
export interface CacheScope {
  readonly cache: ListingCache;
  /** What identifies the drive and its state to the owner; a different scope never shares a listing. */
  readonly scope: string;
}
