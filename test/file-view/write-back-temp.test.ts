/**
 * The temporary file a restore writes beside its target (`.dpsr-restore-*`,
 * renamed over the target once whole) is never left in the active
 * partition: a cancel in the middle of a file removes it and leaves the
 * target as it was, and one an interrupted restore left (a crash mid-file)
 * is removed by the next restore of those paths, or on its own by
 * `removeRestoreLeftovers` (what the daemon's start-up recovery runs).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileView, findRestoreLeftovers, removeRestoreLeftovers, writeBack } from '../../src/file-view/index.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';
import { hashStream } from '../../src/file-view/view.ts';
import { driveImage, filesystemImage, makeTree, patterned } from './support/fs-images.ts';

const tmp = tempDir('dpsr-wb-temp-');
const canWrite = requireEnv('writing files back through a mount (loop devices)', { tools: ['fls', 'icat', 'sfdisk', 'mkfs.ext4', 'debugfs', 'losetup', 'e2fsck'], root: true });

const LEFT = '.dpsr-restore-4242-1700000000000';
for (const d of ['s', 'a', 'g', 's2', 'a2']) mkdirSync(join(tmp, d), { recursive: true });

/** The names in the active partition's /dir, live ones. */
async function names(image: string, folder = '/dir'): Promise<string[]> {
  return (await (await FileView.open(image, 1)).list(folder, { deleted: false })).map((e) => e.name);
}

test('leftovers of an interrupted restore are found read-only, and removed by the next restore of those paths or on their own', async () => {
  if (!canWrite) return;
  const backup = makeTree(tmp, 'backup', { 'dir/x.txt': 'backup\n' });
  const crashed = makeTree(tmp, 'crashed', { 'dir/x.txt': 'old\n', [`dir/${LEFT}`]: 'half a file', [`dir/sub/${LEFT}`]: 'half another', [`${LEFT}`]: 'beside /dir/..', 'dir/.dpsr-restore-notours': 'kept' });
  const standby = driveImage(join(tmp, 'standby.img'), [filesystemImage(join(tmp, 's'), 'ext4', backup)]).path;
  const active = driveImage(join(tmp, 'active.img'), [filesystemImage(join(tmp, 'a'), 'ext4', crashed)]).path;
  const view = await FileView.open(active, 1);
  assert.equal(await findRestoreLeftovers(view, ['/dir/x.txt']), [`/dir/${LEFT}`], 'a file\'s folder only');
  assert.equal(await findRestoreLeftovers(view, ['/dir']), [`/${LEFT}`, `/dir/${LEFT}`, `/dir/sub/${LEFT}`], 'a folder\'s own folder and everything below it');
  assert.equal(await findRestoreLeftovers(view, ['/nowhere']), [`/${LEFT}`], 'a path not there yet: its folder');
  assert.equal(await findRestoreLeftovers(view, ['/none/deeper']), [], 'nor its folder');

  const report = await writeBack(await FileView.open(standby, 1), view, ['/dir']);
  assert.equal(report.leftoversRemoved, [`/${LEFT}`, `/dir/${LEFT}`, `/dir/sub/${LEFT}`]);
  assert.is(report.fsck.clean, true, report.fsck.output);
  assert.ok((await names(active)).includes('.dpsr-restore-notours'), 'a name not of our making stays');
  assert.not.ok((await names(active)).includes(LEFT));
  assert.not.ok((await names(active, '/dir/sub')).includes(LEFT));
  assert.not.ok((await names(active, '/')).includes(LEFT));

  // On their own (the start-up recovery's call): mounted only when there is something to remove.
  const again = driveImage(join(tmp, 'again.img'), [filesystemImage(join(tmp, 'g'), 'ext4', crashed)]).path;
  const r = await removeRestoreLeftovers(await FileView.open(again, 1), ['/dir/x.txt']);
  assert.equal(r.removed, [`/dir/${LEFT}`]);
  assert.is(r.fsck?.clean, true, r.fsck?.output);
  assert.not.ok((await names(again)).includes(LEFT));
  assert.ok((await names(again, '/dir/sub')).includes(LEFT), 'below a file\'s folder: not that restore\'s');
  assert.equal(await removeRestoreLeftovers(await FileView.open(again, 1), ['/dir/x.txt']), { removed: [], fsck: null }, 'nothing to do: nothing mounted');
});

test('a cancel in the middle of a file removes its temporary file and leaves the target as it was', async () => {
  if (!canWrite) return;
  const big = patterned(12 * 1024 * 1024);
  const old = Buffer.alloc(big.length, 7);
  const backup = makeTree(tmp, 'backup2', { 'dir/big.bin': big });
  const current = makeTree(tmp, 'current2', { 'dir/big.bin': old });
  const standby = driveImage(join(tmp, 'standby2.img'), [filesystemImage(join(tmp, 's2'), 'ext4', backup)]).path;
  const active = driveImage(join(tmp, 'active2.img'), [filesystemImage(join(tmp, 'a2'), 'ext4', current)]).path;
  const stop = new AbortController();
  // Cancelled once the temporary file is there: looked for in the restore's own mount.
  const watch = setInterval(() => {
    const mount = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').find((p) => /\/dpsr-restore-[^/]+$/.test(p));
    if (!mount) return;
    try {
      if (readdirSync(join(mount, 'dir')).some((n) => n.startsWith('.dpsr-restore-'))) stop.abort(new Error('cancelled by the test'));
    } catch {
      /* not made yet */
    }
  }, 2);
  try {
    const report = await writeBack(await FileView.open(standby, 1), await FileView.open(active, 1), ['/dir/big.bin'], { signal: stop.signal });
    assert.ok(stop.signal.aborted, 'the cancel came while the file was written');
    assert.is(report.cancelled, true);
    assert.is(report.restored.files, 0);
    assert.is(report.fsck.clean, true, report.fsck.output);
  } finally {
    clearInterval(watch);
  }
  assert.equal((await names(active)).filter((n) => n.startsWith('.dpsr-restore-')), [], 'no temporary file left');
  const after = await FileView.open(active, 1);
  assert.is(await hashStream((await after.read('/dir/big.bin')).stream), await hashStream((async function* () { yield old; })() as never), 'the target as it was');
});

test.run();
