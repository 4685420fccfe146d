/**
 * Whether a pair's standby still holds what its last copy left there: a
 * sample of its blocks read and hashed against the standby's manifest. A
 * drive written outside the pair's copies (a clone from another state
 * directory, a tool run while the daemon was down) differs from its
 * manifest, and a backup that is not one must not be failed over to or
 * restored from. A clean sample proves nothing about the blocks not read;
 * a verify does. So besides an even spread, the sample always holds the
 * blocks a mount or a write elsewhere changes: the partition tables (first
 * and last blocks) and each filesystem's superblock, allocation and root
 * metadata.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { allocAligned, locateDrive, openLocated, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../sata-bridge/index.ts';
import { isDpsrError } from '../errors.ts';
import { readLayout, writeTelltales, SNIFF_BYTES } from '../disk-layout/index.ts';
import { BlockHasher } from './hash.ts';
import { Manifest, hashBlocks } from './manifest.ts';
import { acquireDriveReadLock, takePairLockNow } from './pair-lock.ts';
import { PairStore } from './pair-state.ts';

export interface SpotCheckRequest {
  readonly stateDir: string;
  readonly pairId: string;
  /** Path of the drive now in the standby's place. */
  readonly standby: string;
  /**
   * Blocks read (default 64), spread evenly over what the manifest covers;
   * read besides them: the partition tables and, in each filesystem, the
   * metadata any mount or write elsewhere updates (writeTelltales).
   */
  readonly samples?: number;
  readonly openDevice?: (loc: DriveLocation, options: OpenDriveOptions) => Promise<BlockDevice>;
}

export interface SpotCheck {
  readonly blocksChecked: number;
  readonly blocksDiffering: number;
  /** Byte offset of the first differing block, when one differs. */
  readonly firstDiffering?: number;
  /**
   * The standby's size or logical sector size is not what its last copy
   * recorded (bytes): it is no backup whatever its blocks hold (the copy's
   * tail, the backup GPT, may be gone); blocksDiffering is then at least 1.
   */
  readonly geometryChanged?: { readonly recordedBytes: number; readonly nowBytes: number; readonly recordedSectorSize: number; readonly nowSectorSize: number };
}

/**
 * Reads a sample of the standby's blocks and compares their hashes with
 * its manifest. Returns null when there is nothing to compare (no trusted
 * manifest, the standby is not consistent or is another drive, a copy or a
 * writer holds it now). When a block differs, the manifest is marked dirty
 * (manifest mode no longer trusts it) and the pair's standby recorded as
 * inconsistent: failover and restore refuse it until a sync made it a
 * backup again.
 */
export async function spotCheckStandby(req: SpotCheckRequest): Promise<SpotCheck | null> {
  const store = new PairStore(req.stateDir, { create: false });
  const pair = store.byId(req.pairId);
  if (!pair || pair.standbyState !== 'consistent' || pair.pendingCopy) return null;
  const file = join(store.pairDir(pair), 'standby.manifest');
  if (!existsSync(file)) return null;
  const busy = (e: unknown) => {
    if (isDpsrError(e) && e.kind === 'busy') return null;
    throw e;
  };
  let pairLock;
  try {
    pairLock = takePairLockNow(req.stateDir, pair.id, `spot check of the standby of pair ${pair.id}`);
  } catch (e) {
    return busy(e);
  }
  try {
    const loc = locateDrive(req.standby);
    const readLock = await acquireDriveReadLock(loc, `spot check of the standby of pair ${pair.id}`).catch(busy);
    if (!readLock) return null;
    try {
      const dev = await (req.openDevice ?? openLocated)(loc, { write: false });
      try {
        const rec = pair.drives[pair.standbyKey]!;
        if (dev.identity.key !== pair.standbyKey) return null;
        const { manifest, usable } = await Manifest.open(file, { targetKey: pair.standbyKey, targetSize: rec.sizeBytes, generation: rec.generation });
        try {
          if (!usable) return null;
          const sampled = await compareSample(dev, manifest, req.samples ?? 64);
          // Geometry first (DESIGN rule 8): blocks read from a drive that grew or shrank may all still match.
          const geometryChanged = dev.size !== rec.sizeBytes || dev.logicalSectorSize !== rec.logicalSectorSize;
          const result: SpotCheck = geometryChanged
            ? {
                ...sampled,
                blocksDiffering: Math.max(1, sampled.blocksDiffering),
                firstDiffering: Math.min(sampled.firstDiffering ?? Infinity, dev.size, rec.sizeBytes),
                geometryChanged: { recordedBytes: rec.sizeBytes, nowBytes: dev.size, recordedSectorSize: rec.logicalSectorSize, nowSectorSize: dev.logicalSectorSize },
              }
            : sampled;
          if (result.blocksDiffering > 0) {
            await manifest.markDirty();
            store.update(pair.id, `spot check of ${req.standby}: ${result.geometryChanged ? `its size is ${dev.size} bytes (${dev.logicalSectorSize}-byte sectors) where its last copy left ${rec.sizeBytes} (${rec.logicalSectorSize})` : 'written outside the pair\'s copies'}`, (p) => {
              if (p.standbyState === 'consistent') p.standbyState = 'inconsistent';
            });
          }
          return result;
        } finally {
          await manifest.close();
        }
      } finally {
        await dev.close();
      }
    } finally {
      readLock.release();
    }
  } finally {
    pairLock.release();
  }
}

