/**
 * Holders and stacked devices on a sysfs tree built for the test (device
 * mapper and md need kernel drivers): a disk whose partition carries an md
 * array and whose whole disk is under an LVM volume reports both, named as an
 * operator knows them; a stacked device is the same storage as its disks.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Stats } from 'node:fs';
import { diskUsage, holdersOf, lowerDisksOf, readBlockNode, sameStorage, type DriveLocation, type SysRoots } from '../../src/sata-bridge/index.ts';

const root = mkdtempSync(join(tmpdir(), 'dpsr-sysfs-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const roots: SysRoots = { sys: join(root, 'sys'), udevData: join(root, 'udev') };
mkdirSync(roots.udevData, { recursive: true });

function node(path: string, dev: string, partition = false): void {
  const dir = join(roots.sys, 'block', path);
  mkdirSync(join(dir, 'holders'), { recursive: true });
  writeFileSync(join(dir, 'dev'), `${dev}\n`);
  writeFileSync(join(dir, 'size'), '32768\n');
  if (partition) writeFileSync(join(dir, 'partition'), '1\n');
  mkdirSync(join(roots.sys, 'dev/block'), { recursive: true });
  symlinkSync(join('../../block', path), join(roots.sys, 'dev/block', dev));
}

node('sdz', '8:240');
node('sdz/sdz1', '8:241', true);
node('sdy', '8:224');
node('dm-3', '253:3');
node('md127', '9:127');
mkdirSync(join(roots.sys, 'block/dm-3/dm'));
writeFileSync(join(roots.sys, 'block/dm-3/dm/name'), 'vg0-root\n');
writeFileSync(join(roots.sys, 'block/dm-3/dm/uuid'), 'LVM-abcdef\n');
mkdirSync(join(roots.sys, 'block/md127/md'));
symlinkSync('../../dm-3', join(roots.sys, 'block/sdz/holders/dm-3'));
symlinkSync('../../../md127', join(roots.sys, 'block/sdz/sdz1/holders/md127'));
mkdirSync(join(roots.sys, 'block/dm-3/slaves'));
symlinkSync('../../sdz', join(roots.sys, 'block/dm-3/slaves/sdz'));
mkdirSync(join(roots.sys, 'block/md127/slaves'));
symlinkSync('../../sdz/sdz1', join(roots.sys, 'block/md127/slaves/sdz1'));

/** A block device as locateDrive would see it, on the tree above. */
function located(name: string, majorMinor: string): DriveLocation {
  return { requested: `/dev/${name}`, realPath: `/dev/${name}`, kind: 'block', stats: {} as Stats, node: readBlockNode(majorMinor, roots) };
}

test('holders of a disk and of its partitions are named', () => {
  assert.equal(holdersOf('sdz', roots), ['dm-3 (LVM volume vg0-root)', 'md127 (md RAID array)']);
  assert.equal(diskUsage('sdz', roots, [], []).holders, ['dm-3 (LVM volume vg0-root)', 'md127 (md RAID array)']);
});

test('a disk nothing is built on has no holders', () => {
  assert.equal(holdersOf('sdy', roots), []);
  assert.equal(diskUsage('sdy', roots, [], []).holders, []);
});

test('swaps are matched by device number, not by name', () => {
  const usage = diskUsage('sdz', roots, [], [{ path: '/dev/disk/by-uuid/whatever', majorMinor: '8:241' }, { path: '/dev/sdz', majorMinor: '8:1' }]);
  assert.equal(usage.swaps, ['/dev/disk/by-uuid/whatever']);
});

test('a device-mapper or md device is the same storage as the disks it is built on', () => {
  assert.equal(lowerDisksOf('dm-3', roots), ['sdz']);
  assert.equal(lowerDisksOf('md127', roots), ['sdz'], 'a partition below counts as its disk');
  assert.ok(sameStorage(located('sdz', '8:240'), located('dm-3', '253:3'), roots));
  assert.ok(sameStorage(located('md127', '9:127'), located('sdz1', '8:241'), roots));
  assert.not.ok(sameStorage(located('sdy', '8:224'), located('dm-3', '253:3'), roots));
});

test.run();
