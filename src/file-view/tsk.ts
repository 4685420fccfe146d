/**
 * The Sleuth Kit's tools run as child processes: each reads the image or
 * device read-only at the partition's sector offset, never mounts it and
 * never writes to it. Every run has a time limit, since a damaged (or, in
 * TSK 4.11, an exFAT given to `fsstat`) filesystem can make a tool loop.
 */
import { execFile, spawn } from 'node:child_process';
import { PassThrough, type Readable } from 'node:stream';
import { DeviceError, NotFoundError } from '../errors.ts';

/** Where a filesystem lies: the image file or block device, its sector offset and the sector size TSK counts in. */
export interface TskSource {
  /** Path of the image file or block device. */
  readonly path: string;
  /** Start of the partition, in sectors of `sectorSize`. */
  readonly offsetSectors: number;
  /** Logical sector size of the drive, bytes (512 or 4096). */
  readonly sectorSize: number;
  /** TSK's filesystem type (`-f`): ext, fat, exfat or ntfs. */
  readonly fsType: TskFsType;
}

export type TskFsType = 'ext' | 'fat' | 'exfat' | 'ntfs';

/** Time limit of a listing run, ms; content and walks get multiples of it. */
export const TIMEOUT_MS = 120_000;
const MAX_OUTPUT = 512 * 1024 * 1024;

export function sourceArgs(src: TskSource): string[] {
  return ['-f', src.fsType, '-i', 'raw', '-b', String(src.sectorSize), '-o', String(src.offsetSectors)];
}

export function missingTool(tool: string, e: NodeJS.ErrnoException): DeviceError {
  return new DeviceError(`cannot run ${tool}: ${e.message}`, { hint: 'install Debian\'s sleuthkit package (scripts/install-tools.sh)', cause: e });
}

/**
 * Runs a TSK tool that prints text and returns its standard output.
 * `args` come after the source options; `trailing` after the image path
 * (inode or data-unit addresses). `signal` ends the run early (rejecting with its reason).
 * @throws DeviceError when the tool is missing, fails or runs past its time limit.
 */
export function runTsk(tool: string, src: TskSource, args: string[], trailing: string[] = [], signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(tool, [...sourceArgs(src), ...args, src.path, ...trailing], { encoding: 'buffer', maxBuffer: MAX_OUTPUT, timeout: TIMEOUT_MS, killSignal: 'SIGKILL', signal }, (err, stdout, stderr) => {
      if (err) {
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        if (e.code === 'ENOENT') return reject(missingTool(tool, e));
        if (signal?.aborted) return reject(signal.reason);
        const why = e.killed ? `ran longer than ${TIMEOUT_MS / 1000} s` : stderr.toString('utf8').trim() || e.message;
        return reject(new DeviceError(`${tool} could not read the ${src.fsType} filesystem at sector ${src.offsetSectors} of ${src.path}: ${why}`, { cause: err }));
      }
      resolve(stdout.toString('utf8'));
    });
  });
}

/**
 * The content of one file (TSK address: an inode number, or for NTFS
 * `entry-type-id`) as a stream, from `icat` (holes of sparse files read as
 * zeros, as the filesystem gives them; `-r` for a deleted entry recovers what
 * its blocks still hold). Destroying the stream ends the child.
 */
export function icatStream(src: TskSource, address: string, deleted = false): Readable {
  const child = spawn('icat', [...sourceArgs(src), ...(deleted ? ['-r'] : []), src.path, address], { stdio: ['ignore', 'pipe', 'pipe'] });
  // Read at once into our own stream: Node discards what a child wrote to a pipe nobody reads yet when the child exits,
  // so a small file could reach a consumer that starts late (an archive's next entry) already drained.
  // It ends only once icat has exited with 0, so a failing read is an error, never a short file.
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  child.stdout.pipe(out, { end: false });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 4096) stderr += d; });
  const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS * 10);
  child.on('error', (e: NodeJS.ErrnoException) => out.destroy(e.code === 'ENOENT' ? missingTool('icat', e) : e));
  child.on('close', (code, signal) => {
    clearTimeout(timer);
    if (out.destroyed) return;
    if (code === 0) out.end();
    else out.destroy(new DeviceError(`icat could not read ${address} at sector ${src.offsetSectors} of ${src.path}: ${stderr.trim() || `exit ${code ?? signal}`}`));
  });
  out.on('close', () => { if (child.exitCode === null) child.kill('SIGKILL'); });
  return out;
}

/**
 * The TSK address of a path (`ifind -n`), or throws NotFoundError. `path`
 * must already be checked (no `..`, no NUL).
 */
export async function addressOf(src: TskSource, path: string): Promise<string> {
  const out = (await runTsk('ifind', src, ['-n', path])).trim();
  if (out === '' || /not found/i.test(out)) throw new NotFoundError(`no ${path} on this partition`, { hint: 'list the folder above it to see what is there' });
  return out.split('\n')[0]!.trim();
}

/**
 * Whether the metadata entry at TSK address `address` (an inode, or an NTFS
 * MFT entry) is allocated, from `istat`'s "Allocated" / "Not Allocated" line.
 * @throws DeviceError istat fails or prints neither.
 */
export async function isAllocated(src: TskSource, address: string, signal?: AbortSignal): Promise<boolean> {
  const out = await runTsk('istat', src, [], [address.split('-')[0]!], signal);
  const m = /^(Not )?Allocated\b/m.exec(out);
  if (!m) throw new DeviceError(`istat gave no allocation state for ${address} at sector ${src.offsetSectors} of ${src.path}`);
  return m[1] === undefined;
}
