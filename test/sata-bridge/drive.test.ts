import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { openDrive, locateDrive, sameStorage, readBlockNode, discoverDrives, identityOf, allocAligned, type SysRoots } from '../../src/sata-bridge/index.ts';
import { readMounts } from '../../src/sata-bridge/index.ts';
import { BadInputError, DeviceError, NotFoundError } from '../../src/errors.ts';
import { randomImage, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

test('an image file is a drive: size, sectors, identity, aligned reads and writes', async () => {
  const path = randomImage(join(dir, 'a.img'), 2 * MiB, 3);
  const dev = await openDrive(path, { write: true });
  assert.is(dev.size, 2 * MiB);
  assert.is(dev.logicalSectorSize, 512);
  assert.match(dev.identity.key, /^image:\//);
  const buf = Buffer.alloc(4096, 0x5a);
  await dev.write(buf, 8192);
  const back = Buffer.alloc(4096);
  await dev.read(back, 8192);
  assert.ok(back.equals(buf));
  await assert.not.throws(() => undefined);
  let err: unknown;
  try {
    await dev.read(Buffer.alloc(100), 0, 100);
  } catch (e) {
    err = e;
  }
  assert.instance(err, RangeError, 'unaligned length');
  err = undefined;
  try {
    await dev.read(Buffer.alloc(512), 2 * MiB);
  } catch (e) {
    err = e;
  }
  assert.instance(err, DeviceError, 'past the end');
  await dev.close();
});

test('a missing path is NotFound and nothing is created', async () => {
  const path = join(dir, 'missing.img');
  let err: unknown;
  try {
    await openDrive(path, { write: true });
  } catch (e) {
    err = e;
  }
  assert.instance(err, NotFoundError);
  assert.not.ok(existsSync(path));
});

test('a read-only drive refuses writes; a directory is not a drive; a ragged image size is bad input', async () => {
  const path = randomImage(join(dir, 'ro.img'), MiB, 4);
  const dev = await openDrive(path);
  let err: unknown;
  try {
    await dev.write(Buffer.alloc(512), 0);
  } catch (e) {
    err = e;
  }
  assert.instance(err, DeviceError);
  await dev.close();
  assert.throws(() => locateDrive(dir), (e: unknown) => e instanceof BadInputError);
  writeFileSync(join(dir, 'ragged.img'), Buffer.alloc(1000));
  err = undefined;
  try {
    await openDrive(join(dir, 'ragged.img'));
  } catch (e) {
    err = e;
  }
  assert.instance(err, BadInputError);
});

test('the same file by symlink or hard link is the same storage', () => {
  const path = sparseImage(join(dir, 'same.img'), MiB);
  const link = join(dir, 'same-link.img');
  symlinkSync(path, link);
  assert.ok(sameStorage(locateDrive(path), locateDrive(link)));
  const other = sparseImage(join(dir, 'other.img'), MiB);
  assert.not.ok(sameStorage(locateDrive(path), locateDrive(other)));
});

test('4Kn image files: a 4096-byte logical sector size on request', async () => {
  const path = sparseImage(join(dir, 'fourk.img'), MiB);
  const dev = await openDrive(path, { imageSectorSize: 4096 });
  assert.is(dev.logicalSectorSize, 4096);
  let err: unknown;
  try {
    await dev.read(Buffer.alloc(512), 0, 512);
  } catch (e) {
    err = e;
  }
  assert.instance(err, RangeError);
  await dev.close();
});

test('aligned buffers are page-aligned', () => {
  const b = allocAligned(3 * 4096 + 1);
  assert.is(b.byteOffset % 4096, 0);
  assert.is(b.byteLength, 3 * 4096 + 1);
});

/** A fake sysfs with a SATA disk behind a UAS bridge, a partition, and its udev entry. */
function fakeSys(): SysRoots {
  const sys = join(dir, 'sys');
  const udev = join(dir, 'udev');
  const usb = join(sys, 'devices/pci0000:00/0000:00:14.0/usb2/2-1');
  const iface = join(usb, '2-1:1.0');
  const disk = join(iface, 'host4/target4:0:0/4:0:0:0/block/sdb');
  mkdirSync(join(disk, 'queue'), { recursive: true });
  mkdirSync(join(disk, 'sdb1'), { recursive: true });
  mkdirSync(join(sys, 'dev/block'), { recursive: true });
  mkdirSync(join(sys, 'block'), { recursive: true });
  mkdirSync(join(sys, 'bus/usb/drivers/uas'), { recursive: true });
  mkdirSync(udev, { recursive: true });
  writeFileSync(join(usb, 'idVendor'), '174c\n');
  writeFileSync(join(usb, 'idProduct'), '55aa\n');
  writeFileSync(join(usb, 'product'), 'ASM1153E\n');
  symlinkSync(join(sys, 'bus/usb/drivers/uas'), join(iface, 'driver'));
  writeFileSync(join(disk, 'size'), String(2 * 1024 * 1024 * 2) + '\n');
  writeFileSync(join(disk, 'dev'), '8:16\n');
  writeFileSync(join(disk, 'ro'), '0\n');
  writeFileSync(join(disk, 'removable'), '0\n');
  writeFileSync(join(disk, 'queue/logical_block_size'), '512\n');
  writeFileSync(join(disk, 'queue/physical_block_size'), '4096\n');
  symlinkSync(join(iface, 'host4/target4:0:0/4:0:0:0'), join(disk, 'device'));
  writeFileSync(join(iface, 'host4/target4:0:0/4:0:0:0/model'), 'Samsung SSD 870\n');
  writeFileSync(join(disk, 'sdb1/partition'), '1\n');
  writeFileSync(join(disk, 'sdb1/start'), '2048\n');
  writeFileSync(join(disk, 'sdb1/size'), '1000000\n');
  writeFileSync(join(disk, 'sdb1/dev'), '8:17\n');
  symlinkSync(disk, join(sys, 'dev/block/8:16'));
  symlinkSync(join(disk, 'sdb1'), join(sys, 'dev/block/8:17'));
  symlinkSync(disk, join(sys, 'block/sdb'));
  writeFileSync(join(udev, 'b8:16'), 'S:disk/by-id/ata-Samsung_SSD_870_S5Y1NX0R\nE:ID_SERIAL_SHORT=S5Y1NX0R\nE:ID_WWN=0x5002538f4130abcd\nE:ID_MODEL=Samsung_SSD_870\n');
  return { sys, udevData: udev };
}

test('sysfs and udev give geometry, identity and the USB bridge (VID:PID, uas)', () => {
  const roots = fakeSys();
  const disk = readBlockNode('8:16', roots)!;
  assert.is(disk.name, 'sdb');
  assert.is(disk.sizeBytes, 2 * 1024 ** 3);
  assert.is(disk.logicalSectorSize, 512);
  assert.is(disk.physicalSectorSize, 4096);
  assert.is(disk.serial, 'S5Y1NX0R');
  assert.is(disk.wwn, '0x5002538f4130abcd');
  assert.equal(disk.bridge, { vendorId: '174c', productId: '55aa', driver: 'uas', product: 'ASM1153E' });
  const part = readBlockNode('8:17', roots)!;
  assert.ok(part.isPartition);
  assert.is(part.disk, 'sdb');
  assert.is(part.startBytes, 2048 * 512);
  assert.is(part.logicalSectorSize, 512, 'a partition takes its queue limits from its disk');
});

test('mountinfo is parsed with escaped mount points', () => {
  const file = join(dir, 'mountinfo');
  writeFileSync(file, '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n40 22 7:3 / /mnt/with\\040space rw - ext4 /dev/loop3 rw\n');
  const mounts = readMounts(file);
  assert.equal(mounts.map((m) => [m.majorMinor, m.mountPoint, m.source]), [
    ['254:0', '/', '/dev/vda'],
    ['7:3', '/mnt/with space', '/dev/loop3'],
  ]);
});

test('discovery lists loop devices with their backing file and marks the system disk', () => {
  if (!requireEnv('drive discovery on loop devices', { root: true, tools: ['losetup'] })) return;
  const img = sparseImage(join(dir, 'disc.img'), 8 * MiB);
  const loop = execFileSync('losetup', ['--find', '--show', img]).toString().trim();
  try {
    const drives = discoverDrives();
    const mine = drives.find((d) => d.devicePath === loop);
    assert.ok(mine, `${loop} listed`);
    assert.is(mine!.backingFile, img);
    assert.is(mine!.identity.sizeBytes, 8 * MiB);
    assert.is(mine!.identity.key, identityOf(locateDrive(img)).key, 'a loop device over an image file is that image');
    assert.not.ok(mine!.isSystemDisk);
    const system = drives.filter((d) => d.isSystemDisk);
    assert.ok(system.length <= 1);
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
});

test('dpsr drives --json prints the list', async () => {
  const { dpsr } = await import('../support/cli.ts');
  const r = dpsr(['drives', '--json']);
  assert.is(r.code, 0, r.stderr);
  assert.ok(Array.isArray(r.json()));
});

test.run();
