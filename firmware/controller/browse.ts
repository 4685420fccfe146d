/**
 * Browsing the files on both drives through file-view: the side-by-side
 * listing of a folder and a file's content, from either side. The standby can
 * always be read (it is on the controller); the active drive in switched
 * mode only while the host is off (its filesystem changes under a reader
 * while it runs, and its drive sits on the host's port, not the
 * controller's); in inline mode through a live snapshot of it (a picture of
 * one instant, live-picture.ts), never the drive the host is changing.
 * While it runs, the listing of one side (`side=standby`) still answers, and
 * says why the active side is not shown.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { BadInputError, RefusedError } from '../../src/errors.ts';
import { FileView, ListingCache, archiveFolder, diffFolder, markFolders, splitPath, joinPath, type WalkMarks } from '../../src/file-view/index.ts';
import type { BootSwitchSystem } from '../../src/bootswitch/index.ts';
import { majorMinorOf } from '../../src/sata-bridge/index.ts';
import type { Pairs, DrivePair } from './pairs.ts';
import type { Route } from './http-server.ts';
import { pairScoped } from './pair-scoped.ts';

export type Side = 'active' | 'standby';

/** A side's view, and what to call when done reading it. */
export interface Opened {
  readonly view: FileView;
  readonly release: () => void;
  /** Inline mode's active side: when its picture was taken (ISO 8601). */
  readonly pictureAt?: string;
}

function intQuery(query: URLSearchParams, name: string, min: number, max: number, fallback?: number): number {
  const text = query.get(name);
  if (text === null) {
    if (fallback !== undefined) return fallback;
    throw new BadInputError(`query ${name} is missing; allowed: an integer from ${min} to ${max}`);
  }
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new BadInputError(`query ${name} is ${JSON.stringify(text)}; allowed: an integer from ${min} to ${max}`);
  return n;
}

function sideQuery(query: URLSearchParams, fallback?: null): Side | null {
  const s = query.get('side');
  if (s === null && fallback === null) return null;
  if (s !== 'active' && s !== 'standby') throw new BadInputError(`query side is ${s === null ? 'missing' : JSON.stringify(s)}; allowed: "active", "standby"`);
  return s;
}

function pathQuery(query: URLSearchParams): string {
  // Checked here too, so a bad path is a 400 before any drive is opened.
  return joinPath(splitPath(query.get('path') ?? '/'));
}

/**
 * What a drive at `path` looks like to a listing kept in memory, or null when
 * that cannot be told (then nothing is kept): an image file's identity, size
 * and times; a block device's identity and the kernel's counts of writes and
 * discards to it (`/sys/dev/block/M:m/stat`, fields 5–7 and 12–14), which
 * move with any write made through the controller, by dpsr or anyone else.
 */
