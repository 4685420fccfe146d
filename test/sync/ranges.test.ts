import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendRange, subtractRanges, type ByteRange } from '../../src/sync/ranges.ts';

const r = (start: number, length: number): ByteRange => ({ start, length });

const SUBTRACT: [string, ByteRange[], ByteRange[], ByteRange[]][] = [
  ['no holes', [r(0, 100)], [], [r(0, 100)]],
  ['hole outside', [r(0, 100)], [r(100, 10)], [r(0, 100)]],
  ['hole ends where the range starts', [r(50, 50)], [r(0, 50)], [r(50, 50)]],
  ['hole in the middle', [r(0, 100)], [r(40, 20)], [r(0, 40), r(60, 40)]],
  ['hole over the head', [r(10, 90)], [r(0, 20)], [r(20, 80)]],
  ['hole over the tail', [r(0, 100)], [r(90, 50)], [r(0, 90)]],
  ['hole covers all', [r(10, 10)], [r(0, 100)], []],
  ['two holes, one range', [r(0, 100)], [r(10, 10), r(50, 10)], [r(0, 10), r(20, 30), r(60, 40)]],
  ['unsorted holes', [r(0, 100)], [r(50, 10), r(10, 10)], [r(0, 10), r(20, 30), r(60, 40)]],
  ['overlapping holes', [r(0, 100)], [r(10, 30), r(20, 30)], [r(0, 10), r(50, 50)]],
  ['several ranges keep their order', [r(200, 10), r(0, 10)], [r(205, 100)], [r(200, 5), r(0, 10)]],
  ['GPT sectors of a larger copy (verify)', [r(0, 4096)], [r(0, 1024), r(3072, 1024)], [r(1024, 2048)]],
];

for (const [name, ranges, holes, want] of SUBTRACT) {
  test(`subtractRanges: ${name}`, () => {
    assert.equal(subtractRanges(ranges, holes), want);
  });
}

test('subtractRanges leaves its inputs alone', () => {
  const ranges = [r(0, 100)];
  const holes = [r(10, 10)];
  subtractRanges(ranges, holes);
  assert.equal(ranges, [r(0, 100)]);
  assert.equal(holes, [r(10, 10)]);
});

test('appendRange extends the last range when the next one touches it', () => {
  const runs: { start: number; length: number }[] = [];
  assert.is(appendRange(runs, 0, 512), true);
  assert.is(appendRange(runs, 512, 512), false);
  assert.is(appendRange(runs, 2048, 512), true);
  assert.is(appendRange(runs, 2560, 1024), false);
  assert.equal(runs, [r(0, 1024), r(2048, 1536)]);
});

test.run();
