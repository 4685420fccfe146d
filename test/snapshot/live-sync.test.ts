/**
 * A live changed-block sync end to end on a real qemu-storage-daemon, without
 * the controller: a host writes through the export all the time, the sync
 * waits for quiescence (or falls back), takes the snapshot with the epoch,
 * copies the dirty extents from the frozen picture through the NBD drive,
 * commits and tears down. The standby then holds exactly the drive at the
 * snapshot instant. Every other path (broken snapshot, failed copy, cancel,
 * daemon crash, controller crash) tears down, merges the bitmap back and
 * rolls the standby back.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageDaemon } from '../../src/export/index.ts';
import { ChangedBlockTracker, liveSync, cleanupLiveSync, SnapshotBrokenError, LiveSnapshot, CACHE_FILE, type Epoch, type LiveSyncOptions } from '../../src/snapshot/index.ts';
import { readFlaggedRanges, STATE_DIRTY, NbdDrive, openLocated, DeviceWrapper, SnapshotDrive, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { clone, sync, recover, type ChangedBlocks, type CopyReport } from '../../src/sync/index.ts';
import { CancelledError, DeviceError } from '../../src/errors.ts';
import { randomImage, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { rejection } from '../support/assert-async.ts';
import { HostWriter, probeSector } from './support/host-writer.ts';

const dir = tempDir('dpsr-live-sync-');
const MiB = 1024 * 1024;
const haveQsd = requireEnv('live syncs on qemu-storage-daemon', { tools: ['qemu-storage-daemon', 'qemu-img'] });
const changedOf = (e: Epoch): ChangedBlocks => (e.trusted && e.ranges ? { ranges: e.ranges } : { untrusted: e.reason ?? 'the dirty bitmap is not trusted' });
const QUICK = { quietMs: 200, maxWaitMs: 600, fallback: 'crash-consistent', pollMs: 50 } as const;

async function rig(name: string, sizeMiB = 32, persistent = false) {
  const runDir = join(dir, name);
  const stateDir = join(runDir, 'state');
  mkdirSync(stateDir, { recursive: true });
  const active = randomImage(join(runDir, 'active.img'), sizeMiB * MiB, 11);
  const standby = sparseImage(join(runDir, 'standby.img'), sizeMiB * MiB);
  const daemon = new StorageDaemon({ drive: active, runDir, listen: { unix: join(runDir, 'nbd.sock') }, exportName: 'sys', restartDelayMs: 50, ...(persistent ? { metadata: join(stateDir, 'bitmaps.qcow2') } : {}) });
  const tracker = () => new ChangedBlockTracker({ daemon, stateFile: join(stateDir, 'cbt.json'), readRanges: (uri, ctx) => readFlaggedRanges(uri, ctx, STATE_DIRTY), persistent });
  await daemon.start();
  const t = tracker();
  const first = await t.beginEpoch();
  // As the controller does in inline mode: the pair is the raw drives; the host writes through the export.
  await clone({ stateDir, source: active, target: standby });
  await t.commit(first);
  return { daemon, tracker: t, newTracker: tracker, stateDir, active, standby, initial: readFileSync(active) };
}

type Rig = Awaited<ReturnType<typeof rig>>;

type Open = (loc: DriveLocation, options: OpenDriveOptions) => Promise<BlockDevice>;

/** The engine's copy of the dirty extents, reading the active drive through its snapshot. */
function copyFrom(r: Rig, extra: { wrap?: (open: Open) => Open; batchBytes?: number; inFlight?: number; onNote?: (n: string) => void } = {}) {
  return (snapshotUri: string, epoch: Epoch, signal?: AbortSignal) =>
    sync({
      stateDir: r.stateDir,
      source: r.active,
      target: r.standby,
      mode: 'changed',
      changed: changedOf(epoch),
      signal,
      openDevice: (extra.wrap ?? ((o) => o))(SnapshotDrive.opener(r.active, snapshotUri, openLocated)),
      ...(extra.batchBytes ? { batchBytes: extra.batchBytes, inFlight: extra.inFlight ?? 1 } : {}),
      onNote: extra.onNote,
    });
}

