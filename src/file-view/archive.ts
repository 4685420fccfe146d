/**
 * A folder as a streamed archive: tar (POSIX ustar, with pax headers for
 * long or non-ASCII names, by tar-stream) or zip (stored, ZIP64 when needed,
 * by yazl). Entries come from one recursive listing (walk.ts) and content
 * from FileView.content (ext files straight from their extents, ext-extents.ts; elsewhere
 * every file through one libtsk process, tsk-reader.ts, or per file by
 * `istat` and `icat` without it), written one file at a time with back-pressure all the way:
 * a slow client pauses the reading, and memory stays bounded whatever the
 * folder's size (a few files are prepared ahead, each reading at most a few MiB).
 *
 * Why these two: tar-stream writes one entry at a time into a stream and
 * encodes pax headers itself; yazl is a small, maintained zip writer whose
 * lazy entries open each file's stream only when the archive reaches it.
 * archiver wraps the same kind of engines with more dependencies and queues
 * every appended stream at once.
 */
import { PassThrough, type Readable, type Writable } from 'node:stream';
import tar from 'tar-stream';
import yazl from 'yazl';
import { BadInputError } from '../errors.ts';
import { walkTree, withoutStaleTwins } from './walk.ts';
import { isAllocated } from './tsk.ts';
import { DriveFile } from './content.ts';
import type { FileEntry } from './listing.ts';
import type { FileView } from './view.ts';

export type ArchiveFormat = 'tar' | 'zip';

export interface ArchiveOptions {
  readonly signal?: AbortSignal;
  /** Called after each entry with entries and content bytes so far. */
  readonly onEntry?: (entries: number, bytes: number) => void;
}

/** Bytes of the next files' content read ahead while one is written (the next file is always started; more only while small). */
const READ_AHEAD_BYTES = 1024 * 1024;
/** Bytes a content stream reads ahead once started (content.ts's runsStream buffers 4 MiB and reads in 1 MiB). */
const STREAM_AHEAD = 5 * 1024 * 1024;

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/**
 * Streams folder `path` of `view` (the folder itself as the archive's top
 * entry, named after it; the root as `root`) as a tar or zip archive. The
 * returned stream errors when a reader fails half-way (the archive is then
 * cut short: no end-of-archive marker, so a client sees it is incomplete).
 * Devices, FIFOs and sockets are left out; hard links are stored as files.
 * @throws BadInputError not a folder; NotFoundError no such folder.
 */
export async function archiveFolder(view: FileView, path: string, format: ArchiveFormat, options: ArchiveOptions = {}): Promise<{ top: string; stream: Readable }> {
  const dir = await view.stat(path);
  if (dir.type !== 'directory') throw new BadInputError(`${path} is a ${dir.type}, not a folder: download it with GET /api/browse/file`);
  const top = dir.name === '' ? 'root' : dir.name;
  const prefix = path === '/' ? '/' : path.replace(/\/+$/, '');
  const nameOf = (p: string) => `${top}${p.slice(prefix === '/' ? 0 : prefix.length)}`;
  // A client going away (the stream destroyed) ends the walk and the file being read.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  // Off ext, one reader process serves every file (starting a process per file cost more than a small file's reading).
  const batch = await view.batchReader();
  const lookahead = view.contentLookahead(batch);
  // Files read from their runs share one open handle on the drive.
  const drive = new DriveFile(view.source.path);
  // A name TSK lists twice after ntfs-3g renamed over it must give the real file, not the replaced one's old content as well.
  const entries = withoutStaleTwins(walkTree(view.source, dir.address, prefix, { signal }), (address) => isAllocated(view.source, address, signal));
  const writer = format === 'tar' ? tarWriter() : zipWriter();
  const out = writer.stream;
  // Files next in line have their content prepared while the one before is written (run lists asked for, small files read
  // ahead by icat or the batch reader): the readers' start-up overlaps the copying. At most `lookahead` files are prepared at once.
  const queue: { path: string; entry: FileEntry; content: Promise<Readable> | null; started?: boolean }[] = [];
  let current: Readable | null = null;
  const release = () => {
    current?.destroy();
    for (const q of queue.splice(0)) void q.content?.then((c) => c.destroy(), () => {});
    batch?.close();
    void drive.close().catch(() => {});
  };
  out.on('close', () => {
    stop.abort();
    release();
  });
  signal.addEventListener('abort', release, { once: true });
  const walk = entries[Symbol.asyncIterator]();
  let walked = false;
  const fill = async () => {
    while (!walked && queue.length < lookahead && !signal.aborted) {
      const next = await walk.next();
      if (next.done) {
        walked = true;
        return;
      }
      const { path: p, entry } = next.value;
      if (entry.type !== 'file' && entry.type !== 'directory' && entry.type !== 'symlink') continue;
      const content = entry.type === 'file' ? view.content(entry, signal, batch, drive) : null;
      // Awaited in turn below; a failure before then must not count as unhandled.
      content?.catch(() => {});
      queue.push({ path: p, entry, content });
    }
  };
  (async () => {
    let count = 0;
    let bytes = 0;
    // The root has no entry of its own to take a time from: it is stamped with the download's.
    await writer.add({ ...dir, mtime: dir.name === '' ? Math.floor(Date.now() / 1000) : dir.mtime }, `${top}/`, null);
    for (;;) {
      // Topped up in batches, not one file per file written: requests made together share their reads of ext's inode
      // table (and, off ext, the batch process's round trips).
      if (queue.length <= lookahead / 2) await fill();
      const next = queue.shift();
      if (!next) break;
      if (out.destroyed) return;
      // The next files start reading (each up to its stream's buffer) while this one is written: the drive is not idle between
      // files, and small files' reads overlap instead of each waiting for the last. Bounded by READ_AHEAD_BYTES of content.
      let ahead = 0;
      for (const q of queue) {
        if (ahead >= READ_AHEAD_BYTES || !q.content) break;
        ahead += Math.min(q.entry.size, STREAM_AHEAD);
        if (q.started) continue;
        q.started = true;
        void q.content.then((c) => c.read(0), () => {});
      }
      const { path: p, entry } = next;
      const name = entry.type === 'directory' ? `${nameOf(p)}/` : nameOf(p);
      current = next.content ? await next.content : null;
      await writer.add(entry, name, current);
      current = null;
      count++;
      bytes += entry.type === 'file' ? entry.size : 0;
      options.onEntry?.(count, bytes);
    }
    signal.throwIfAborted();
    batch?.close();
    await drive.close();
    await writer.finish();
  })().catch((e: unknown) => {
    release();
    if (!out.destroyed) out.destroy(e as Error);
  });
  return { top, stream: out };
}

