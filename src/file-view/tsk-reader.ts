/**
 * The content of many files from one reader process: libtsk (The Sleuth
 * Kit's library, the same one `icat` is built on) through Debian's
 * python3-tsk, asked for one file after another on its standard input. Each
 * `icat` opens the filesystem anew in a process of its own, which on a
 * loaded two-core board costs tens of ms: a folder of thousands of small
 * files on NTFS, FAT or exFAT spent seconds on start-ups for every MiB it
 * read. The file is read by TSK as `icat` reads it (resident data, sparse
 * runs, compressed attributes, an initialised size short of the file's,
 * exFAT's contiguous files); the image or device is opened read-only.
 *
 * Files of more than a few data units are better read straight from the
 * drive (content.ts's runsStream: large reads instead of TSK's one data unit
 * at a time): asked with `R`, the process answers their run list instead of
 * the content where TSK's runs say exactly what TSK would read: a
 * non-resident attribute that is neither compressed nor encrypted, runs that
 * are data or sparse (no filler), covering the size, and on NTFS an
 * initialised size equal to the file's (read from the attribute's header in
 * the file's MFT record: TSK reads zeros past it, the drive holds whatever
 * was there). Anything else is answered with the content.
 *
 * Protocol (ours, over pipes): a request is one line `C|R INODE TYPE ID SIZE`
 * (TYPE 0 and ID -1: the file's default attribute; SIZE in bytes, from the
 * listing). The answer is a line `R UNIT START:LENGTH…` (runs in data units
 * of UNIT bytes, START -1 a hole), or the content in chunks, each a line
 * with its length in decimal and then that many bytes, ended by a line `0`,
 * or a line `E message` when reading failed (also half-way). Answers come in
 * the order of the requests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { PassThrough, type Readable } from 'node:stream';
import { DeviceError } from '../errors.ts';
import type { TskSource } from './tsk.ts';
import type { DataRun } from './content.ts';

/**
 * Debian's own interpreter: python3-tsk installs into its dist-packages,
 * which a python3 found first on PATH (pyenv, a venv) does not see.
 */
export const PYTHON = '/usr/bin/python3';

/** Bytes per chunk of an answer. */
const CHUNK = 1024 * 1024;
/** Bytes a queued stream holds before the process is paused. */
const STREAM_BUFFER = 256 * 1024;

