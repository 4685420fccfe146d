/**
 * End to end, in-process, without the controller: qemu-storage-daemon serves
 * an image; qemu-io writes through the host export; a bitmap epoch freezes
 * the changes; a changed-mode sync reads the active drive over NBD and copies
 * just those blocks onto a standby image; the two images are equal (cmp).
 * After a daemon restart the bitmap is gone and the sync falls back to
 * manifest mode, saying why.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageDaemon } from '../../src/export/index.ts';
import { ChangedBlockTracker, type Epoch } from '../../src/snapshot/index.ts';
import { readFlaggedRanges, STATE_DIRTY } from '../../src/sata-bridge/index.ts';
import { clone, sync, recover, type ChangedBlocks } from '../../src/sync/index.ts';
import { DeviceError } from '../../src/errors.ts';
import { randomImage, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir('dpsr-changed-sync-');
const MiB = 1024 * 1024;

const changedOf = (e: Epoch): ChangedBlocks => (e.trusted && e.ranges ? { ranges: e.ranges } : { untrusted: e.reason ?? 'the dirty bitmap is not trusted' });

function cmpEqual(a: string, b: string): boolean {
  try {
    execFileSync('cmp', ['-s', a, b]);
    return true;
  } catch {
    return false;
  }
}

test('writes through the export, an epoch, a changed-mode copy onto the standby: cmp equal', async () => {
  if (!requireEnv('the inline data path end to end', { tools: ['qemu-storage-daemon', 'qemu-io', 'cmp'] })) return;
  const runDir = join(dir, 'run');
  mkdirSync(runDir, { recursive: true });
  const active = randomImage(join(runDir, 'active.img'), 64 * MiB, 9);
  const standby = sparseImage(join(runDir, 'standby.img'), 64 * MiB);
  const stateDir = join(dir, 'state');
  const daemon = new StorageDaemon({ drive: active, runDir, listen: { unix: join(runDir, 'nbd.sock') }, exportName: 'sys', restartDelayMs: 50 });
  const tracker = new ChangedBlockTracker({ daemon, stateFile: join(runDir, 'cbt.json'), readRanges: (uri, ctx) => readFlaggedRanges(uri, ctx, STATE_DIRTY) });
  await daemon.start();
  try {
    const source = daemon.hostUri;
    // The first copy: no baseline yet, so it is a full clone; the epoch it starts is the next sync's baseline.
    const first = await tracker.beginEpoch();
    assert.is(first.trusted, false);
    await clone({ stateDir, source, target: standby });
    await tracker.commit(first);
    assert.ok(cmpEqual(active, standby), 'the clone is equal');

    // The host writes through the export: scattered 4 KiB writes and one 1 MiB run.
    const io = ['-c', 'write -P 0x5a 4096 4096', '-c', 'write -P 0x6b 17M 4096', '-c', 'write -P 0x7c 40M 1M', '-c', 'write -P 0x8d 63M 512', '-c', 'flush'];
    execFileSync('qemu-io', ['-f', 'raw', ...io, source], { stdio: 'ignore' });
    assert.not.ok(cmpEqual(active, standby));

    const epoch = await tracker.beginEpoch();
    assert.is(epoch.trusted, true);
    assert.equal(epoch.ranges, [
      { start: 0, length: 64 * 1024 },
      { start: 17 * MiB, length: 64 * 1024 },
      { start: 40 * MiB, length: MiB },
      { start: 63 * MiB, length: 64 * 1024 },
    ]);
    const report = await sync({ stateDir, source, target: standby, mode: 'changed', changed: changedOf(epoch) });
    await tracker.commit(epoch);
    assert.is(report.mode, 'changed');
    assert.is(report.bytesTotal, MiB + 3 * 64 * 1024, 'only the dirty granules were read');
    assert.ok(cmpEqual(active, standby), 'cmp: the standby equals the active drive');

    // The daemon restarts: its in-memory bitmap is gone, the sync says so and copies in manifest mode.
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x9e 5M 4096', source], { stdio: 'ignore' });
    const back = new Promise((r) => daemon.once('ready', r));
    daemon.kill();
    await back;
    const lost = await tracker.beginEpoch();
    const notes: string[] = [];
    const full = await sync({ stateDir, source: daemon.hostUri, target: standby, mode: 'changed', changed: changedOf(lost), onNote: (n) => notes.push(n) });
    await tracker.commit(lost);
    assert.is(full.mode, 'manifest');
    assert.match(notes.join('\n'), /changed-block mode not possible \(qemu-storage-daemon restarted since the last sync/);
    assert.ok(cmpEqual(active, standby), 'cmp after the full sync');
  } finally {
    await daemon.stop();
  }
});

test('qemu-storage-daemon crashing mid-sync: a clear device error, the frozen bitmap merged back, the standby recoverable; the restarted export serves the next sync', async () => {
  if (!requireEnv('the inline data path end to end', { tools: ['qemu-storage-daemon', 'qemu-io', 'cmp'] })) return;
  const runDir = join(dir, 'crash');
  mkdirSync(runDir, { recursive: true });
  const active = randomImage(join(runDir, 'active.img'), 32 * MiB, 10);
  const standby = sparseImage(join(runDir, 'standby.img'), 32 * MiB);
  const stateDir = join(dir, 'crash-state');
  const daemon = new StorageDaemon({ drive: active, runDir, listen: { unix: join(runDir, 'nbd.sock') }, exportName: 'sys', restartDelayMs: 50, metadata: join(runDir, 'bitmaps.qcow2') });
  const tracker = new ChangedBlockTracker({ daemon, stateFile: join(runDir, 'cbt.json'), readRanges: (uri, ctx) => readFlaggedRanges(uri, ctx, STATE_DIRTY), persistent: true });
  await daemon.start();
  try {
    const first = await tracker.beginEpoch();
    await clone({ stateDir, source: daemon.hostUri, target: standby });
    await tracker.commit(first);
    const backup = readFileSync(standby);
    const io = Array.from({ length: 24 }, (_, i) => ['-c', `write -P ${i + 1} ${i}M 64k`]).flat();
    execFileSync('qemu-io', ['-f', 'raw', ...io, daemon.hostUri], { stdio: 'ignore' });
    const epoch = await tracker.beginEpoch();
    assert.is(epoch.ranges?.length, 24);
    let chunks = 0;
    const restarted = new Promise((r) => daemon.once('ready', r));
    const err = await sync({
      stateDir,
      source: daemon.hostUri,
      target: standby,
      mode: 'changed',
      changed: changedOf(epoch),
      batchBytes: 64 * 1024,
      inFlight: 1,
      onChunkDone: () => {
        if (++chunks === 8) daemon.kill();
      },
    }).catch((e: unknown) => e);
    assert.instance(err, DeviceError);
    assert.match((err as Error).message, /NBD server .* (closed|failed)/);
    assert.match((err as DeviceError).hint ?? '', /dpsr recover/);
    await restarted;
    // The crash lost the bitmaps (they reach the metadata file only at a clean stop): the next sync is a full one.
    await recover({ stateDir, target: standby });
    assert.ok(readFileSync(standby).equals(backup), 'rolled back to the previous backup');
    const next = await tracker.beginEpoch();
    assert.is(next.trusted, false);
    const notes: string[] = [];
    const report = await sync({ stateDir, source: daemon.hostUri, target: standby, mode: 'changed', changed: changedOf(next), onNote: (n) => notes.push(n) });
    await tracker.commit(next);
    // After a rollback the manifest no longer vouches for the standby either: both drives are compared.
    assert.is(report.mode, 'compare');
    assert.match(notes.join('\n'), /changed-block mode not possible \(qemu-storage-daemon stopped without saving its dirty bitmap/);
    assert.ok(cmpEqual(active, standby));
  } finally {
    await daemon.stop();
  }
});

test.run();
