/**
 * The whole-tree "show only differences" walk: every entry below a folder on
 * both drives compared as the side-by-side listing compares one folder. Each
 * side is read with one recursive listing (walk.ts) and fed to GNU `sort`
 * (byte order of the path, spilling to disk past its buffer), and the two
 * sorted streams are merged: memory stays bounded whatever the tree's size,
 * since no side is held here. Only the differences are handed on, one at a
 * time and in path order, so the caller can store them as it goes.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { tmpdir } from 'node:os';
import { DeviceError } from '../errors.ts';
import { classify, type Difference } from './diff.ts';
import { walkTree } from './walk.ts';
import { lines } from './lines.ts';
import { joinPath, splitPath } from './path.ts';
import { hashStream, type FileView } from './view.ts';
import { staleOfSameName, type FileEntry } from './listing.ts';
import { isAllocated } from './tsk.ts';

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
  /** Called every few hundred entries: entries taken from both sides' sorted listings so far, and entries listed on both sides. */
  readonly onProgress?: (compared: number, listed: number) => void;
  /** Where `sort` may spill a large listing (default the system's temporary folder). */
  readonly tmpDir?: string;
}

export interface TreeDiffSummary {
  readonly path: string;
  /** Names compared: the union of both sides below `path`. */
  readonly compared: number;
  readonly counts: Record<Difference, number>;
}

/** Bytes of memory each `sort` may use before spilling to `tmpDir`. */
const SORT_BUFFER = '32M';

interface Sorted {
  /** Lines `path\0json` in byte order of the path. */
  readonly lines: AsyncIterator<string>;
  readonly listed: number;
  /** The entry read ahead of the one handed on (null: the end), to see several of one path together. */
  pending?: Parsed | null;
}