async function compareSample(dev: BlockDevice, manifest: Manifest, samples: number): Promise<SpotCheck> {
  const bs = manifest.blockSize;
  const cover = manifest.coverage;
  const total = cover.reduce((n, r) => n + r.length, 0);
  const blocks = new Set<number>();
  for (let i = 0; i < samples && total > 0; i++) {
    let at = Math.floor((i * total) / samples);
    for (const r of cover) {
      if (at < r.length) {
        blocks.add(Math.floor((r.start + at) / bs));
        break;
      }
      at -= r.length;
    }
  }
  for (const offset of await telltaleOffsets(dev)) blocks.add(Math.floor(offset / bs));
  const hasher = new BlockHasher();
  const buf = allocAligned(bs);
  let checked = 0;
  let differing = 0;
  let firstDiffering: number | undefined;
  for (const block of [...blocks].sort((a, b) => a - b)) {
    const start = block * bs;
    const length = Math.min(bs, dev.size - start);
    if (length <= 0) continue;
    const [want] = await manifest.readHashes(block, 1);
    if (!want) continue;
    await dev.read(buf, start, length);
    checked++;
    if (hashBlocks(hasher, buf, length, bs)[0] !== want) {
      differing++;
      firstDiffering ??= start;
    }
  }
  return { blocksChecked: checked, blocksDiffering: differing, ...(firstDiffering !== undefined ? { firstDiffering } : {}) };
}

/**
 * Byte offsets on the drive of what a mount or a write elsewhere changes:
 * its first and last logical sectors (MBR, both GPT headers) and each
 * recognised filesystem's writeTelltales. A drive whose layout cannot be
 * read gives just those two sectors: the spread sample still runs.
 */
async function telltaleOffsets(dev: BlockDevice): Promise<number[]> {
  const offsets = [0, dev.size - dev.logicalSectorSize];
  try {
    const layout = await readLayout(dev);
    const filesystems = layout.wholeDiskFilesystem
      ? [{ startByte: 0, sizeBytes: dev.size, filesystem: layout.wholeDiskFilesystem }]
      : layout.partitions.filter((p) => p.filesystem);
    const head = allocAligned(SNIFF_BYTES);
    for (const fs of filesystems) {
      if (fs.startByte + SNIFF_BYTES > dev.size) continue;
      await dev.read(head, fs.startByte, SNIFF_BYTES);
      for (const at of writeTelltales(fs.filesystem, head, fs.sizeBytes)) offsets.push(fs.startByte + at);
    }
  } catch (e) {
    // A drive too damaged to show its layout still gets the spread sample; an unreadable one fails that.
    if (isDpsrError(e) && e.kind === 'busy') throw e;
  }
  return offsets.filter((o) => o >= 0 && o < dev.size);
}
