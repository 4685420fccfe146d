/**
 * withoutStaleTwins, the walk filter the folder archive uses: of several
 * live entries TSK lists next to each other under one path (an NTFS index
 * entry ntfs-3g's rename over a name left behind, beside the real one), only
 * those whose metadata entry is allocated are handed on; istat is asked only
 * for such groups, and what cannot be told apart is kept.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { withoutStaleTwins } from '../../src/file-view/walk.ts';
import type { FileEntry, TreeEntry } from '../../src/file-view/listing.ts';

const entry = (path: string, address: string, deleted = false): TreeEntry => ({
  path,
  entry: { name: path.split('/').pop()!, type: 'file', size: 1, mtime: 0, inode: Number.parseInt(address, 10), address, deleted, mode: 0o644, uid: 0, gid: 0 } satisfies FileEntry,
});

async function run(entries: TreeEntry[], allocated: Record<string, boolean>) {
  const asked: string[] = [];
  async function* walk() {
    yield* entries;
  }
  const out: string[] = [];
  for await (const e of withoutStaleTwins(walk(), async (a) => (asked.push(a), allocated[a] ?? true))) out.push(`${e.path}@${e.entry.address}`);
  return { out, asked };
}

const cases: [string, TreeEntry[], Record<string, boolean>, string[], string[]][] = [
  ['no twins: nothing asked', [entry('/a', '64'), entry('/b', '65'), entry('/d/c', '66')], {}, ['/a@64', '/b@65', '/d/c@66'], []],
  ['the stale one after the real one is dropped', [entry('/d/a.txt', '66-128-2'), entry('/d/a.txt', '65-128-2'), entry('/d/b', '67')], { '66-128-2': true, '65-128-2': false }, ['/d/a.txt@66-128-2', '/d/b@67'], ['66-128-2', '65-128-2']],
  ['the stale one before the real one is dropped', [entry('/a', '65'), entry('/a', '66')], { 65: false, 66: true }, ['/a@66'], ['65', '66']],
  ['both allocated (cannot tell): both kept', [entry('/a', '65'), entry('/a', '66')], { 65: true, 66: true }, ['/a@65', '/a@66'], ['65', '66']],
  ['neither allocated (cannot tell): both kept', [entry('/a', '65'), entry('/a', '66')], { 65: false, 66: false }, ['/a@65', '/a@66'], ['65', '66']],
  ['a deleted entry of the name is no twin', [entry('/a', '65', true), entry('/a', '66')], {}, ['/a@65', '/a@66'], []],
  ['the same name in two folders is no twin', [entry('/x/a', '65'), entry('/y/a', '66')], {}, ['/x/a@65', '/y/a@66'], []],
  ['a group at the very end', [entry('/z', '70'), entry('/z', '71')], { 70: true, 71: false }, ['/z@70'], ['70', '71']],
];

for (const [name, entries, allocated, want, asked] of cases) {
  test(name, async () => {
    const r = await run(entries, allocated);
    assert.equal(r.out, want);
    assert.equal(r.asked, asked);
  });
}

test.run();
