/**
 * dpsrd keeps the drives of its bays for its lifetime: a `dpsr` from another
 * state directory cannot clone onto its idle standby, copy back onto its
 * active drive or restore over it, while the daemon's own jobs work; once
 * the daemon stops, the drives are free again.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { PairStore } from '../../src/sync/index.ts';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDaemon, idle, waitFor, waitJob, sha } from './support/harness.ts';
import { dpsrAsync } from '../support/cli.ts';
import { randomImage } from '../support/images.ts';

/** The CLI in a child process (spawnSync would block the daemon in this one). */
const dpsr = (args: string[]) => dpsrAsync(args);

test("another state directory's dpsr writes none of a running dpsrd's drives, idle or not; the daemon's own sync works; stopped, it lets them go", async () => {
  const other = mkdtempSync(join(tmpdir(), 'dpsr-other-state-'));
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  let closed = false;
  try {
    await idle(d);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    const s = (await d.api('GET', '/api/status')).body;
    const active = s.drives[s.active].path as string;
    const standby = s.drives[s.standby].path as string;
    const before = { active: sha(active), standby: sha(standby) };
    const stranger = join(other, 'stranger.img');
    randomImage(stranger, statSync(active).size, 5);
    for (const args of [
      ['clone', stranger, standby, '--yes'],
      ['clone', standby, active, '--yes'],
      ['sync', stranger, standby, '--yes'],
      ['restore', standby, active, '--yes', '--i-mean-restore'],
    ]) {
      const r = await dpsr([...args, '--state-dir', join(other, 'state')]);
      assert.is(r.code, 1, `dpsr ${args.join(' ')}: exit ${r.code} ${r.stderr}`);
      assert.match(r.stderr, /is a drive in a bay of dpsrd of the state directory .* at http:\/\/127\.0\.0\.1:\d+, so only that daemon's jobs write it/, `dpsr ${args.join(' ')}`);
      assert.match(r.stderr, /--url http:\/\/127\.0\.0\.1:\d+/);
    }
    assert.equal({ active: sha(active), standby: sha(standby) }, before, 'neither drive was written');
    // The daemon's own copies write its drives as before.
    await d.api('POST', '/api/sim/host/write', { mib: 2 });
    const job = await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(sha(active), sha(standby));
    await d.close();
    closed = true;
    const after = await dpsr(['clone', stranger, standby, '--yes', '--quiet', '--state-dir', join(other, 'state')]);
    assert.is(after.code, 0, `without the daemon the drive is free: ${after.stderr}`);
  } finally {
    if (closed) rmSync(d.dir, { recursive: true, force: true });
    else await d.stop();
    rmSync(other, { recursive: true, force: true });
  }
});

test('a standby written while the daemon was down is found at the next start: inconsistent, a critical alert, failover refused; a sync makes it a backup again', async () => {
  const config = { sim: { hostPoweredAtStart: false } };
  let d = await makeDaemon(config);
  const dir = d.dir;
  try {
    await idle(d);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    assert.is((await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id)).state, 'done');
    const standby = (await d.api('GET', '/api/status')).body.drives.B.path as string;
    // A restart alone finds nothing.
    await d.close();
    d = await makeDaemon(config, dir);
    await idle(d);
    assert.is((await d.api('GET', '/api/status')).body.standbyState, 'consistent', 'no false alarm');
    await d.close();
    // While the daemon is down another tool writes the standby (its keep is gone with it).
    const fd = openSync(standby, 'r+');
    writeSync(fd, randomBytes(24 * 1024 * 1024), 0, 24 * 1024 * 1024, 8 * 1024 * 1024);
    closeSync(fd);
    d = await makeDaemon(config, dir);
    await idle(d);
    const s = (await d.api('GET', '/api/status')).body;
    assert.is(s.standbyState, 'inconsistent');
    const alerts = (await d.api('GET', '/api/events/log?types=alert')).body.events.filter((e: any) => e.data.code === 'standby-written-elsewhere');
    assert.is(alerts.length, 1, JSON.stringify(alerts));
    assert.match(alerts[0].data.message, /written outside dpsrd.*POST \/api\/sync/);
    const failover = await d.api('POST', '/api/failover', { confirm: 'failover' });
    assert.is(failover.status, 409, 'no failover to it');
    assert.match(failover.body.error.message, /inconsistent|not consistent/);
    const job = await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    const after = (await d.api('GET', '/api/status')).body;
    assert.is(after.standbyState, 'consistent');
    assert.is(sha(after.drives.A.path), sha(standby));
  } finally {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an interrupted restore is rolled back through the daemon (POST /api/recover, host off): its active drive is back byte-exact, while a dpsr beside the daemon is refused', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false, bridgeMiBps: 4 } });
  try {
    await idle(d);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    await d.api('POST', '/api/sim/host/write', { mib: 16 });
    const s = (await d.api('GET', '/api/status')).body;
    const active = s.drives[s.active].path as string;
    const before = sha(active);
    const r = await d.api('POST', '/api/restore', { confirm: 'restore' });
    assert.is(r.status, 202, JSON.stringify(r.body));
    // Cancelled from inside this process the moment the restore has written, with 16 MiB to write at 4 MiB/s: a cancel that
    // reached it only after its last write (a slow poll under load) would find a finished restore and nothing to roll back.
    await waitFor(() => ((d.app.jobs.get(r.body.id).progress?.bytesWritten ?? 0) > 0 ? true : undefined), 30_000, 'the restore writes');
    d.app.jobs.cancel(r.body.id, false);
    assert.is((await waitJob(d, r.body.id)).state, 'cancelled');
    assert.is.not(sha(active), before, 'the active drive is half-restored');
    const beside = await dpsr(['recover', active, '--yes', '--state-dir', d.dir]);
    assert.is(beside.code, 1, beside.stderr);
    assert.match(beside.stderr, /only that daemon's jobs write it/);
    const rec = await d.api('POST', '/api/recover', {});
    assert.is(rec.status, 202, JSON.stringify(rec.body));
    const job = await waitJob(d, rec.body.id);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(job.options.target, s.active);
    assert.is(sha(active), before, 'the active drive holds again what it held before the restore');
  } finally {
    await d.stop();
  }
});

test('a standby written while it was out of its bay is found when it is put back: inconsistent, with the critical alert', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    assert.is((await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id)).state, 'done');
    const standby = (await d.api('GET', '/api/status')).body.drives.B.path as string;
    // Out and back unchanged: nothing to say.
    // A drive is out of its bay for longer than the keeper's refresh (a second).
    const out = () => new Promise((r) => setTimeout(r, 2000));
    await d.api('POST', '/api/sim/drive/B/pull', {});
    await out();
    await d.api('POST', '/api/sim/drive/B/insert', {});
    await new Promise((r) => setTimeout(r, 2500));
    assert.is((await d.api('GET', '/api/status')).body.standbyState, 'consistent', 'no false alarm');
    assert.is((await d.api('POST', '/api/sim/drive/B/pull', {})).status, 200);
    await out();
    const fd = openSync(standby, 'r+');
    writeSync(fd, randomBytes(24 * 1024 * 1024), 0, 24 * 1024 * 1024, 8 * 1024 * 1024);
    closeSync(fd);
    assert.is((await d.api('POST', '/api/sim/drive/B/insert', {})).status, 200);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'inconsistent' ? true : undefined), 10_000, 'the standby found inconsistent');
    const alerts = (await d.api('GET', '/api/events/log?types=alert')).body.events.filter((e: any) => e.data.code === 'standby-written-elsewhere');
    assert.is(alerts.length, 1, JSON.stringify(alerts));
  } finally {
    await d.stop();
  }
});

