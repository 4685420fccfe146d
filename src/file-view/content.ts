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
import { execFile } from 'node:child_process';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { DeviceError } from '../errors.ts';
import { runTsk, TIMEOUT_MS, type TskFsType, type TskSource } from './tsk.ts';

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

const EXTENT_ROW = /^\s*(\d+)\/\s*(\d+)\s+\d+\/\s*\d+\s+(\d+)\s+-\s+(\d+)\s+(\d+)\s+-\s+(\d+)\s+(\d+)\s*(Uninit)?\s*$/;
const INDEX_ROW = /^\s*(\d+)\/\s*(\d+)\s+\d+\/\s*\d+\s+\d+\s+-\s+\d+\s+\d+\s+\d+\s*$/;

/**
 * The runs of one file from e2fsprogs' `debugfs` `ex` (dump_extents) output
 * for it, or null when they must not be used (no extent tree: ext2/3 block
 * maps, inline data; or a line not understood). Leaf extents map logical to
 * physical blocks; gaps between them and unwritten (`Uninit`) extents read as
 * zeros, as the kernel gives them.
 */
export function parseExtents(text: string, size: number, unit: number): DataRun[] | null {
  const leaves: { logical: number; physical: number; length: number; uninit: boolean }[] = [];
  let header = false;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (/^Level Entries\s+Logical\s+Physical\s+Length\s+Flags\s*$/.test(line)) {
      header = true;
      continue;
    }
    const m = EXTENT_ROW.exec(line);
    if (m && header && m[1] === m[2]) {
      const [logical, last, physical, physicalLast, length] = [m[3], m[4], m[5], m[6], m[7]].map(Number) as [number, number, number, number, number];
      if (last - logical + 1 !== length || physicalLast - physical + 1 !== length) return null;
      leaves.push({ logical, physical, length, uninit: m[8] === 'Uninit' });
      continue;
    }
    const idx = INDEX_ROW.exec(line);
    if (idx && header && idx[1] !== idx[2]) continue;
    return null;
  }
  if (!header) return null;
  const blocks = Math.ceil(size / unit);
  const runs: DataRun[] = [];
  let at = 0;
  for (const e of leaves.sort((a, b) => a.logical - b.logical)) {
    if (at >= blocks) break;
    if (e.logical < at) return null;
    if (e.logical > at) runs.push({ start: null, length: e.logical - at });
    runs.push({ start: e.uninit ? null : e.physical, length: e.length });
    at = e.logical + e.length;
  }
  if (at < blocks) runs.push({ start: null, length: blocks - at });
  return runs;
}

/** Files asked about in one `debugfs` run. */
const EXTENT_BATCH = 512;

/**
 * Run lists of many ext files from one `debugfs -c` process per batch
 * (commands on its standard input): TSK starts one process per file, whose
 * start-up costs more than reading a few MiB. debugfs opens the image or
 * device read-only (no `-w`; `-c` skips the bitmaps) and never replays the
 * journal, so it reads what TSK reads.
 */
export class ExtentReader {
  #pending: { inode: number; size: number; resolve: (r: DataRun[] | null) => void; reject: (e: Error) => void }[] = [];
  #scheduled = false;
  /** Settles once the last batch's answers have been given: batches answer in the order they were asked, whichever debugfs ends first. */
  #answered: Promise<void> = Promise.resolve();

  constructor(
    private readonly src: TskSource,
    private readonly unit: number,
  ) {}

  /** The runs of inode `inode` of `size` bytes, or null when they must come from elsewhere (TSK). */
  runs(inode: number, size: number): Promise<DataRun[] | null> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ inode, size, resolve, reject });
      if (this.#pending.length >= EXTENT_BATCH) this.#flush();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        // Requests made in the same turn (an archive preparing its next files) share one run.
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#pending.splice(0);
    if (batch.length === 0) return;
    const device = `${this.src.path}?offset=${this.src.offsetSectors * this.src.sectorSize}`;
    // A caller hands files without extents to the batch reader, whose streams must be asked for in the archive's order.
    const before = this.#answered;
    let answered!: () => void;
    this.#answered = new Promise((r) => (answered = r));
    const child = execFile('debugfs', ['-c', '-f', '-', device], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, stdout) => void before.then(() => {
      answer(err, stdout);
      answered();
    }));
    const answer = (err: Error | null, stdout: string) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        // Without e2fsprogs the files are read through TSK.
        for (const p of batch) p.resolve(null);
        return;
      }
      if (err) {
        for (const p of batch) p.reject(new DeviceError(`debugfs could not read the ext filesystem at sector ${this.src.offsetSectors} of ${this.src.path}: ${err.message}`));
        return;
      }
      const sections = new Map<number, string>();
      let current: number | null = null;
      for (const line of stdout.split('\n')) {
        const m = /^debugfs: ex <(\d+)>$/.exec(line);
        if (m) {
          current = Number(m[1]);
          sections.set(current, '');
        } else if (current !== null) sections.set(current, `${sections.get(current)}${line}\n`);
      }
      for (const p of batch) {
        const text = sections.get(p.inode);
        p.resolve(text === undefined ? null : parseExtents(text, p.size, this.unit));
      }
    };
    // A debugfs that is missing or exits early fails the write too: the callback above answers for it.
    child.stdin!.on('error', () => {});
    child.stdin!.end(batch.map((p) => `ex <${p.inode}>\n`).join(''));
  }
}
