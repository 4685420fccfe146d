/**
 * Changed-block tracking on a real qemu-storage-daemon: epochs switched in
 * one transaction, dirty ranges read over NBD, commit and merge-back, trust
 * lost with a restart of an in-memory bitmap and kept across a clean restart
 * with the qcow2 metadata file, and no write missed by an epoch switch while
 * a writer runs.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { StorageDaemon, type StorageDaemonOptions } from '../../src/export/index.ts';
import { ChangedBlockTracker, DIRTY_GRANULARITY, type DirtyRange } from '../../src/snapshot/index.ts';
import { NbdDrive, readFlaggedRanges, STATE_DIRTY } from '../../src/sata-bridge/index.ts';
import { randomImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir('dpsr-snapshot-');
const MiB = 1024 * 1024;
const KiB = 1024;
const haveQsd = requireEnv('changed-block tracking on qemu-storage-daemon', { tools: ['qemu-storage-daemon', 'qemu-img'] });
const readRanges = (uri: string, context: string) => readFlaggedRanges(uri, context, STATE_DIRTY);

function setup(name: string, extra: Partial<StorageDaemonOptions> = {}) {
  const runDir = join(dir, name);
  mkdirSync(runDir, { recursive: true });
  const drive = randomImage(join(runDir, 'drive.img'), 64 * MiB, 3);
  const daemon = new StorageDaemon({ drive, runDir, listen: { unix: join(runDir, 'nbd.sock') }, restartDelayMs: 50, ...extra });
  const tracker = () => new ChangedBlockTracker({ daemon, stateFile: join(runDir, 'cbt.json'), readRanges, persistent: !!extra.metadata });
  return { daemon, tracker, runDir };
}

async function hostWrites(daemon: StorageDaemon, positions: number[], length = 4 * KiB): Promise<void> {
  const host = await NbdDrive.open(daemon.hostUri, { write: true });
  for (const p of positions) await host.write(Buffer.alloc(length, p & 0xff), p);
  await host.flush();
  await host.close();
}

/** The 64 KiB granules a set of writes touches, as merged ranges. */
function granules(positions: number[], length = 4 * KiB, g = 64 * KiB): DirtyRange[] {
  const set = new Set<number>();
  for (const p of positions) for (let x = Math.floor(p / g); x <= Math.floor((p + length - 1) / g); x++) set.add(x);
  const out: { start: number; length: number }[] = [];
  for (const x of [...set].sort((a, b) => a - b)) {
    const last = out[out.length - 1];
    if (last && last.start + last.length === x * g) last.length += g;
    else out.push({ start: x * g, length: g });
  }
  return out;
}

test('the first epoch is not trusted and says why; after it commits, the next epoch gives exactly the written granules', async () => {
  if (!haveQsd) return;
  const { daemon, tracker } = setup('epochs');
  await daemon.start();
  try {
    const t = tracker();
    const first = await t.beginEpoch();
    assert.is(first.trusted, false);
    assert.is(first.ranges, null);
    assert.match(first.reason ?? '', /has not run a full sync yet/);
    await t.commit(first);
    const writes = [0, 5 * MiB + 100 * KiB, 5 * MiB + 104 * KiB, 40 * MiB - 4 * KiB];
    await hostWrites(daemon, writes);
    assert.is(await t.dirtyBytes(), 3 * 64 * KiB);
    const second = await t.beginEpoch();
    assert.is(second.trusted, true);
    assert.equal(second.ranges, granules(writes));
    assert.is(second.dirtyBytes, 3 * 64 * KiB);
    await t.commit(second);
    // The live bitmap started at the freeze: nothing is dirty yet, and no export or frozen bitmap is left.
    assert.is(await t.dirtyBytes(), 0);
    assert.equal((await t.bitmaps()).map((b) => [b.recording, b.granularity]), [[true, DIRTY_GRANULARITY]]);
    assert.equal(await daemon.qmp.execute<{ id: string }[]>('query-block-exports').then((l) => l.map((e) => e.id)), ['host']);
  } finally {
    await daemon.stop();
  }
});

