/**
 * Whole-drive reads of the active drive in inline mode go through a live
 * snapshot (the simulated rig, the real qemu-storage-daemon): a verify
 * compares the standby with the picture of one instant, leaving out what the
 * host wrote since the last sync, so host writes (before or during it) raise
 * no alarm while a write the tracker never saw does; a clone copies one
 * instant; a partition sync does not end the changed-block epoch of the
 * partitions it left out.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, openSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { makeDaemon, openEvents, waitJob, idle, sha, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';
import { hostWriter, assertTornDown } from './support/inline.ts';
import { epochDecision } from '../../firmware/controller/inline.ts';

const MiB = 1024 * 1024;
const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;
const tools = { tools: ['qemu-storage-daemon', 'qemu-img', 'qemu-io'] };
const QUICK = { quietSeconds: 0.3, maxWaitSeconds: 1 };

async function runJob(d: TestDaemon, path: string, body: Record<string, unknown>) {
  const r = await d.api('POST', path, body);
  assert.is(r.status, 202, JSON.stringify(r.body));
  return waitJob(d, r.body.id);
}

function readAt(path: string, at: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  const fd = openSync(path, 'r');
  readSync(fd, b, 0, length, at);
  closeSync(fd);
  return b;
}

/** A write straight onto the raw drive, behind the export: what a silently failing tracker looks like. */
function writeBehindTracker(path: string, at: number, length: number, fill: number): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(length, fill), 0, length, at);
  closeSync(fd);
}

/**
 * A post-snapshot hook that, once armed (a file holding the host's URI), writes `fill` at byte `at` through the
 * export right after the snapshot instant: in the live drive, never in the picture.
 */
function armedPostHook(armed: string, at: number, fill: number) {
  return { command: ['sh', '-c', `test ! -e ${armed} || qemu-io -f raw -c 'write -P ${fill} ${at} 64k' -c flush "$(cat ${armed})"`] };
}

test('the verify compares the standby with a picture of one instant: host writes since the last sync and during the verify are no differences, a write the tracker never saw raises changed-blocks-missed', async () => {
  if (!requireEnv('a live verify in the controller', tools)) return;
  const armed = join(process.env.TMPDIR ?? '/tmp', `dpsr-live-verify-${process.pid}`);
  const d = await makeDaemon({ mode: 'inline', sync: { quiescence: QUICK }, inline: { snapshot: { postHook: armedPostHook(armed, 40 * MiB, 0xee) } } });
  try {
    await idle(d);
    const s = await status(d);
    const size = statSync(s.drives.A.path).size;
    const es = openEvents(d.url, d.token, '?types=alert');
    await es.ready;
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    const synced = await runJob(d, '/api/sync', { mode: 'changed' });
    assert.is(synced.state, 'done', JSON.stringify(synced.error));
    assert.is((await status(d)).inline.changedSyncsSinceVerify, 1);

    // Written since the sync and not synced yet; then the host keeps writing all through the verify, and the post hook
    // writes one more block right after the verify's snapshot instant.
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    const backup = sha(s.drives.B.path);
    writeFileSync(armed, s.inline.hostUri);
    const writer = hostWriter(s.inline.hostUri, { start: 0, end: size / 2 });
    let job;
    let writesDuring = 0;
    try {
      while (writer.writes < 20) await new Promise((r) => setTimeout(r, 10));
      const before = writer.writes;
      job = await runJob(d, '/api/verify', {});
      writesDuring = writer.writes - before;
    } finally {
      await writer.stop();
      rmSync(armed, { force: true });
    }
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.equal(writer.failures, [], 'no host write failed');
    assert.ok(writesDuring > 10, `the host wrote during the verify (${writesDuring} writes)`);
    assert.ok(readAt(s.drives.A.path, 40 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0xee)), 'the post hook wrote the live drive after the instant');
    assert.not.equal(sha(s.drives.A.path), sha(s.drives.B.path), 'the drives do differ now');
    assert.is(job.result.identical, true, JSON.stringify(job.result));
    assert.ok(job.result.excludedBytes >= 1 * MiB, `what the host wrote since the sync was left out (${job.result.excludedBytes} bytes)`);
    assert.match(job.result.notes.join('\n'), /not compared: written by the host since the last sync/);
    assert.match(job.log.map((l: { message: string }) => l.message).join('\n'), /verify from a (quiet|crash-consistent) snapshot of the active drive/);
    assert.is(sha(s.drives.B.path), backup, 'a verify writes nothing');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(es.events.filter((e) => ['changed-blocks-missed', 'verify-differs', 'snapshot-broken'].includes(e.data.data.code)).map((e) => e.data.data.message), [], 'no alarm');
    await assertTornDown(d);
    assert.is((await status(d)).inline.changedSyncsSinceVerify, 0);

    // The epoch went back: the next changed sync still copies what the host wrote since the last one, and catches up.
    const caught = await runJob(d, '/api/sync', { mode: 'changed' });
    assert.is(caught.state, 'done', JSON.stringify(caught.error));
    assert.is(caught.result.mode, 'changed', 'the tracker is still trusted after the verify');
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));

    // A write the tracker never saw, in the half the writer leaves alone, then a verify while the host writes.
    writeBehindTracker(s.drives.A.path, 48 * MiB, 4096, 0x5c);
    const writer2 = hostWriter(s.inline.hostUri, { start: 0, end: size / 2 });
    let missed;
    try {
      while (writer2.writes < 20) await new Promise((r) => setTimeout(r, 10));
      missed = await runJob(d, '/api/verify', {});
    } finally {
      await writer2.stop();
    }
    assert.is(missed.state, 'done', JSON.stringify(missed.error));
    assert.equal(writer2.failures, []);
    assert.is(missed.result.identical, false);
    assert.equal(missed.result.differences, [{ start: 48 * MiB, length: 4096 }], 'exactly the missed write differs');
    // Mapped to its partition on the picture the verify read (mounted as a file while the snapshot was held) and on the standby.
    assert.is(missed.result.differenceFiles[0].partition, 3, JSON.stringify(missed.result.differenceFiles));
    assert.not.match(missed.log.map((l: { message: string }) => l.message).join('\n'), /could not be mapped/);
    const alert = await es.wait((e) => e.data.data.code === 'changed-blocks-missed', 5000);
    assert.is(alert.data.data.level, 'critical');
    assert.match(alert.data.data.message, /4096 differing bytes .* after 1 changed-block sync/);
    es.close();
    await assertTornDown(d);
    const full = await runJob(d, '/api/sync', { mode: 'changed' });
    assert.is(full.result.mode, 'manifest', 'the tracker is distrusted: a whole-drive sync from the picture');
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  } finally {
    rmSync(armed, { force: true });
    await d.stop();
  }
});

