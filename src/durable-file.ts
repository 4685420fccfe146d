/**
 * Files that survive a power cut: written to a temp file, fsynced, renamed
 * over the old one, and the directory fsynced. A checksum line detects a torn
 * or edited file, which is reported, never silently trusted. A leaf module
 * like errors.ts: every room may use it.
 */
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync, unlinkSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { DeviceError } from './errors.ts';

const HEADER = '#dpsr-checksum sha256=';

export class CorruptFileError extends DeviceError {}

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

/** Writes `data` durably: temp file + fsync + rename + directory fsync. */
export function writeFileDurably(path: string, data: string | Uint8Array, mode = 0o600): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* nothing left to clean */
    }
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  fsyncDirectory(dir);
}

/** JSON with a checksum line in front, written durably. */
export function writeJsonDurably(path: string, value: unknown): void {
  const body = JSON.stringify(value, null, 2) + '\n';
  writeFileDurably(path, `${HEADER}${checksum(body)}\n${body}`);
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
export function writeJsonTwoCopies(path: string, value: { sequence: number }): void {
  writeJsonDurably(path, value);
  writeJsonDurably(`${path}.bak`, value);
}

export interface TwoCopyRead<T> {
  readonly value: T | undefined;
  /** What was wrong with either copy, for the event log. */
  readonly problems: string[];
}

export function readJsonTwoCopies<T extends { sequence: number }>(path: string): TwoCopyRead<T> {
  const problems: string[] = [];
  const tryRead = (p: string): T | undefined => {
    try {
      return readJsonChecked<T>(p);
    } catch (e) {
      problems.push((e as Error).message);
      return undefined;
    }
  };
  const a = tryRead(path);
  const b = tryRead(`${path}.bak`);
  if (a && b) return { value: a.sequence >= b.sequence ? a : b, problems };
  return { value: a ?? b, problems };
}
