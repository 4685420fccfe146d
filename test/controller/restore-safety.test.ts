/**
 * Restores of files and partitions refuse before anything changes: a
 * partition the standby does not have is bad input before a window shuts the
 * host down, and a standby that holds a half-written copy (an interrupted
 * sync) gives nothing back, like every restore.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { makeDaemon, idle, waitFor, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';

const ok = requireEnv('restoring files onto the active drive', { tools: ['fls', 'icat', 'ifind', 'debugfs', 'sfdisk', 'losetup', 'mount', 'e2fsck'], root: true });
let d: TestDaemon;

const digest = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

test.before(async () => {
  if (!ok) return;
  d = await makeDaemon({ sim: { bridgeMiBps: 48 } });
  await idle(d);
  await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
});
test.after(async () => {
  await d?.stop();
});

test('a partition restore naming a partition the standby does not have is 400 and starts nothing (the host keeps running)', async () => {
  if (!ok) return;
  const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
  const r = await d.api('POST', '/api/restore/partition', { partition: 7, confirm: 'restore partition 7', window: true });
  assert.is(r.status, 400, JSON.stringify(r.body));
  assert.match(r.body.error.message, /no partition 7/);
  assert.match(r.body.error.hint, /partitions on the standby: 1, 2/);
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'no job started');
  assert.is((await d.api('GET', '/api/status')).body.host.power, 'on');
});

test('files are not restored into a new drive put in the active drive\'s bay', async () => {
  if (!ok) return;
  const other = await makeDaemon();
  try {
    await idle(other);
    await waitFor(async () => ((await other.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    await other.api('POST', '/api/host/shutdown', {});
    await waitFor(async () => ((await other.api('GET', '/api/status')).body.host.power === 'off' ? true : undefined), 10_000, 'host off');
    assert.is((await other.api('POST', '/api/sim/drive/A/pull', {})).status, 200);
    assert.is((await other.api('POST', '/api/sim/drive/A/insert', { replacement: true })).status, 200);
    const r = await other.api('POST', '/api/restore/files', { partition: 2, paths: ['/etc'], window: false });
    assert.is(r.status, 409, JSON.stringify(r.body));
    assert.match(r.body.error.message, /not the pair's active drive/);
  } finally {
    await other.stop();
  }
});

test('files are not restored from a standby an interrupted sync left inconsistent, and the active drive is not touched', async () => {
  if (!ok) return;
  await d.api('POST', '/api/sim/host/write', { mib: 8 });
  const r = await d.api('POST', '/api/sync', {});
  assert.is(r.status, 202, JSON.stringify(r.body));
  // Cancelled once it copies: a job cancelled before it starts leaves nothing to roll back or refuse
  await waitFor(async () => ((await d.api('GET', `/api/jobs/${r.body.id}`)).body.progress?.bytesDone > 0 ? true : undefined), 20_000, 'the sync under way');
  await d.api('POST', `/api/jobs/${r.body.id}/cancel`, { rollback: false });
  await idle(d);
  const s = (await d.api('GET', '/api/status')).body;
  assert.is(s.standbyState, 'inconsistent');
  const activePath = s.drives[s.active].path as string;
  assert.ok(activePath, 'the status names the active drive\'s image');
  const before = digest(activePath);
  const started = await d.api('POST', '/api/restore/files', { partition: 2, paths: ['/etc'], window: true });
  assert.is(started.status, 409, JSON.stringify(started.body));
  assert.is(started.body.error.kind, 'refused');
  assert.match(started.body.error.message, /inconsistent/);
  assert.match(started.body.error.hint, /recover/);
  await idle(d);
  assert.is(digest(activePath), before, 'the active drive is unchanged');
});

test('in inline mode, restoring files or a partition is refused with a way that works, also with the host off', async () => {
  if (!ok || !requireEnv('inline mode in the controller', { tools: ['qemu-storage-daemon', 'qemu-img'] })) return;
  const inline = await makeDaemon({ mode: 'inline' });
  try {
    await idle(inline);
    assert.is((await inline.api('POST', '/api/host/shutdown', {})).status, 200);
    await waitFor(async () => ((await inline.api('GET', '/api/status')).body.host.power === 'off' ? true : undefined), 10_000, 'host off');
    for (const [path, body] of [['/api/restore/files', { partition: 2, paths: ['/etc'] }], ['/api/restore/partition', { partition: 2, confirm: 'restore partition 2' }]] as const) {
      const r = await inline.api('POST', path, body);
      assert.is(r.status, 409, JSON.stringify(r.body));
      assert.match(r.body.error.message, /inline mode/);
      assert.not.match(r.body.error.hint, /shut the host down/, 'the host is off already: the hint must not send the operator round in circles');
      assert.match(r.body.error.hint, /browse\/archive/);
    }
  } finally {
    await inline.stop();
  }
});

test('the host switched off before its boot was confirmed: the boot retry does not power it on while a restore of files writes its drive', async () => {
  if (!ok) return;
  const other = await makeDaemon({ sim: { hostBootMs: 2000 } });
  try {
    await idle(other);
    await waitFor(async () => ((await other.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    const bsw = other.app.bs.bootSwitch;
    await other.api('POST', '/api/sim/host/power', { power: 'off' });
    await waitFor(() => (other.app.bs.failover.state.pendingBoot === null ? true : undefined), 10_000, 'no boot pending');
    // Powered on, then off again before the boot is confirmed: the failover machine retries the boot.
    await other.api('POST', '/api/sim/host/power', { power: 'on' });
    await waitFor(() => (other.app.bs.failover.state.pendingBoot ? true : undefined), 10_000, 'the boot pending');
    await other.api('POST', '/api/sim/host/power', { power: 'off' });
    await waitFor(async () => ((await other.api('GET', '/api/status')).body.host.power === 'off' ? true : undefined), 10_000, 'host off');
    const r = await other.api('POST', '/api/restore/files', { partition: 2, paths: ['/etc'], window: false });
    if (r.status !== 202) {
      // The retry's power-on came first and was seen: refused before anything was written.
      assert.is(r.status, 409, JSON.stringify(r.body));
      return;
    }
    for (;;) {
      const job = (await other.api('GET', `/api/jobs/${r.body.id}`)).body;
      const powered = await bsw.hostPowered();
      if (job.state !== 'running' && job.state !== 'queued') {
        if (job.state === 'failed') assert.match(job.error.message, /powered|switched on/, JSON.stringify(job.error));
        else assert.is(job.state, 'done');
        break;
      }
      assert.ok(!(powered && job.state === 'running'), 'the host was powered on while the restore of files ran');
      await new Promise((res) => setTimeout(res, 10));
    }
  } finally {
    await other.stop();
  }
});

test.run();
