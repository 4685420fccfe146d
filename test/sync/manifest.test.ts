/**
 * The manifest's checksum, kept up to date page by page: whatever a copy
 * writes into the table, in any order and overlap, a sealed manifest passes
 * the check of its whole table and holds exactly what was written last;
 * damage to the table on disk is found by the next open that checks it,
 * also when a copy that did not check the table wrote near or over the
 * damage; a manifest opened without that check refuses to be consulted.
 * And a block a copy wrote only in part is unknown to the table afterwards.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { join } from 'node:path';
import { closeSync, copyFileSync, openSync, readFileSync, readSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Manifest, MANIFEST_BLOCK } from '../../src/sync/manifest.ts';
import { clone, sync, verify } from '../../src/sync/index.ts';
import { tempDir } from '../support/images.ts';
import { xorshift32 } from '../support/xorshift.ts';

const dir = tempDir('dpsr-manifest-');
const MiB = 1024 * 1024;
const HEADER = 4096;

/** 1300 blocks: two full checksum pages and a short one. */
const SIZE = 1300 * MANIFEST_BLOCK - 5000;
const BLOCKS = Math.ceil(SIZE / MANIFEST_BLOCK);
const expect = (generation = 1) => ({ targetKey: 'T', targetSize: SIZE, generation });

type Write = { first: number; hashes: bigint[] };
const writeArb: fc.Arbitrary<Write> = fc
  .record({ first: fc.integer({ min: 0, max: BLOCKS - 1 }), length: fc.integer({ min: 1, max: 700 }), seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }), unknown: fc.boolean() })
  .map(({ first, length, seed, unknown }) => {
    const next = xorshift32(seed);
    const n = Math.min(length, BLOCKS - first);
    return { first, hashes: Array.from({ length: n }, () => (unknown && next() % 3 === 0 ? 0n : (BigInt(next()) << 32n) | BigInt(next() | 1))) };
  });

/** The writes in order; a flush of the table (not waited for, as a copy starts it) before write `flushAt`. */
async function writeAll(m: Manifest, writes: readonly Write[], model: BigUint64Array, flushAt?: number): Promise<void> {
  for (const [i, w] of writes.entries()) {
    if (i === flushAt) void m.flushTable();
    await m.writeHashes(w.first, BigUint64Array.from(w.hashes));
    model.set(w.hashes, w.first);
  }
  if (flushAt !== undefined && flushAt >= writes.length) void m.flushTable();
}

test('property: after any writes and seals, with or without checking the table at open, with the table flushed early or not, its hashes written at once or held, the whole table passes its check and holds the last writes', async () => {
  const path = join(dir, 'prop.manifest');
  await fc.assert(
    fc.asyncProperty(fc.array(fc.record({ writes: fc.array(writeArb, { maxLength: 12 }), checkTable: fc.boolean(), flushAt: fc.option(fc.nat(13), { nil: undefined }), pendingEntries: fc.constantFrom(1, 50, 700, 128 * 1024) }), { minLength: 1, maxLength: 5 }), async (syncs) => {
      rmSync(path, { force: true });
      const model = new BigUint64Array(BLOCKS);
      let generation = 1;
      for (const s of syncs) {
        const { manifest } = await Manifest.open(path, expect(generation), { checkTable: s.checkTable, pendingEntries: s.pendingEntries });
        await manifest.markDirty();
        await writeAll(manifest, s.writes, model, s.flushAt);
        generation++;
        await manifest.seal(generation, [{ start: 0, length: SIZE }]);
        await manifest.close();
        const checked = await Manifest.open(path, expect(generation));
        assert.ok(checked.usable, checked.reason);
        assert.equal([...(await checked.manifest.readHashes(0, BLOCKS))], [...model]);
        await checked.manifest.close();
      }
    }),
    { numRuns: Number(process.env.DPSR_PROPERTY_RUNS ?? 60) },
  );
});

