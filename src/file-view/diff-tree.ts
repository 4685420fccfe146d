/**
 * The whole-tree "show only differences" walk: every entry below a folder on
 * both drives compared as the side-by-side listing compares one folder, each
 * side read with one recursive listing (walk.ts). Only the differences are
 * handed on, one at a time, so the caller can store them as it goes.
 */
import { xxh3 } from '@node-rs/xxhash';
import { classify, type Difference } from './diff.ts';
import { icatStream } from './tsk.ts';
import { walkTree } from './walk.ts';
import { joinPath, splitPath } from './path.ts';
import type { FileEntry } from './listing.ts';
import type { FileView } from './view.ts';

/** One entry that differs, by its path from the partition's root. */
export interface TreeDifference {
  readonly path: string;
  readonly state: Exclude<Difference, 'same'>;
  readonly active?: FileEntry;
  readonly standby?: FileEntry;
  /** The content was compared (files alike in size, type and time, `hash` asked). */
  readonly hashed?: boolean;
}

export interface TreeDiffOptions {
  /** Also compare the content (XXH3-64) of files whose size and time agree: reads both sides' files whole. */
  readonly hash?: boolean;
  readonly signal?: AbortSignal;
  /** Called every few hundred entries: entries compared so far, and entries listed on both sides. */
  readonly onProgress?: (compared: number, listed: number) => void;
}

export interface TreeDiffSummary {
  readonly path: string;
  /** Names compared: the union of both sides below `path`. */
  readonly compared: number;
  readonly counts: Record<Difference, number>;
}

type Compact = Omit<FileEntry, 'name'>;

async function listSide(view: FileView, path: string, signal?: AbortSignal): Promise<Map<string, Compact>> {
  const out = new Map<string, Compact>();
  let dir: FileEntry;
  try {
    dir = await view.stat(path);
  } catch (e) {
    // A folder present on one side only: wholly new or wholly deleted.
    if ((e as { kind?: string }).kind === 'not-found') return out;
    throw e;
  }
  if (dir.type !== 'directory') return out;
  for await (const { path: p, entry } of walkTree(view.source, dir.address, path, { signal })) {
    const { name: _name, ...rest } = entry;
    out.set(p, rest);
  }
  return out;
}

async function hashOf(view: FileView, e: Compact): Promise<string> {
  const h = xxh3.Xxh3.withSeed();
  for await (const chunk of icatStream(view.source, e.address)) h.update(chunk as Buffer);
  return h.digest().toString(16);
}

/**
 * Compares everything below folder `path` on both sides (deleted entries
 * left out), calling `onDifference` for each entry that differs, in path
 * order. Both listings are held while comparing: about 200 bytes an entry.
 * @throws BadInputError a bad path; NotFoundError the folder is on neither side; CancelledError through `signal`.
 */
export async function diffTree(active: FileView, standby: FileView, path: string, onDifference: (d: TreeDifference) => void | Promise<void>, options: TreeDiffOptions = {}): Promise<TreeDiffSummary> {
  const folder = joinPath(splitPath(path));
  const [a, s] = await Promise.all([listSide(active, folder, options.signal), listSide(standby, folder, options.signal)]);
  if (a.size === 0 && s.size === 0) {
    // Both empty, or the folder on neither side: stat says which (and throws NotFoundError when absent on both).
    await Promise.any([active.stat(folder), standby.stat(folder)]).catch((e: AggregateError) => {
      throw e.errors[0];
    });
  }
  const names = new Set([...a.keys(), ...s.keys()]);
  const paths = [...names].sort();
  const counts: Record<Difference, number> = { same: 0, changed: 0, 'only-active': 0, 'only-standby': 0 };
  let compared = 0;
  for (const p of paths) {
    options.signal?.throwIfAborted();
    const name = p.slice(p.lastIndexOf('/') + 1);
    const ea = a.get(p);
    const es = s.get(p);
    const fa = ea && { name, ...ea };
    const fs = es && { name, ...es };
    let state = classify(fa, fs);
    let hashed = false;
    if (options.hash && state === 'same' && ea!.type === 'file') {
      hashed = true;
      if ((await hashOf(active, ea!)) !== (await hashOf(standby, es!))) state = 'changed';
    }
    counts[state]++;
    compared++;
    if (state !== 'same') await onDifference({ path: p, state, ...(fa ? { active: fa } : {}), ...(fs ? { standby: fs } : {}), ...(hashed ? { hashed } : {}) });
    if (compared % 500 === 0) options.onProgress?.(compared, paths.length);
  }
  options.onProgress?.(compared, paths.length);
  return { path: folder, compared, counts };
}
