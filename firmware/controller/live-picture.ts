/**
 * The active drive's files in inline mode are read from a frozen picture,
 * never from the drive the host is changing: a live snapshot (src/snapshot's
 * LiveSnapshot, without a changed-block epoch: nothing is copied) exported
 * over NBD and mounted as a read-only file (sata-bridge's NbdFile), which
 * The Sleuth Kit reads like an image.
 *
 * qemu-storage-daemon holds one snapshot at a time, so readers share it:
 * a reader joins the picture while it is younger than `shareMs` or still
 * being read; it goes `lingerMs` after its last reader, and at the latest
 * `maxHoldMs` after it was taken (cutting readers still reading); the next
 * reader gets a new one. Every answer says when its picture was taken. A job's live snapshot (sync, verify, clone)
 * comes first: `forJob` ends the readers' picture and refuses new readers
 * (BusyError) until the job's snapshot is gone.
 *
 * The readers' picture waits for no quiet moment and runs no hooks: a
 * listing cannot wait seconds, and freezing the host's filesystem for it is
 * out of proportion. It is crash-consistent: what a power loss at that
 * instant would leave (a journaled filesystem's journal is not replayed:
 * The Sleuth Kit reads the metadata as it lies).
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { BusyError, RefusedError } from '../../src/errors.ts';
import { LiveSnapshot, type SnapshotCacheConfig } from '../../src/snapshot/index.ts';
import { NbdFile, SnapshotDrive, openDrive } from '../../src/sata-bridge/index.ts';
import { FileView } from '../../src/file-view/index.ts';
import type { StorageDaemon } from '../../src/export/index.ts';

/** A reader's hold on the picture. */
export interface PictureLease {
  /** The picture as a read-only file. */
  readonly file: string;
  /** The active drive's logical sector size (the picture's file does not say it). */
  readonly sectorSize: number;
  /** When the picture was taken. */
  readonly takenAt: Date;
  /** Partition `n` of the picture. */
  open(partition: number): Promise<FileView>;
  /** Idempotent. */
  release(): void;
}

export interface LivePicturesOptions {
  /** The daemon serving the active drive now, and that drive's path; null while none is. */
  readonly source: () => { daemon: StorageDaemon; drive: string } | null;
  /** Where the snapshot's cache and the mount points go (inline mode's state directory). */
  readonly dir: string;
  readonly cache: () => SnapshotCacheConfig;
  readonly log: Logger;
  /** A picture younger than this is shared by a new reader (default 30 s). */
  readonly shareMs?: number;
  /** A picture without readers goes after this (default 10 s: a few clicks in the explorer share it). */
  readonly lingerMs?: number;
  /** A picture goes at the latest this long after it was taken, readers or not (default 60 min: a reader stuck on a stalled client does not hold it for ever). */
  readonly maxHoldMs?: number;
}

interface Held {
  readonly snapshot: LiveSnapshot;
  readonly file: NbdFile;
  readonly sectorSize: number;
  readonly takenAt: Date;
  refs: number;
  linger: NodeJS.Timeout | null;
  readonly expiry: NodeJS.Timeout;
  /** Resolves once torn down. */
  closing: Promise<void> | null;
}

export class LivePictures {
  #held: Held | null = null;
  /** Serializes taking and tearing down. */
  #queue: Promise<unknown> = Promise.resolve();
  /** The job whose own snapshot holds the daemon now. */
  #job: string | null = null;

  constructor(private readonly o: LivePicturesOptions) {}

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * A hold on a picture of the active drive, shared or new.
   * @throws BusyError while a job reads its own snapshot; RefusedError when the export is not running; DeviceError when the snapshot or its file cannot be made.
   */
  lease(): Promise<PictureLease> {
    return this.#serial(async () => {
      if (this.#job) throw this.#busy();
      let h = this.#held;
      // A picture the daemon lost (it restarted) or the host's writes broke (its cache overflowed) is not shared: it goes.
      if (h && !h.closing) {
        const lost = await h.snapshot.check().catch((e: Error) => e.message);
        if (lost) await this.#teardown(h, lost);
      }
      const age = h ? Date.now() - h.takenAt.getTime() : 0;
      // Young, or still being read (a new reader waiting for a long download to end would wait too long): shared.
      if (h && !h.closing && age < this.#maxHold && (age < (this.o.shareMs ?? 30_000) || h.refs > 0)) return this.#join(h);
      // Idle and old, or past its longest hold: it goes, and a new one is taken.
      if (h) await this.#whenFree(h);
      h = await this.#take();
      return this.#join(h);
    });
  }

