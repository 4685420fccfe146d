/**
 * Live syncs in the controller (inline mode on the simulated rig, the real
 * qemu-storage-daemon): a sync while the host writes through the export
 * reads a copy-before-write snapshot and leaves nothing behind; the
 * snapshot hooks run around the instant; a cache budget the host's writes
 * overflow breaks the snapshot, raises snapshot-broken and rolls the standby
 * back while every host write succeeds; a drive that never goes quiet with
 * fallback skip fails the job as busy and changes nothing.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDaemon, openEvents, waitJob, idle, sha, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';
import { hostWriter, assertTornDown } from './support/inline.ts';
import { CACHE_FILE } from '../../src/snapshot/index.ts';
import { validateDaemonConfig } from '../../firmware/controller/config.ts';
import { BadInputError } from '../../src/errors.ts';

const MiB = 1024 * 1024;
const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;
const tools = { tools: ['qemu-storage-daemon', 'qemu-img', 'qemu-io'] };
const QUICK = { quietSeconds: 0.3, maxWaitSeconds: 1 };

test('a sync while the host writes reads a snapshot, not the moving drive; the hooks run around the instant; nothing is left; the next sync catches up', async () => {
  if (!requireEnv('live syncs in the controller', tools)) return;
  const log = join(process.env.TMPDIR ?? '/tmp', `dpsr-live-hooks-${process.pid}.log`);
  writeFileSync(log, '');
  const hook = { command: ['sh', '-c', `echo "$DPSR_SNAPSHOT_PHASE" >> ${log}`] };
  const d = await makeDaemon({ mode: 'inline', sync: { quiescence: QUICK }, inline: { snapshot: { preHook: hook, postHook: hook } } });
  try {
    await idle(d);
    assert.is(readFileSync(log, 'utf8'), 'pre\npost\n', 'the first clone read a snapshot too, with the hooks');
    writeFileSync(log, '');
    const s = await status(d);
    await d.api('POST', '/api/sim/host/write', { mib: 4 });
    const writer = hostWriter(s.inline.hostUri);
    let job;
    try {
      while (writer.writes < 20) await new Promise((r) => setTimeout(r, 10));
      const r = await d.api('POST', '/api/sync', { mode: 'changed' });
      assert.is(r.status, 202, JSON.stringify(r.body));
      job = await waitJob(d, r.body.id);
    } finally {
      await writer.stop();
    }
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.equal(writer.failures, [], 'no host write failed');
    assert.is(job.result.mode, 'changed');
    const lines = job.log.map((l: { message: string }) => l.message).join('\n');
    assert.match(lines, /still being written .* crash-consistent|quiet for 0.3 s/);
    assert.match(lines, /snapshot taken between \S+Z and \S+Z; cache budget \d+ MiB/);
    assert.match(lines, /live sync from a application snapshot/);
    assert.is(readFileSync(log, 'utf8'), 'pre\npost\n', 'freeze before, thaw after the instant');
    assert.is((await status(d)).standbyState, 'consistent');
    await assertTornDown(d);
    // The host is idle now: the next live sync copies what came after the instant, and the drives agree.
    const next = await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id);
    assert.is(next.state, 'done', JSON.stringify(next.error));
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
    await assertTornDown(d);
  } finally {
    rmSync(log, { force: true });
    await d.stop();
  }
});

test('host writes that overflow the snapshot cache: the snapshot breaks, snapshot-broken is raised, the standby rolls back, every host write succeeds', async () => {
  if (!requireEnv('live syncs in the controller', tools)) return;
  // A 16 MiB cache, and a post-snapshot hook that (once armed) rewrites 48 MiB of the 64 MiB drive through the export right
  // after the instant: more old blocks than the cache holds, before the copy reads.
  const armed = join(process.env.TMPDIR ?? '/tmp', `dpsr-live-overflow-${process.pid}`);
  const d = await makeDaemon({ mode: 'inline', sync: { quiescence: QUICK }, inline: { snapshot: { cacheBudgetMiB: 16, postHook: { command: ['sh', '-c', `test ! -e ${armed} || qemu-io -f raw -c 'write -P 0xee 0 48M' -c flush "$(cat ${armed})"`] } } } });
  try {
    await idle(d);
    const s = await status(d);
    // Data everywhere (the copy-before-write filter saves a zero block as a zero cluster, which costs the cache nothing), backed up.
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 64M', s.inline.hostUri], { stdio: 'ignore' });
    const full = await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id);
    assert.is(full.state, 'done', JSON.stringify(full.error));
    await d.api('POST', '/api/sim/host/write', { mib: 4 });
    const backup = sha(s.drives.B.path);
    writeFileSync(armed, s.inline.hostUri);
    const es = openEvents(d.url, d.token, '?types=alert');
    await es.ready;
    const job = await waitJob(d, (await d.api('POST', '/api/sync', { mode: 'changed' })).body.id);
    assert.is(job.state, 'failed');
    assert.match(job.error.message, /the snapshot broke: .*16 MiB cache budget was reached.*the host's write went on; the sync stopped/);
    const alert = await es.wait((e) => e.data.data.code === 'snapshot-broken', 5000);
    es.close();
    assert.is(alert.data.data.level, 'warning');
    assert.is(job.result.rolledBack, true);
    assert.is(sha(s.drives.B.path), backup, 'the standby is the previous backup again');
    assert.is((await status(d)).standbyState, 'consistent');
    const drive = readFileSync(s.drives.A.path);
    assert.ok(drive.subarray(0, 48 * MiB).equals(Buffer.alloc(48 * MiB, 0xee)), "every one of the hook's host writes landed");
    await assertTornDown(d);
    // Disarmed, the next sync copies everything since the backup (the frozen bitmap went back into the live one).
    rmSync(armed);
    const next = await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id);
    assert.is(next.state, 'done', JSON.stringify(next.error));
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  } finally {
    rmSync(armed, { force: true });
    await d.stop();
  }
});

test('a drive that never goes quiet, with fallback skip: the sync is refused as busy, nothing is written, nothing is left', async () => {
  if (!requireEnv('live syncs in the controller', tools)) return;
  const d = await makeDaemon({ mode: 'inline', sync: { quiescence: { quietSeconds: 1, maxWaitSeconds: 1, fallback: 'skip' } } });
  try {
    await idle(d);
    const s = await status(d);
    await d.api('POST', '/api/sim/host/write', { mib: 2 });
    const backup = sha(s.drives.B.path);
    const writer = hostWriter(s.inline.hostUri);
    let job;
    try {
      job = await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id);
    } finally {
      await writer.stop();
    }
    assert.is(job.state, 'failed');
    assert.match(job.error.message, /still being written after [\d.]+ s: this run is skipped/);
    assert.is(sha(s.drives.B.path), backup);
    assert.is((await status(d)).standbyState, 'consistent');
    await assertTornDown(d);
  } finally {
    await d.stop();
  }
});

test('live-sync config: bad values are named and refused before anything starts', () => {
  const bad = (raw: unknown, re: RegExp) => {
    try {
      validateDaemonConfig(raw);
      assert.unreachable(JSON.stringify(raw));
    } catch (e) {
      assert.instance(e, BadInputError, JSON.stringify(raw));
      assert.match((e as Error).message, re);
    }
  };
  bad({ sync: { quiescence: { quietSeconds: 30, maxWaitSeconds: 10 } } }, /sync.quiescence.maxWaitSeconds is 10; allowed: at least sync.quiescence.quietSeconds \(30\)/);
  bad({ sync: { quiescence: { fallback: 'wait' } } }, /sync.quiescence.fallback is "wait"; allowed: "crash-consistent", "skip"/);
  bad({ inline: { snapshot: { preHook: { timeoutSeconds: 5 } } } }, /inline.snapshot.preHook .*either command .* or url, not both and not neither/);
  bad({ inline: { snapshot: { postHook: { command: ['true'], url: 'http://host/thaw' } } } }, /inline.snapshot.postHook .*not both/);
  bad({ inline: { snapshot: { postHook: { url: 'ftp://host/thaw' } } } }, /inline.snapshot.postHook.url/);
  bad({ inline: { snapshot: { cacheBudgetMiB: 8 } } }, /inline.snapshot.cacheBudgetMiB is 8/);
  bad({ inline: { snapshot: { cbwTimeoutSeconds: 0 } } }, /inline.snapshot.cbwTimeoutSeconds is 0/);
  const c = validateDaemonConfig({ mode: 'inline' });
  assert.equal(c.sync.quiescence, { quietSeconds: 5, maxWaitSeconds: 60, fallback: 'crash-consistent' });
  assert.equal(c.inline.snapshot, { live: true, cacheBudgetPercent: 25, cbwTimeoutSeconds: 5 });
});

test.run();
