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
 * Protocol (ours, over pipes): a request is one line `INODE TYPE ID`
 * (TYPE 0 and ID -1: the file's default attribute); the answer is the
 * content in chunks, each a line with its length in decimal and then that
 * many bytes, ended by a line `0`, or a line `E message` when reading failed
 * (also half-way). Answers come in the order of the requests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { PassThrough, type Readable } from 'node:stream';
import { DeviceError } from '../errors.ts';
import type { TskSource } from './tsk.ts';

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
import sys
try:
    import pytsk3
except ImportError as e:
    sys.stderr.write('python3-tsk is missing: %s\n' % e)
    sys.exit(3)
path, offset, fstype = sys.argv[1], int(sys.argv[2]), sys.argv[3]
CHUNK = ${CHUNK}
types = {'ntfs': pytsk3.TSK_FS_TYPE_NTFS_DETECT, 'fat': pytsk3.TSK_FS_TYPE_FAT_DETECT, 'exfat': pytsk3.TSK_FS_TYPE_EXFAT, 'ext': pytsk3.TSK_FS_TYPE_EXT_DETECT}
fs = pytsk3.FS_Info(pytsk3.Img_Info(path, type=pytsk3.TSK_IMG_TYPE_RAW), offset=offset, type=types[fstype])
out = sys.stdout.buffer
out.write(b'ready\n')
out.flush()
def size_of(f, atype, aid):
    if atype == 0:
        return f.info.meta.size
    for a in f:
        if int(a.info.type) == atype and a.info.id == aid:
            return a.info.size
    raise IOError('attribute %d-%d not found' % (atype, aid))
for line in iter(sys.stdin.buffer.readline, b''):
    inode, atype, aid = (int(x) for x in line.split())
    try:
        f = fs.open_meta(inode=inode)
        size = size_of(f, atype, aid)
        done = 0
        while done < size:
            data = f.read_random(done, min(CHUNK, size - done), atype or pytsk3.TSK_FS_ATTR_TYPE_DEFAULT, aid)
            if not data:
                raise IOError('the read ended at byte %d of %d' % (done, size))
            out.write(b'%d\n' % len(data))
            out.write(data)
            done += len(data)
        out.write(b'0\n')
    except Exception as e:
        out.write(b'E ' + str(e).replace('\n', ' ').encode('utf-8', 'replace') + b'\n')
    out.flush()
`;

interface Pending {
  readonly out: PassThrough;
  readonly address: string;
}

/**
 * One reader process for a run of files (an archive's): `content` queues a
 * file and returns its stream at once; the streams fill in request order,
 * so they must be consumed in that order (an archive does). Back-pressure
 * reaches the process: a stream not read yet pauses it once its buffer is
 * full. `close` ends the process (also when files are still queued: their
 * streams then fail).
 */
export class TskReader {
  readonly #child: ChildProcess;
  readonly #queue: Pending[] = [];
  /** Resolves true once the process has opened the filesystem; false when it cannot run (no python3-tsk). */
  readonly ready: Promise<boolean>;
  #buffered = Buffer.alloc(0);
  /** Bytes of the current chunk still to come; -1 while a length line is awaited. */
  #chunkLeft = -1;
  #started = false;
  #failure: Error | null = null;
  #stderr = '';

  constructor(private readonly src: TskSource) {
    const offset = src.offsetSectors * src.sectorSize;
    this.#child = spawn(PYTHON, ['-c', PROGRAM, src.path, String(offset), src.fsType], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child.stdin!.on('error', () => {});
    this.#child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (this.#stderr.length < 4096) this.#stderr += d; });
    let resolveReady!: (ok: boolean) => void;
    this.ready = new Promise((r) => (resolveReady = r));
    this.#child.on('error', (e) => {
      this.#fail(new DeviceError(`cannot run ${PYTHON}: ${e.message}`, { hint: 'install Debian\'s python3-tsk package (scripts/install-tools.sh)', cause: e }));
      resolveReady(false);
    });
    this.#child.on('close', (code, signal) => {
      resolveReady(false);
      this.#fail(new DeviceError(`the file reader (libtsk) on the ${src.fsType} filesystem at sector ${src.offsetSectors} of ${src.path} ended (${this.#stderr.trim() || `exit ${code ?? signal}`})`));
    });
    this.#child.stdout!.on('data', (d: Buffer) => {
      if (!this.#started) {
        const nl = d.indexOf(0x0a);
        if (nl < 0 || d.subarray(0, nl).toString() !== 'ready') {
          this.#child.kill('SIGKILL');
          return;
        }
        this.#started = true;
        resolveReady(true);
        d = d.subarray(nl + 1);
      }
      this.#take(d);
    });
  }

  /**
   * The content of the file at TSK address `address` (`12`, or NTFS's
   * `68-128-2`) as a stream; it fails (DeviceError) when the reader does.
   */
  content(address: string): Readable {
    // A small buffer per stream: the streams queued behind the one being read fill up to it, so this bounds the memory of an archive's look-ahead.
    const out = new PassThrough({ highWaterMark: STREAM_BUFFER });
    // Reading goes on where the consumer left off: the process is paused by a full stream, resumed when it drains.
    out.on('drain', () => this.#child.stdout!.resume());
    // A stream its consumer destroyed takes no more bytes: the rest of its answer is parsed and dropped.
    out.on('close', () => this.#child.stdout!.resume());
    if (this.#failure) {
      process.nextTick(() => out.destroy(this.#failure!));
      return out;
    }
    const [inode, type, id] = address.split('-');
    this.#queue.push({ out, address });
    this.#child.stdin!.write(`${Number(inode)} ${type === undefined ? 0 : Number(type)} ${id === undefined ? -1 : Number(id)}\n`);
    return out;
  }

  /** Ends the process; streams not finished fail. */
  close(): void {
    this.#child.stdin!.end();
    if (this.#child.exitCode === null) this.#child.kill('SIGKILL');
  }

  #fail(e: Error): void {
    this.#failure ??= e;
    for (const p of this.#queue.splice(0)) p.out.destroy(this.#failure);
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
