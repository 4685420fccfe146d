/**
 * Changed mode: the plan copies only the changed blocks of the selection, or
 * falls back to manifest mode saying why; the operation carries it out
 * through the undo journal, the sync map and the manifest like every copy.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { openSync, readFileSync, readdirSync, statSync, truncateSync, writeFileSync, writeSync, closeSync, copyFileSync, cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { openLocated, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { planCopy, type PlanInput } from '../../src/sync/copy-plan.ts';
import { pair } from './support/pair-fixture.ts';
import { intersectRanges } from '../../src/sync/ranges.ts';
import { clone, sync, recover } from '../../src/sync/index.ts';
import { randomImage, tempDir } from '../support/images.ts';
import { VolatileCacheDevice } from '../support/volatile-cache.ts';

const MiB = 1024 * 1024;
const KiB = 1024;
const S = 512;
const dir = tempDir('dpsr-changed-');


function input(request: Partial<PlanInput['request']>): PlanInput {
  return {
    request: { kind: 'sync', partitions: [], mode: 'changed', ...request },
    source: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S },
    target: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: S },
    pairs: [pair()],
    journalRecords: 0,
  };
}

test('ranges: intersection of sorted, unsorted and touching sets', () => {
  assert.equal(intersectRanges([{ start: 0, length: 10 }, { start: 20, length: 10 }], [{ start: 5, length: 20 }]), [{ start: 5, length: 5 }, { start: 20, length: 5 }]);
  assert.equal(intersectRanges([{ start: 30, length: 5 }, { start: 0, length: 100 }], [{ start: 90, length: 50 }, { start: 10, length: 5 }]), [{ start: 10, length: 5 }, { start: 90, length: 10 }]);
  assert.equal(intersectRanges([{ start: 0, length: 10 }], [{ start: 10, length: 10 }]), []);
  assert.equal(intersectRanges([], [{ start: 0, length: 10 }]), []);
});

test('plan: trusted changed blocks become the ranges (sector-aligned, clipped to the drive); the mode is changed', () => {
  const d = planCopy(input({ changed: { ranges: [{ start: 64 * KiB, length: 64 * KiB }, { start: 10 * MiB + 100, length: 10 }, { start: 64 * MiB - 64 * KiB, length: 128 * KiB }] } }));
  assert.is(d.verdict, 'copy');
  if (d.verdict !== 'copy') return;
  assert.is(d.plan.mode, 'changed');
  assert.equal(d.plan.ranges, [{ start: 64 * KiB, length: 64 * KiB }, { start: 10 * MiB, length: 512 }, { start: 64 * MiB - 64 * KiB, length: 64 * KiB }]);
  assert.ok(d.plan.journaled);
});

test('plan: no tracking, or an untrusted set, is a full sync in manifest mode with the reason in the notes', () => {
  for (const [changed, why] of [
    [undefined, /not in inline mode/],
    [{ untrusted: 'qemu-storage-daemon restarted since the last sync' }, /restarted since the last sync/],
  ] as const) {
    const d = planCopy(input({ changed }));
    assert.is(d.verdict, 'copy');
    if (d.verdict !== 'copy') continue;
    assert.is(d.plan.mode, 'manifest');
    assert.equal(d.plan.ranges, [{ start: 0, length: 64 * MiB }]);
    assert.match(d.notes.join('\n'), /changed-block mode not possible/);
    assert.match(d.notes.join('\n'), why);
  }
});

test('plan: changed mode on a restore is bad input; two different changed sets are two different plans', () => {
  const r = planCopy({ ...input({ kind: 'restore' }), source: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: S }, target: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S } });
  assert.is(r.verdict, 'refuse');
  if (r.verdict === 'refuse') assert.is(r.refusal.error, 'bad-input');
  const a = planCopy(input({ changed: { ranges: [{ start: 0, length: 64 * KiB }] } }));
  const b = planCopy(input({ changed: { ranges: [{ start: 0, length: 128 * KiB }] } }));
  assert.ok(a.verdict === 'copy' && b.verdict === 'copy' && a.plan.digest !== b.plan.digest);
});

function scribble(path: string, at: number, length: number, byte: number): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(length, byte), 0, length, at);
  closeSync(fd);
}

test('a changed sync copies only the given ranges, journaled; recover rolls it back; the manifest follows', async () => {
  const stateDir = join(dir, 'op-state');
  const a = randomImage(join(dir, 'op-a.img'), 32 * MiB, 21);
  const b = join(dir, 'op-b.img');
  copyFileSync(a, b);
  await clone({ stateDir, source: a, target: b, forceClone: true });
  const backup = readFileSync(b);
  // The host changes two places; a third change is NOT in the changed set, to prove only the set is copied.
  scribble(a, 1 * MiB, 64 * KiB, 0x11);
  scribble(a, 20 * MiB + 64 * KiB, 64 * KiB, 0x22);
  scribble(a, 30 * MiB, 64 * KiB, 0x33);
  const changed = { ranges: [{ start: 1 * MiB, length: 64 * KiB }, { start: 20 * MiB + 64 * KiB, length: 64 * KiB }] };
  const report = await sync({ stateDir, source: a, target: b, mode: 'changed', changed });
  assert.is(report.mode, 'changed');
  assert.is(report.bytesTotal, 128 * KiB, 'only the changed blocks were walked');
  assert.is(report.bytesWritten, 128 * KiB);
  const now = readFileSync(b);
  const src = readFileSync(a);
  assert.ok(now.subarray(1 * MiB, 1 * MiB + 64 * KiB).equals(src.subarray(1 * MiB, 1 * MiB + 64 * KiB)));
  assert.ok(now.subarray(20 * MiB + 64 * KiB, 20 * MiB + 128 * KiB).every((x) => x === 0x22));
  assert.ok(now.subarray(30 * MiB, 30 * MiB + 64 * KiB).equals(backup.subarray(30 * MiB, 30 * MiB + 64 * KiB)), 'outside the set the standby is untouched');
  // The manifest was kept up to date for the changed blocks: a manifest sync finds only the change left out.
  // Nothing changed since: an empty set is a sync that walks nothing and completes.
  const none = await sync({ stateDir, source: a, target: b, mode: 'changed', changed: { ranges: [] } });
  assert.is(none.result, 'done');
  assert.is(none.bytesTotal, 0);
  const m = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(m.mode, 'manifest');
  assert.is(m.bytesWritten, 64 * KiB);
  assert.ok(readFileSync(a).equals(readFileSync(b)));
});

test('a standby written since its last sync by something else gets a full sync, not a changed one: the changed blocks are only what the active drive changed', async () => {
  const stateDir = join(dir, 'written-state');
  const a = randomImage(join(dir, 'written-a.img'), 8 * MiB, 31);
  const b = join(dir, 'written-b.img');
  copyFileSync(a, b);
  await clone({ stateDir, source: a, target: b, forceClone: true });
  // Mounted read-write, or a tool: 4 KiB of the standby outside any changed block.
  scribble(b, 6 * MiB, 4 * KiB, 0x77);
  scribble(a, 1 * MiB, 64 * KiB, 0x11);
  const r = await sync({ stateDir, source: a, target: b, mode: 'changed', changed: { ranges: [{ start: 1 * MiB, length: 64 * KiB }] } });
  assert.is(r.result, 'done');
  assert.ok(r.notes.some((n) => /changed-block mode not possible \(the standby was written since its last sync/.test(n)), r.notes.join('; '));
  assert.ok(readFileSync(a).equals(readFileSync(b)), 'the foreign write is undone too');
  // Sealed again: the next changed sync is a changed one.
  scribble(a, 2 * MiB, 64 * KiB, 0x12);
  const next = await sync({ stateDir, source: a, target: b, mode: 'changed', changed: { ranges: [{ start: 2 * MiB, length: 64 * KiB }] } });
  assert.is(next.mode, 'changed');
  assert.is(next.bytesWritten, 64 * KiB);
  assert.ok(readFileSync(a).equals(readFileSync(b)));
});

test('a changed sync reads the standby with O_DIRECT (no readahead around scattered granules) and writes it through the page cache; on tmpfs, which has no O_DIRECT, all through the page cache', async () => {
  const stateDir = join(dir, 'direct-state');
  const a = randomImage(join(dir, 'direct-a.img'), 8 * MiB, 23);
  const b = join(dir, 'direct-b.img');
  copyFileSync(a, b);
  await clone({ stateDir, source: a, target: b, forceClone: true });
  scribble(a, 3 * MiB, 64 * KiB, 0x55);
  const writes: OpenDriveOptions['direct'][] = [];
  const openDevice = (loc: DriveLocation, o: OpenDriveOptions) => {
    if (o.write) writes.push(o.direct);
    return openLocated(loc, o);
  };
  await sync({ stateDir, source: a, target: b, mode: 'changed', changed: { ranges: [{ start: 3 * MiB, length: 64 * KiB }] }, openDevice });
  assert.equal(writes, ['reads']);
  assert.ok(readFileSync(a).equals(readFileSync(b)));
  // A compare sync keeps the page cache unless asked.
  await sync({ stateDir, source: a, target: b, mode: 'compare', openDevice });
  assert.equal(writes, ['reads', false]);
  if (!existsSync('/dev/shm')) return;
  const shm = mkdtempSync('/dev/shm/dpsr-changed-');
  try {
    const sa = join(shm, 'a.img');
    const sb = join(shm, 'b.img');
    copyFileSync(a, sa);
    copyFileSync(a, sb);
    const st = join(shm, 'state');
    await clone({ stateDir: st, source: sa, target: sb, forceClone: true });
    scribble(sa, 5 * MiB, 64 * KiB, 0x66);
    const r = await sync({ stateDir: st, source: sa, target: sb, mode: 'changed', changed: { ranges: [{ start: 5 * MiB, length: 64 * KiB }] } });
    assert.is(r.bytesWritten, 64 * KiB);
    assert.ok(readFileSync(sa).equals(readFileSync(sb)));
  } finally {
    rmSync(shm, { recursive: true, force: true });
  }
});

test('changed blocks read straight into small journal batches: many batches in turn, granules that differ, partly differ or not at all; the standby ends identical, the journal held every old byte', async () => {
  const stateDir = join(dir, 'inplace-state');
  const a = randomImage(join(dir, 'inplace-a.img'), 16 * MiB, 25);
  const b = join(dir, 'inplace-b.img');
  copyFileSync(a, b);
  await clone({ stateDir, source: a, target: b, forceClone: true });
  const backup = readFileSync(b);
  // 60 granules: every third unchanged (nothing to stage), every third changed in one 4 KiB sub-block only, ranges of one to three granules.
  const ranges: { start: number; length: number }[] = [];
  let written = 0;
  for (let i = 0; i < 60; i++) {
    const start = i * 256 * KiB + (i % 4) * 64 * KiB;
    const length = (1 + (i % 3)) * 64 * KiB;
    ranges.push({ start, length });
    if (i % 3 === 0) continue;
    const part = i % 3 === 1 ? 4 * KiB : length;
    scribble(a, start + (i % 3 === 1 ? 8 * KiB : 0), part, 0x50 + (i % 40));
    written += part;
  }
  // A batch holds two or three chunks: most chunks wait for a batch to be written before they are read.
  const report = await sync({ stateDir, source: a, target: b, mode: 'changed', changed: { ranges }, batchBytes: 256 * KiB, inFlight: 8 });
  assert.is(report.bytesWritten, written);
  assert.ok(readFileSync(a).equals(readFileSync(b)), 'the standby is the active drive');
  // The same sync over the previous backup, cut at its 20th chunk: recover puts back every old byte the batches journaled.
  // The backup is put back with the write stamp the last sync sealed, as if nothing had written it since.
  const sealed = join(dir, 'inplace-sealed-stamp');
  writeFileSync(sealed, '');
  execFileSync('touch', ['-r', b, sealed]);
  writeFileSync(b, backup);
  execFileSync('touch', ['-r', sealed, b]);
  let chunks = 0;
  const err = await sync({ stateDir, source: a, target: b, mode: 'changed', changed: { ranges }, batchBytes: 256 * KiB, inFlight: 8, onChunkDone: () => { if (++chunks === 20) throw new Error('power cut'); } }).catch((e: unknown) => e);
  assert.instance(err, Error);
  await recover({ stateDir, target: b });
  assert.ok(readFileSync(b).equals(backup), 'the previous backup, byte for byte');
});

test('an interrupted changed sync leaves the standby recoverable to the previous backup', async () => {
  const stateDir = join(dir, 'int-state');
  const a = randomImage(join(dir, 'int-a.img'), 16 * MiB, 22);
  const b = join(dir, 'int-b.img');
  copyFileSync(a, b);
  await clone({ stateDir, source: a, target: b, forceClone: true });
  const backup = readFileSync(b);
  const ranges = Array.from({ length: 16 }, (_, i) => ({ start: i * MiB, length: 64 * KiB }));
  for (const r of ranges) scribble(a, r.start, r.length, 0x44);
  let chunks = 0;
  const err = await sync({
    stateDir,
    source: a,
    target: b,
    mode: 'changed',
    changed: { ranges },
    batchBytes: 64 * KiB,
    onChunkDone: () => {
      if (++chunks === 6) throw new Error('power cut');
    },
  }).catch((e: unknown) => e);
  assert.instance(err, Error);
  assert.not.ok(readFileSync(b).equals(backup), 'part of the sync was written');
  await recover({ stateDir, target: b });
  assert.ok(readFileSync(b).equals(backup), 'the previous backup, byte for byte');
});

test('a power cut during a changed sync, with standby writes still in the cache (any of them may have reached the drive): recover gives the previous backup byte for byte, and the same sync run again completes', async () => {
  const base = join(dir, 'cut');
  const a = randomImage(join(dir, 'cut-a.img'), 16 * MiB, 24);
  // One standby, put back before each trial (same file: the pair knows it by its inode).
  const b = join(dir, 'cut-b.img');
  copyFileSync(a, b);
  const state0 = join(base, 'state0');
  await clone({ stateDir: state0, source: a, target: b, forceClone: true });
  const backup = readFileSync(b);
  // Each trial puts the backup back with the write stamp the clone sealed, as if nothing had written it since.
  const sealed = join(base, 'sealed-stamp');
  writeFileSync(sealed, '');
  execFileSync('touch', ['-r', b, sealed]);
  const putBackup = (content = backup) => {
    writeFileSync(b, content);
    execFileSync('touch', ['-r', sealed, b]);
  };
  // 40 scattered granules, one of them two granules long.
  const ranges = Array.from({ length: 40 }, (_, i) => ({ start: i * 6 * 64 * KiB, length: i === 7 ? 128 * KiB : 64 * KiB }));
  for (const [i, r] of ranges.entries()) scribble(a, r.start, r.length, 0x80 + i);
  const changed = { ranges };
  const outcomes = { mixed: 0, cutAtFlush: 0 };
  // The power cut takes the undo journal's appends that no datasync made durable: what each file held at its last one is kept by inode.
  const durable = new Map<number, number>();
  const probe = await open(a, 'r');
  const fileHandle = Object.getPrototypeOf(probe) as { datasync(): Promise<void>; sync(): Promise<void> };
  await probe.close();
  const { datasync, sync: fsync } = fileHandle;
  // What the file held before the sync began is what it made durable: bytes appended meanwhile may or may not be.
  const keep = (real: () => Promise<void>) =>
    async function (this: FileHandle) {
      const st = await this.stat();
      await real.call(this);
      durable.set(st.ino, Math.max(st.size, durable.get(st.ino) ?? 0));
    };
  fileHandle.datasync = keep(datasync);
  fileHandle.sync = keep(fsync);
  // What the journals held durably at the cut; put back once the cut sync has unwound (a dead process commits nothing more).
  const durableAt = (stateDir: string) =>
    readdirSync(join(stateDir, 'pairs'))
      .map((id) => join(stateDir, 'pairs', id, 'undo.journal'))
      .filter((j) => existsSync(j))
      .map((j) => ({ j, size: durable.get(statSync(j).ino) ?? 0 }));
  const loseUnsynced = (journals: { j: string; size: number }[]) => {
    for (const { j, size } of journals) truncateSync(j, size);
  };
  try {
    for (let trial = 0; trial < 9; trial++) {
      const stateDir = join(base, `state-${trial}`);
      cpSync(state0, stateDir, { recursive: true });
      putBackup();
      durable.clear();
      // The cut: at the final flush (every write still held) in some trials, at a random write in the others.
      const cutAtWrite = trial % 3 === 0 ? Infinity : 1 + ((trial * 7) % 36);
      // One chunk at a time in half the trials: batches then follow one another, and a batch's writes are the newest of the journal.
      const opts = { mode: 'changed' as const, changed, batchBytes: 512 * KiB, inFlight: trial % 2 ? 1 : undefined };
      let cache: VolatileCacheDevice | undefined;
      let held = 0;
      let journals: { j: string; size: number }[] = [];
      const openDevice = async (loc: DriveLocation, o: OpenDriveOptions) => {
        const dev = await openLocated(loc, o);
        if (!o.write) return dev;
        const c = new VolatileCacheDevice(dev);
        cache = c;
        let off = false;
        const cut = async () => {
          if (!off) {
            off = true;
            held = c.heldBytes;
            journals = durableAt(stateDir);
            await c.powerCut(1000 + trial);
          }
          throw new Error('power cut');
        };
        return new Proxy(c, {
          get(obj, prop, receiver) {
            if (prop === 'write') return async (buf: Uint8Array, position: number, length?: number) => (off || obj.writes >= cutAtWrite ? cut() : obj.write(buf, position, length));
            if (prop === 'flush') return async () => (off || cutAtWrite === Infinity ? cut() : obj.flush());
            const v = Reflect.get(obj, prop, receiver);
            return typeof v === 'function' ? v.bind(obj) : v;
          },
        });
      };
      const err = await sync({ stateDir, source: a, target: b, ...opts, openDevice }).catch((e: unknown) => e);
      loseUnsynced(journals);
      assert.instance(err, Error, `trial ${trial}: the sync was cut`);
      assert.ok(cache && held > 0, `trial ${trial}: writes were held in the cache at the cut (${(err as Error).message}, ${cache?.writes} writes, ${cache?.flushes} flushes)`);
      if (cutAtWrite === Infinity) outcomes.cutAtFlush++;
      const now = readFileSync(b);
      if (!now.equals(backup) && !now.equals(readFileSync(a))) outcomes.mixed++;
      await recover({ stateDir, target: b });
      assert.ok(readFileSync(b).equals(backup), `trial ${trial}: the previous backup, byte for byte`);
      // Cut again the same way and resumed this time: the resume ends with the standby equal to the source.
      rmSync(stateDir, { recursive: true, force: true });
      cpSync(state0, stateDir, { recursive: true });
      putBackup(readFileSync(b));
      durable.clear();
      await sync({ stateDir, source: a, target: b, ...opts, openDevice }).catch(() => undefined);
      loseUnsynced(journals);
      const resumed = await sync({ stateDir, source: a, target: b, ...opts });
      assert.is(resumed.result, 'done');
      assert.ok(readFileSync(b).equals(readFileSync(a)), `trial ${trial}: the resumed sync left the source's bytes`);
    }
  } finally {
    fileHandle.datasync = datasync;
    fileHandle.sync = fsync;
  }
  assert.ok(outcomes.mixed > 0, 'some cuts left the standby a mix of old and new blocks before the rollback');
  assert.ok(outcomes.cutAtFlush > 0);
});

test.run();
