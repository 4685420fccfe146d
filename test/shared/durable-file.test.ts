import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DurableRecord, appendWhole, readJsonChecked, writeJsonDurably, ensureSpaceReserve, NoSpaceError, ReadOnlyStateError, CorruptFileError } from '../../src/durable-file.ts';
import { BadInputError, DeviceError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';

const validate = (raw: unknown) => {
  if (typeof (raw as { n?: unknown })?.n !== 'number') throw new BadInputError('n must be a number');
  return { n: (raw as { n: number }).n };
};

function withDir(fn: (dir: string) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-store-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a record: nothing stored at first; both copies in the one checksummed format; the newest wins', () =>
  withDir((dir) => {
    const s = new DurableRecord(dir, 'switch', validate);
    assert.is(s.load(), null);
    s.save({ n: 1 });
    s.save({ n: 2 });
    assert.is(s.save({ n: 3 }), 3);
    assert.match(readFileSync(s.path, 'utf8'), /^#dpsr-checksum sha256=[0-9a-f]{64}\n/);
    assert.equal(readJsonChecked(s.path), { sequence: 3, n: 3 });
    assert.equal(readJsonChecked(`${s.path}.bak`), { sequence: 3, n: 3 });
    const loaded = new DurableRecord(dir, 'switch', validate).load()!;
    assert.equal(loaded.data, { n: 3 });
    assert.is(loaded.seq, 3);
  }));

test('a torn copy falls back to the other, the next save rewrites both', () =>
  withDir((dir) => {
    const s = new DurableRecord(dir, 'switch', validate);
    s.save({ n: 1 });
    writeFileSync(s.path, '#dpsr-checksum sha256=00\n{"sequence":2,"n"');
    const s2 = new DurableRecord(dir, 'switch', validate);
    const loaded = s2.load()!;
    assert.equal(loaded.data, { n: 1 });
    assert.is(loaded.from, 'bak');
    assert.ok(loaded.problems[0]!.includes('checksum'));
    s2.save({ n: 5 });
    assert.equal(new DurableRecord(dir, 'switch', validate).load()!.data, { n: 5 });
    assert.equal(readJsonChecked(s.path), { sequence: 2, n: 5 });
  }));

test('checksum and validation guard against edited or foreign content', () =>
  withDir((dir) => {
    const s = new DurableRecord(dir, 'switch', validate);
    s.save({ n: 1 });
    for (const p of [s.path, `${s.path}.bak`]) writeFileSync(p, readFileSync(p, 'utf8').replace('"n": 1', '"n": 9'));
    assert.throws(() => new DurableRecord(dir, 'switch', validate).load(), (e: unknown) => e instanceof DeviceError && /checksum/.test((e as Error).message));
    assert.throws(() => s.save({ n: 'x' } as unknown as { n: number }), (e: unknown) => e instanceof BadInputError);
    // A body that passes its checksum but has the wrong shape is damaged too, not a TypeError later.
    writeJsonDurably(s.path, { sequence: 7, n: 'seven' });
    rmSync(`${s.path}.bak`);
    assert.throws(() => new DurableRecord(dir, 'switch', validate).load(), (e: unknown) => e instanceof DeviceError && /n must be a number/.test((e as Error).message));
    assert.is(readJsonChecked(join(dir, 'none.json')), undefined);
    writeFileSync(join(dir, 'plain.json'), '{}');
    assert.throws(() => readJsonChecked(join(dir, 'plain.json')), (e: unknown) => e instanceof CorruptFileError);
  }));

test('copies written by the earlier two-file store (NAME.a.json, NAME.b.json) are still read, then replaced', () =>
  withDir((dir) => {
    const env = (seq: number, data: unknown) => ({ seq, savedAt: '2026-01-01T00:00:00Z', sum: createHash('sha256').update(`${seq}\n${JSON.stringify(data)}`).digest('hex').slice(0, 16), data });
    writeFileSync(join(dir, 'switch.a.json'), JSON.stringify(env(3, { n: 3 })));
    writeFileSync(join(dir, 'switch.b.json'), JSON.stringify(env(4, { n: 4 })));
    const s = new DurableRecord(dir, 'switch', validate);
    assert.equal(s.load()!.data, { n: 4 });
    assert.is(s.save({ n: 5 }), 5);
    assert.not.ok(existsSync(join(dir, 'switch.a.json')));
    assert.not.ok(existsSync(join(dir, 'switch.b.json')));
    assert.equal(new DurableRecord(dir, 'switch', validate).load()!.data, { n: 5 });
    writeFileSync(join(dir, 'other.a.json'), JSON.stringify({ ...env(2, { n: 2 }), sum: 'bad' }));
    assert.throws(() => new DurableRecord(dir, 'other', validate).load(), (e: unknown) => e instanceof DeviceError && /checksum mismatch/.test((e as Error).message));
  }));

test('a full filesystem: NoSpaceError naming the fix, the old file kept; the space reserve lets a recovery write', () => {
  if (!requireEnv('the full-filesystem test', { root: true, tools: ['mount', 'dd'] })) return;
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir]);
  try {
    const file = join(dir, 'jobs.json');
    writeJsonDurably(file, { v: 1 });
    assert.ok(ensureSpaceReserve(dir, 1024 * 1024));
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${join(dir, 'filler')}`, 'bs=64k'], { stdio: 'ignore' });
    } catch {
      /* dd stops at ENOSPC */
    }
    const big = { v: 2, pad: 'x'.repeat(200_000) };
    assert.throws(() => writeJsonDurably(file, big), (e: unknown) => e instanceof NoSpaceError && /no space left/.test((e as Error).message) && /free space/.test((e as NoSpaceError).hint ?? ''));
    assert.equal(readJsonChecked(file), { v: 1 });
    writeJsonDurably(file, big, { reserve: dir });
    assert.equal((readJsonChecked(file) as { v: number }).v, 2);
    assert.not.ok(ensureSpaceReserve(dir, 1024 * 1024), 'no room to rebuild the reserve on a full filesystem');
  } finally {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a read-only filesystem: ReadOnlyStateError naming the fix, the old copies kept', () => {
  if (!requireEnv('the read-only filesystem test', { root: true, tools: ['mount', 'umount'] })) return;
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-ro-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
  try {
    const file = join(dir, 'jobs.json');
    writeJsonDurably(file, { v: 1 });
    const record = new DurableRecord(dir, 'switch', (raw) => raw as { n: number });
    record.save({ n: 1 });
    execFileSync('mount', ['-o', 'remount,ro', dir]);
    const readOnly = (e: unknown) => e instanceof ReadOnlyStateError && /read-only/.test((e as Error).message) && /remount|writable/.test((e as ReadOnlyStateError).hint ?? '');
    assert.throws(() => writeJsonDurably(file, { v: 2 }), readOnly);
    assert.throws(() => record.save({ n: 2 }), readOnly);
    assert.equal(readJsonChecked(file), { v: 1 });
    assert.equal(new DurableRecord(dir, 'switch', (raw) => raw as { n: number }).load()!.data, { n: 1 });
  } finally {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an append a full filesystem takes only in part is cut off again (NoSpaceError naming the fix): the file ends at its last whole line, and appends go on once there is room', () => {
  if (!requireEnv('the full-filesystem append test', { root: true, tools: ['mount', 'umount'] })) return;
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-append-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
  try {
    const file = join(dir, 'pages.jsonl');
    appendWhole(file, '{"n":1}\n');
    try {
      writeFileSync(join(dir, 'filler'), Buffer.alloc(1 << 20));
    } catch {
      /* ENOSPC: full */
    }
    // More than the page the file has begun: part of it fits, the rest does not.
    assert.throws(() => appendWhole(file, `{"n":2,"pad":"${'x'.repeat(20_000)}"}\n`), (e: unknown) => e instanceof NoSpaceError && /no space left/.test((e as Error).message) && /free space/.test((e as NoSpaceError).hint ?? ''));
    assert.is(readFileSync(file, 'utf8'), '{"n":1}\n');
    rmSync(join(dir, 'filler'));
    appendWhole(file, '{"n":3}\n');
    assert.is(readFileSync(file, 'utf8'), '{"n":1}\n{"n":3}\n');
    execFileSync('mount', ['-o', 'remount,ro', dir]);
    assert.throws(() => appendWhole(file, '{"n":4}\n'), (e: unknown) => e instanceof ReadOnlyStateError);
  } finally {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
