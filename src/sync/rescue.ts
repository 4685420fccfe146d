/**
 * Reading a source that has bad sectors, the ddrescue way: when a large read
 * fails, split it and read the halves, down to single sectors, each retried a
 * bounded number of times; what stays unreadable is reported, never invented.
 * Only media errors (a DeviceError whose `fault` is 'media') are narrowed
 * down; a transport error (the drive or its bridge is gone) stops the read.
 */
import { isMediaError } from '../errors.ts';
import type { BlockDevice } from '../sata-bridge/index.ts';
import { appendRange, type ByteRange } from './ranges.ts';

export interface RescueResult {
  /** Unreadable byte ranges, relative to the drive. Empty when all was read. */
  readonly unreadable: ByteRange[];
  readonly retries: number;
}

export async function readRescued(dev: BlockDevice, buf: Buffer, position: number, length: number, retries: number): Promise<RescueResult> {
  try {
    await dev.read(buf, position, length);
    return { unreadable: [], retries: 0 };
  } catch (e) {
    if (!isMediaError(e)) throw e;
  }
  const sector = dev.logicalSectorSize;
  const unreadable: { start: number; length: number }[] = [];
  let retryCount = 0;

  const visit = async (off: number, len: number): Promise<void> => {
    if (len <= sector) {
      for (let attempt = 0; attempt <= retries; attempt++) {
        try {
          await dev.read(buf.subarray(off, off + len), position + off, len);
          return;
        } catch (e) {
          if (!isMediaError(e)) throw e;
          retryCount++;
        }
      }
      appendRange(unreadable, position + off, len);
      buf.fill(0, off, off + len);
      return;
    }
    try {
      await dev.read(buf.subarray(off, off + len), position + off, len);
      return;
    } catch (e) {
      if (!isMediaError(e)) throw e;
    }
    const half = Math.max(sector, Math.floor(len / 2 / sector) * sector);
    await visit(off, half);
    await visit(off + half, len - half);
  };

  await visit(0, length);
  return { unreadable, retries: retryCount };
}