test('a failed sync merges its frozen bitmap back: the next epoch holds both sets of writes', async () => {
  if (!haveQsd) return;
  const { daemon, tracker } = setup('abort');
  await daemon.start();
  try {
    const t = tracker();
    await t.commit(await t.beginEpoch());
    const a = [1 * MiB, 9 * MiB];
    await hostWrites(daemon, a);
    const failed = await t.beginEpoch();
    assert.equal(failed.ranges, granules(a));
    const b = [20 * MiB];
    await hostWrites(daemon, b); // written while the failing sync ran
    await t.abort(failed);
    const retry = await t.beginEpoch();
    assert.is(retry.trusted, true);
    assert.equal(retry.ranges, granules([...a, ...b]));
    await t.commit(retry);
  } finally {
    await daemon.stop();
  }
});

test('a dpsr restart (new tracker, same daemon) keeps trust; a daemon restart loses the in-memory bitmap and says so', async () => {
  if (!haveQsd) return;
  const { daemon, tracker } = setup('restart-raw');
  await daemon.start();
  try {
    await tracker().commit(await tracker().beginEpoch());
    await hostWrites(daemon, [2 * MiB]);
    const again = await tracker().beginEpoch();
    assert.is(again.trusted, true, 'the state file carries the baseline across a controller restart');
    await tracker().commit(again);
    await hostWrites(daemon, [3 * MiB]);
    const back = new Promise((r) => daemon.once('ready', r));
    daemon.kill();
    await back;
    const after = await tracker().beginEpoch();
    assert.is(after.trusted, false);
    assert.match(after.reason ?? '', /restarted since the last sync.*in memory only/);
  } finally {
    await daemon.stop();
  }
});

test('with the qcow2 metadata file the bitmap survives a clean restart; a crash makes it inconsistent and it is dropped', async () => {
  if (!haveQsd) return;
  const runDir = join(dir, 'restart-qcow2');
  const { daemon: d2 } = setup('restart-qcow2', { metadata: join(runDir, 'bitmaps.qcow2') });
  const t = () => new ChangedBlockTracker({ daemon: d2, stateFile: join(runDir, 'cbt.json'), readRanges, persistent: true });
  await d2.start();
  try {
    await t().commit(await t().beginEpoch());
    const writes = [4 * MiB, 30 * MiB];
    await hostWrites(d2, writes);
    await d2.stop();
    await d2.start();
    const kept = await t().beginEpoch();
    assert.is(kept.trusted, true, 'a clean stop saved the bitmap in the metadata file');
    assert.equal(kept.ranges, granules(writes));
    await t().commit(kept);
    await hostWrites(d2, [8 * MiB]);
    const back = new Promise((r) => d2.once('ready', r));
    d2.kill();
    await back;
    const lost = await t().beginEpoch();
    assert.is(lost.trusted, false);
    assert.match(lost.reason ?? '', /without saving its dirty bitmap/, lost.reason);
    assert.not.ok((await t().bitmaps()).some((b) => b.inconsistent), 'the inconsistent bitmap is gone');
  } finally {
    await d2.stop();
  }
});

test('no write is missed: a writer runs while epochs switch; every written granule is in some epoch', async () => {
  if (!haveQsd) return;
  const { daemon, tracker } = setup('no-miss');
  await daemon.start();
  try {
    const t = tracker();
    await t.commit(await t.beginEpoch());
    const written: number[] = [];
    let stop = false;
    const writer = (async () => {
      const host = await NbdDrive.open(daemon.hostUri, { write: true });
      let x = 12345;
      while (!stop) {
        x = (x * 1103515245 + 12345) >>> 0;
        const pos = (x % (64 * MiB / (4 * KiB))) * 4 * KiB;
        await host.write(Buffer.alloc(4 * KiB, 1), pos);
        written.push(pos);
      }
      await host.close();
    })();
    const seen: DirtyRange[] = [];
    // At least six epochs, and as many more as a slow machine needs for the writer to have written plenty across them.
    for (let i = 0; i < 6 || (written.length <= 50 && i < 2000); i++) {
      await new Promise((r) => setTimeout(r, 30));
      const e = await t.beginEpoch();
      seen.push(...(e.ranges ?? []));
      await t.commit(e);
    }
    stop = true;
    await writer;
    const last = await t.beginEpoch();
    seen.push(...(last.ranges ?? []));
    assert.ok(written.length > 50, `the writer wrote (${written.length})`);
    const covered = (p: number) => seen.some((r) => p >= r.start && p + 4 * KiB <= r.start + r.length);
    const missed = written.filter((p) => !covered(p));
    assert.equal(missed, [], 'every write is in an epoch');
  } finally {
    await daemon.stop();
  }
});

test.run();
