/**
 * The contract of the BlockDevice seam (src/sata-bridge/block-device.ts),
 * written once and run against every implementation: image files, loop
 * block devices, the fault injector, the throttle, the journaled target, the
 * NBD client, and any drive type to come (one call each). A drive type is
 * used only once it passes.
 *
 *   blockDeviceContract('name', async ({ sectorSize, content }) => ({ device, readOnly, cleanup }));
 *
 * Every buffer comes from allocAligned, so O_DIRECT implementations can run
 * the same suite.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { allocAligned, type BlockDevice } from '../../../src/sata-bridge/index.ts';
import { DeviceError } from '../../../src/errors.ts';
import { rejection } from '../../support/assert-async.ts';

export interface ContractDrive {
  /** Opened for writing over storage that holds exactly `content`. */
  device: BlockDevice;
  /** A second, read-only handle on the same storage (it sees flushed writes). */
  readOnly(): Promise<BlockDevice>;
  /** Closes what is still open and removes the storage. */
  cleanup(): Promise<void>;
}

/**
 * Makes a fresh drive of `content.length` bytes (a whole number of
 * `sectorSize` sectors) holding `content`. A maker that needs root or a tool
 * checks for it (requireEnv) before calling blockDeviceContract.
 */
export type ContractDriveMaker = (spec: { sectorSize: 512 | 4096; content: Buffer }) => Promise<ContractDrive>;

/** 259 sectors: an odd count, so nothing can lean on a power-of-two size. */
const SECTORS = 259;

