/**
 * A drive read through its live snapshot: the identity and geometry of the
 * real drive (so a pair's checks see the drive they paired), the content of
 * the frozen picture served by qemu-storage-daemon's snapshot export. Used
 * as the source of a live sync in inline mode, where the drive keeps
 * changing under the host while the copy reads one instant of it.
 *
 * The picture is read gently: the host's writes go through the same
 * qemu-storage-daemon (one main loop, no iothread) and each first write to a
 * 64 KiB cluster waits for its copy-before-write. Every read is cut into
 * pieces of at most `PICTURE_READ_PIECE` bytes, the pieces of all callers
 * go one at a time, and each is followed by a pause as long as it took
 * (`PICTURE_READ_SHARE`). Measured with a guest writing 4 KiB at random
 * places (queue depth 1) while the whole 2 GiB picture was read, on 2 loaded
 * cores: the engine's own pattern (4 MiB reads, two in flight) took the
 * guest's p99 from 5–8 ms to 46–56 ms; 1 MiB pieces one at a time to 7–12
 * ms; with the pauses, the live-sync benchmark's p99 went from 3.7× to 2.0×
 * the p99 without a sync, the copy taking 2.5 times as long
 * (bench/live-sync.bench.ts).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BadInputError, DeviceError } from '../errors.ts';
import { DeviceWrapper, type BlockDevice, type DriveIdentity } from './block-device.ts';
import { NbdDrive } from './nbd-drive.ts';

/** The largest NBD read of the picture, in bytes, and only one in flight per drive. */
export const PICTURE_READ_PIECE = 1024 * 1024;
/**
 * The share of time the picture's reads may keep busy: after a piece that
 * took t ms, the next waits t × (1 / share − 1) ms. A busy daemon or disk
 * makes pieces slower and so the pauses longer.
 */
export const PICTURE_READ_SHARE = 0.5;

export class SnapshotDrive extends DeviceWrapper {
  /** The tail of the queue of picture reads: each piece starts when the one before settled. */
  private queue: Promise<void> = Promise.resolve();

  private constructor(
    picture: NbdDrive,
    private readonly of: BlockDevice,
  ) {
    super(picture);
  }

  /**
   * `drive` is the real drive, opened read-only by the caller (its identity
   * and geometry are checked there); it is closed here. `snapshotUri` is
   * the snapshot's NBD export. Throws DeviceError when the export's size is
   * not the drive's, BadInputError when asked to write.
   */
  static async open(drive: BlockDevice, snapshotUri: string): Promise<SnapshotDrive> {
    if (drive.writable) throw new BadInputError(`${drive.path}: a snapshot is read-only`);
    let picture: NbdDrive | null = null;
    try {
      picture = await NbdDrive.open(snapshotUri);
      if (picture.size !== drive.size) throw new DeviceError(`the snapshot ${snapshotUri} is ${picture.size} bytes, but ${drive.path} is ${drive.size}: it is not a picture of this drive`);
      if (drive.logicalSectorSize % picture.logicalSectorSize !== 0) throw new DeviceError(`the snapshot ${snapshotUri} reads in ${picture.logicalSectorSize}-byte blocks, which do not divide ${drive.path}'s ${drive.logicalSectorSize}-byte sectors`);
      return new SnapshotDrive(picture, drive);
    } catch (e) {
      await picture?.close();
      throw e;
    } finally {
      await drive.close();
    }
  }

  /**
   * Wraps a drive opener (the engine's `openDevice`): the drive opened
   * read-only at `source` (its requested path) reads from `snapshotUri`;
   * everything else opens as `open` does.
   */
  static opener<L extends { readonly requested: string }, O extends { readonly write?: boolean }>(
    source: string,
    snapshotUri: string,
    open: (loc: L, options: O) => Promise<BlockDevice>,
  ): (loc: L, options: O) => Promise<BlockDevice> {
    return async (loc, options) => {
      const dev = await open(loc, options);
      return !options.write && loc.requested === source ? SnapshotDrive.open(dev, snapshotUri) : dev;
    };
  }

  /**
   * Reads one sector at byte 0 of a snapshot export (LiveSnapshot's probe):
   * rejects with the server's error, which for a broken snapshot names
   * "Permission denied".
   */
  static async probe(snapshotUri: string): Promise<void> {
    const d = await NbdDrive.open(snapshotUri);
    try {
      await d.read(Buffer.alloc(d.logicalSectorSize), 0);
    } finally {
      await d.close();
    }
  }

  /** Reads `[position, position+length)` of the picture in pieces, one at a time (see above). */
  override async read(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    for (let rel = 0; rel < length; rel += PICTURE_READ_PIECE) {
      const n = Math.min(PICTURE_READ_PIECE, length - rel);
      let started = 0;
      const piece = this.queue.then(() => {
        started = performance.now();
        return this.inner.read(buf.subarray(rel, rel + n), position + rel, n);
      });
      // The pause holds the queue, not the caller: the next piece starts after it.
      this.queue = piece.then(
        () => sleep((performance.now() - started) * (1 / PICTURE_READ_SHARE - 1)),
        () => undefined,
      );
      await piece;
    }
  }

  override get identity(): DriveIdentity {
    return this.of.identity;
  }
  override get path(): string {
    return this.of.path;
  }
  override get logicalSectorSize(): number {
    return this.of.logicalSectorSize;
  }
  override get physicalSectorSize(): number {
    return this.of.physicalSectorSize;
  }
}
