/** Reading commands and bad input leave the state directory as they found it: a missing one is not created. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { dpsr } from '../support/cli.ts';
import { randomImage, sparseImage, tempDir } from '../support/images.ts';

const MiB = 1024 * 1024;

test('status on a state directory that does not exist: no pairs, exit 0, nothing created', () => {
  const state = join(tempDir(), 'state');
  const r = dpsr(['status', '--json'], { DPSR_STATE_DIR: state });
  assert.is(r.code, 0, r.stderr);
  assert.equal(r.json().pairs, []);
  assert.not.ok(existsSync(state), 'status created the state directory');
});

test('forget of an unknown pair: exit 2 naming it, nothing created', () => {
  const state = join(tempDir(), 'state');
  const r = dpsr(['forget', 'nosuch', '--yes'], { DPSR_STATE_DIR: state });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /no pair nosuch is recorded/);
  assert.not.ok(existsSync(state), 'forget created the state directory');
});

test('a sync refused because the target is not a recorded standby: exit 3, no pair folder left behind', () => {
  const dir = tempDir();
  const state = join(dir, 'state');
  const a = randomImage(join(dir, 'a.img'), 4 * MiB, 6);
  const b = sparseImage(join(dir, 'b.img'), 4 * MiB);
  const r = dpsr(['sync', a, b, '--yes', '--quiet'], { DPSR_STATE_DIR: state });
  assert.is(r.code, 3, r.stderr);
  assert.match(r.stderr, /not the standby of any recorded pair/);
  assert.not.ok(existsSync(join(state, 'pairs')), 'the refusal made a pair folder');
});

test('the first clone into a state directory that does not exist yet creates it', () => {
  const dir = tempDir();
  const state = join(dir, 'new', 'state');
  const a = randomImage(join(dir, 'a.img'), 4 * MiB, 5);
  const b = sparseImage(join(dir, 'b.img'), 4 * MiB);
  const r = dpsr(['clone', a, b, '--yes', '--quiet'], { DPSR_STATE_DIR: state });
  assert.is(r.code, 0, r.stderr);
  const s = dpsr(['status', '--json'], { DPSR_STATE_DIR: state });
  assert.is(s.json().pairs.length, 1);
});

test.run();
