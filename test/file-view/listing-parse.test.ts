/** `fls -m` body lines → entries, as a table (the parser is written for speed, so each odd case is pinned here). */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseBodyLine, parsePermissions, staleOfSameName } from '../../src/file-view/listing.ts';

const line = (name: string, address = '12', mode = 'r/rrw-r--r--', rest = '0|0|5|100|200|300|400') => `0|${name}|${address}|${mode}|${rest}`;

const cases: [string, string, 'ext' | 'ntfs', unknown][] = [
  ['a plain file', line('/dir/a.txt'), 'ext', { path: '/dir/a.txt', entry: { name: 'a.txt', type: 'file', size: 5, mtime: 200, inode: 12, address: '12', deleted: false, mode: 0o644, uid: 0, gid: 0 } }],
  ['a name holding |', line('/dir/a|b|c'), 'ext', { path: '/dir/a|b|c', entry: { name: 'a|b|c', type: 'file', size: 5, mtime: 200, inode: 12, address: '12', deleted: false, mode: 0o644, uid: 0, gid: 0 } }],
  ['a deleted entry', line('/x (deleted)'), 'ext', { path: '/x', entry: { name: 'x', type: 'file', size: 5, mtime: 200, inode: 12, address: '12', deleted: true, mode: 0o644, uid: 0, gid: 0 } }],
  ['a deleted, reused entry', line('/x (deleted-realloc)'), 'ext', { path: '/x', entry: { name: 'x', type: 'file', size: 5, mtime: 200, inode: 12, address: '12', deleted: true, mode: 0o644, uid: 0, gid: 0 } }],
  ['a symlink and its target', line('/l -> ../t', '13', 'l/lrwxrwxrwx', '1000|1000|4|1|2|3|4'), 'ext', { path: '/l', entry: { name: 'l', type: 'symlink', size: 4, mtime: 2, inode: 13, address: '13', deleted: false, linkTarget: '../t', mode: 0o777, uid: 1000, gid: 1000 } }],
  ['setuid, setgid and sticky bits', line('/s', '14', 'r/rrwsr-sr-t'), 'ext', { path: '/s', entry: { name: 's', type: 'file', size: 5, mtime: 200, inode: 14, address: '14', deleted: false, mode: 0o7755, uid: 0, gid: 0 } }],
  ['an NTFS address', line('/doc.txt', '64-128-2'), 'ntfs', { path: '/doc.txt', entry: { name: 'doc.txt', type: 'file', size: 5, mtime: 200, inode: 64, address: '64-128-2', deleted: false, mode: 0o644, uid: 0, gid: 0 } }],
  ['an NTFS $FILE_NAME attribute', line('/doc.txt ($FILE_NAME)', '64-48-3'), 'ntfs', null],
  ['an NTFS alternate data stream', line('/doc.txt:Zone.Identifier', '64-128-5'), 'ntfs', null],
  ['a colon on ext is a name', line('/a:b'), 'ext', { path: '/a:b', entry: { name: 'a:b', type: 'file', size: 5, mtime: 200, inode: 12, address: '12', deleted: false, mode: 0o644, uid: 0, gid: 0 } }],
  ['a FAT volume label', line('/DISK (Volume Label Entry)', '3', 'r/r---------'), 'ext', null],
  ['a virtual entry', line('/$OrphanFiles', '76913', 'V/V---------'), 'ext', null],
  ['. and ..', line('/dir/..', '2', 'd/drwxr-xr-x'), 'ext', null],
  ['too few fields', '0|/a|12|r/r|0|0|5|1|2|3', 'ext', null],
  ['no address', line('/a', ''), 'ext', null],
  ['an empty line', '', 'ext', null],
];

for (const [what, text, fs, want] of cases) {
  test(what, () => {
    assert.equal(parseBodyLine(text, fs), want);
  });
}

test('permission text → bits', () => {
  for (const [text, bits] of [['rwxr-xr-x', 0o755], ['rw-------', 0o600], ['rwSr-Sr-T', 0o7644], ['---------', 0], ['', 0]] as const) assert.is(parsePermissions(text), bits, text);
});

test('of several live entries of one name, the unallocated ones are stale; all or none allocated tells nothing', () => {
  for (const [allocated, stale] of [
    [[true, false], [1]],
    [[false, true], [0]],
    [[false, true, false], [0, 2]],
    [[true, true], []],
    [[false, false], []],
    [[true], []],
  ] as [boolean[], number[]][]) assert.equal(staleOfSameName(allocated), stale, JSON.stringify(allocated));
});

test.run();
