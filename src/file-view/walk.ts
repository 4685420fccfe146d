/**
 * A whole subtree in one reader run: `fls -r -m PREFIX` streams every entry
 * below a folder, a directory's line before its contents, so a walk of a
 * large tree is one process, read line by line as the consumer asks for more
 * (memory stays bounded: the pipe fills and fls waits).
 */
import { spawn } from 'node:child_process';
import { lines } from './lines.ts';
import { DeviceError } from '../errors.ts';
import { isRootMetadata, parseBodyLine, staleOfSameName, type TreeEntry } from './listing.ts';
import { sourceArgs, missingTool, TIMEOUT_MS, type TskSource } from './tsk.ts';

export interface WalkOptions {
  /** Also yield deleted entries (default false). Orphan files (`$OrphanFiles`) are never yielded. */
  readonly deleted?: boolean;
  readonly signal?: AbortSignal;
}

/**
 * Every entry below the folder with TSK address `address`, which lies at
 * checked path `prefix` (`/` for the root), as `{ path, entry }` with paths
 * from the partition's root. The filesystem's own metadata (NTFS metafiles,
 * exFAT's bitmap and up-case table) and everything below it are left out.
 * @throws DeviceError the reader is missing, fails, or runs past its time limit (an hour).
 */
export async function* walkTree(src: TskSource, address: string, prefix: string, options: WalkOptions = {}): AsyncGenerator<TreeEntry> {
  // An abort listener added after the abort never fires: a walk cancelled before it starts must not start fls.
  options.signal?.throwIfAborted();
  const atRoot = prefix === '/';
  const child = spawn('fls', [...sourceArgs(src), '-r', '-m', prefix, src.path, address], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 4096) stderr += d; });
  let failure: Error | null = null;
  child.on('error', (e: NodeJS.ErrnoException) => { failure = e.code === 'ENOENT' ? missingTool('fls', e) : e; });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS * 30);
  const onAbort = () => child.kill('SIGKILL');
  options.signal?.addEventListener('abort', onAbort, { once: true });
  // Subtrees of left-out directories (metafiles, orphan files), as path prefixes ending in '/'.
  const skipped: string[] = [];
  const base = atRoot ? '/' : `${prefix}/`;
  try {
    child.stdout.setEncoding('utf8');
    for await (const line of lines(child.stdout)) {
      if (line === '') continue;
      const parsed = parseBodyLine(line, src.fsType);
      if (!parsed) continue;
      const { path, entry } = parsed;
      if (skipped.some((s) => path.startsWith(s))) continue;
      const topLevel = path.lastIndexOf('/') === base.length - 1 && path.startsWith(base);
      if ((atRoot && topLevel && isRootMetadata(entry, src.fsType)) || path.startsWith('/$OrphanFiles')) {
        if (entry.type === 'directory') skipped.push(`${path}/`);
        continue;
      }
      // A deleted folder's own entries are marked deleted too; a live folder of the same name may follow.
      if (entry.deleted && !options.deleted) continue;
      yield parsed;
    }
    const code = await exited;
    options.signal?.throwIfAborted();
    if (failure) throw failure;
    if (code !== 0) throw new DeviceError(`fls could not walk ${prefix} at sector ${src.offsetSectors} of ${src.path}: ${stderr.trim() || `exit ${code}`}`);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

/**
 * A walk with TSK's stale NTFS index entries left out: several live entries
 * of one path next to each other (a folder's index lists a name's entries
 * together) are the real one and stale ones, told apart by whether each
 * one's metadata entry is allocated (`staleOfSameName`); the stale ones are
 * not yielded. `allocated` is asked only for such groups (istat in use).
 */
export async function* withoutStaleTwins(entries: AsyncIterable<TreeEntry>, allocated: (address: string) => Promise<boolean>): AsyncGenerator<TreeEntry> {
  let group: TreeEntry[] = [];
  async function* settle(): AsyncGenerator<TreeEntry> {
    if (group.length > 1) {
      const stale = new Set(staleOfSameName(await Promise.all(group.map((g) => allocated(g.entry.address)))));
      for (const [i, g] of group.entries()) if (!stale.has(i)) yield g;
    } else yield* group;
    group = [];
  }
  for await (const e of entries) {
    if (group.length && (e.path !== group[0]!.path || e.entry.deleted || group[0]!.entry.deleted)) yield* settle();
    group.push(e);
  }
  yield* settle();
}