function options(r: Rig, extra: Partial<LiveSyncOptions<CopyReport>> = {}): LiveSyncOptions<CopyReport> {
  return {
    daemon: r.daemon,
    tracker: r.tracker,
    cacheDir: r.stateDir,
    cache: { budgetBytes: 64 * MiB },
    quiescence: QUICK,
    probe: probeSector,
    copy: copyFrom(r),
    rollback: async () => {
      await recover({ stateDir: r.stateDir, target: r.standby });
    },
    ...extra,
  };
}

async function assertClean(r: Rig): Promise<void> {
  const nodes = await r.daemon.qmp.execute<{ 'node-name': string; 'dirty-bitmaps'?: { name?: string; recording: boolean }[] }[]>('query-named-block-nodes', { flat: true });
  assert.equal(nodes.map((n) => n['node-name']).filter((n) => n !== 'meta-file').sort(), ['active', 'drive-file', 'top'], 'no snapshot node or filter');
  assert.equal((await r.daemon.qmp.execute<{ id: string }[]>('query-block-exports')).map((e) => e.id), ['host'], 'only the host export');
  const bitmaps = nodes.flatMap((n) => n['dirty-bitmaps'] ?? []);
  assert.equal(bitmaps.filter((b) => !b.recording), [], 'no disabled bitmap');
  assert.is(bitmaps.length, 1, 'one live epoch bitmap');
  assert.not.ok(existsSync(join(r.stateDir, CACHE_FILE)), 'no cache file');
}

for (const persistent of [false, true]) {
  test(`a live changed sync while the host writes all the time: the standby is the drive at the snapshot instant, byte for byte; the next one catches up (${persistent ? 'qcow2 metadata with persistent bitmaps' : 'raw, bitmaps in memory'})`, async () => {
    if (!haveQsd) return;
    const r = await rig(persistent ? 'live-persistent' : 'live', 32, persistent);
    const writer = new HostWriter(r.daemon.hostUri, r.initial, 1).start();
    try {
      while (writer.completed < 50) await new Promise((res) => setTimeout(res, 5));
      const before = writer.completed;
      let after = 0;
      const result = await liveSync(
        options(r, {
          onNote: (n: string) => {
            if (n.startsWith('snapshot taken')) after = writer.started;
          },
        }),
      );
      await writer.stop();
      assert.equal(writer.failures, [], 'no host write failed');
      assert.is(result.outcome, 'done');
      if (result.outcome !== 'done') return;
      // A writer every millisecond never leaves 200 ms quiet, unless the machine stalls this process that long.
      if (result.consistency === 'crash-consistent') assert.match(result.notes[0]!, /still being written .* crash-consistent/);
      assert.is(result.report.mode, 'changed');
      assert.ok(result.cacheBytes > 0, 'host writes during the copy went through the cache');
      const m = writer.prefixOf(readFileSync(r.standby), before, after);
      assert.ok(m !== null, `the standby is the drive after writes 1..m, m in [${before}, ${after}]`);
      await assertClean(r);
      // The host is idle now: the next live sync finds the drive quiet and copies what came after the instant.
      const next = await liveSync(options(r));
      assert.is(next.outcome, 'done');
      if (next.outcome === 'done') assert.is(next.consistency, 'quiet');
      assert.ok(readFileSync(r.standby).equals(readFileSync(r.active)), 'the standby equals the active drive');
      await assertClean(r);
    } finally {
      await writer.stop();
      await r.daemon.stop();
    }
  });
}

