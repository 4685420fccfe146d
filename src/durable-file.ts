/**
 * Files that survive a power cut, in one format for every state file of
 * dpsr: written to a temp file, fsynced, renamed over the old one, and the
 * directory fsynced. The file starts with a checksum line over the JSON body
 * that follows, so a torn or edited file is detected and reported, never
 * silently trusted:
 *
 *     #dpsr-checksum sha256=<hex of the body>
 *     { …JSON… }
 *
 * Records that must survive the loss of a file too (rule 5: the pairs, the
 * switch and failover state) keep two copies, `NAME` and `NAME.bak`, each in
 * this format with a `sequence` number in the body; reading takes the valid
 * copy with the highest sequence. A leaf module like errors.ts: every room
 * may use it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeSync, unlinkSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { BadInputError, DeviceError, NoSpaceError, ReadOnlyStateError } from './errors.ts';

const HEADER = '#dpsr-checksum sha256=';

export class CorruptFileError extends DeviceError {}

export { NoSpaceError, ReadOnlyStateError };

function checksum(body: string): string {
  return createHash('sha256').update(body).digest('hex');
}

export function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function isNoSpace(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * A write refused by the filesystem or the directory's permissions, as the
 * operator's error (ReadOnlyStateError naming `dir` and the fix); any other
 * error as it is.
 */
export function readOnlyStateError(e: unknown, dir: string): unknown {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (code === 'EROFS') {
    return new ReadOnlyStateError(`the state directory ${dir} is on a read-only filesystem: nothing can be recorded there`, {
      hint: `remount its filesystem read-write (mount -o remount,rw) or pass a writable --state-dir, then try again; nothing was changed`,
      cause: e,
    });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new ReadOnlyStateError(`the state directory ${dir} is read-only to this process (${code}): nothing can be recorded there`, {
      hint: `run as the user that owns it (or root), or pass a writable --state-dir, then try again; nothing was changed`,
      cause: e,
    });
  }
  return e;
}

/**
 * Throws ReadOnlyStateError when `dir` (or, while it does not exist yet, the
 * nearest folder above it) cannot be written: checked before a drive is
 * opened for writing, so a copy that could not record its state is refused
 * with nothing written.
 */
export function requireWritableDir(dir: string): void {
  let at = dir;
  for (;;) {
    try {
      accessSync(at, constants.W_OK);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && dirname(at) !== at) {
        at = dirname(at);
        continue;
      }
      const mapped = readOnlyStateError(e, dir);
      if (mapped instanceof ReadOnlyStateError) throw mapped;
      return;
    }
  }
}

// ---- space kept in reserve for recovery ----

const RESERVE = '.space-reserve';
/** Enough for the few state files a recovery writes (its job record, the pair records). */
export const DEFAULT_RESERVE_BYTES = 4 * 1024 * 1024;

/**
 * Keeps `bytes` of real blocks allocated in `dir` (a file of random bytes, so
 * a compressing filesystem cannot shrink it) for writes that must work on a
 * full filesystem: a recovery's state updates. Best effort: returns false
 * when there is no room for it now.
 */
export function ensureSpaceReserve(dir: string, bytes = DEFAULT_RESERVE_BYTES): boolean {
  const path = join(dir, RESERVE);
  try {
    if (statSync(path).size >= bytes) return true;
  } catch {
    /* not there yet */
  }
  try {
    writeFileDurably(path, randomBytes(bytes));
    return true;
  } catch {
    return false;
  }
}

/** Frees the reserve of `dir`; true when there was one. */
function releaseSpaceReserve(dir: string): boolean {
  try {
    unlinkSync(join(dir, RESERVE));
    return true;
  } catch {
    return false;
  }
}

export interface WriteOptions {
  /** File mode of a new file (default 0600). */
  readonly mode?: number;
  /**
   * The directory holding the space reserve (see ensureSpaceReserve) this
   * write may use when the filesystem is full: only for recovery.
   */
  readonly reserve?: string;
}

function writeOnce(path: string, bytes: Uint8Array, mode: number): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w', mode);
    let off = 0;
    while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* nothing left to clean */
    }
    throw e;
  }
  fsyncDirectory(dir);
}

/**
 * Writes `data` durably: temp file + fsync + rename + directory fsync. On a
 * full filesystem it throws NoSpaceError and leaves the old file as it was.
 */
