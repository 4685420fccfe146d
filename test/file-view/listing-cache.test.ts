import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileView, ListingCache, diffFolder, type FileEntry } from '../../src/file-view/index.ts';
import { mergeByName } from '../../src/file-view/diff.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';

const tmp = tempDir('dpsr-listing-cache-');
const ok = requireEnv('folder listings kept in memory', { tools: ['fls', 'ifind', 'mkfs.ext4', 'debugfs'] });

const entry = (name: string, extra: Partial<FileEntry> = {}): FileEntry => ({ name, type: 'file', size: 1, mtime: 1, inode: 1, address: '1', deleted: false, mode: 0o644, uid: 0, gid: 0, ...extra });
const names = (es: readonly FileEntry[]) => es.map((e) => e.name);

test('a listing read while the generation moved is not kept', () => {
  const c = new ListingCache();
  const g = c.generation;
  c.invalidate();
  c.set('k', [entry('a')], g);
  assert.is(c.get('k'), undefined);
  c.set('k', [entry('a')], c.generation);
  assert.equal(names(c.get('k')!), ['a']);
  c.invalidate();
  assert.is(c.get('k'), undefined, 'forgotten on invalidate');
  assert.is(c.size, 0);
});

test('a listing older than ttlMs is read again', () => {
  let now = 1000;
  const c = new ListingCache({ ttlMs: 100, now: () => now });
  c.set('k', [entry('a')], c.generation);
  now += 100;
  assert.ok(c.get('k'));
  now += 1;
  assert.is(c.get('k'), undefined);
  assert.is(c.size, 0);
});

test('the least recently used listings make room; a folder larger than the whole cache is never kept', () => {
  const c = new ListingCache({ maxEntries: 4 });
  const g = c.generation;
  c.set('a', [entry('1'), entry('2')], g);
  c.set('b', [entry('1'), entry('2')], g);
  assert.ok(c.get('a'), 'a used last');
  c.set('c', [entry('1')], g);
  assert.is(c.get('b'), undefined, 'b evicted');
  assert.ok(c.get('a'));
  assert.ok(c.get('c'));
  assert.is(c.size, 3);
  c.set('big', [entry('1'), entry('2'), entry('3'), entry('4'), entry('5')], g);
  assert.is(c.get('big'), undefined);
  assert.is(c.size, 3);
  c.set('a', [entry('x')], g);
  assert.is(c.size, 2, 'a replaced, not added');
});

test('two sorted sides merge by name as the map they replace did', () => {
  const rows = mergeByName([entry('a'), entry('c'), entry('d')], [entry('b'), entry('c'), entry('e')]);
  assert.equal(rows.map((r) => [r.name, !!r.active, !!r.standby]), [['a', true, false], ['b', false, true], ['c', true, true], ['d', true, false], ['e', false, true]]);
  assert.equal(mergeByName([], []), []);
  const twice = mergeByName([entry('a', { inode: 1 }), entry('a', { inode: 2 })], []);
  assert.is(twice.length, 1);
  assert.is(twice[0]!.active!.inode, 2);
});

/** An ext4 image with /dir holding `count` files. */
function image(name: string, count: number): string {
  const tree = join(tmp, `${name}-tree`);
  mkdirSync(join(tree, 'dir'), { recursive: true });
  for (let i = 0; i < count; i++) writeFileSync(join(tree, 'dir', `f${String(i).padStart(4, '0')}`), `${i}\n`);
  const img = join(tmp, `${name}.img`);
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, img, '16M']);
  return img;
}

test('a cached view reads a folder once for its pages and the folders below it; another scope or an invalidation reads the drive again', async () => {
  if (!ok) return;
  const img = image('one', 30);
  const c = new ListingCache();
  const cached = () => new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' }).cached(c, 'drive@1');
  assert.is((await cached().list('/dir')).length, 30);
  assert.is(c.size, 30, '/dir alone: on ext the folders on the way are found by reading them, not by listing them');
  // Behind the cache's back (the scope says the drive is unchanged): a kept listing is used.
  execFileSync('debugfs', ['-w', '-R', 'rm /dir/f0000', img], { stdio: 'pipe' });
  assert.is((await cached().list('/dir')).length, 30, 'kept');
  const page = await diffFolder(cached(), cached(), '/dir', { offset: 10, limit: 5 });
  assert.equal(page.rows.map((r) => r.name), ['f0010', 'f0011', 'f0012', 'f0013', 'f0014']);
  assert.is(page.total, 30);
  // A different scope (the drive's state moved) reads it again.
  const other = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' }).cached(c, 'drive@2');
  assert.is((await other.list('/dir', { deleted: false })).length, 29);
  assert.ok((await other.list('/dir')).some((e) => e.name === 'f0000' && e.deleted), 'the removed file lists as deleted');
  c.invalidate();
  assert.is((await cached().list('/dir', { deleted: false })).length, 29, 'read again after an invalidation');
  // The kept list is not the caller's to change.
  const l = await cached().list('/dir');
  l.length = 0;
  assert.is((await cached().list('/dir')).length, 30);
  assert.is((await cached().list('/dir', { deleted: false })).length, 29);
});

test('an invalidation while a listing is read leaves it unkept', async () => {
  if (!ok) return;
  const img = image('two', 5);
  const c = new ListingCache();
  const v = new FileView({ path: img, offsetSectors: 0, sectorSize: 512, fsType: 'ext' }).cached(c, 's');
  const reading = v.list('/dir');
  c.invalidate();
  assert.is((await reading).length, 5);
  assert.is(c.size, 0);
});

test.run();