test('a busy drive with fallback skip: nothing is copied, no epoch begins, nothing is left', async () => {
  if (!haveQsd) return;
  const r = await rig('skip');
  const writer = new HostWriter(r.daemon.hostUri, r.initial, 2).start();
  try {
    const backup = readFileSync(r.standby);
    let copied = false;
    // A window as long as the whole wait: only a writer silent for a full second could make it quiet.
    const result = await liveSync(options(r, { quiescence: { quietMs: 1000, maxWaitMs: 1000, fallback: 'skip', pollMs: 50 }, copy: async () => ((copied = true), ({} as CopyReport)) }));
    assert.is(result.outcome, 'skipped');
    if (result.outcome === 'skipped') assert.match(result.reason, /this run is skipped/);
    assert.not.ok(copied);
    assert.ok(readFileSync(r.standby).equals(backup));
    await assertClean(r);
  } finally {
    await writer.stop();
    await r.daemon.stop();
  }
});

/** Wraps a drive opener: the source's `at`-th read first runs `before`. */
function beforeRead(at: number, before: () => Promise<void>): (open: Open) => Open {
  let reads = 0;
  return (open) => async (loc, opts) => {
    const dev = await open(loc, opts);
    if (opts.write) return dev;
    return new (class extends DeviceWrapper {
      override async read(buf: Uint8Array, position: number, length?: number): Promise<void> {
        if (++reads === at) await before();
        return this.inner.read(buf, position, length);
      }
    })(dev);
  };
}

test('a cache budget too small for the host writes: the snapshot breaks, the host writes on, the standby rolls back, the bitmap is merged back, the next run catches up', async () => {
  if (!haveQsd) return;
  const r = await rig('broken', 64);
  try {
    // 8 MiB of scattered changes to copy, 1 MiB at a time.
    const host = await NbdDrive.open(r.daemon.hostUri, { write: true });
    for (let i = 0; i < 8; i++) await host.write(Buffer.alloc(MiB, 0x40 + i), i * 8 * MiB);
    await host.flush();
    const backup = readFileSync(r.standby);
    const failures: string[] = [];
    const overflow = async () => {
      // Mid-copy, the host rewrites 48 MiB: more old blocks than the 16 MiB cache holds.
      for (let p = 0; p < 48 * MiB; p += MiB) await host.write(Buffer.alloc(MiB, 0xee), p).catch((e: Error) => failures.push(e.message));
      await host.flush();
    };
    const err = await rejection(
      liveSync(
        options(r, {
          cache: { budgetBytes: 16 * MiB },
          copy: copyFrom(r, { batchBytes: MiB, wrap: beforeRead(4, overflow) }),
        }),
      ),
    );
    assert.instance(err, SnapshotBrokenError);
    assert.match((err as Error).message, /the snapshot broke: .*16 MiB cache budget.*the standby was rolled back to the previous backup/);
    assert.is((err as SnapshotBrokenError).rolledBack, true);
    assert.equal(failures, [], 'the host never saw a failed write');
    assert.ok(readFileSync(r.standby).equals(backup), 'the standby is the previous backup again');
    await assertClean(r);
    await host.close();
    // The frozen bitmap went back into the live one: the next run copies everything since the last backup.
    const next = await liveSync(options(r));
    assert.is(next.outcome, 'done');
    assert.ok(readFileSync(r.standby).equals(readFileSync(r.active)));
  } finally {
    await r.daemon.stop();
  }
});

test('a copy that fails for another reason: its error, the standby rolled back, torn down', async () => {
  if (!haveQsd) return;
  const r = await rig('fails');
  try {
    const host = await NbdDrive.open(r.daemon.hostUri, { write: true });
    await host.write(Buffer.alloc(MiB, 0x11), 3 * MiB);
    await host.close();
    const backup = readFileSync(r.standby);
    let rolledBack = false;
    const err = await rejection(liveSync(options(r, { copy: async () => Promise.reject(new DeviceError('the standby dropped off USB')), rollback: async () => void (rolledBack = true) })));
    assert.instance(err, DeviceError);
    assert.not.instance(err, SnapshotBrokenError);
    assert.match((err as Error).message, /dropped off USB/);
    assert.ok(rolledBack);
    assert.ok(readFileSync(r.standby).equals(backup));
    await assertClean(r);
    const epoch = await r.tracker.beginEpoch();
    assert.equal(epoch.ranges, [{ start: 3 * MiB, length: MiB }], 'the change is still to be copied');
  } finally {
    await r.daemon.stop();
  }
});