export function writeFileDurably(path: string, data: string | Uint8Array, options: number | WriteOptions = {}): void {
  const opts = typeof options === 'number' ? { mode: options } : options;
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  try {
    writeOnce(path, bytes, opts.mode ?? 0o600);
  } catch (e) {
    if (!isNoSpace(e)) throw readOnlyStateError(e, dirname(path));
    if (opts.reserve && releaseSpaceReserve(opts.reserve)) {
      writeFileDurably(path, data, { mode: opts.mode });
      return;
    }
    throw new NoSpaceError(`no space left to write ${path}: its filesystem is full`, {
      hint: `free space on the filesystem of ${dirname(path)} and try again (an interrupted sync's undo journal there is freed by \`dpsr recover\`)`,
      cause: e,
    });
  }
}

/**
 * Appends `data` to `path` (made with mode 0600 when new) whole or not at
 * all: a write the filesystem cuts short is cut off again, so no torn line
 * stays for the next append to run into (a reader would lose both). Not
 * fsynced: for logs and pages, not for records. Throws NoSpaceError or
 * ReadOnlyStateError naming the fix, or the write's error.
 */
export function appendWhole(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  try {
    const fd = openSync(path, 'a', 0o600);
    try {
      const before = fstatSync(fd).size;
      try {
        let off = 0;
        while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
      } catch (e) {
        try {
          ftruncateSync(fd, before);
        } catch {
          /* the filesystem refuses even that: a reader skips a line it cannot parse */
        }
        throw e;
      }
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (!isNoSpace(e)) throw readOnlyStateError(e, dirname(path));
    throw new NoSpaceError(`no space left to append to ${path}: its filesystem is full`, {
      hint: `free space on the filesystem of ${dirname(path)} and try again (an interrupted sync's undo journal there is freed by \`dpsr recover\`)`,
      cause: e,
    });
  }
}

/** JSON with a checksum line in front, written durably. */
export function writeJsonDurably(path: string, value: unknown, options?: WriteOptions): void {
  const body = JSON.stringify(value, null, 2) + '\n';
  writeFileDurably(path, `${HEADER}${checksum(body)}\n${body}`, options);
}

/**
 * Reads a file written by writeJsonDurably. Returns undefined when it does not
 * exist; throws CorruptFileError when it is torn, edited or not JSON.
 */
export function readJsonChecked<T>(path: string): T | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const nl = text.indexOf('\n');
  const first = nl >= 0 ? text.slice(0, nl) : text;
  if (!first.startsWith(HEADER)) throw new CorruptFileError(`${path} has no checksum line: it is torn or was not written by dpsr`, { hint: 'restore it from its .bak copy or remove it and re-run' });
  const body = text.slice(nl + 1);
  if (checksum(body) !== first.slice(HEADER.length)) {
    throw new CorruptFileError(`${path} fails its checksum: it is torn or was edited`, { hint: 'restore it from its .bak copy or remove it and re-run' });
  }
  try {
    return JSON.parse(body) as T;
  } catch (e) {
    throw new CorruptFileError(`${path} is not valid JSON despite its checksum`, { cause: e });
  }
}

/**
 * Two copies (`file` and `file.bak`), written one after the other, so one is
 * always whole. Reading takes the newer valid one by its `sequence`.
 */
export function writeJsonTwoCopies(path: string, value: { sequence: number }, options?: WriteOptions): void {
  writeJsonDurably(path, value, options);
  writeJsonDurably(`${path}.bak`, value, options);
}

export interface TwoCopyRead<T> {
  readonly value: T | undefined;
  /** Which copy was used. */
  readonly from?: 'file' | 'bak';
  /** What was wrong with either copy, for the event log. */
  readonly problems: string[];
}

export function readJsonTwoCopies<T extends { sequence: number }>(path: string, validate?: (raw: unknown) => T): TwoCopyRead<T> {
  const problems: string[] = [];
  const tryRead = (p: string): T | undefined => {
    try {
      const raw = readJsonChecked<unknown>(p);
      if (raw === undefined) return undefined;
      const seq = (raw as { sequence?: unknown }).sequence;
      if (!Number.isSafeInteger(seq) || (seq as number) < 0) throw new CorruptFileError(`${p} has no valid sequence number`);
      return validate ? validate(raw) : (raw as T);
    } catch (e) {
      problems.push(e instanceof BadInputError ? `${p}: ${e.message}` : (e as Error).message);
      return undefined;
    }
  };
  const a = tryRead(path);
  const b = tryRead(`${path}.bak`);
  if (a && b) return a.sequence >= b.sequence ? { value: a, from: 'file', problems } : { value: b, from: 'bak', problems };
  return a ? { value: a, from: 'file', problems } : b ? { value: b, from: 'bak', problems } : { value: undefined, problems };
}

