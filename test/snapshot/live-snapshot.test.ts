/**
 * The copy-before-write snapshot on a real qemu-storage-daemon, while a
 * host writes through the export all the time: the snapshot export reads
 * exactly the drive at the snapshot instant (byte for byte against the
 * content rebuilt from the writes before it); the host's writes never fail,
 * also when the cache budget is exceeded or the cache is too slow (the
 * snapshot breaks instead, and check() says so); teardown leaves nothing.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageDaemon, ACTIVE_NODE, TOP_NODE } from '../../src/export/index.ts';
import { LiveSnapshot, ChangedBlockTracker, CACHE_FILE, cacheBudget, checkSnapshotCacheConfig } from '../../src/snapshot/index.ts';
import { readFlaggedRanges, STATE_DIRTY, NbdDrive } from '../../src/sata-bridge/index.ts';
import { BadInputError } from '../../src/errors.ts';
import { randomImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { HostWriter, readExport, probeSector } from './support/host-writer.ts';

const dir = tempDir('dpsr-live-snapshot-');
const MiB = 1024 * 1024;
const haveQsd = requireEnv('copy-before-write snapshots on qemu-storage-daemon', { tools: ['qemu-storage-daemon', 'qemu-img'] });

function setup(name: string, sizeMiB = 32) {
  const runDir = join(dir, name);
  const cacheDir = join(runDir, 'state');
  mkdirSync(cacheDir, { recursive: true });
  const drive = randomImage(join(runDir, 'drive.img'), sizeMiB * MiB, 7);
  const daemon = new StorageDaemon({ drive, runDir, listen: { unix: join(runDir, 'nbd.sock') }, restartDelayMs: 50 });
  return { daemon, drive, cacheDir, runDir, initial: readFileSync(drive) };
}

/** The daemon holds only the graph it was started with: no filter, node, export or bitmap of a snapshot. */
async function assertClean(daemon: StorageDaemon, cacheDir: string): Promise<void> {
  const nodes = await daemon.qmp.execute<{ 'node-name': string; 'dirty-bitmaps'?: { name: string; recording: boolean }[] }[]>('query-named-block-nodes', { flat: true });
  assert.equal(nodes.map((n) => n['node-name']).sort(), ['active', 'drive-file', 'top']);
  const exports = await daemon.qmp.execute<{ id: string }[]>('query-block-exports');
  assert.equal(exports.map((e) => e.id), ['host']);
  const disabled = nodes.flatMap((n) => (n['dirty-bitmaps'] ?? []).filter((b) => !b.recording).map((b) => b.name));
  assert.equal(disabled, [], 'no disabled bitmap');
  assert.not.ok(existsSync(join(cacheDir, CACHE_FILE)), 'no cache file');
}

test('cache settings are checked; the default budget is a quarter of the free space, in whole MiB', () => {
  for (const [c, msg] of [
    [{ budgetBytes: 1000 }, /budget 1000 is not a byte count of at least/],
    [{ budgetFraction: 1 }, /budgetFraction 1 is not between 0 and 0.9/],
    [{ cbwTimeoutS: 0 }, /cbwTimeoutS 0 is not a whole number of seconds/],
    [{ cbwTimeoutS: 1.5 }, /cbwTimeoutS 1.5/],
  ] as const) {
    try {
      checkSnapshotCacheConfig(c);
      assert.unreachable();
    } catch (e) {
      assert.instance(e, BadInputError);
      assert.match((e as Error).message, msg);
    }
  }
  const b = cacheBudget(dir, {});
  assert.ok(b > 0 && b % MiB === 0);
  assert.is(cacheBudget(dir, { budgetBytes: 64 * MiB }), 64 * MiB);
});