const PROGRAM = String.raw`
import struct, sys
try:
    import pytsk3
except ImportError as e:
    sys.stderr.write('python3-tsk is missing: %s\n' % e)
    sys.exit(3)
path, offset, fstype = sys.argv[1], int(sys.argv[2]), sys.argv[3]
CHUNK = ${CHUNK}
types = {'ntfs': pytsk3.TSK_FS_TYPE_NTFS_DETECT, 'fat': pytsk3.TSK_FS_TYPE_FAT_DETECT, 'exfat': pytsk3.TSK_FS_TYPE_EXFAT, 'ext': pytsk3.TSK_FS_TYPE_EXT_DETECT}
img = pytsk3.Img_Info(path, type=pytsk3.TSK_IMG_TYPE_RAW)
fs = pytsk3.FS_Info(img, offset=offset, type=types[fstype])
unit = fs.info.block_size
NONRES, COMP, ENC = int(pytsk3.TSK_FS_ATTR_NONRES), int(pytsk3.TSK_FS_ATTR_COMP), int(pytsk3.TSK_FS_ATTR_ENC)
RUN_SPARSE = int(pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE)
mft = None
record_size = 0
if fstype == 'ntfs':
    # NTFS BPB: clusters per MFT record at 0x40 (signed; negative n means 2^-n bytes).
    v = struct.unpack_from('<b', img.read(offset, 512), 0x40)[0]
    record_size = v * unit if v > 0 else 1 << -v
    mft = fs.open_meta(inode=0)
out = sys.stdout.buffer
out.write(b'ready\n')
out.flush()

def attribute(f, atype, aid):
    # TYPE 0: the default attribute (ext, FAT, exFAT have one, TSK's type 1).
    def matches(a):
        return int(a.info.type) == atype and a.info.id == aid if atype else int(a.info.type) == 1
    found = [a for a in f if matches(a)]
    return found[0] if len(found) == 1 else None

def ntfs_initialised(inode, atype, aid, size):
    # The attribute header in the file's own MFT record (fixups applied): starting VCN 0, real and initialised size both the
    # file's. TSK reads zeros past the initialised size, which the raw runs would not.
    rec = bytearray(mft.read_random(inode * record_size, record_size, 128, -1))
    if len(rec) != record_size or rec[:4] != b'FILE':
        return False
    usa, count = struct.unpack_from('<HH', rec, 4)
    for i in range(1, count):
        end = i * 512
        if end > record_size or rec[end - 2:end] != rec[usa:usa + 2]:
            return False
        rec[end - 2:end] = rec[usa + 2 * i:usa + 2 * i + 2]
    at = struct.unpack_from('<H', rec, 0x14)[0]
    while at + 0x40 <= record_size:
        t, length = struct.unpack_from('<II', rec, at)
        if t == 0xFFFFFFFF or length == 0:
            return False
        if t == atype and struct.unpack_from('<H', rec, at + 0x0E)[0] == aid and rec[at + 9] == 0:
            vcn = struct.unpack_from('<Q', rec, at + 0x10)[0]
            real, init = struct.unpack_from('<QQ', rec, at + 0x30)
            return rec[at + 8] == 1 and vcn == 0 and real == size and init == size
        at += length
    return False

def runs_of(f, inode, atype, aid, size):
    a = attribute(f, atype, aid)
    if a is None or a.info.size != size:
        return None
    flags = int(a.info.flags)
    if not flags & NONRES or flags & (COMP | ENC):
        return None
    if fstype == 'ntfs' and not ntfs_initialised(inode, atype, aid, size):
        return None
    runs, at = [], 0
    for r in a:
        rf = int(r.flags)
        if r.offset != at or r.len <= 0 or rf & ~RUN_SPARSE:
            return None
        runs.append('%d:%d' % (-1 if rf & RUN_SPARSE else r.addr, r.len))
        at += r.len
    if at * unit < size:
        return None
    return runs

def content(f, atype, aid):
    a = attribute(f, atype, aid)
    size = f.info.meta.size if atype == 0 else (a.info.size if a is not None else None)
    if size is None:
        raise IOError('attribute %d-%d not found' % (atype, aid))
    done = 0
    while done < size:
        data = f.read_random(done, min(CHUNK, size - done), atype or pytsk3.TSK_FS_ATTR_TYPE_DEFAULT, aid)
        if not data:
            raise IOError('the read ended at byte %d of %d' % (done, size))
        out.write(b'%d\n' % len(data))
        out.write(data)
        done += len(data)
    out.write(b'0\n')

for line in iter(sys.stdin.buffer.readline, b''):
    words = line.split()
    mode, (inode, atype, aid, size) = words[0], (int(x) for x in words[1:])
    try:
        f = fs.open_meta(inode=inode)
        runs = runs_of(f, inode, atype, aid, size) if mode == b'R' else None
        if runs is not None:
            out.write(('R %d %s\n' % (unit, ' '.join(runs))).encode())
        else:
            content(f, atype, aid)
    except Exception as e:
        out.write(b'E ' + str(e).replace('\n', ' ').encode('utf-8', 'replace') + b'\n')
    out.flush()
`;

interface Pending {
  readonly out: PassThrough;
  readonly address: string;
  /** Called once the answer's kind is known: its runs, or null when the content follows (into `out`). */
  decided?: (runs: { unit: number; runs: DataRun[] } | null) => void;
}

/** What `read` answers: the file's runs (in data units of `unit` bytes) to read from the drive, or its content as a stream. */
export type BatchRead = { readonly unit: number; readonly runs: DataRun[]; readonly stream?: undefined } | { readonly stream: Readable; readonly runs?: undefined };

/**
 * One reader process for a run of files (an archive's): `content` queues a
 * file and returns its stream at once; the streams fill in request order,
 * so they must be consumed in that order (an archive does). Back-pressure
 * reaches the process: a stream not read yet pauses it once its buffer is
 * full. `close` ends the process (also when files are still queued: their
 * streams then fail).
 */