function pattern(bytes: number, seed: number): Buffer {
  const b = allocAligned(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function readAll(dev: BlockDevice): Promise<Buffer> {
  const b = allocAligned(dev.size);
  await dev.read(b, 0);
  return b;
}


export function blockDeviceContract(name: string, make: ContractDriveMaker, sectorSizes: (512 | 4096)[] = [512, 4096]): void {
  for (const sectorSize of sectorSizes) {
    const s = suite(`BlockDevice contract: ${name}, ${sectorSize}-byte sectors`);
    const size = SECTORS * sectorSize;
    let content: Buffer;
    let drive: ContractDrive | null = null;
    let dev: BlockDevice;

    s.before.each(async () => {
      content = pattern(size, sectorSize);
      drive = await make({ sectorSize, content: Buffer.from(content) });
      dev = drive.device;
    });
    s.after.each(async () => {
      await drive?.cleanup();
      drive = null;
    });

    /** Asserts the storage still holds `expect`, through a fresh read-only handle. */
    async function holds(expect: Buffer, why: string) {
      const ro = await drive!.readOnly();
      try {
        const now = await readAll(ro);
        assert.ok(now.equals(expect), `${why}: the drive's content changed`);
      } finally {
        await ro.close();
      }
    }

    s('geometry and identity agree with each other and with the storage', () => {
      assert.is(dev.size, size);
      assert.is(dev.logicalSectorSize, sectorSize);
      assert.ok(dev.physicalSectorSize >= dev.logicalSectorSize && dev.physicalSectorSize % dev.logicalSectorSize === 0, `physical ${dev.physicalSectorSize}`);
      assert.is(dev.size % dev.logicalSectorSize, 0);
      assert.is(dev.identity.sizeBytes, dev.size);
      assert.is(dev.identity.logicalSectorSize, dev.logicalSectorSize);
      assert.is(dev.identity.physicalSectorSize, dev.physicalSectorSize);
      assert.ok(dev.identity.key.length > 0, 'an identity key');
      assert.ok(dev.path.length > 0, 'a path for messages');
      assert.is(dev.writable, true);
    });

    s('reads give the stored bytes, whole or in part; `length` bounds what is filled', async () => {
      assert.ok((await readAll(dev)).equals(content));
      const tail = allocAligned(3 * sectorSize).fill(0xee);
      await dev.read(tail, size - 2 * sectorSize, 2 * sectorSize);
      assert.ok(tail.subarray(0, 2 * sectorSize).equals(content.subarray(size - 2 * sectorSize)), 'the last two sectors');
      assert.ok(tail.subarray(2 * sectorSize).every((b) => b === 0xee), 'bytes past `length` untouched');
      const big = allocAligned(4 * sectorSize);
      const view = big.subarray(sectorSize, 3 * sectorSize); // a view that does not start at its buffer's start
      await dev.read(view, 7 * sectorSize);
      assert.ok(view.equals(content.subarray(7 * sectorSize, 9 * sectorSize)), 'read into a view');
    });

    s('writes land on exactly their sectors: first, last, and a run in the middle', async () => {
      const expect = Buffer.from(content);
      const put = async (lba: number, sectors: number, seed: number) => {
        const data = pattern(sectors * sectorSize, seed);
        await dev.write(data, lba * sectorSize);
        data.copy(expect, lba * sectorSize);
      };
      await put(0, 1, 11);
      await put(SECTORS - 1, 1, 12);
      await put(100, 17, 13);
      const part = pattern(4 * sectorSize, 14);
      await dev.write(part, 50 * sectorSize, 2 * sectorSize); // only the first two sectors of the buffer
      part.copy(expect, 50 * sectorSize, 0, 2 * sectorSize);
      assert.ok((await readAll(dev)).equals(expect), 'read back through the same handle');
      await dev.flush();
      await holds(expect, 'after flush');
    });

    s('two reads and two writes in flight at once each do their own part', async () => {
      const a = pattern(8 * sectorSize, 21);
      const b = pattern(8 * sectorSize, 22);
      const r1 = allocAligned(8 * sectorSize);
      const r2 = allocAligned(8 * sectorSize);
      await Promise.all([dev.write(a, 16 * sectorSize), dev.write(b, 24 * sectorSize), dev.read(r1, 200 * sectorSize), dev.read(r2, 208 * sectorSize)]);
      assert.ok(r1.equals(content.subarray(200 * sectorSize, 208 * sectorSize)));
      assert.ok(r2.equals(content.subarray(208 * sectorSize, 216 * sectorSize)));
      const back = allocAligned(16 * sectorSize);
      await dev.read(back, 16 * sectorSize);
      assert.ok(back.equals(Buffer.concat([a, b])));
    });

    s('unaligned or impossible requests are refused and change nothing', async () => {
      const buf = pattern(2 * sectorSize, 31);
      const cases: [string, () => Promise<void>][] = [
        ['a write at an unaligned position', () => dev.write(buf, sectorSize / 2)],
        ['a write of an unaligned length', () => dev.write(buf, 0, sectorSize + 1)],
        ['a write longer than its buffer', () => dev.write(buf, 0, 4 * sectorSize)],
        ['a write at a negative position', () => dev.write(buf, -sectorSize)],
        ['a read at an unaligned position', () => dev.read(allocAligned(sectorSize), 1)],
        ['a read longer than its buffer', () => dev.read(allocAligned(sectorSize), 0, 2 * sectorSize)],
      ];
      for (const [what, op] of cases) await rejection(op(), what);
      await holds(content, 'after refused requests');
    });

    s('nothing reads or writes past the end; a write that would is refused whole, with a DeviceError', async () => {
      const e1 = await rejection(dev.read(allocAligned(2 * sectorSize), size - sectorSize), 'a read over the end');
      assert.instance(e1, DeviceError);
      const e2 = await rejection(dev.write(pattern(2 * sectorSize, 41), size - sectorSize), 'a write over the end');
      assert.instance(e2, DeviceError);
      await rejection(dev.read(allocAligned(sectorSize), size), 'a read at the end');
      await holds(content, 'after writes past the end (the last sector must not have been written either)');
    });

    s('a read-only handle refuses writes with a DeviceError and leaves the drive alone', async () => {
      const ro = await drive!.readOnly();
      try {
        assert.is(ro.writable, false);
        assert.is(ro.size, size);
        const e = await rejection(ro.write(pattern(sectorSize, 51), 0), 'a write through a read-only handle');
        assert.instance(e, DeviceError);
        assert.ok((await readAll(ro)).equals(content));
      } finally {
        await ro.close();
      }
      await holds(content, 'after a refused read-only write');
    });

    s('after close every call is a DeviceError; closing twice is harmless', async () => {
      await dev.flush();
      await dev.close();
      assert.instance(await rejection(dev.read(allocAligned(sectorSize), 0), 'a read after close'), DeviceError);
      assert.instance(await rejection(dev.write(pattern(sectorSize, 61), 0), 'a write after close'), DeviceError);
      await dev.close();
      await holds(content, 'after close');
    });

    s.run();
  }
}