export function driveState(path: string): string | null {
  try {
    const st = statSync(path, { bigint: true });
    if (st.isFile()) return `file:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    if (!st.isBlockDevice()) return null;
    const f = readFileSync(`/sys/dev/block/${majorMinorOf(Number(st.rdev))}/stat`, 'utf8').trim().split(/\s+/);
    if (f.length < 7) return null;
    return `block:${st.rdev}:${st.ino}:${f.slice(4, 7).join(',')}:${f.slice(11, 14).join(',')}`;
  } catch {
    return null;
  }
}

export class FileBrowser {
  /**
   * Recent folder listings of both sides (listing-cache.ts). Forgotten on
   * every daemon event but the host's heartbeat (a job, a host power change,
   * a drive swap, a role change may each change a drive); each is also tied
   * to how its drive looked (`driveState`) and kept 30 s at most.
   */
  readonly listings = new ListingCache({ maxEntries: 100_000, ttlMs: 30_000 });

  constructor(
    readonly pairs: Pairs,
    readonly bs: BootSwitchSystem,
    /** The current walk's folder marks for a listed folder (file-jobs), or null. */
    readonly walkMarks: (p: DrivePair, partition: number, folder: string) => Promise<WalkMarks | null> = async () => null,
  ) {}

  /** Why the pair's active drive cannot be read now (a RefusedError to throw), or null when it can. */
  async activeRefusal(p: DrivePair): Promise<RefusedError | null> {
    // Inline mode: read through a live snapshot of the drive, whether the host runs or not.
    if (p.copies.inline) return null;
    if (!(await this.bs.bootSwitch.hostPowered())) return null;
    const bay = p.bays().active;
    return new RefusedError(`the active drive (bay ${bay}) cannot be read while the host is running: its filesystem changes under the reader and the drive is on the host's port`, {
      // A data pair has no window of its own (its drives have no relays): only a shut-down host frees it.
      hint: `browse the standby alone (side=standby), or read the active drive while the host is off: shut it down (POST /api/host/shutdown)${p.config.role === 'boot' ? ` or run a sync in a sync window (POST /api/pairs/${p.id}/sync with {"window": true})` : ''}`,
    });
  }

  /**
   * A read-only view of partition `partition` on one side of pair `p`, and
   * `release` to call when done with it. In inline mode the active side is
   * a live snapshot's picture of the drive (`pictureAt`: when it was taken),
   * never the drive the host is changing; the snapshot is held until
   * `release` (shared with other readers, see live-picture.ts).
   * @throws RefusedError the active drive while the host runs (switched mode), or an empty bay; BusyError a job holds the snapshot; NotFoundError no such partition.
   */
  async open(p: DrivePair, side: Side, partition: number): Promise<Opened> {
    const { active, standby } = p.roles.current();
    const bay = side === 'active' ? active : standby;
    const pictures = side === 'active' ? p.copies.inline?.pictures : undefined;
    if (side === 'active' && !pictures) {
      const why = await this.activeRefusal(p);
      if (why) throw why;
    }
    const path = p.roles.require(bay, side);
    if (!existsSync(path)) throw new RefusedError(`the ${side} drive (bay ${p.roles.name(bay)}) is not on the controller (${path} is missing)`, { hint: 'insert the drive or check its bridge' });
    if (!pictures) {
      // How the drive looked before it is read: a write after this changes the next request's scope.
      const state = driveState(path);
      const view = await FileView.open(path, partition);
      return { view: state ? view.cached(this.listings, `${p.id}:${side}:${p.roles.name(bay)}:${state}`) : view, release: () => {} };
    }
    const lease = await pictures.lease();
    try {
      // A picture is one instant of the drive: what was listed in it stays true of it.
      const view = (await lease.open(partition)).cached(this.listings, `${p.id}:${side}:picture:${lease.takenAt.getTime()}`);
      return { view, release: lease.release, pictureAt: lease.takenAt.toISOString() };
    } catch (e) {
      lease.release();
      throw e;
    }
  }

  routes(): Route[] {
    return pairScoped(this.pairs, [
      {
        method: 'GET', at: '/browse', tag: 'files', summary: 'A folder side by side on both drives: per entry same, changed, only-active (new) or only-standby (deleted since the last backup); paged. The active drive is read only while the host is off (switched mode), or through a live snapshot of it (inline mode: `pictureAt` says when it was taken); with side=standby the standby\'s folder alone answers whenever (rows carry only `standby`), with `activeUnavailable` saying why the active side is not shown',
        query: { partition: 'partition number (1–128)', path: 'the folder, from the partition\'s root (default /)', offset: 'first row (default 0)', limit: 'rows per page, 1–5000 (default 500)', hash: '"true": also compare the content of files whose size and time agree (XXH3)', side: '"standby" or "active": list that side alone (no comparison); absent: both side by side' },
        responses: { 200: '{ path, rows: [{name, state, active?, standby?, hashed?, contents?}], total, offset, limit, counts, walk, pictureAt? }: a folder on both drives has contents "differ" or "same" from the newest current difference walk that covered it (walk: {job, path, finishedAt, hashed}), else "not-compared" (its own entry matching says nothing of what it holds); with side: { path, side, rows: [{name, active? | standby?}], total, offset, limit, activeUnavailable: null | {message, hint}, pictureAt? }', 400: 'a bad path or query', 404: 'no such partition or folder on either side', 409: 'the active drive cannot be read now (switched mode and the host runs: the hint names side=standby; inline mode and a job reads its own snapshot)' },
        handler: async (p, { query }) => {
          const partition = intQuery(query, 'partition', 1, 128);
          const path = pathQuery(query);
          const offset = intQuery(query, 'offset', 0, Number.MAX_SAFE_INTEGER, 0);
          const limit = intQuery(query, 'limit', 1, 5000, 500);
          const side = sideQuery(query, null);
          if (side) {
            if (query.get('hash') !== null) throw new BadInputError('query hash compares both sides: it cannot go with side', { hint: 'leave out side to compare, or hash to list one side' });
            const opened = await this.open(p, side, partition);
            const entries = await opened.view.list(path, { deleted: false }).finally(opened.release);
            const refusal = side === 'standby' ? await this.activeRefusal(p) : null;
            return {
              status: 200,
              body: {
                path,
                side,
                rows: entries.slice(offset, offset + limit).map((e) => ({ name: e.name, [side]: e })),
                total: entries.length,
                offset,
                limit,
                activeUnavailable: refusal ? { message: refusal.message, hint: refusal.hint } : null,
                ...(opened.pictureAt ? { pictureAt: opened.pictureAt } : {}),
              },
            };
          }
          const hashText = query.get('hash') ?? 'false';
          if (hashText !== 'true' && hashText !== 'false') throw new BadInputError(`query hash is ${JSON.stringify(hashText)}; allowed: "true", "false"`);
          const a = await this.open(p, 'active', partition);
          try {
            const s = await this.open(p, 'standby', partition);
            const page = await diffFolder(a.view, s.view, path, { offset, limit, hash: hashText === 'true' });
            // A sub-folder's own entry says nothing of what it holds: its contents are marked from a walk, or not compared.
            const marked = markFolders(page, await this.walkMarks(p, partition, page.path));
            return { status: 200, body: a.pictureAt ? { ...marked, pictureAt: a.pictureAt } : marked };
          } finally {
            a.release();
          }
        },
      },
      {
        method: 'GET', at: '/browse/file', tag: 'files', summary: "A file's content from one side, streamed (application/octet-stream)",
        query: { side: '"active" or "standby"', partition: 'partition number (1–128)', path: 'the file, from the partition\'s root' },
        responses: { 200: 'the bytes of the file', 400: 'a bad path or query, or not a file', 404: 'no such partition or file', 409: 'the active drive cannot be read now (switched mode and the host runs; inline mode and a job reads its own snapshot)' },
        handler: async (p, { query, res }) => {
          const side = sideQuery(query)!;
          const partition = intQuery(query, 'partition', 1, 128);
          const path = pathQuery(query);
          const opened = await this.open(p, side, partition);
          const { entry, stream } = await opened.view.read(path).catch((e: unknown) => {
            opened.release();
            throw e;
          });
          // The picture is held until the response is done.
          res.on('close', opened.release);
          res.writeHead(200, {
            'content-type': 'application/octet-stream',
            'content-length': String(entry.size),
            'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(entry.name)}`,
            'last-modified': new Date(entry.mtime * 1000).toUTCString(),
          });
          // A reader failing half-way cuts the response short: the length tells the client it is incomplete.
          stream.on('error', () => res.destroy());
          res.on('close', () => stream.destroy());
          stream.pipe(res);
          return { status: 200, body: null, raw: true };
        },
      },
      {
        method: 'GET', at: '/browse/archive', tag: 'files', summary: "A folder and everything below it from one side as a streamed archive: tar (pax headers for long and non-ASCII names) or zip (stored, ZIP64 when needed); names, modification times, permission bits and symlinks kept, hard links stored as files",
        query: { side: '"active" or "standby"', partition: 'partition number (1–128)', path: 'the folder, from the partition\'s root (default /: the archive\'s top folder is then named root)', format: '"tar" (default) or "zip"' },
        responses: { 200: 'application/x-tar or application/zip, chunked; an archive cut short (no end marker) means a reader failed half-way', 400: 'a bad path or query, or not a folder', 404: 'no such partition or folder', 409: 'the active drive cannot be read now (switched mode and the host runs; inline mode and a job reads its own snapshot)' },
        handler: async (p, { query, res }) => {
          const side = sideQuery(query)!;
          const partition = intQuery(query, 'partition', 1, 128);
          const path = pathQuery(query);
          const format = query.get('format') ?? 'tar';
          if (format !== 'tar' && format !== 'zip') throw new BadInputError(`query format is ${JSON.stringify(format)}; allowed: "tar", "zip"`);
          const opened = await this.open(p, side, partition);
          const { top, stream } = await archiveFolder(opened.view, path, format).catch((e: unknown) => {
            opened.release();
            throw e;
          });
          res.on('close', opened.release);
          res.writeHead(200, {
            'content-type': format === 'tar' ? 'application/x-tar' : 'application/zip',
            'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(`${top}.${format}`)}`,
            'cache-control': 'no-store',
          });
          stream.on('error', () => res.destroy());
          res.on('close', () => stream.destroy());
          stream.pipe(res);
          return { status: 200, body: null, raw: true };
        },
      },
    ]);
  }
}
