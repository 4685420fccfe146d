import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DualStore } from '../../src/bootswitch/index.ts';
import { BadInputError, DeviceError } from '../../src/errors.ts';

const validate = (raw: unknown) => {
  if (typeof (raw as { n?: unknown })?.n !== 'number') throw new BadInputError('n must be a number');
  return raw as { n: number };
};

function withDir(fn: (dir: string) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-store-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('first start: nothing stored; saves alternate between the two copies', () =>
  withDir((dir) => {
    const s = new DualStore(dir, 'switch', validate);
    assert.is(s.load(), null);
    s.save({ n: 1 });
    s.save({ n: 2 });
    s.save({ n: 3 });
    assert.is(JSON.parse(readFileSync(s.paths.a, 'utf8')).data.n, 3);
    assert.is(JSON.parse(readFileSync(s.paths.b, 'utf8')).data.n, 2);
    const loaded = new DualStore(dir, 'switch', validate).load()!;
    assert.equal(loaded.data, { n: 3 });
    assert.is(loaded.seq, 3);
  }));

test('a torn newest copy falls back to the other and the next save overwrites the torn one', () =>
  withDir((dir) => {
    const s = new DualStore(dir, 'switch', validate);
    s.save({ n: 1 });
    s.save({ n: 2 }); // in b
    writeFileSync(s.paths.b, '{"seq":2,"sum":"x","da');
    const s2 = new DualStore(dir, 'switch', validate);
    const loaded = s2.load()!;
    assert.equal(loaded.data, { n: 1 });
    assert.is(loaded.from, 'a');
    assert.ok(loaded.problems[0].includes('copy b'));
    s2.save({ n: 5 });
    assert.is(JSON.parse(readFileSync(s.paths.b, 'utf8')).data.n, 5);
    assert.equal(new DualStore(dir, 'switch', validate).load()!.data, { n: 5 });
  }));

test('checksum and validation guard against edited or foreign content', () =>
  withDir((dir) => {
    const s = new DualStore(dir, 'switch', validate);
    s.save({ n: 1 });
    const env = JSON.parse(readFileSync(s.paths.a, 'utf8'));
    env.data.n = 9;
    writeFileSync(s.paths.a, JSON.stringify(env));
    assert.throws(() => new DualStore(dir, 'switch', validate).load(), (e: unknown) => e instanceof DeviceError && /checksum/.test((e as Error).message));
    assert.throws(() => s.save({ n: 'x' } as unknown as { n: number }), (e: unknown) => e instanceof BadInputError);
  }));

test.run();