export interface Loaded<T> {
  readonly data: T;
  readonly seq: number;
  /** Which copy was used and what was wrong with the other, for the event log. */
  readonly from: 'file' | 'bak';
  readonly problems: string[];
}

/**
 * A record of type T kept in two copies (`NAME.json`, `NAME.json.bak`) in the
 * one format above; the body is the record with its `sequence` beside it.
 * `validate` turns parsed JSON into T or throws BadInputError: a copy that
 * parses but does not validate is treated like a torn one. T must not have a
 * field named `sequence`.
 *
 * Reads, once, the copies of the earlier format of the boot switch's store
 * (`NAME.a.json`, `NAME.b.json`: `{seq, savedAt, sum, data}` with sum = the
 * first 16 hex digits of sha256("<seq>\n<JSON of data>")) when the new ones
 * are missing, and removes them after the first save.
 */
export class DurableRecord<T extends object> {
  #seq = 0;
  readonly path: string;
  readonly legacyPaths: { a: string; b: string };

  constructor(
    readonly dir: string,
    readonly name: string,
    private readonly validate: (raw: unknown) => T,
  ) {
    if (!/^[a-z0-9-]+$/.test(name)) throw new BadInputError(`store name ${JSON.stringify(name)}: use lowercase letters, digits and dashes`);
    this.path = join(dir, `${name}.json`);
    this.legacyPaths = { a: join(dir, `${name}.a.json`), b: join(dir, `${name}.b.json`) };
  }

  #strip(raw: unknown): T {
    if (typeof raw !== 'object' || raw === null) throw new BadInputError('not an object');
    const { sequence: _seq, ...rest } = raw as Record<string, unknown>;
    return this.validate(rest);
  }

  /** The newest valid copy, or null when none exists (first start). Throws DeviceError when every copy is damaged. */
  load(): Loaded<T> | null {
    const read = readJsonTwoCopies<{ sequence: number; data: T }>(this.path, (raw) => ({ sequence: (raw as { sequence: number }).sequence, data: this.#strip(raw) }));
    const problems = [...read.problems];
    if (read.value && read.from) {
      this.#seq = read.value.sequence;
      return { data: read.value.data, seq: read.value.sequence, from: read.from, problems };
    }
    const legacy = this.#loadLegacy(problems);
    if (legacy) return legacy;
    this.#seq = 0;
    if (problems.length === 0) return null;
    throw new DeviceError(`state ${this.name} in ${this.dir}: no valid copy (${problems.join('; ')})`, {
      hint: 'both copies are damaged; inspect the files, then remove them to start from defaults',
    });
  }

  #loadLegacy(problems: string[]): Loaded<T> | null {
    const digest = (seq: number, data: unknown) => createHash('sha256').update(`${seq}\n${JSON.stringify(data)}`).digest('hex').slice(0, 16);
    let best: { seq: number; data: T } | undefined;
    for (const p of [this.legacyPaths.a, this.legacyPaths.b]) {
      let text: string;
      try {
        text = readFileSync(p, 'utf8');
      } catch {
        continue;
      }
      try {
        const env = JSON.parse(text) as { seq: number; sum: string; data: unknown };
        if (!Number.isSafeInteger(env.seq) || env.seq < 1) throw new Error('bad sequence number');
        if (env.sum !== digest(env.seq, env.data)) throw new Error('checksum mismatch');
        const data = this.validate(env.data);
        if (!best || env.seq > best.seq) best = { seq: env.seq, data };
      } catch (e) {
        problems.push(`${p}: ${(e as Error).message}`);
      }
    }
    if (!best) return null;
    this.#seq = best.seq;
    return { data: best.data, seq: best.seq, from: 'file', problems };
  }

  get seq(): number {
    return this.#seq;
  }

  /** Writes both copies with the next sequence number; returns it. */
  save(data: T, options?: WriteOptions): number {
    const checked = this.validate(JSON.parse(JSON.stringify(data)));
    const seq = this.#seq + 1;
    try {
      writeJsonTwoCopies(this.path, { ...checked, sequence: seq }, options);
    } catch (e) {
      if (e instanceof DeviceError) throw e;
      throw new DeviceError(`saving state ${this.name} to ${this.dir} failed: ${(e as Error).message}`, { cause: e });
    }
    this.#seq = seq;
    for (const p of [this.legacyPaths.a, this.legacyPaths.b]) {
      try {
        unlinkSync(p);
      } catch {
        /* not there */
      }
    }
    return seq;
  }
}