test('a cancelled sync: CancelledError, rolled back, torn down, the change still to be copied', async () => {
  if (!haveQsd) return;
  const r = await rig('cancel');
  try {
    const host = await NbdDrive.open(r.daemon.hostUri, { write: true });
    for (let i = 0; i < 16; i++) await host.write(Buffer.alloc(64 * 1024, i + 1), i * MiB);
    await host.close();
    const backup = readFileSync(r.standby);
    const ac = new AbortController();
    const err = await rejection(
      liveSync(
        options(r, {
          signal: ac.signal,
          copy: copyFrom(r, { batchBytes: 64 * 1024, wrap: beforeRead(3, async () => ac.abort()) }),
        }),
      ),
    );
    assert.instance(err, CancelledError);
    assert.ok(readFileSync(r.standby).equals(backup), 'rolled back');
    await assertClean(r);
    const epoch = await r.tracker.beginEpoch();
    assert.is(epoch.ranges?.length, 16);
  } finally {
    await r.daemon.stop();
  }
});

test('qemu-storage-daemon crashing mid-copy: a device error, rolled back, the cache file removed; the next sync is a full one and says why', async () => {
  if (!haveQsd) return;
  const r = await rig('daemon-crash');
  try {
    const host = await NbdDrive.open(r.daemon.hostUri, { write: true });
    for (let i = 0; i < 16; i++) await host.write(Buffer.alloc(64 * 1024, i + 1), i * MiB);
    await host.close();
    const backup = readFileSync(r.standby);
    const restarted = new Promise((res) => r.daemon.once('ready', res));
    const err = await rejection(
      liveSync(
        options(r, {
          copy: copyFrom(r, { batchBytes: 64 * 1024, wrap: beforeRead(4, async () => r.daemon.kill()) }),
        }),
      ),
    );
    assert.instance(err, SnapshotBrokenError);
    assert.match((err as Error).message, /restarted during the snapshot/);
    await restarted;
    assert.ok(readFileSync(r.standby).equals(backup), 'rolled back');
    await r.tracker.reconcile();
    await assertClean(r);
    const notes: string[] = [];
    const next = await liveSync(options(r, { copy: copyFrom(r, { onNote: (n) => notes.push(n) }) }));
    assert.is(next.outcome, 'done');
    assert.match(notes.join('\n'), /changed-block mode not possible \(qemu-storage-daemon restarted/);
    assert.ok(readFileSync(r.standby).equals(readFileSync(r.active)));
  } finally {
    await r.daemon.stop();
  }
});

test('dpsr crashing mid-copy (the daemon runs on): after the restart, cleanup and the tracker remove the snapshot and merge the frozen bitmap back', async () => {
  if (!haveQsd) return;
  const r = await rig('dpsr-crash');
  try {
    const host = await NbdDrive.open(r.daemon.hostUri, { write: true });
    await host.write(Buffer.alloc(MiB, 0x22), 5 * MiB);
    await host.close();
    // What a crashed controller leaves: the snapshot built and exported, the epoch switched, no teardown.
    const snap = await LiveSnapshot.prepare({ daemon: r.daemon, cacheDir: r.stateDir, probe: probeSector, budgetBytes: 32 * MiB });
    await r.tracker.beginEpoch({ freeze: () => snap.freeze() });
    await snap.export();
    // The restarted controller: a new tracker over the same state file, then the clean-up it runs at start.
    await cleanupLiveSync(r.daemon, r.stateDir);
    const t = r.newTracker();
    await t.reconcile();
    await assertClean(r);
    const epoch = await t.beginEpoch();
    assert.is(epoch.trusted, true, 'the baseline survived: the frozen bitmap went back into the live one');
    assert.equal(epoch.ranges, [{ start: 5 * MiB, length: MiB }]);
  } finally {
    await r.daemon.stop();
  }
});

test.run();