/** The sorter: GNU sort on NUL-separated keys, in the C locale (byte order, as Buffer.compare). */
function startSort(tmpDir: string): ChildProcessWithoutNullStreams {
  return spawn('sort', ['-t', '\\0', '-k1,1', '-S', SORT_BUFFER, '-T', tmpDir], { env: { ...process.env, LC_ALL: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Lists one side below `path` into a sorter and returns its sorted output. A folder on this side only lists nothing. */
async function sortSide(view: FileView, path: string, sorters: ChildProcessWithoutNullStreams[], options: TreeDiffOptions, signal: AbortSignal, onListed: () => void): Promise<Sorted> {
  const sorter = startSort(options.tmpDir ?? tmpdir());
  sorters.push(sorter);
  // Taken at once, into a stream with back-pressure: Node drops what an exited child left unread in its pipe, and a small
  // listing's sort exits before the merge starts reading.
  const output = new PassThrough();
  sorter.stdout.pipe(output);
  // A sorter killed early (a failed walk, a cancel) makes writes fail: its exit status says so below.
  sorter.stdin.on('error', () => {});
  let stderr = '';
  sorter.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 4096) stderr += d; });
  let spawnError: NodeJS.ErrnoException | null = null;
  // Settles once, when sort has gone; never raced per line (each race would stay attached to it until then).
  const closed = new Promise<number | null>((resolve) => {
    sorter.on('error', (e: NodeJS.ErrnoException) => {
      spawnError = e;
      resolve(null);
    });
    sorter.on('close', (code) => resolve(code));
  });
  const check = async () => {
    const code = await closed;
    // A sorter the walk killed (a cancel, or the other side failing) did not fail: why it was killed is the answer.
    signal.throwIfAborted();
    if (spawnError) throw new DeviceError(`cannot run sort for the difference walk: ${(spawnError as Error).message}`, { hint: 'install GNU coreutils', cause: spawnError });
    if (code !== 0) throw new DeviceError(`sort failed in the difference walk: ${stderr.trim() || `exit ${code}`}`, { hint: `check free space in ${options.tmpDir ?? tmpdir()}` });
  };
  let listed = 0;
  let gone = false;
  void closed.then(() => (gone = true));
  try {
    let dir: FileEntry | null = null;
    try {
      dir = await view.stat(path);
    } catch (e) {
      // A folder present on one side only: wholly new or wholly deleted.
      if ((e as { kind?: string }).kind !== 'not-found') throw e;
    }
    if (dir?.type === 'directory') {
      for await (const { path: p, entry } of walkTree(view.source, dir.address, path, { signal })) {
        const { name: _name, ...rest } = entry;
        if (!sorter.stdin.write(`${p}\0${JSON.stringify(rest)}\n`)) await Promise.race([once(sorter.stdin, 'drain'), closed]);
        if (gone) await check();
        listed++;
        onListed();
      }
    }
  } finally {
    sorter.stdin.end();
  }
  const sorted = lines(output);
  const checked: AsyncIterator<string> = {
    async next() {
      const r = await sorted.next();
      // The sorted output ended: sort's exit status says whether it was whole.
      if (r.done) await check();
      return r;
    },
  };
  return { lines: checked, listed };
}

type Compact = Omit<FileEntry, 'name'>;

interface Parsed {
  readonly path: string;
  readonly key: Buffer;
  readonly entry: Compact;
}

/**
 * One side's next entry, or null at the end. Several live entries of one
 * path (sorted together) are TSK's stale index entries beside the real one:
 * the allocated one is handed on (see `staleOfSameName`).
 */
async function nextEntry(side: Sorted, view: FileView, signal: AbortSignal): Promise<Parsed | null> {
  const first = side.pending !== undefined ? side.pending : await readEntry(side);
  side.pending = undefined;
  if (!first) return null;
  const group = [first];
  for (;;) {
    const next = await readEntry(side);
    if (next && next.path === first.path) group.push(next);
    else {
      side.pending = next;
      break;
    }
  }
  if (group.length === 1) return first;
  const allocated = await Promise.all(group.map((g) => isAllocated(view.source, g.entry.address, signal)));
  const stale = new Set(staleOfSameName(allocated));
  return group.filter((_, i) => !stale.has(i)).pop()!;
}

async function readEntry(side: Sorted): Promise<Parsed | null> {
  for (;;) {
    const r = await side.lines.next();
    if (r.done) return null;
    const line = r.value;
    const cut = line.indexOf('\0');
    if (cut < 0) continue;
    const path = line.slice(0, cut);
    return { path, key: Buffer.from(path), entry: JSON.parse(line.slice(cut + 1)) as Compact };
  }
}

/** A file's content hash; a cancel ends its reader at once and is the answer (not the reader's cut-short error). */
async function hashOf(view: FileView, name: string, e: Compact, signal: AbortSignal): Promise<string> {
  signal.throwIfAborted();
  const stream = await view.content({ name, ...e }, signal).catch((err: unknown) => {
    signal.throwIfAborted();
    throw err;
  });
  const onAbort = () => stream.destroy();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await hashStream(stream);
  } catch (err) {
    signal.throwIfAborted();
    throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * Compares everything below folder `path` on both sides (deleted entries
 * left out), calling `onDifference` for each entry that differs, in byte
 * order of the path. Runs `sort` twice (GNU coreutils).
 * @throws BadInputError a bad path; NotFoundError the folder is on neither side; DeviceError a reader or sort failed; CancelledError through `signal`.
 */
export async function diffTree(active: FileView, standby: FileView, path: string, onDifference: (d: TreeDifference) => void | Promise<void>, options: TreeDiffOptions = {}): Promise<TreeDiffSummary> {
  const folder = joinPath(splitPath(path));
  const sorters: ChildProcessWithoutNullStreams[] = [];
  // Ends the other side's walk when one fails, and both on a cancel.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const onAbort = () => { for (const s of sorters) s.kill('SIGKILL'); };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    let listing = 0;
    const onListed = () => { if (++listing % 1000 === 0) options.onProgress?.(0, listing); };
    const [a, s] = await Promise.all([sortSide(active, folder, sorters, options, signal, onListed), sortSide(standby, folder, sorters, options, signal, onListed)]);
    if (a.listed === 0 && s.listed === 0) {
      // Both empty, or the folder on neither side: stat says which (and throws NotFoundError when absent on both).
      await Promise.any([active.stat(folder), standby.stat(folder)]).catch((e: AggregateError) => {
        throw e.errors[0];
      });
    }
    const listed = a.listed + s.listed;
    const counts: Record<Difference, number> = { same: 0, changed: 0, 'only-active': 0, 'only-standby': 0 };
    let compared = 0;
    let taken = 0;
    let ea = await nextEntry(a, active, signal);
    let es = await nextEntry(s, standby, signal);
    while (ea || es) {
      options.signal?.throwIfAborted();
      const order = !es ? -1 : !ea ? 1 : Buffer.compare(ea.key, es.key);
      const p = order <= 0 ? ea!.path : es!.path;
      const name = p.slice(p.lastIndexOf('/') + 1);
      const fa = order <= 0 ? { name, ...ea!.entry } : undefined;
      const fs = order >= 0 ? { name, ...es!.entry } : undefined;
      let state = classify(fa, fs);
      let hashed = false;
      if (options.hash && state === 'same' && fa!.type === 'file') {
        hashed = true;
        if ((await hashOf(active, name, ea!.entry, signal)) !== (await hashOf(standby, name, es!.entry, signal))) state = 'changed';
      }
      counts[state]++;
      compared++;
      if (state !== 'same') await onDifference({ path: p, state, ...(fa ? { active: fa } : {}), ...(fs ? { standby: fs } : {}), ...(hashed ? { hashed } : {}) });
      if (order <= 0) {
        ea = await nextEntry(a, active, signal);
        taken++;
      }
      if (order >= 0) {
        es = await nextEntry(s, standby, signal);
        taken++;
      }
      if (compared % 500 === 0) options.onProgress?.(taken, listed);
    }
    options.onProgress?.(listed, listed);
    return { path: folder, compared, counts };
  } catch (e) {
    // Cancelled: whatever broke on the way (a write into a reader or sorter the cancel killed: EPIPE) is not the answer.
    if (options.signal?.aborted) throw options.signal.reason ?? e;
    throw e;
  } finally {
    stop.abort();
    options.signal?.removeEventListener('abort', onAbort);
    for (const s of sorters) if (s.exitCode === null) s.kill('SIGKILL');
  }
}