test('re-protect onto a new drive that its clone refuses (smaller than the active drive) keeps the pair\'s records; a fitting one replaces them', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    const [pair] = new PairStore(d.dir).pairs();
    assert.is((await d.api('POST', '/api/sim/drive/B/pull', {})).status, 200);
    const ins = await d.api('POST', '/api/sim/drive/B/insert', { replacement: true });
    assert.is(ins.status, 200, JSON.stringify(ins.body));
    truncateSync(ins.body.path, statSync(ins.body.path).size - 1024 * 1024);
    const rp = await d.api('POST', '/api/reprotect', { confirm: 'reprotect' });
    assert.is(rp.status, 202, JSON.stringify(rp.body));
    const job = await waitJob(d, rp.body.id);
    assert.is(job.state, 'failed');
    assert.match(job.error.message, /smaller/, `the job failed for another reason: ${job.error.message}`);
    assert.equal(new PairStore(d.dir).pairs().map((p) => p.id), [pair!.id], 'the pair is still recorded');
    truncateSync(ins.body.path, statSync((await d.api('GET', '/api/status')).body.drives.A.path).size);
    const again = await waitJob(d, (await d.api('POST', '/api/reprotect', { confirm: 'reprotect' })).body.id);
    assert.is(again.state, 'done', JSON.stringify(again.error));
    const pairs = new PairStore(d.dir).pairs();
    assert.is(pairs.length, 1);
    assert.is.not(pairs[0]!.id, pair!.id, 'the new drive\'s pair replaced the old one');
    assert.is((await d.api('GET', '/api/status')).body.standbyState, 'consistent');
  } finally {
    await d.stop();
  }
});

test.run();