test('readHashes sees hashes not yet in the file; a manifest opened without its table checked cannot be consulted', async () => {
  const path = join(dir, 'pending.manifest');
  rmSync(path, { force: true });
  const { manifest } = await Manifest.open(path, expect());
  await manifest.writeHashes(10, BigUint64Array.from([5n, 6n]));
  await manifest.writeHashes(11, BigUint64Array.from([7n]));
  assert.equal([...(await manifest.readHashes(9, 4))], [0n, 5n, 7n, 0n]);
  await manifest.seal(2, [{ start: 0, length: SIZE }]);
  await manifest.close();
  const unchecked = await Manifest.open(path, expect(2), { checkTable: false });
  assert.ok(unchecked.usable);
  try {
    await unchecked.manifest.readHashes(0, 1);
    assert.unreachable('readHashes answered from an unchecked table');
  } catch (e) {
    assert.match((e as Error).message, /without checking its table/);
  } finally {
    await unchecked.manifest.close();
  }
});

/** A sealed manifest of generation 2 with every block known. */
async function sealedManifest(path: string): Promise<void> {
  rmSync(path, { force: true });
  const { manifest } = await Manifest.open(path, expect());
  await manifest.markDirty();
  await manifest.writeHashes(0, BigUint64Array.from({ length: BLOCKS }, (_, i) => BigInt(i) * 7919n + 1n));
  await manifest.seal(2, [{ start: 0, length: SIZE }]);
  await manifest.close();
}

function damage(path: string, block: number): void {
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, HEADER + block * 8 + 3);
  b[0] ^= 0x10;
  writeSync(fd, b, 0, 1, HEADER + block * 8 + 3);
  closeSync(fd);
}

test('table: damage on disk survives copies that do not check the table, and the next check finds it', async () => {
  const path = join(dir, 'damaged.manifest');
  const cases: [string, (m: Manifest) => Promise<void>][] = [
    ['no write', async () => undefined],
    ['writes in another page', async (m) => m.writeHashes(1100, BigUint64Array.from([1n, 2n, 3n]))],
    ['a write in the same page, other entries', async (m) => m.writeHashes(40, BigUint64Array.from([1n, 2n]))],
    ['a write over the damaged entry', async (m) => m.writeHashes(99, BigUint64Array.from([1n, 2n, 3n]))],
    ['the damaged entry made unknown', async (m) => m.writeHashes(100, BigUint64Array.from([0n]))],
  ];
  for (const [name, write] of cases) {
    await sealedManifest(path);
    damage(path, 100);
    const { manifest, usable } = await Manifest.open(path, expect(2), { checkTable: false });
    assert.ok(usable, name);
    await manifest.markDirty();
    await write(manifest);
    await manifest.seal(3, [{ start: 0, length: SIZE }]);
    await manifest.close();
    const again = await Manifest.open(path, expect(3));
    await again.manifest.close();
    assert.is(again.usable, false, name);
    assert.match(again.reason ?? '', /fails its checksum/, name);
  }
});

test('table: a copy that dies after writing table entries leaves a manifest nobody trusts; an earlier format is rebuilt', async () => {
  const path = join(dir, 'crash.manifest');
  await sealedManifest(path);
  const { manifest } = await Manifest.open(path, expect(2), { checkTable: false });
  await manifest.markDirty();
  await manifest.writeHashes(0, BigUint64Array.from({ length: 600 }, () => 9n));
  await manifest.close(); // the process died before seal: pending hashes lost, the header says dirty
  for (const checkTable of [true, false]) {
    const after = await Manifest.open(path, expect(2), { checkTable });
    await after.manifest.close();
    assert.is(after.usable, false);
    assert.match(after.reason ?? '', /interrupted/);
    await sealedManifest(path);
    const again = await Manifest.open(path, expect(2), { checkTable: false });
    await again.manifest.markDirty();
    await again.manifest.close();
  }
  // A manifest of the first format: its checksum cannot be kept up to date, so it is rebuilt.
  await sealedManifest(path);
  const bytes = readFileSync(path);
  const header = JSON.parse(bytes.subarray(0, HEADER).toString('utf8').replace(/\0+$/, ''));
  header.format = 'dpsr-manifest-1';
  bytes.fill(0, 0, HEADER);
  bytes.write(JSON.stringify(header));
  writeFileSync(path, bytes);
  const old = await Manifest.open(path, expect(2));
  await old.manifest.close();
  assert.is(old.usable, false);
  assert.match(old.reason ?? '', /earlier format/);
});

