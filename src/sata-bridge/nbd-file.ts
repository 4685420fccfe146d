/**
 * An NBD export seen as a read-only file, for readers that need a path (The
 * Sleuth Kit reads an image file or a device, not an NBD URI): libnbd's
 * `nbdfuse -r` (Debian libnbd-bin, FUSE) serves the export as one file in a
 * private mount point. Used for the frozen picture of inline mode's live
 * snapshot; the kernel here has no nbd module, and qemu-storage-daemon's
 * own FUSE export gave reads that disagreed with its NBD export.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DeviceError } from '../errors.ts';

const FILE = 'picture';

export class NbdFile {
  #closed: Promise<void> | null = null;

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    /** The file holding the export's bytes (read-only). */
    readonly path: string,
    /** Bytes of the export. */
    readonly size: number,
  ) {}

  /**
   * Mounts `uri` (an NBD URI) read-only as a file under a new directory in
   * `parent`; resolves once the file answers with the export's size.
   * @throws DeviceError when nbdfuse is missing, exits, or the file does not
   * appear within `timeoutMs` (default 10 s); nothing is left mounted then.
   */
  static async mount(uri: string, parent: string, timeoutMs = 10_000): Promise<NbdFile> {
    mkdirSync(parent, { recursive: true, mode: 0o700 });
    const dir = mkdtempSync(join(parent, 'nbdfile-'));
    const path = join(dir, FILE);
    const child = spawn('nbdfuse', ['-r', path, uri], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString('utf8')).slice(-2000)));
    let exited: string | null = null;
    const spawnError = new Promise<never>((_, reject) =>
      child.on('error', (e: NodeJS.ErrnoException) => reject(new DeviceError(e.code === 'ENOENT' ? 'cannot run nbdfuse: it is not installed' : `cannot run nbdfuse: ${e.message}`, { hint: "install Debian's libnbd-bin and fuse3 packages", cause: e }))),
    );
    spawnError.catch(() => undefined);
    child.on('exit', (code, signal) => (exited = `nbdfuse exited (${signal ?? `code ${code}`})${stderr.trim() ? `: ${stderr.trim()}` : ''}`));
    try {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        await Promise.race([sleep(50), spawnError]);
        if (exited) throw new DeviceError(`the NBD export ${uri} could not be mounted as a file: ${exited}`);
        try {
          const size = statSync(path).size;
          if (size > 0) return new NbdFile(child, dir, path, size);
        } catch {
          // Not mounted yet.
        }
        if (Date.now() > deadline) throw new DeviceError(`the NBD export ${uri} did not appear as a file within ${timeoutMs / 1000} s${stderr.trim() ? `: ${stderr.trim()}` : ''}`);
      }
    } catch (e) {
      await new NbdFile(child, dir, path, 0).close();
      throw e;
    }
  }

  /** Unmounts and removes the mount point (idempotent); readers still reading get an error. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      const gone = new Promise<void>((resolve) => (this.child.exitCode !== null || this.child.signalCode !== null ? resolve() : this.child.once('exit', () => resolve())));
      if (this.child.exitCode === null && this.child.signalCode === null) {
        await new Promise<void>((resolve) => execFile('fusermount3', ['-u', '-z', this.dir], () => resolve()));
        await Promise.race([gone, sleep(5000)]);
        if (this.child.exitCode === null && this.child.signalCode === null) {
          this.child.kill('SIGKILL');
          await Promise.race([gone, sleep(2000)]);
        }
      }
      try {
        rmdirSync(this.dir);
      } catch {
        // Still a mount point after a lazy unmount: the kernel drops it when the last reader closes.
      }
    })();
    return this.#closed;
  }
}
