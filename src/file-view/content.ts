/**
 * A file's content read straight from the drive where TSK says it lies:
 * `istat -r` gives the runs of data units (ext's extents or block runs, NTFS's
 * non-resident runs, FAT and exFAT cluster chains as sector runs), and the
 * runs are read with large positional reads from the image or device, opened
 * read-only. `icat` copies one data unit at a time through a pipe, which
 * limits it to about a sixth of the drive's speed; the runs keep TSK's
 * reading of the filesystem and drop only that copy.
 *
 * Whatever this reader is not sure of goes to `icat` as before: deleted
 * entries, resident or inline content, NTFS attributes that are sparse,
 * compressed, encrypted or initialised only in part, run lists that do not
 * cover the file's size, and any line of `istat` not understood.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { DeviceError } from '../errors.ts';
import { runTsk, type TskFsType, type TskSource } from './tsk.ts';

/** One run of data units in file order: `start` null is a hole (reads as zeros). */
export interface DataRun {
  readonly start: number | null;
  /** Data units. */
  readonly length: number;
}

/** Bytes per positional read: MiB-sized reads, a few of them ahead, keep up with dd. */
const CHUNK = 1024 * 1024;
/** Bytes a content stream reads ahead of its consumer. */
const READ_AHEAD = 4 * CHUNK;

const RUN_LINE = /^\s+Starting address: (?:(\d+)|X), length: (\d+)\s*(\S*)\s*$/;
const NTFS_DATA = /^Type: \$DATA \((\d+)-(\d+)\)\s+Name: (.*?)\s+(Resident|Non-Resident)((?:, [A-Za-z]+)*)\s+size: (\d+)(?:\s+init_size: (\d+))?\s*$/;

/**
 * The runs of a file's content from `istat -r` output, or null when they
 * must not be used (the caller reads with `icat` then). `address` is the
 * TSK address the listing gave (`12`, NTFS `68-128-2`), `size` the file's
 * size in bytes, `unit` the bytes per data unit.
 */
export function parseRuns(text: string, fsType: TskFsType, address: string, size: number, unit: number): DataRun[] | null {
  const lines = text.split('\n');
  let i: number;
  if (fsType === 'ntfs') {
    // The attribute the address names: its type and id must match, unnamed, non-resident without flags, fully initialised.
    const [, type, id] = address.split('-');
    i = lines.findIndex((l) => {
      const m = NTFS_DATA.exec(l);
      return m !== null && m[1] === (type ?? '128') && (id === undefined || m[2] === id);
    });
    if (i < 0) return null;
    const m = NTFS_DATA.exec(lines[i]!)!;
    if (m[3] !== 'N/A' || m[4] !== 'Non-Resident' || m[5] !== '' || Number(m[6]) !== size || Number(m[7]) !== size) return null;
  } else {
    i = lines.findIndex((l) => l === (fsType === 'ext' ? 'Direct Blocks:' : 'Sectors:'));
    if (i < 0) return null;
  }
  const runs: DataRun[] = [];
  let units = 0;
  for (const line of lines.slice(i + 1)) {
    const m = RUN_LINE.exec(line);
    if (!m) break;
    const [, start, length, flag] = m;
    const hole = start === undefined;
    // Holes only where the filesystem has them (ext's sparse files and unwritten extents); any other flag is unknown here.
    if (hole ? fsType !== 'ext' || (flag !== 'Sparse' && flag !== 'Filler') : flag !== '') return null;
    const n = Number(length);
    if (!Number.isSafeInteger(n) || n <= 0) return null;
    runs.push({ start: hole ? null : Number(start), length: n });
    units += n;
  }
  if (units * unit < size) return null;
  return runs;
}

/**
 * The runs of the file at `address`, or null when `icat` must read it.
 * @throws DeviceError istat fails or runs past its time limit.
 */
export async function runsOf(src: TskSource, address: string, size: number, unit: number, signal?: AbortSignal): Promise<DataRun[] | null> {
  // istat takes the entry number; the attribute is picked from its output.
  const text = await runTsk('istat', src, ['-r'], [address.split('-')[0]!], signal);
  return parseRuns(text, src.fsType, address, size, unit);
}

/**
 * The first `size` bytes of `runs` read from the image or device, as a
 * stream. The drive is opened read-only. A short read (the runs pointing past
 * the drive's end) is an error, never a short file.
 */
export function runsStream(src: TskSource, runs: readonly DataRun[], size: number, unit: number, drive?: DriveFile): Readable {
  const base = src.offsetSectors * src.sectorSize;
  async function* chunks(): AsyncGenerator<Buffer> {
    const fh = drive ? await drive.handle() : await open(src.path, 'r');
    try {
      let left = size;
      for (const run of runs) {
        if (left === 0) break;
        let runLeft = Math.min(run.length * unit, left);
        let pos = run.start === null ? 0 : base + run.start * unit;
        left -= runLeft;
        while (runLeft > 0) {
          const n = Math.min(CHUNK, runLeft);
          const buf = run.start === null ? Buffer.alloc(n) : Buffer.allocUnsafe(n);
          for (let got = 0; run.start !== null && got < n; ) {
            const { bytesRead } = await fh.read(buf, got, n - got, pos + got);
            if (bytesRead === 0) throw new DeviceError(`${src.path} ended at byte ${pos + got} inside a file's data (its runs point past the drive's end)`);
            got += bytesRead;
          }
          pos += n;
          runLeft -= n;
          yield buf;
        }
      }
    } finally {
      if (!drive) await fh.close();
    }
  }
  return Readable.from(chunks(), { objectMode: false, highWaterMark: READ_AHEAD });
}

/**
 * The image or device opened read-only once for the runsStreams of many
 * files (an archive's): an open and a close per file cost more than reading
 * a small file. The owner closes it once no stream reads any more.
 */
export class DriveFile {
  #fh: Promise<FileHandle> | null = null;
  #closed = false;

  constructor(readonly path: string) {}

  /**
   * The open handle (opened at the first call).
   * @throws DeviceError after close (a stream started once its archive ended opens nothing).
   */
  handle(): Promise<FileHandle> {
    if (this.#closed) return Promise.reject(new DeviceError(`${this.path} was closed for this reading`));
    this.#fh ??= open(this.path, 'r');
    return this.#fh;
  }

  /** Closes the handle; a stream still reading then fails. */
  async close(): Promise<void> {
    this.#closed = true;
    const fh = this.#fh;
    this.#fh = null;
    if (fh) await (await fh).close();
  }
}