test('a clone in inline mode copies the picture of one instant: a write just before it is on the standby, one just after is not; the changed set starts at that instant', async () => {
  if (!requireEnv('a live clone in the controller', tools)) return;
  const armed = join(process.env.TMPDIR ?? '/tmp', `dpsr-live-clone-${process.pid}`);
  // The pre hook writes 0xcd at 8 MiB (before the instant); the post hook rewrites it with 0x11 and writes 0xee at 12 MiB (after it).
  const pre = { command: ['sh', '-c', `test ! -e ${armed} || qemu-io -f raw -c 'write -P 0xcd 8M 64k' -c flush "$(cat ${armed})"`] };
  const post = { command: ['sh', '-c', `test ! -e ${armed} || qemu-io -f raw -c 'write -P 0x11 8M 64k' -c 'write -P 0xee 12M 64k' -c flush "$(cat ${armed})"`] };
  const d = await makeDaemon({ mode: 'inline', sync: { quiescence: QUICK }, inline: { snapshot: { preHook: pre, postHook: post } } });
  try {
    await idle(d);
    const s = await status(d);
    writeFileSync(armed, s.inline.hostUri);
    const job = await runJob(d, '/api/clone', { force: true });
    rmSync(armed, { force: true });
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.match(job.log.map((l: { message: string }) => l.message).join('\n'), /live clone from a application snapshot/);
    assert.ok(readAt(s.drives.B.path, 8 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0xcd)), 'the write before the instant was cloned');
    assert.not.ok(readAt(s.drives.B.path, 12 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0xee)), 'the write after the instant was not');
    assert.ok(readAt(s.drives.A.path, 12 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0xee)));
    await assertTornDown(d);
    // The clone committed its epoch at the instant: the next changed sync copies exactly the post hook's two blocks.
    const next = await runJob(d, '/api/sync', { mode: 'changed' });
    assert.is(next.state, 'done', JSON.stringify(next.error));
    assert.is(next.result.mode, 'changed');
    assert.is(next.result.bytesTotal, 2 * 64 * 1024);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  } finally {
    rmSync(armed, { force: true });
    await d.stop();
  }
});

test('a changed-block sync of chosen partitions keeps the epoch of the others: a later whole-drive changed sync still copies what the host wrote there', async () => {
  if (!requireEnv('partition syncs in inline mode', tools)) return;
  const d = await makeDaemon({ mode: 'inline', sync: { quiescence: QUICK } });
  try {
    await idle(d);
    const s = await status(d);
    // 40 MiB lies in the data partition (3) of the simulated 64 MiB drive; partition 1 is the EFI partition.
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 40M 64k', '-c', 'flush', s.inline.hostUri], { stdio: 'ignore' });
    const part = await runJob(d, '/api/sync', { mode: 'changed', partitions: [1] });
    assert.is(part.state, 'done', JSON.stringify(part.error));
    assert.match(part.log.map((l: { message: string }) => l.message).join('\n'), /chosen partitions only: the dirty bitmap keeps its writes/);
    const whole = await runJob(d, '/api/sync', { mode: 'changed' });
    assert.is(whole.result.mode, 'changed');
    assert.ok(whole.result.bytesTotal >= 64 * 1024, `the data partition's write was still in the changed set (${whole.result.bytesTotal} bytes read)`);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  } finally {
    await d.stop();
  }
});

test('epoch decision: only a copy of the whole drive, not resumed, without unreadable sectors, commits its epoch', () => {
  const table: [Parameters<typeof epochDecision>[0], boolean, boolean | RegExp][] = [
    [{ bytesResumed: 0, result: 'done' }, true, true],
    [{ bytesResumed: 0, result: 'done' }, false, /chosen partitions only/],
    [{ bytesResumed: 4096, result: 'done' }, true, /resumed an earlier one/],
    [{ bytesResumed: 0, result: 'done-with-errors' }, true, /unreadable sectors/],
    [{ bytesResumed: 4096, result: 'done-with-errors' }, false, /chosen partitions only/],
  ];
  for (const [report, whole, want] of table) {
    const d = epochDecision(report, whole);
    if (want === true) assert.equal(d, { commit: true });
    else {
      assert.is(d.commit, false, JSON.stringify({ report, whole }));
      assert.match((d as { why: string }).why, want as RegExp);
    }
  }
});

test.run();