test('while the host writes all the time, the snapshot export reads exactly the drive at the snapshot instant; the epochs agree with it', async () => {
  if (!haveQsd) return;
  const { daemon, cacheDir, runDir, drive, initial } = setup('consistent');
  await daemon.start();
  const tracker = new ChangedBlockTracker({ daemon, stateFile: join(runDir, 'cbt.json'), readRanges: (uri, ctx) => readFlaggedRanges(uri, ctx, STATE_DIRTY) });
  await tracker.commit(await tracker.beginEpoch()); // a baseline: the next epoch is trusted
  const writer = new HostWriter(daemon.hostUri, initial).start();
  try {
    while (writer.completed < 200) await new Promise((r) => setTimeout(r, 5));
    const snap = await LiveSnapshot.prepare({ daemon, cacheDir, probe: probeSector, budgetBytes: 64 * MiB });
    let before = 0;
    let after = 0;
    const epoch = await tracker.beginEpoch({
      freeze: async () => {
        before = writer.completed;
        await snap.freeze();
        after = writer.started;
      },
    });
    assert.is(epoch.trusted, true);
    const uri = await snap.export();
    // Let the host overwrite well past the instant (every write now copies an old block first), then read the picture while it still writes.
    const target = writer.completed + 2000;
    while (writer.completed < target) await new Promise((r) => setTimeout(r, 5));
    const picture = await readExport(uri);
    assert.is(await snap.check(), null, 'the snapshot is intact');
    const cached = snap.cacheBytes();
    await writer.stop();
    assert.equal(writer.failures, [], 'no host write failed');
    const m = writer.prefixOf(picture, before, after);
    assert.ok(m !== null, `the picture is the drive after writes 1..m for an m in [${before}, ${after}]`);
    assert.ok(cached > 0, 'the overwritten blocks were saved in the cache');
    // The frozen bitmap holds every block written since the baseline, up to the instant: copying only
    // those from the picture onto the drive's content at the baseline gives the picture.
    const rebuilt = Buffer.from(initial);
    for (const r of epoch.ranges!) picture.copy(rebuilt, r.start, r.start, r.start + r.length);
    assert.ok(rebuilt.equals(picture), 'the frozen ranges cover every write of the picture');
    await snap.close();
    await tracker.commit(epoch);
    await assertClean(daemon, cacheDir);
    assert.ok(readFileSync(drive).equals(writer.contentAfter(writer.completed)), 'the drive holds every host write');
    // The live epoch covers every write after the instant: its ranges applied onto the picture give the drive.
    const next = await tracker.beginEpoch();
    const now = readFileSync(drive);
    for (const r of next.ranges!) now.copy(picture, r.start, r.start, r.start + r.length);
    assert.ok(picture.equals(now), 'the next epoch holds every write after the instant');
  } finally {
    await writer.stop();
    await daemon.stop();
  }
});

