/** `dpsr forget` drops the pair's record and nothing else, as its prompt says: the drives and the pair's folder stay. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { dpsr } from '../support/cli.ts';
import { randomImage, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { PairStore } from '../../src/sync/index.ts';

const MiB = 1024 * 1024;

test('forget drops the pair record; the drives and the undo journal folder stay', () => {
  const dir = tempDir();
  const state = join(dir, 'state');
  const env = { DPSR_STATE_DIR: state };
  const a = randomImage(join(dir, 'a.img'), 8 * MiB, 3);
  const b = sparseImage(join(dir, 'b.img'), 8 * MiB);
  assert.is(dpsr(['clone', a, b, '--yes', '--json'], env).code, 0);
  const pair = new PairStore(state).pairs()[0]!;
  const folder = new PairStore(state).pairDir(pair);
  assert.ok(existsSync(folder), 'the clone made the pair folder');
  const before = readdirSync(folder).sort();
  const hashes = [sha256File(a), sha256File(b)];
  const r = dpsr(['forget', pair.id, '--yes', '--json'], env);
  assert.is(r.code, 0, r.stderr);
  assert.equal(r.json(), { forgotten: pair.id });
  assert.is(new PairStore(state).pairs().length, 0);
  assert.equal(readdirSync(folder).sort(), before);
  assert.equal([sha256File(a), sha256File(b)], hashes);
});

test.run();
