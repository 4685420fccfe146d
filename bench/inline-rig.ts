/**
 * The drives, daemon and change the inline benchmark and its profile share:
 * an active image of random bytes served by qemu-storage-daemon (O_DIRECT),
 * a standby and its pristine copy, a changed-block tracker with one epoch
 * committed, and the 1 % scattered change the host makes through the export.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageDaemon } from '../src/export/index.ts';
import { ChangedBlockTracker, DIRTY_GRANULARITY } from '../src/snapshot/index.ts';
import { NbdDrive, readFlaggedRanges, STATE_DIRTY } from '../src/sata-bridge/index.ts';
import { randomImage } from '../test/support/images.ts';
import { seededShuffle } from '../test/support/xorshift.ts';

export interface InlineRig {
  /** The active image, the standby, and the standby as it was before any sync (all `size` bytes). */
  readonly A: string;
  readonly B: string;
  readonly B0: string;
  readonly daemon: StorageDaemon;
  readonly tracker: ChangedBlockTracker;
}

/** Makes the images in `dir` (`size` bytes, seed 77) and starts the daemon and tracker; the caller stops the daemon. */
export async function startInlineRig(dir: string, size: number): Promise<InlineRig> {
  const A = join(dir, 'active.img');
  const B = join(dir, 'standby.img');
  const B0 = join(dir, 'standby0.img');
  randomImage(A, size, 77);
  copyFileSync(A, B0);
  copyFileSync(A, B);
  const daemon = new StorageDaemon({ drive: A, runDir: join(dir, 'run'), listen: { unix: join(dir, 'run', 'nbd.sock') }, exportName: 'sys', directIo: true });
  await daemon.start();
  try {
    const tracker = new ChangedBlockTracker({ daemon, stateFile: join(dir, 'cbt.json'), readRanges: (u, c) => readFlaggedRanges(u, c, STATE_DIRTY) });
    await tracker.commit(await tracker.beginEpoch());
    return { A, B, B0, daemon, tracker };
  } catch (e) {
    await daemon.stop();
    throw e;
  }
}

/**
 * The host's change: 1 % of the drive (`size` bytes) in writes of one dirty
 * granule (64 KiB) at distinct granules picked by a seeded shuffle, through
 * the export at `uri`, flushed.
 */
export async function writeScatteredChange(uri: string, size: number): Promise<void> {
  const host = await NbdDrive.open(uri, { write: true });
  try {
    const granules = seededShuffle(size / DIRTY_GRANULARITY, 4242);
    const data = Buffer.alloc(DIRTY_GRANULARITY);
    for (let i = 0; i < Math.round((size * 0.01) / DIRTY_GRANULARITY); i++) {
      data.fill((i % 255) + 1);
      await host.write(data, granules[i]! * DIRTY_GRANULARITY);
    }
    await host.flush();
  } finally {
    await host.close();
  }
}