test('a cache budget too small for the writes breaks the snapshot; every host write succeeds and lands', async () => {
  if (!haveQsd) return;
  const { daemon, cacheDir, drive } = setup('budget', 64);
  await daemon.start();
  try {
    const snap = await LiveSnapshot.prepare({ daemon, cacheDir, probe: probeSector, budgetBytes: 16 * MiB });
    await snap.freeze();
    const uri = await snap.export();
    const host = await NbdDrive.open(daemon.hostUri, { write: true });
    const failures: string[] = [];
    const chunk = Buffer.alloc(MiB, 0xa5);
    for (let p = 0; p < 48 * MiB; p += MiB) await host.write(chunk, p).catch((e: Error) => failures.push(e.message));
    await host.flush();
    await host.close();
    assert.equal(failures, [], 'the host never saw a failed write');
    const why = await snap.check();
    assert.match(why ?? '', /the snapshot broke: .*16 MiB cache budget was reached.*the host's write went on/);
    const err = await probeSector(uri).catch((e: Error) => e);
    assert.instance(err, Error, 'reading the broken snapshot fails');
    assert.ok(snap.cacheBytes() <= 16 * MiB, `the cache stayed within its budget (${snap.cacheBytes()} bytes)`);
    await snap.close();
    await assertClean(daemon, cacheDir);
    const d = readFileSync(drive);
    for (let p = 0; p < 48 * MiB; p += MiB) assert.ok(d.subarray(p, p + MiB).equals(chunk), `the write at ${p} landed`);
  } finally {
    await daemon.stop();
  }
});

test('a cache slower than cbw-timeout breaks the snapshot instead of stalling the host', async () => {
  if (!haveQsd) return;
  const { daemon, cacheDir, drive } = setup('slow');
  await daemon.start();
  try {
    const snap = await LiveSnapshot.prepare({ daemon, cacheDir, probe: probeSector, budgetBytes: 64 * MiB, cbwTimeoutS: 1 });
    // Make the cache slow: a throttle (16 KiB/s) between the cache's size limit and its file.
    const qmp = daemon.qmp;
    await qmp.execute('object-add', { 'qom-type': 'throttle-group', id: 'slow-cache', limits: { 'bps-write': 16 * 1024 } });
    await qmp.execute('blockdev-add', { 'node-name': 'slow', driver: 'throttle', 'throttle-group': 'slow-cache', file: 'dpsr-cache-file' });
    await qmp.execute('blockdev-reopen', { options: [{ 'node-name': 'dpsr-cache-limit', driver: 'raw', file: 'slow', size: snap.budgetBytes }] });
    await snap.freeze();
    await snap.export();
    const host = await NbdDrive.open(daemon.hostUri, { write: true });
    const failures: string[] = [];
    for (let i = 0; i < 8; i++) await host.write(Buffer.alloc(64 * 1024, i + 1), i * MiB).catch((e: Error) => failures.push(e.message));
    await host.close();
    assert.equal(failures, []);
    assert.match((await snap.check()) ?? '', /slower than 1 s/);
    await qmp.execute('blockdev-reopen', { options: [{ 'node-name': 'dpsr-cache-limit', driver: 'raw', file: 'dpsr-cache-file', size: snap.budgetBytes }] });
    await qmp.execute('blockdev-del', { 'node-name': 'slow' });
    await qmp.execute('object-del', { id: 'slow-cache' });
    await snap.close();
    await assertClean(daemon, cacheDir);
    const d = readFileSync(drive);
    for (let i = 0; i < 8; i++) assert.ok(d.subarray(i * MiB, i * MiB + 65536).equals(Buffer.alloc(65536, i + 1)));
  } finally {
    await daemon.stop();
  }
});

test('teardown after dpsr lost track (a controller crash): cleanup removes the export, the filter, the nodes and the cache file', async () => {
  if (!haveQsd) return;
  const { daemon, cacheDir } = setup('leftovers');
  await daemon.start();
  try {
    const snap = await LiveSnapshot.prepare({ daemon, cacheDir, probe: probeSector, budgetBytes: 32 * MiB });
    await snap.freeze();
    await snap.export();
    // The object is forgotten, as after a controller restart: only the daemon and the directory remain.
    await LiveSnapshot.cleanup(daemon, cacheDir);
    await assertClean(daemon, cacheDir);
    await LiveSnapshot.cleanup(daemon, cacheDir); // nothing left to remove: a no-op
    // The host export still writes straight to the active node.
    const nodes = await daemon.qmp.execute<{ 'node-name': string; file?: string }[]>('query-named-block-nodes', { flat: true });
    assert.ok(nodes.some((n) => n['node-name'] === TOP_NODE) && nodes.some((n) => n['node-name'] === ACTIVE_NODE));
  } finally {
    await daemon.stop();
  }
});

test('teardown after a daemon crash: the restarted daemon has no filter, and cleanup removes the cache file', async () => {
  if (!haveQsd) return;
  const { daemon, cacheDir } = setup('crash');
  await daemon.start();
  try {
    const snap = await LiveSnapshot.prepare({ daemon, cacheDir, probe: probeSector, budgetBytes: 32 * MiB });
    await snap.freeze();
    await snap.export();
    const back = new Promise((r) => daemon.once('ready', r));
    daemon.kill();
    await back;
    assert.match((await snap.check()) ?? '', /restarted during the snapshot/);
    assert.ok(existsSync(join(cacheDir, CACHE_FILE)));
    await snap.close();
    await assertClean(daemon, cacheDir);
  } finally {
    await daemon.stop();
  }
});

test('prepare refuses a budget below 16 MiB and leaves nothing behind', async () => {
  if (!haveQsd) return;
  const { daemon, cacheDir } = setup('refuse');
  await daemon.start();
  try {
    const e = await LiveSnapshot.prepare({ daemon, cacheDir, probe: probeSector, budgetBytes: 8 * MiB }).catch((x: Error) => x);
    assert.instance(e, BadInputError);
    await assertClean(daemon, cacheDir);
  } finally {
    await daemon.stop();
  }
});

test.run();