  /** Runs `fn` with a lease, released after. */
  async use<T>(fn: (lease: PictureLease) => Promise<T>): Promise<T> {
    const lease = await this.lease();
    try {
      return await fn(lease);
    } finally {
      lease.release();
    }
  }

  /**
   * Runs a job that takes the daemon's snapshot itself (a live sync, verify
   * or clone): the readers' picture is torn down first (readers still
   * reading get an error), and new readers are refused until `fn` ends.
   */
  async forJob<T>(kind: string, fn: () => Promise<T>): Promise<T> {
    await this.#serial(async () => {
      this.#job = kind;
      if (this.#held) await this.#teardown(this.#held, `a ${kind} needs the snapshot`);
    });
    try {
      return await fn();
    } finally {
      this.#job = null;
    }
  }

  /** Tears the picture down now (the export is about to stop). */
  revoke(why: string): Promise<void> {
    return this.#serial(async () => {
      if (this.#held) await this.#teardown(this.#held, why);
    });
  }

  #busy(): BusyError {
    return new BusyError(`a ${this.#job} is reading its own snapshot of the active drive: the active side can be read when it ends`, { hint: 'list the standby alone now (side=standby), or try again after the job' });
  }

  async #take(): Promise<Held> {
    const src = this.o.source();
    if (!src?.daemon.running) throw new RefusedError('inline mode: the host export is not running, so there is no snapshot of the active drive to read', { hint: 'see the daemon log; restart dpsrd' });
    const dev = await openDrive(src.drive);
    const sectorSize = dev.logicalSectorSize;
    await dev.close();
    const snapshot = await LiveSnapshot.prepare({ daemon: src.daemon, cacheDir: this.o.dir, probe: SnapshotDrive.probe, ...this.o.cache() });
    let file: NbdFile;
    try {
      await snapshot.freeze();
      file = await NbdFile.mount(await snapshot.export(), join(this.o.dir, 'pictures'));
    } catch (e) {
      await snapshot.close().catch(() => undefined);
      throw e;
    }
    const takenAt = new Date();
    const h: Held = { snapshot, file, sectorSize, takenAt, refs: 0, linger: null, closing: null, expiry: setTimeout(() => void this.#teardown(h, 'held for its longest time'), this.#maxHold) };
    h.expiry.unref();
    this.#held = h;
    this.o.log.info({ file: file.path, at: takenAt.toISOString() }, 'a picture of the active drive was taken for the file explorer');
    return h;
  }

  #join(h: Held): PictureLease {
    h.refs++;
    if (h.linger) clearTimeout(h.linger);
    h.linger = null;
    let released = false;
    return {
      file: h.file.path,
      sectorSize: h.sectorSize,
      takenAt: h.takenAt,
      open: (partition) => FileView.open(h.file.path, partition, { imageSectorSize: h.sectorSize }),
      release: () => {
        if (released) return;
        released = true;
        h.refs--;
        if (h.refs > 0 || h.closing) return;
        h.linger = setTimeout(() => void (h.refs === 0 ? this.#teardown(h, 'no reader left') : undefined), this.o.lingerMs ?? 10_000);
        h.linger.unref();
      },
    };
  }

  get #maxHold(): number {
    return this.o.maxHoldMs ?? 60 * 60_000;
  }

  /** Tears `h` down once it has no readers, at the latest at its longest hold. */
  async #whenFree(h: Held): Promise<void> {
    while (!h.closing && h.refs > 0 && Date.now() - h.takenAt.getTime() < this.#maxHold) await new Promise((r) => setTimeout(r, 100));
    await this.#teardown(h, 'too old to share');
  }

  #teardown(h: Held, why: string): Promise<void> {
    h.closing ??= (async () => {
      if (h.linger) clearTimeout(h.linger);
      clearTimeout(h.expiry);
      if (h.refs > 0) this.o.log.warn({ readers: h.refs, why }, 'the picture of the active drive goes while readers still read it: they get an error');
      await h.file.close().catch((e: Error) => this.o.log.warn({ err: e }, 'unmounting the picture failed'));
      await h.snapshot.close().catch((e: Error) => this.o.log.warn({ err: e }, 'the picture\'s snapshot could not be torn down: it is removed at the next snapshot or restart'));
      if (this.#held === h) this.#held = null;
    })();
    return h.closing;
  }
}