export class TskReader {
  #proc: ChildProcess | null = null;
  #resolveReady!: (ok: boolean) => void;
  readonly #queue: Pending[] = [];
  /** Resolves true once the process has opened the filesystem; false when it cannot run (no python3-tsk). */
  readonly ready: Promise<boolean>;
  #buffered = Buffer.alloc(0);
  /** Bytes of the current chunk still to come; -1 while a length line is awaited. */
  #chunkLeft = -1;
  #started = false;
  #failure: Error | null = null;
  #stderr = '';

  /**
   * Starts the process at once, or with `lazy` at the first request (`ready`
   * is then true at once: the caller has checked that the reader runs,
   * tskReaderRuns, and a process that fails later fails its streams).
   */
  constructor(private readonly src: TskSource, options: { lazy?: boolean } = {}) {
    this.ready = new Promise((r) => (this.#resolveReady = r));
    if (options.lazy) this.#resolveReady(true);
    else this.#spawn();
  }

  /** Whether the process has been started (a lazy one starts at its first request). */
  get running(): boolean {
    return this.#proc !== null;
  }

  get #child(): ChildProcess {
    return this.#proc ?? this.#spawn();
  }

  #spawn(): ChildProcess {
    const src = this.src;
    const offset = src.offsetSectors * src.sectorSize;
    const child = spawn(PYTHON, ['-c', PROGRAM, src.path, String(offset), src.fsType], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#proc = child;
    child.stdin!.on('error', () => {});
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (this.#stderr.length < 4096) this.#stderr += d; });
    child.on('error', (e) => {
      this.#fail(new DeviceError(`cannot run ${PYTHON}: ${e.message}`, { hint: 'install Debian\'s python3-tsk package (scripts/install-tools.sh)', cause: e }));
      this.#resolveReady(false);
    });
    child.on('close', (code, signal) => {
      this.#resolveReady(false);
      this.#fail(new DeviceError(`the file reader (libtsk) on the ${src.fsType} filesystem at sector ${src.offsetSectors} of ${src.path} ended (${this.#stderr.trim() || `exit ${code ?? signal}`})`));
    });
    child.stdout!.on('data', (d: Buffer) => {
      if (!this.#started) {
        const nl = d.indexOf(0x0a);
        if (nl < 0 || d.subarray(0, nl).toString() !== 'ready') {
          child.kill('SIGKILL');
          return;
        }
        this.#started = true;
        this.#resolveReady(true);
        d = d.subarray(nl + 1);
      }
      this.#take(d);
    });
    return child;
  }

  /**
   * The content of the file at TSK address `address` (`12`, or NTFS's
   * `68-128-2`) as a stream; it fails (DeviceError) when the reader does.
   */
  content(address: string, size: number): Readable {
    return this.#request('C', address, size).out;
  }

  /**
   * The run list of the file at `address` of `size` bytes where reading it
   * from the drive gives what TSK reads, else its content as a stream (the
   * header above says when). Resolves once the answer begins.
   */
  read(address: string, size: number): Promise<BatchRead> {
    return new Promise((resolve) => {
      const { out } = this.#request('R', address, size, (runs) => resolve(runs ?? { stream: out }));
    });
  }

  #request(mode: 'C' | 'R', address: string, size: number, decided?: Pending['decided']): Pending {
    // A small buffer per stream: the streams queued behind the one being read fill up to it, so this bounds the memory of an archive's look-ahead.
    const out = new PassThrough({ highWaterMark: STREAM_BUFFER });
    // Reading goes on where the consumer left off: the process is paused by a full stream, resumed when it drains.
    out.on('drain', () => this.#child.stdout!.resume());
    // A stream its consumer destroyed takes no more bytes: the rest of its answer is parsed and dropped.
    out.on('close', () => this.#child.stdout!.resume());
    const pending: Pending = { out, address, decided };
    if (this.#failure) {
      process.nextTick(() => {
        decided?.(null);
        out.destroy(this.#failure!);
      });
      return pending;
    }
    const [inode, type, id] = address.split('-');
    this.#queue.push(pending);
    this.#child.stdin!.write(`${mode} ${Number(inode)} ${type === undefined ? 0 : Number(type)} ${id === undefined ? -1 : Number(id)} ${size}\n`);
    return pending;
  }

  /** Ends the process; streams not finished fail. */
  close(): void {
    if (!this.#proc) return;
    this.#proc.stdin!.end();
    if (this.#proc.exitCode === null) this.#proc.kill('SIGKILL');
  }

  #fail(e: Error): void {
    this.#failure ??= e;
    for (const p of this.#queue.splice(0)) {
      this.#contentFollows(p);
      p.out.destroy(this.#failure);
    }
  }

  /** The answer is content (or a failure), not a run list: a waiting `read` gets the stream. */
  #contentFollows(p: Pending): void {
    const decided = p.decided;
    p.decided = undefined;
    decided?.(null);
  }

  /** Parses answers: length lines, chunk bytes, `0` and `E` lines, for the file at the head of the queue. */
  #take(data: Buffer): void {
    let d = this.#buffered.length ? Buffer.concat([this.#buffered, data]) : data;
    this.#buffered = Buffer.alloc(0);
    while (d.length > 0) {
      const head = this.#queue[0];
      if (!head) {
        this.#child.kill('SIGKILL');
        this.#fail(new DeviceError('the file reader (libtsk) answered a request nobody made'));
        return;
      }
      if (this.#chunkLeft > 0) {
        const n = Math.min(this.#chunkLeft, d.length);
        // Already destroyed (its consumer went away): the bytes are dropped, the answer still parsed.
        const more = head.out.destroyed || head.out.write(d.subarray(0, n));
        this.#chunkLeft -= n;
        d = d.subarray(n);
        if (this.#chunkLeft === 0) this.#chunkLeft = -1;
        if (!more) this.#child.stdout!.pause();
        continue;
      }
      const nl = d.indexOf(0x0a);
      if (nl < 0) {
        this.#buffered = Buffer.from(d);
        return;
      }
      const line = d.subarray(0, nl).toString('utf8');
      d = d.subarray(nl + 1);
      if (line.startsWith('R ') && head.decided) {
        const runs = parseRunLine(line);
        if (!runs) {
          this.#child.kill('SIGKILL');
          this.#fail(new DeviceError(`the file reader (libtsk) answered ${JSON.stringify(line.slice(0, 80))}, not a run list`));
          return;
        }
        this.#queue.shift();
        const decided = head.decided;
        head.decided = undefined;
        decided(runs);
        continue;
      }
      this.#contentFollows(head);
      if (line.startsWith('E ')) {
        this.#queue.shift();
        head.out.destroy(new DeviceError(`libtsk could not read ${head.address} at sector ${this.src.offsetSectors} of ${this.src.path}: ${line.slice(2)}`));
      } else if (line === '0') {
        this.#queue.shift();
        head.out.end();
      } else {
        const n = Number(line);
        if (!/^\d+$/.test(line) || n > CHUNK) {
          this.#child.kill('SIGKILL');
          this.#fail(new DeviceError(`the file reader (libtsk) answered ${JSON.stringify(line.slice(0, 80))}, not a chunk length`));
          return;
        }
        this.#chunkLeft = n;
      }
    }
  }
}

/** `R UNIT START:LENGTH…` → the runs (START -1: a hole), or null when the line is malformed. */
function parseRunLine(line: string): { unit: number; runs: DataRun[] } | null {
  const [, unitText, ...pairs] = line.split(' ');
  const unit = Number(unitText);
  if (!Number.isSafeInteger(unit) || unit <= 0) return null;
  const runs: DataRun[] = [];
  for (const p of pairs) {
    const m = /^(-1|\d+):(\d+)$/.exec(p);
    if (!m) return null;
    const length = Number(m[2]);
    if (!Number.isSafeInteger(length) || length <= 0) return null;
    runs.push({ start: m[1] === '-1' ? null : Number(m[1]), length });
  }
  return { unit, runs };
}

let runs: Promise<boolean> | null = null;

/** Whether the reader process can run here (Debian's python3 imports pytsk3); asked once per process. */
export function tskReaderRuns(): Promise<boolean> {
  runs ??= new Promise((resolve) => {
    const child = spawn(PYTHON, ['-c', 'import pytsk3'], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
  return runs;
}
