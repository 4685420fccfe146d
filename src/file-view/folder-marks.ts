/**
 * What a folder's row says about the folder's contents. The side-by-side
 * listing compares one folder's entries, so a sub-folder on both drives
 * looks alike whatever it holds: only a whole-tree walk knows whether
 * something below it differs. A row therefore says `differ` or `same` only
 * from a finished walk that covered the folder and is still current, and
 * `not-compared` otherwise — never a "same" the listing cannot know.
 */
import type { DiffPage, DiffRow } from './diff.ts';

export type FolderContents = 'differ' | 'same' | 'not-compared';

/** The walk a page's folder marks come from. */
export interface WalkMarks {
  /** The walk's job id. */
  readonly job: string;
  /** The folder the walk compared, from the partition's root. */
  readonly path: string;
  /** When the walk finished (ISO 8601). */
  readonly finishedAt: string;
  /** Whether the walk compared content too, not only size and time. */
  readonly hashed: boolean;
  /** Folders with a difference somewhere below them, as paths from the partition's root. */
  readonly changed: ReadonlySet<string>;
}

/**
 * Collects the folders holding differences from a walk's differences given
 * in byte order of the path: every folder from `root` down to each
 * difference's parent is reported once, when first met. A folder's
 * descendants come together in that order, so only the chain of folders
 * above the last difference is kept.
 */
export class ChangedFolders {
  #chain: string[] = [];

  constructor(private readonly root: string) {}

  /** The folders above `path` (from the walk's root down) not reported before. */
  add(path: string): string[] {
    const fresh: string[] = [];
    const parts = path.split('/').filter(Boolean);
    const rootDepth = this.root.split('/').filter(Boolean).length;
    const above: string[] = [];
    for (let depth = rootDepth; depth < parts.length; depth++) above.push(`/${parts.slice(0, depth).join('/')}`);
    let same = 0;
    while (same < above.length && same < this.#chain.length && above[same] === this.#chain[same]) same++;
    for (const f of above.slice(same)) fresh.push(f);
    this.#chain = above;
    return fresh;
  }
}

/** Whether a walk of `walked` compared everything below `folder`. */
export function walkCovers(walked: string, folder: string): boolean {
  return walked === '/' || folder === walked || folder.startsWith(`${walked}/`);
}

/**
 * Adds `contents` to the page's rows that are folders on both drives, from
 * `walk` (null: no current walk, every such folder is `not-compared`), and
 * the walk used as `walk` on the page.
 */
export function markFolders<P extends DiffPage>(page: P, walk: WalkMarks | null): Omit<P, 'rows'> & { rows: (DiffRow & { contents?: FolderContents })[]; walk: Omit<WalkMarks, 'changed'> | null } {
  const dir = page.path === '/' ? '' : page.path;
  let used = false;
  const rows = page.rows.map((r) => {
    if (r.active?.type !== 'directory' || r.standby?.type !== 'directory') return r;
    const folder = `${dir}/${r.name}`;
    if (!walk || !walkCovers(walk.path, folder)) return { ...r, contents: 'not-compared' as const };
    used = true;
    return { ...r, contents: walk.changed.has(folder) ? ('differ' as const) : ('same' as const) };
  });
  return { ...page, rows, walk: walk && used ? { job: walk.job, path: walk.path, finishedAt: walk.finishedAt, hashed: walk.hashed } : null };
}
