/**
 * A restore of files writes into the active partition mounted on the
 * controller, where the kernel follows symlinks: a folder the host replaced
 * with a symlink (absolute, or `..` out of the partition's root) would send
 * the restored files onto the controller's own filesystem. Such paths are
 * skipped with the reason, nothing is written through the link, and the rest
 * of the restore goes on.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileView, writeBack } from '../../src/file-view/index.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';
import { driveImage, filesystemImage, makeTree } from './support/fs-images.ts';

const tmp = tempDir('dpsr-links-');
const canWrite = requireEnv('writing files back through a mount (loop devices)', { tools: ['fls', 'icat', 'sfdisk', 'mkfs.ext4', 'debugfs', 'losetup', 'e2fsck'], root: true });

// Where a link on the active drive points: outside the partition, on the controller.
const outside = join(tmp, 'controller-files');
// `..` at the mount's root is the folder the mount point sits in (the controller's temporary folder).
const unique = `dpsr-escaped-${process.pid}-${Date.now()}.txt`;

test('folders the active drive has as symlinks are not written through: skipped with the reason, the rest restored', async () => {
  if (!canWrite) return;
  mkdirSync(outside);
  const backup = makeTree(tmp, 'backup', { 'srv/data/report.txt': 'the backup\n', 'srv/data/deep/more.txt': 'more\n', [`up/${unique}`]: 'escaped\n', 'b.txt': 'plain\n' });
  const changed = makeTree(tmp, 'changed', { 'b.txt': 'changed\n' });
  mkdirSync(join(changed, 'srv'));
  symlinkSync(outside, join(changed, 'srv', 'data'));
  symlinkSync('..', join(changed, 'up'));
  mkdirSync(join(tmp, 's'));
  mkdirSync(join(tmp, 'a'));
  const standby = driveImage(join(tmp, 'standby.img'), [filesystemImage(join(tmp, 's'), 'ext4', backup)]).path;
  const active = driveImage(join(tmp, 'active.img'), [filesystemImage(join(tmp, 'a'), 'ext4', changed)]).path;

  try {
    const report = await writeBack(await FileView.open(standby, 1), await FileView.open(active, 1), ['/srv/data', '/up', '/b.txt']);
    assert.equal(readdirSync(outside), [], 'nothing written where the absolute link points');
    assert.not.ok(existsSync(join(tmpdir(), unique)), 'nothing written where the relative link leads');
    assert.equal(report.skipped.map((s) => s.path), ['/srv/data', '/up'], 'the linked folders are skipped, and nothing below them is tried');
    for (const s of report.skipped) assert.match(s.why, /symlink/);
    assert.is(report.restored.files, 1, 'b.txt is restored');
    assert.is(report.fsck.clean, true, report.fsck.output);
    const after = await FileView.open(active, 1);
    assert.is((await after.stat('/srv/data')).type, 'symlink', 'the link stays as the host left it');
    assert.is((await after.stat('/up')).type, 'symlink');
    assert.is((await after.stat('/b.txt')).size, 'plain\n'.length);

    // A path below such a link is refused before the partition is mounted.
    const err = await writeBack(await FileView.open(standby, 1), await FileView.open(active, 1), ['/srv/data/report.txt']).then(() => null, (e: Error) => e);
    assert.ok(err, 'refused');
    assert.match(err!.message, /\/srv\/data is a symlink/);
    assert.equal(readdirSync(outside), []);
  } finally {
    rmSync(join(tmpdir(), unique), { force: true });
  }
  assert.ok(lstatSync(outside).isDirectory());
  assert.is(readFileSync(join(backup, 'b.txt'), 'utf8'), 'plain\n');
});

test.run();
