/**
 * Error meaning as data: a device error says whether the medium refused
 * sectors (media) or the drive, or the way to it, is gone (transport), set
 * where the error is raised — by errno and sysfs for a real drive, by the
 * plan for the fault injector — so the copy engine never reads messages.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { FaultyDevice, FileBlockDevice, identityOf, locateDrive, openDrive } from '../../src/sata-bridge/index.ts';
import { readRescued } from '../../src/sync/rescue.ts';
import { DeviceError, errorData, isMediaError, isTransportError } from '../../src/errors.ts';
import { randomImage, tempDir } from '../support/images.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

async function rejection(p: Promise<unknown>): Promise<DeviceError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, DeviceError);
    return e as DeviceError;
  }
  throw new Error('expected a rejection');
}

test('fault injector: bad and weak sectors are media errors; a pulled or silent drive is a transport error', async () => {
  const inner = await openDrive(randomImage(join(dir, 'f.img'), MiB), { write: true });
  const dev = new FaultyDevice(inner, { badReadLbas: [10], badWriteLbas: [20], flakyReadLbas: new Map([[30, 1]]) });
  const buf = Buffer.alloc(4096);
  assert.is((await rejection(dev.read(buf, 8 * 512))).fault, 'media');
  assert.is((await rejection(dev.read(buf, 30 * 512, 512))).fault, 'media');
  assert.is((await rejection(dev.write(buf, 16 * 512))).fault, 'media');
  dev.pull();
  for (const p of [dev.read(buf, 0), dev.write(buf, 0), dev.flush()]) assert.is((await rejection(p)).fault, 'transport');
  dev.reinsert();
  dev.setPlan({ failReadsAfter: 0, failWritesAfter: 0 });
  assert.is((await rejection(dev.read(buf, 0))).fault, 'transport');
  assert.is((await rejection(dev.write(buf, 0))).fault, 'transport');
  await dev.close();
});

/** A file handle whose reads fail with one errno: the kernel's answers, without a broken disk. */
function failingHandle(code: string): FileHandle {
  const fail = async () => {
    throw Object.assign(new Error(`${code}: simulated`), { code });
  };
  return { read: fail, write: fail, datasync: fail, close: async () => {} } as unknown as FileHandle;
}

const ERRNO: [string, boolean, 'media' | 'transport' | undefined][] = [
  ['EIO', true, 'media'],
  ['ENODATA', true, 'media'],
  ['EBADMSG', true, 'media'],
  ['EILSEQ', true, 'media'],
  ['ENODEV', true, 'transport'],
  ['ENXIO', true, 'transport'],
  ['ENOMEDIUM', true, 'transport'],
  ['ESHUTDOWN', true, 'transport'],
  ['ETIMEDOUT', true, 'transport'],
  // EIO from a disk sysfs no longer lists (or lists offline) is a vanished drive, not a bad sector.
  ['EIO', false, 'transport'],
  ['ENODATA', false, 'transport'],
  ['ENOSPC', true, undefined],
];

for (const [code, present, fault] of ERRNO) {
  test(`a real drive's ${code}${present ? '' : ' after the drive left sysfs'} is ${fault ?? 'neither media nor transport'}`, async () => {
    const loc = locateDrive(randomImage(join(dir, `e-${code}.img`), MiB));
    const dev = new FileBlockDevice(loc.requested, identityOf(loc), failingHandle(code), true, () => present);
    for (const p of [dev.read(Buffer.alloc(512), 1024), dev.write(Buffer.alloc(512), 1024), dev.flush()]) {
      const e = await rejection(p);
      assert.is(e.fault, fault, `${code}: ${e.message}`);
      assert.is((e.cause as NodeJS.ErrnoException).code, code);
    }
    const e = await rejection(dev.read(Buffer.alloc(512), 1024));
    assert.match(e.message, /LBA 2/);
  });
}

test('a short read (the file or drive shrank under us) is a transport error', async () => {
  const path = randomImage(join(dir, 's.img'), MiB);
  const dev = await openDrive(path);
  const { truncateSync } = await import('node:fs');
  truncateSync(path, 512 * 1024);
  const e = await rejection(dev.read(Buffer.alloc(4096), 768 * 1024));
  assert.is(e.fault, 'transport');
  await dev.close();
});

test('rescue reads narrow down media errors and stop at once on transport errors', async () => {
  const inner = await openDrive(randomImage(join(dir, 'r.img'), MiB));
  const dev = new FaultyDevice(inner, { badReadLbas: [5] });
  const buf = Buffer.alloc(64 * 1024);
  const r = await readRescued(dev, buf, 0, buf.length, 1);
  assert.equal(r.unreadable, [{ start: 5 * 512, length: 512 }]);
  dev.pull();
  const before = dev.readFailures.length;
  const e = await rejection(readRescued(dev, buf, 0, buf.length, 3));
  assert.ok(isTransportError(e) && !isMediaError(e));
  assert.is(dev.readFailures.length, before, 'no sector-by-sector retries on a gone drive');
  await dev.close();
});

test('the fault travels with the error as data (API bodies, job records)', () => {
  assert.equal(errorData(new DeviceError('x: unreadable sector 9', { fault: 'media', hint: 'h' })), { kind: 'device', message: 'x: unreadable sector 9', hint: 'h', fault: 'media' });
  assert.equal(errorData(new DeviceError('read-only')), { kind: 'device', message: 'read-only' });
  assert.equal(errorData(new Error('boom')), { kind: 'internal', message: 'boom' });
});

test.run();