interface Writer {
  readonly stream: Readable;
  /** Adds one entry; resolves once its content has gone into the archive. */
  add(entry: FileEntry, name: string, content: Readable | null): Promise<void>;
  finish(): Promise<void>;
}

function tarWriter(): Writer {
  const pack = tar.pack();
  return {
    stream: pack as unknown as Readable,
    async add(entry, name, content) {
      const header = { name, mtime: new Date(entry.mtime * 1000), mode: entry.mode, uid: entry.uid, gid: entry.gid };
      if (entry.type === 'directory') await new Promise<void>((res, rej) => pack.entry({ ...header, type: 'directory' }, (e) => (e ? rej(e) : res())));
      else if (entry.type === 'symlink') await new Promise<void>((res, rej) => pack.entry({ ...header, type: 'symlink', linkname: entry.linkTarget ?? '' }, (e) => (e ? rej(e) : res())));
      else {
        // Piped by hand, not by stream.pipeline: its per-call AbortController builds a DOMException (with a stack) at every
        // file's end, a measurable share of a small file's time. The sink's callback reports a short or failed entry.
        await new Promise<void>((resolve, reject) => {
          const sink = pack.entry({ ...header, type: 'file', size: entry.size }, (e) => (e ? reject(e) : resolve()));
          content!.once('error', (e) => {
            sink.destroy(e);
            reject(e);
          });
          content!.pipe(sink as unknown as Writable);
        });
      }
    },
    async finish() {
      pack.finalize();
    },
  };
}

function zipWriter(): Writer {
  const zip = new yazl.ZipFile();
  const stream = new PassThrough();
  zip.outputStream.on('error', (e) => stream.destroy(e));
  zip.outputStream.pipe(stream);
  zip.on('error', (e: Error) => stream.destroy(e));
  return {
    stream,
    async add(entry, name, content) {
      const mtime = new Date(entry.mtime * 1000);
      if (entry.type === 'directory') zip.addEmptyDirectory(name, { mtime, mode: S_IFDIR | entry.mode });
      else if (entry.type === 'symlink') zip.addBuffer(Buffer.from(entry.linkTarget ?? ''), name, { mtime, mode: S_IFLNK | 0o777, compress: false });
      else {
        // One file's stream at a time: the next entry is added once this one's content has ended.
        await new Promise<void>((resolve, reject) => {
          zip.addReadStreamLazy(name, { mtime, mode: S_IFREG | entry.mode, compress: false, size: entry.size }, (cb) => {
            content!.once('end', () => resolve());
            content!.once('error', reject);
            cb(null, content!);
          });
        });
      }
    },
    async finish() {
      zip.end();
    },
  };
}