test('a block a partition sync copied only in part is unknown to the manifest: the next manifest sync compares it, even when the source went back to what the block held before', async () => {
  const KiB = 1024;
  const size = 2 * MiB;
  const a = join(dir, 'part-a.img');
  const b = join(dir, 'part-b.img');
  const stateDir = join(dir, 'part-state');
  rmSync(stateDir, { recursive: true, force: true });
  writeFileSync(a, Buffer.alloc(0));
  truncateSync(a, size);
  // Partition 2 ends 10 KiB into a 32 KiB manifest block (at byte 2041856): the rest of that block lies outside it.
  execFileSync('sfdisk', ['-q', a], { input: 'label: gpt\nstart=64, size=1024\nstart=1088, size=2900\n' });
  const fill = (at: number, length: number, byte: number) => {
    const fd = openSync(a, 'r+');
    writeSync(fd, Buffer.alloc(length, byte), 0, length, at);
    closeSync(fd);
  };
  fill(1988 * KiB, 4 * KiB, 0x11);
  copyFileSync(a, b);
  await clone({ stateDir, source: a, target: b, forceClone: true });
  // The host changes the partition's last bytes; a sync of partition 2 copies them.
  fill(1988 * KiB, 4 * KiB, 0x22);
  const part = await sync({ stateDir, source: a, target: b, partitions: [2] });
  assert.is(part.result, 'done');
  // The host writes the old bytes back: the block holds again what it held when it was last hashed whole.
  fill(1988 * KiB, 4 * KiB, 0x11);
  const whole = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(whole.mode, 'manifest', whole.notes.join('; '));
  const v = await verify({ stateDir, source: a, target: b });
  assert.ok(v.identical, `the standby differs at ${JSON.stringify(v.differences)}`);
});

test('a standby written outside dpsr since its last sync (mounted read-write, a tool) is compared, not trusted to its manifest; one that was not keeps manifest mode', async () => {
  const size = 4 * MiB;
  const a = join(dir, 'touched-a.img');
  const b = join(dir, 'touched-b.img');
  const stateDir = join(dir, 'touched-state');
  rmSync(stateDir, { recursive: true, force: true });
  const rand = xorshift32(7);
  writeFileSync(a, Buffer.from(Uint32Array.from({ length: size / 4 }, () => rand()).buffer));
  writeFileSync(b, Buffer.alloc(size));
  await clone({ stateDir, source: a, target: b });
  const first = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(first.mode, 'manifest', first.notes.join('; '));
  // As a read-write mount of the standby does (a journal replay, a superblock's mount count): a few blocks change there.
  const fd = openSync(b, 'r+');
  writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, 1 * MiB);
  closeSync(fd);
  // The manifest said "same as the active drive" for that block: the sync wrote nothing, and the standby differed from then on.
  const after = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(after.mode, 'compare');
  assert.match(after.notes.join('; '), /the standby was written since its last sync/);
  assert.is(after.bytesWritten, 4096);
  const v = await verify({ stateDir, source: a, target: b });
  assert.ok(v.identical, `the standby differs at ${JSON.stringify(v.differences)}`);
  // Untouched since: manifest mode again.
  const again = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(again.mode, 'manifest', again.notes.join('; '));
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
