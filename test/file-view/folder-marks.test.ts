import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ChangedFolders, markFolders, walkCovers, type DiffPage, type FileEntry } from '../../src/file-view/index.ts';

test('the folders above each difference are reported once, from the walk\'s root down, for differences in byte order', () => {
  const rows: [string, string[]][] = [
    ['/a/b c/x', ['/', '/a', '/a/b c']],
    ['/a/b/c.txt', ['/a/b']],
    ['/a/b/d.txt', []],
    ['/a/b2', []],
    ['/z', []],
    ['/z/y/x', ['/z', '/z/y']],
  ];
  const folders = new ChangedFolders('/');
  for (const [path, want] of rows) assert.equal(folders.add(path), want, path);
  const sub = new ChangedFolders('/home');
  assert.equal(sub.add('/home/me/a.txt'), ['/home', '/home/me']);
  assert.equal(sub.add('/home/you'), []);
});

test('a walk covers its folder and everything below it', () => {
  const table: [string, string, boolean][] = [
    ['/', '/anything', true],
    ['/home', '/home', true],
    ['/home', '/home/me', true],
    ['/home', '/homes', false],
    ['/home', '/', false],
    ['/home/me', '/home', false],
  ];
  for (const [walked, folder, want] of table) assert.is(walkCovers(walked, folder), want, `${walked} covers ${folder}`);
});

const entry = (name: string, type: FileEntry['type']): FileEntry => ({ name, type, size: 0, mtime: 0, inode: 1, address: '1', deleted: false, mode: 0o755, uid: 0, gid: 0 });

test('folders on both drives get contents from the walk, or not-compared; files and one-sided folders get none', () => {
  const page: DiffPage = {
    path: '/data',
    rows: [
      { name: 'changed-below', state: 'same', active: entry('changed-below', 'directory'), standby: entry('changed-below', 'directory') },
      { name: 'alike', state: 'same', active: entry('alike', 'directory'), standby: entry('alike', 'directory') },
      { name: 'new', state: 'only-active', active: entry('new', 'directory') },
      { name: 'f.txt', state: 'same', active: entry('f.txt', 'file'), standby: entry('f.txt', 'file') },
      { name: 'was-file', state: 'changed', active: entry('was-file', 'directory'), standby: entry('was-file', 'file') },
    ],
    total: 5,
    offset: 0,
    limit: 500,
    counts: { same: 3, changed: 1, 'only-active': 1, 'only-standby': 0 },
  };
  const walk = { job: '7', path: '/', finishedAt: '2026-12-07T16:00:00.000Z', hashed: false, changed: new Set(['/data/changed-below']) };
  const marked = markFolders(page, walk);
  assert.equal(marked.rows.map((r) => [r.name, r.contents]), [['changed-below', 'differ'], ['alike', 'same'], ['new', undefined], ['f.txt', undefined], ['was-file', undefined]]);
  assert.equal(marked.walk, { job: '7', path: '/', finishedAt: '2026-12-07T16:00:00.000Z', hashed: false });
  const none = markFolders(page, null);
  assert.equal(none.rows.map((r) => r.contents).filter(Boolean), ['not-compared', 'not-compared']);
  assert.is(none.walk, null);
  const elsewhere = markFolders(page, { ...walk, path: '/other' });
  assert.equal(elsewhere.rows.map((r) => r.contents).filter(Boolean), ['not-compared', 'not-compared'], 'a walk of another folder says nothing here');
  assert.is(elsewhere.walk, null);
});

test.run();
