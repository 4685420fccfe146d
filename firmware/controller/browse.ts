/**
 * Browsing the files on both drives through file-view: the side-by-side
 * listing of a folder and a file's content, from either side. The standby can
 * always be read (it is on the controller); the active drive only while the
 * host is off (switched mode): the host's filesystem changes under a reader
 * while it runs, and its drive sits on the host's port, not the controller's.
 */
import { existsSync } from 'node:fs';
import { BadInputError, RefusedError } from '../../src/errors.ts';
import { FileView, archiveFolder, diffFolder, splitPath, joinPath } from '../../src/file-view/index.ts';
import type { BootSwitchSystem } from '../../src/bootswitch/index.ts';
import type { Roles } from './roles.ts';
import type { Route } from './http-server.ts';

export type Side = 'active' | 'standby';

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

function sideQuery(query: URLSearchParams): Side {
  const s = query.get('side');
  if (s !== 'active' && s !== 'standby') throw new BadInputError(`query side is ${JSON.stringify(s)}; allowed: "active", "standby"`);
  return s;
}

function pathQuery(query: URLSearchParams): string {
  // Checked here too, so a bad path is a 400 before any drive is opened.
  return joinPath(splitPath(query.get('path') ?? '/'));
}

export class FileBrowser {
  constructor(
    readonly roles: Roles,
    readonly bs: BootSwitchSystem,
  ) {}

  /**
   * A read-only view of partition `partition` on one side.
   * @throws RefusedError the active drive while the host runs, or an empty bay; NotFoundError no such partition.
   */
  async view(side: Side, partition: number): Promise<FileView> {
    const { active, standby } = this.roles.current();
    const bay = side === 'active' ? active : standby;
    if (side === 'active' && (await this.bs.bootSwitch.hostPowered())) {
      throw new RefusedError(`the active drive (bay ${bay}) cannot be read while the host is running: its filesystem changes under the reader and the drive is on the host's port`, {
        hint: 'browse the standby, or read the active drive while the host is off: shut it down (POST /api/host/shutdown) or run a sync in a sync window (POST /api/sync with {"window": true})',
      });
    }
    const path = this.roles.require(bay, side);
    if (!existsSync(path)) throw new RefusedError(`the ${side} drive (bay ${bay}) is not on the controller (${path} is missing)`, { hint: 'insert the drive or check its bridge' });
    return FileView.open(path, partition);
  }

  routes(): Route[] {
    return [
      {
        method: 'GET', path: '/api/browse', tag: 'files', summary: 'A folder side by side on both drives: per entry same, changed, only-active (new) or only-standby (deleted since the last backup); paged. The active drive is read only while the host is off',
        query: { partition: 'partition number (1–128)', path: 'the folder, from the partition\'s root (default /)', offset: 'first row (default 0)', limit: 'rows per page, 1–5000 (default 500)', hash: '"true": also compare the content of files whose size and time agree (XXH3)' },
        responses: { 200: '{ path, rows: [{name, state, active?, standby?, hashed?}], total, offset, limit, counts }', 400: 'a bad path or query', 404: 'no such partition or folder on either side', 409: 'the active drive cannot be read now (the host runs)' },
        handler: async ({ query }) => {
          const partition = intQuery(query, 'partition', 1, 128);
          const path = pathQuery(query);
          const offset = intQuery(query, 'offset', 0, Number.MAX_SAFE_INTEGER, 0);
          const limit = intQuery(query, 'limit', 1, 5000, 500);
          const hashText = query.get('hash') ?? 'false';
          if (hashText !== 'true' && hashText !== 'false') throw new BadInputError(`query hash is ${JSON.stringify(hashText)}; allowed: "true", "false"`);
          const [a, s] = [await this.view('active', partition), await this.view('standby', partition)];
          return { status: 200, body: await diffFolder(a, s, path, { offset, limit, hash: hashText === 'true' }) };
        },
      },
      {
        method: 'GET', path: '/api/browse/file', tag: 'files', summary: "A file's content from one side, streamed (application/octet-stream)",
        query: { side: '"active" or "standby"', partition: 'partition number (1–128)', path: 'the file, from the partition\'s root' },
        responses: { 200: 'the bytes of the file', 400: 'a bad path or query, or not a file', 404: 'no such partition or file', 409: 'the active drive cannot be read now (the host runs)' },
        handler: async ({ query, res }) => {
          const side = sideQuery(query);
          const partition = intQuery(query, 'partition', 1, 128);
          const path = pathQuery(query);
          const view = await this.view(side, partition);
          const { entry, stream } = await view.read(path);
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
        method: 'GET', path: '/api/browse/archive', tag: 'files', summary: "A folder and everything below it from one side as a streamed archive: tar (pax headers for long and non-ASCII names) or zip (stored, ZIP64 when needed); names, modification times, permission bits and symlinks kept, hard links stored as files",
        query: { side: '"active" or "standby"', partition: 'partition number (1–128)', path: 'the folder, from the partition\'s root (default /: the archive\'s top folder is then named root)', format: '"tar" (default) or "zip"' },
        responses: { 200: 'application/x-tar or application/zip, chunked; an archive cut short (no end marker) means a reader failed half-way', 400: 'a bad path or query, or not a folder', 404: 'no such partition or folder', 409: 'the active drive cannot be read now (the host runs)' },
        handler: async ({ query, res }) => {
          const side = sideQuery(query);
          const partition = intQuery(query, 'partition', 1, 128);
          const path = pathQuery(query);
          const format = query.get('format') ?? 'tar';
          if (format !== 'tar' && format !== 'zip') throw new BadInputError(`query format is ${JSON.stringify(format)}; allowed: "tar", "zip"`);
          const view = await this.view(side, partition);
          const { top, stream } = await archiveFolder(view, path, format);
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
    ];
  }
}
