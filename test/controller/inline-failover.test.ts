/**
 * Inline mode's failover and faults, with the real qemu-storage-daemon: the
 * export is re-pointed to the standby's drive while the host is off (same
 * address, same export name), roles swap, the host's writes land on the new
 * active drive, re-protect copies back through the same engine;
 * qemu-storage-daemon crashing under a sync is restarted at the same address
 * and the next sync copies the whole drive, saying why.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeDaemon, openEvents, spawnDaemon, waitJob, waitFor, idle, sha, type TestDaemon } from './support/harness.ts';
import { NbdDrive } from '../../src/sata-bridge/index.ts';
import { requireEnv } from '../support/require.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;
const tools = { tools: ['qemu-storage-daemon', 'qemu-img'] };

async function runJob(d: TestDaemon, path: string, body: Record<string, unknown>) {
  const r = await d.api('POST', path, body);
  assert.is(r.status, 202, JSON.stringify(r.body));
  const job = await waitJob(d, r.body.id, 60_000);
  assert.is(job.state, 'done', JSON.stringify(job.error));
  return job;
}

test('failover in inline mode: the export is re-pointed to the standby with the same address, roles swap, the host writes to the new active drive, re-protect copies back', async () => {
  if (!requireEnv('inline mode failover', tools)) return;
  const d = await makeDaemon({ mode: 'inline' });
  try {
    await idle(d);
    await waitFor(async () => (await status(d)).host.lastHeartbeat?.bay === 'A', 10_000, 'host running on A');
    await d.api('POST', '/api/sim/host/write', { mib: 2 });
    await runJob(d, '/api/sync', { mode: 'changed' });
    const before = await status(d);
    const uri = before.inline.hostUri;
    const es = openEvents(d.url, d.token);
    await es.ready;
    const fo = await d.api('POST', '/api/failover', { confirm: 'failover' });
    assert.is(fo.status, 202, JSON.stringify(fo.body));
    const step = await es.wait((e) => e.event === 'switch.step' && e.data.data.step === 'drive connected', 20_000);
    assert.is(step.data.data.to, 'B');
    await es.wait((e) => e.event === 'boot' && e.data.data.bay === 'B' && e.data.data.status === 'confirmed', 20_000);
    es.close();
    let s = await status(d);
    assert.is(s.active, 'B');
    assert.is(s.inline.bay, 'B', 'the export serves the new active drive');
    assert.is(s.inline.hostUri, uri, 'at the same address and name');
    assert.is(s.inline.running, true);
    // The host's disk let go of A's export and was attached to B's before the host came on (it booted B through it).
    assert.equal({ attached: s.inline.hostDisk.attached, connected: s.inline.hostDisk.connected }, { attached: true, connected: true });
    assert.is(s.host.bootedFrom, 'B');
    assert.equal((d.app.rig as any).board.violations, []);
    // The relays kept both drives on the controller, powered: the host reaches its disk only through the export.
    assert.equal((d.app.rig as any).board.drivesOnHost(), []);
    assert.equal({ muxA: s.relays.muxA, muxB: s.relays.muxB, pwrA: s.relays.pwrA, pwrB: s.relays.pwrB }, { muxA: true, muxB: false, pwrA: false, pwrB: false });

    // The host now writes the drive in bay B through the same export.
    const a0 = sha(s.drives.A.path);
    const b0 = sha(s.drives.B.path);
    const w = await d.api('POST', '/api/sim/host/write', { mib: 1 });
    assert.is(w.body.bay, 'B');
    assert.is(w.body.through, uri);
    assert.is(sha(s.drives.A.path), a0, 'the old active drive is untouched');
    assert.is.not(sha(s.drives.B.path), b0);

    // Re-protect copies B back onto A; the tracker of B has no baseline yet, so it is a full sync that says why.
    const rp = await runJob(d, '/api/reprotect', { confirm: 'reprotect' });
    assert.is.not(rp.result.mode, 'changed');
    assert.match(rp.result.notes.join('\n'), /changed-block mode not possible/);
    s = await status(d);
    assert.is(s.standbyState, 'consistent');
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
    // From here on B's bitmap is the baseline: a changed sync copies only what the host writes.
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    const next = await runJob(d, '/api/sync', {});
    assert.is(next.result.mode, 'changed');
    assert.ok(next.result.bytesTotal > 0 && next.result.bytesTotal <= 1024 * 1024);
    s = await status(d);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  } finally {
    await d.stop();
  }
});

test('qemu-storage-daemon crashing under a live sync: an alert, the export restarted at the same address, the sync stops (its snapshot is gone) and the standby rolls back, and the next sync copies the whole drive saying why', async () => {
  if (!requireEnv('inline mode crash', tools)) return;
  const d = await makeDaemon({ mode: 'inline', sim: { bridgeMiBps: 48 } });
  try {
    await idle(d, 60_000);
    await d.api('POST', '/api/sim/host/write', { mib: 8 });
    const es = openEvents(d.url, d.token, '?types=alert');
    await es.ready;
    const pair = d.app.inline!.pair!;
    const uri = d.app.inline!.hostUri;
    const restarted = new Promise((r) => pair.daemon.once('ready', r));
    const r = await d.api('POST', '/api/sync', { mode: 'compare' });
    await waitFor(async () => (await d.api('GET', `/api/jobs/${r.body.id}`)).body.progress?.percent > 5, 20_000, 'the sync under way');
    pair.daemon.kill();
    const alert = await es.wait((e) => e.event === 'alert' && e.data.data.code === 'export-crashed', 10_000);
    assert.match(alert.data.data.message, /being restarted at nbd\+unix:\/\/\/system/);
    await restarted;
    es.close();
    const job = await waitJob(d, r.body.id, 60_000);
    // The sync read a snapshot of one instant, which died with the daemon: it stops, and the standby goes back to the previous backup.
    assert.is(job.state, 'failed', JSON.stringify(job.log));
    assert.match(job.error.message, /qemu-storage-daemon restarted during the snapshot: the frozen picture is gone/);
    assert.is(job.result.rolledBack, true);
    let s = await status(d);
    assert.is(s.inline.hostUri, uri);
    assert.is(s.inline.running, true);
    assert.ok(s.inline.generation >= 2);
    assert.is(s.standbyState, 'consistent');
    // The host's disk reconnected to the restarted export, and its writes reach the drive through it.
    await waitFor(async () => (await status(d)).inline.hostDisk.connected, 10_000, "the host's disk reconnected");
    const w = await d.api('POST', '/api/sim/host/write', { mib: 1 });
    assert.is(w.status, 200);
    const next = await runJob(d, '/api/sync', { mode: 'changed' });
    // After a rollback the manifest no longer vouches for the standby either: both drives are compared.
    assert.is(next.result.mode, 'compare');
    assert.match(next.result.notes.join('\n'), /changed-block mode not possible \(qemu-storage-daemon stopped without saving its dirty bitmap/);
    s = await status(d);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  } finally {
    await d.stop();
  }
});

test('a clean restart keeps the dirty bitmap (the next changed sync copies just the writes); a run in switched mode in between drops it, and the next inline sync says why', async () => {
  if (!requireEnv('inline mode restart', tools)) return;
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-inline-'));
  try {
    let d = await makeDaemon({ mode: 'inline' }, dir);
    await idle(d);
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    const dirty = await d.app.inline!.refreshDirty();
    await d.close();

    d = await makeDaemon({ mode: 'inline' }, dir);
    await idle(d);
    assert.is(await d.app.inline!.refreshDirty(), dirty, 'the bitmap came back from the metadata file');
    const kept = await runJob(d, '/api/sync', {});
    assert.is(kept.result.mode, 'changed');
    assert.is(kept.result.bytesTotal, dirty);
    await d.close();

    d = await makeDaemon({}, dir);
    await idle(d);
    assert.ok(d.logs.some((l) => /changed-block tracking of an earlier inline run was dropped/.test(l)));
    assert.equal((d.app.rig as any).board.drivesOnHost(), ['A'], 'switched mode takes the isolated relays back to the selected bay');
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    await d.close();

    d = await makeDaemon({ mode: 'inline' }, dir);
    await idle(d);
    assert.equal((d.app.rig as any).board.drivesOnHost(), [], 'inline mode takes both drives onto the controller');
    const full = await runJob(d, '/api/sync', {});
    assert.is(full.result.mode, 'manifest');
    assert.match(full.result.notes.join('\n'), /changed-block mode not possible \(changed-block tracking has not run a full sync yet\)/);
    const s = await status(d);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path), 'the writes made in switched mode reached the standby');
    await d.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a changed-block sync that fails midway (the active drive pulled from under it) rolls the standby back at once: it stays a consistent backup, and the next changed sync (the bitmap merged back) completes', async () => {
  if (!requireEnv('inline mode failed sync', tools)) return;
  // A sync reading the live drive: the rig pulls a drive (and throttles its bridge) on dpsr's handles, which a live sync's snapshot, served by qemu-storage-daemon, does not go through.
  const d = await makeDaemon({ mode: 'inline', sim: { bridgeMiBps: 6 }, inline: { snapshot: { live: false } } });
  try {
    await idle(d, 60_000);
    await d.api('POST', '/api/sim/host/write', { mib: 24 });
    const before = await status(d);
    const standbyBefore = sha(before.drives.B.path);
    const r = await d.api('POST', '/api/sync', { mode: 'changed' });
    await waitFor(async () => (await d.api('GET', `/api/jobs/${r.body.id}`)).body.progress?.bytesWritten > 0, 20_000, 'the sync writing');
    await d.api('POST', '/api/sim/drive/A/pull', {});
    const job = await waitJob(d, r.body.id, 60_000);
    assert.is(job.state, 'failed');
    assert.ok(job.log.some((l: { message: string }) => /^failed: /.test(l.message)), JSON.stringify(job.log.map((l: { message: string }) => l.message)));
    let s = await status(d);
    assert.is(s.standbyState, 'consistent', 'rolled back to the previous backup');
    assert.is(s.pendingCopy, null);
    assert.is(sha(s.drives.B.path), standbyBefore);
    await d.api('POST', '/api/sim/drive/A/insert', {});
    const next = await runJob(d, '/api/sync', { mode: 'changed' });
    assert.is(next.result.mode, 'changed', 'the merged-back bitmap is still the baseline');
    s = await status(d);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  } finally {
    await d.stop();
  }
});

test('dpsrd killed hard (SIGKILL) in inline mode: the next start quits the export daemon it left, serves the drive again at the same address, and the bitmap it saved keeps the next sync a changed one', async () => {
  if (!requireEnv('inline mode after a hard kill', tools)) return;
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-inline-kill-'));
  const configFile = join(dir, 'dpsrd.json');
  writeFileSync(configFile, JSON.stringify({ mode: 'inline', sim: { hostBootMs: 150, hostShutdownMs: 100, heartbeatMs: 100 } }));
  const state = join(dir, 'state');
  let d = await spawnDaemon(state, configFile);
  try {
    await waitFor(async () => (await d.api('GET', '/api/status')).body.standbyState === 'consistent', 30_000, 'first clone');
    const uri = (await d.api('GET', '/api/status')).body.inline.hostUri;
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    d.child.kill('SIGKILL');
    await d.exited;
    // The export daemon outlived its controller and still serves the host.
    const left = await NbdDrive.open(uri);
    await left.close();

    d = await spawnDaemon(state, configFile);
    const s = (await d.api('GET', '/api/status')).body;
    assert.is(s.inline.running, true);
    assert.is(s.inline.hostUri, uri);
    const r = await d.api('POST', '/api/sync', {});
    const job = await waitFor(async () => {
      const j = (await d.api('GET', `/api/jobs/${r.body.id}`)).body;
      return j.state === 'running' ? undefined : j;
    }, 30_000, 'sync');
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(job.result.mode, 'changed', job.result.notes.join('; '));
    assert.ok(job.result.bytesTotal > 0 && job.result.bytesTotal <= 1024 * 1024);
    const after = (await d.api('GET', '/api/status')).body;
    assert.is(sha(after.drives.A.path), sha(after.drives.B.path));
  } finally {
    d.child.kill('SIGTERM');
    await d.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
