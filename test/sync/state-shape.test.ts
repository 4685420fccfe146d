/**
 * A pair state file of the wrong shape (edited by hand, checksum and all, or
 * written by another version) gives a clear error naming the field and
 * changes nothing; never a TypeError.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { dpsr } from '../support/cli.ts';
import { randomImage, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { writeJsonDurably, readJsonChecked } from '../../src/durable-file.ts';
import { pairStateShapeProblem } from '../../src/sync/pair-state-shape.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

test('table: shapes and the field each problem names', () => {
  const drive = (key: string) => ({ key, sizeBytes: 4096, logicalSectorSize: 512, lastPath: '/x', generation: 1, lineage: [1] });
  const good = { sequence: 1, pairs: [{ id: 'p', createdAt: 't', activeKey: 'A', standbyKey: 'B', counter: 1, standbyState: 'consistent', drives: { A: drive('A'), B: drive('B') } }] };
  const rows: [string, unknown, RegExp | undefined][] = [
    ['a good file', good, undefined],
    ['not an object', [], /not a JSON object/],
    ['pairs is an object', { sequence: 1, pairs: {} }, /"pairs" is not a list/],
    ['a drive missing', { ...good, pairs: [{ ...good.pairs[0], drives: { A: drive('A') } }] }, /pairs\[0\]\.drives\["B"\] is missing/],
    ['a generation as text', { ...good, pairs: [{ ...good.pairs[0], drives: { A: drive('A'), B: { ...drive('B'), generation: '2' } } }] }, /drives\["B"\]\.generation is not a whole number/],
    ['an unknown state', { ...good, pairs: [{ ...good.pairs[0], standbyState: 'fine' }] }, /standbyState is not one of/],
    ['a pending copy without its kind', { ...good, pairs: [{ ...good.pairs[0], pendingCopy: { from: 'A', to: 'B', startedAt: 't', journaled: true } }] }, /pendingCopy\.kind/],
    ['a pending plan that is not a plan', { ...good, pairs: [{ ...good.pairs[0], pendingCopy: { kind: 'sync', from: 'A', to: 'B', startedAt: 't', journaled: true, plan: { digest: 1 } } }] }, /pendingCopy\.plan is not a copy plan/],
  ];
  for (const [name, value, want] of rows) {
    const got = pairStateShapeProblem(value);
    if (want) assert.match(got ?? '', want, name);
    else assert.is(got, undefined, name);
  }
});

test('a hand-edited state file of the wrong shape: status and sync exit 2 naming the field, the standby unchanged', () => {
  const stateDir = join(dir, 'state');
  const env = { DPSR_STATE_DIR: stateDir };
  const a = randomImage(join(dir, 'a.img'), 4 * MiB, 1);
  const b = sparseImage(join(dir, 'b.img'), 4 * MiB);
  assert.is(dpsr(['clone', a, b, '--yes', '--quiet'], env).code, 0);
  // The operator "fixes" a generation by hand in both copies, checksum included.
  for (const file of ['pairs.json', 'pairs.json.bak']) {
    const path = join(stateDir, file);
    const state = readJsonChecked<{ pairs: { drives: Record<string, { generation: unknown }> }[] }>(path)!;
    for (const d of Object.values(state.pairs[0]!.drives)) d.generation = 'two';
    writeJsonDurably(path, state);
  }
  randomImage(a, 4 * MiB, 2);
  const before = sha256File(b);
  for (const args of [['status'], ['sync', a, b, '--yes']]) {
    const r = dpsr(args, env);
    assert.is(r.code, 2, `${args[0]}: exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, /not in dpsr's format: pairs\[0\]\.drives\[".*"\]\.generation is not a whole number/);
    assert.not.match(r.stderr, /TypeError|at .*\.ts:\d+/);
  }
  assert.is(sha256File(b), before);
});

test.run();
