/**
 * The side-by-side listing of one folder on two drives: per name, whether
 * the entry is the same on both, changed, only on the active drive (new
 * since the last backup) or only on the standby (deleted since then).
 */
import { BadInputError } from '../errors.ts';
import type { FileEntry } from './listing.ts';
import type { FileView } from './view.ts';

export type Difference = 'same' | 'changed' | 'only-active' | 'only-standby';

export interface DiffRow {
  readonly name: string;
  readonly state: Difference;
  readonly active?: FileEntry;
  readonly standby?: FileEntry;
  /** Whether content hashes were compared for this row (files of equal size and type, `hash` asked). */
  readonly hashed?: boolean;
}

export interface DiffPage {
  readonly path: string;
  /** Rows in this page, by name. */
  readonly rows: DiffRow[];
  /** Entries in the whole folder (the union of both sides). */
  readonly total: number;
  readonly offset: number;
  readonly limit: number;
  /** Counts over the whole folder. */
  readonly counts: Record<Difference, number>;
}

export interface DiffOptions {
  /** First row of the page (0-based). */
  readonly offset?: number;
  /** Rows per page, 1–5000 (default 500). */
  readonly limit?: number;
  /** Also compare the content (XXH3) of files whose size and time agree. */
  readonly hash?: boolean;
}

/** Same size, type, link target and modification time: equal without reading content. */
function metaEqual(a: FileEntry, b: FileEntry): boolean {
  return a.type === b.type && a.linkTarget === b.linkTarget && (a.type === 'directory' || (a.size === b.size && a.mtime === b.mtime));
}

/** The state of one name from its entries on each side (content not compared). */
export function classify(active: FileEntry | undefined, standby: FileEntry | undefined): Difference {
  return !standby ? 'only-active' : !active ? 'only-standby' : metaEqual(active, standby) ? 'same' : 'changed';
}

interface NamePair {
  readonly name: string;
  readonly active?: FileEntry;
  readonly standby?: FileEntry;
}

/**
 * Pairs two lists sorted by name (code-unit order, as `FileView.list` gives
 * them) into one list by name. A name twice on one side (a damaged folder)
 * gives one row with the later entry.
 */
export function mergeByName(active: readonly FileEntry[], standby: readonly FileEntry[]): NamePair[] {
  const out: NamePair[] = [];
  let i = 0;
  let j = 0;
  while (i < active.length || j < standby.length) {
    const a = active[i];
    const s = standby[j];
    const name = a === undefined ? s!.name : s === undefined ? a.name : a.name <= s.name ? a.name : s.name;
    let pa: FileEntry | undefined;
    let ps: FileEntry | undefined;
    while (i < active.length && active[i]!.name === name) pa = active[i++];
    while (j < standby.length && standby[j]!.name === name) ps = standby[j++];
    out.push({ name, ...(pa ? { active: pa } : {}), ...(ps ? { standby: ps } : {}) });
  }
  return out;
}

/**
 * Compares folder `path` on both sides. Deleted entries are left out on both:
 * what the standby holds and the active drive no longer does is `only-standby`.
 * @throws BadInputError a bad path or page; NotFoundError the folder is on neither side.
 */
export async function diffFolder(active: FileView, standby: FileView, path: string, options: DiffOptions = {}): Promise<DiffPage> {
  const offset = options.offset ?? 0;
  const limit = options.limit ?? 500;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new BadInputError(`offset must be a whole number from 0, not ${offset}`);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 5000) throw new BadInputError(`limit must be from 1 to 5000, not ${limit}`);
  const [a, s] = await Promise.allSettled([active.list(path, { deleted: false }), standby.list(path, { deleted: false })]);
  if (a.status === 'rejected' && s.status === 'rejected') throw a.reason;
  // A folder present on one side only lists as wholly new or wholly deleted; other failures stand.
  const side = (r: PromiseSettledResult<FileEntry[]>): FileEntry[] => {
    if (r.status === 'fulfilled') return r.value;
    if ((r.reason as { kind?: string }).kind === 'not-found') return [];
    throw r.reason;
  };
  // Both lists come sorted by name (code-unit order): one merge pass pairs them, with no map of the whole folder.
  const pairs = mergeByName(side(a), side(s));
  const counts: Record<Difference, number> = { same: 0, changed: 0, 'only-active': 0, 'only-standby': 0 };
  const rows: DiffRow[] = [];
  const dir = path.replace(/\/+$/, '');
  for (const [i, pair] of pairs.entries()) {
    let state: Difference = classify(pair.active, pair.standby);
    let hashed = false;
    const inPage = i >= offset && i < offset + limit;
    // Hashes only for the page shown: a folder's other pages cost nothing.
    if (inPage && options.hash && state === 'same' && pair.active!.type === 'file') {
      const [ha, hs] = await Promise.all([active.hash(`${dir}/${pair.name}`), standby.hash(`${dir}/${pair.name}`)]);
      hashed = true;
      if (ha !== hs) state = 'changed';
    }
    counts[state]++;
    if (inPage) rows.push({ name: pair.name, state, ...(pair.active ? { active: pair.active } : {}), ...(pair.standby ? { standby: pair.standby } : {}), ...(hashed ? { hashed } : {}) });
  }
  return { path: dir === '' ? '/' : dir, rows, total: pairs.length, offset, limit, counts };
}
