/** Switched mode: a copy in a sync window shuts the host down, takes both drives off it, and boots it again. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDaemon, openEvents, waitJob, waitFor, idle, sha, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';

const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;

test('a sync in a window: host off, both drives on the controller, copy, bay back on the host, host on again', async () => {
  const d = await makeDaemon();
  try {
    await idle(d);
    await waitFor(async () => (await status(d)).host.lastHeartbeat?.bay === 'A', 10_000, 'host running on A');
    await d.api('POST', '/api/sim/host/write', { mib: 2 });
    const es = openEvents(d.url, d.token);
    await es.ready;
    const r = await d.api('POST', '/api/sync', { window: true });
    assert.is(r.status, 202);
    const job = await waitJob(d, r.body.id);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(job.options.window, true);
    await es.wait((e) => e.event === 'host.heartbeat' && e.data.data.bay === 'A' && es.events.indexOf(e) > es.events.findIndex((x) => x.event === 'job.done'));
    // The power LED is sampled apart from the agent's heartbeats: its event may come after the first heartbeat.
    const muxBack = () => es.events.map((x) => x.event === 'relay' && x.data.data.channel === 'muxA' && x.data.data.on === false).lastIndexOf(true);
    await es.wait((e) => e.event === 'host.power' && e.data.data.power === 'on' && es.events.indexOf(e) > muxBack());
    // Order of what happened: host off, isolated (A moved to its bridge, B stays on its bridge), copy, A back, host on.
    const seq = es.events.map((e) => e.event === 'host.power' ? `power-${e.data.data.power}` : e.event === 'relay' && e.data.data.channel === 'muxA' ? `muxA-${e.data.data.on}` : e.event === 'job.done' ? 'done' : null).filter(Boolean);
    const off = seq.indexOf('power-off');
    const isolated = seq.indexOf('muxA-true');
    const back = seq.lastIndexOf('muxA-false');
    const on = seq.lastIndexOf('power-on');
    assert.ok(off >= 0 && off < isolated && isolated < back && back < on, seq.join(' '));
    assert.ok(seq.indexOf('done') > back, 'the job ends once the host has its drive back');
    await waitFor(async () => (await status(d)).host.lastHeartbeat && (await status(d)).host.power === 'on', 10_000, 'host back up');
    await es.wait((e) => e.event === 'host.heartbeat' && e.data.data.bay === 'A');
    const s = await status(d);
    assert.is(s.bootBay, 'A');
    assert.is(s.relays.muxA, false);
    assert.is(s.standbyState, 'consistent');
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
    assert.equal((d.app.rig as any).board.violations, []);
    assert.ok(job.log.some((l: { message: string }) => /sync window closed/.test(l.message)), JSON.stringify(job.log));
    es.close();
  } finally {
    await d.stop();
  }
});

test('a standby mounted on the controller: a sync or clone in a window is refused before the window shuts the host down, the standby unchanged', async () => {
  if (!requireEnv('a mounted standby', { root: true, tools: ['losetup', 'partx', 'mount'] })) return;
  const d = await makeDaemon();
  const mnt = mkdtempSync(join(tmpdir(), 'dpsr-mnt-'));
  try {
    await idle(d);
    await waitFor(async () => (await status(d)).host.lastHeartbeat?.bay === 'A', 10_000, 'host running on A');
    const standby = (await status(d)).drives.B.path as string;
    const loop = execFileSync('losetup', ['--find', '--show', standby]).toString().trim();
    try {
      execFileSync('partx', ['-a', loop]);
      execFileSync('mount', ['-o', 'ro', `${loop}p2`, mnt]);
      try {
        const before = sha(standby);
        for (const [kind, body] of [['sync', { window: true }], ['clone', { window: true, force: true }]] as const) {
          const r = await d.api('POST', `/api/${kind}`, body);
          assert.is(r.status, 202, JSON.stringify(r.body));
          const job = await waitJob(d, r.body.id);
          assert.is(job.state, 'failed', JSON.stringify(job));
          assert.is(job.error.kind, 'refused');
          assert.match(job.error.message, new RegExp(`is mounted at ${mnt}`));
          // It used to shut the host down, take the drives, refuse, and boot the host again.
          assert.not.ok(job.log.some((l: { message: string }) => /sync window/.test(l.message)), JSON.stringify(job.log));
          assert.is((await status(d)).host.power, 'on');
        }
        assert.is(sha(standby), before);
      } finally {
        execFileSync('umount', [mnt]);
      }
    } finally {
      execFileSync('partx', ['-d', loop]);
      execFileSync('losetup', ['-d', loop]);
    }
  } finally {
    await d.stop();
    rmSync(mnt, { recursive: true, force: true });
  }
});

test('config sync.window: "always" puts every copy in a window; a host that was off stays off', async () => {
  const d = await makeDaemon({ sync: { window: 'always' }, sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    const first = await status(d);
    assert.is(first.host.power, 'off');
    const r = await d.api('POST', '/api/verify', {});
    const job = await waitJob(d, r.body.id);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(job.options.window, true);
    const s = await status(d);
    assert.is(s.host.power, 'off', 'the host was off and stays off');
    assert.is(s.bootBay, 'A');
  } finally {
    await d.stop();
  }
});

test('switched mode, host running: a copy with the window refused is 409 before anything starts; the simulated host\'s writes wait for no copy but are refused while one reads', async () => {
  const d = await makeDaemon({ sim: { bridgeMiBps: 16 } });
  try {
    await idle(d);
    await waitFor(async () => ((await status(d)).standbyState === 'consistent' && (await status(d)).host.power === 'on' ? true : undefined), 30_000, 'a consistent standby, host on');
    await d.api('POST', '/api/sim/host/write', { mib: 2 });
    let s = await status(d);
    const standby = sha(s.drives.B.path);
    const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
    for (const [path, body] of [['/api/sync', { window: false }], ['/api/clone', { window: false, force: true }], ['/api/reprotect', { confirm: 'reprotect', window: false }], ['/api/verify', { window: false }], [`/api/pairs/${s.pairs[0].id}/sync`, { window: false }]] as const) {
      const r = await d.api('POST', path, body);
      assert.is(r.status, 409, `${path}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /powered host writes directly.*"window": false.*not started/);
      assert.match(r.body.error.hint, /"window": true.*POST \/api\/host\/shutdown/);
    }
    assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'no job started');
    assert.is(sha(s.drives.B.path), standby, 'the standby is unchanged');
    assert.is((await status(d)).standbyState, 'consistent');
    // Without a window by default (sync.window "auto" on the simulated rig): the simulated OS cannot write under the copy.
    const r = await d.api('POST', '/api/sync', { mode: 'compare' });
    assert.is(r.status, 202, JSON.stringify(r.body));
    await waitFor(async () => ((await d.api('GET', `/api/jobs/${r.body.id}`)).body.progress?.bytesDone > 0 ? true : undefined), 20_000, 'the sync reads');
    const w = await d.api('POST', '/api/sim/host/write', { mib: 1 });
    assert.is(w.status, 409, JSON.stringify(w.body));
    assert.match(w.body.error.message, /being read by/);
    const job = await waitJob(d, r.body.id);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    s = await status(d);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path), 'the standby is the copy of one instant');
    // With the host off, "window": false is what the operator wants: the copy runs.
    await d.api('POST', '/api/host/shutdown', {});
    await waitFor(async () => ((await status(d)).host.power === 'off' ? true : undefined), 10_000, 'host off');
    const off = await d.api('POST', '/api/verify', { window: false });
    assert.is(off.status, 202, JSON.stringify(off.body));
    assert.is((await waitJob(d, off.body.id)).state, 'done');
  } finally {
    await d.stop();
  }
});

test('config sync.window "never": a copy while the host runs is refused; the simulated rig\'s hardware twin would not reach the drive either', async () => {
  const d = await makeDaemon({ sync: { window: 'never' } });
  try {
    await idle(d);
    await waitFor(async () => ((await status(d)).host.power === 'on' ? true : undefined), 10_000, 'host on');
    const r = await d.api('POST', '/api/sync', {});
    assert.is(r.status, 409, JSON.stringify(r.body));
    assert.match(r.body.error.message, /sync\.window is "never"/);
  } finally {
    await d.stop();
  }
});

test('a bad window option is a 400 and starts nothing', async () => {
  const d = await makeDaemon();
  try {
    await idle(d);
    const r = await d.api('POST', '/api/sync', { window: 'yes' });
    assert.is(r.status, 400);
    assert.match(r.body.error.message, /window/);
  } finally {
    await d.stop();
  }
});

test('a copy with no window and the host off keeps it off while it runs: power-ons are refused naming the job, and allowed after', async () => {
  const d = await makeDaemon({ sync: { window: 'never' }, sim: { hostPoweredAtStart: false, bridgeMiBps: 16 } });
  try {
    await idle(d);
    assert.is((await status(d)).host.power, 'off');
    const r = await d.api('POST', '/api/sync', {});
    assert.is(r.status, 202, JSON.stringify(r.body));
    const gate = d.app.bs.gate;
    await waitFor(() => (gate.keptOffBy() ? true : undefined), 10_000, 'the job\'s claim');
    assert.match(gate.keptOffBy()!, new RegExp(`job ${r.body.id} \\(sync on pair system\\)`));
    // The failover machine's power-ons and a window's closing go through here.
    let refused: Error | null = null;
    await d.app.bs.bootSwitch.powerOnHost().catch((e: Error) => (refused = e));
    assert.match(String(refused), new RegExp(`job ${r.body.id}`));
    const sel = await d.api('POST', '/api/bootselect', { bay: 'A', powerOn: true });
    assert.is(sel.status, 409, JSON.stringify(sel.body));
    assert.match(sel.body.error.message, new RegExp(r.body.id));
    assert.is((await status(d)).host.power, 'off');
    assert.is(await d.app.bs.bootSwitch.hostPowered(), false, 'the power LED is dark');
    const job = await waitJob(d, r.body.id, 60_000);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(gate.keptOffBy(), null, 'the claim ends with the job');
    await d.app.bs.bootSwitch.powerOnHost();
    await waitFor(async () => ((await status(d)).host.power === 'on' ? true : undefined), 10_000, 'the host on');
  } finally {
    await d.stop();
  }
});

test('the failover button held while a job works in its window (a restore of files writing the active drive, both drives on the controller): no relay moves until the window closes, the failover is refused naming the job', async () => {
  const d = await makeDaemon({ sim: { bridgeMiBps: 16 } });
  try {
    await idle(d);
    await waitFor(async () => ((await status(d)).standbyState === 'consistent' && (await status(d)).host.power === 'on' ? true : undefined), 30_000, 'a consistent standby, host on');
    const es = openEvents(d.url, d.token);
    await es.ready;
    // A verify reads both drives for seconds at 16 MiB/s: the window stays open that long, as a restore's mount and fsck keep it.
    const r = await d.api('POST', '/api/verify', { window: true });
    assert.is(r.status, 202, JSON.stringify(r.body));
    await waitFor(async () => ((await d.api('GET', `/api/jobs/${r.body.id}`)).body.log.some((l: { message: string }) => /both drives on the controller after/.test(l.message)) ? true : undefined), 30_000, 'the window open');
    const relaysBefore = (await status(d)).relays;
    await d.api('POST', '/api/sim/button', { holdMs: 1500 });
    const refused = await es.wait((e) => e.event === 'alert' && e.data.data.code === 'failover-refused', 15_000);
    assert.match(refused.data.data.message, new RegExp(`job ${r.body.id}`), JSON.stringify(refused.data.data));
    assert.equal((await status(d)).relays, relaysBefore, 'the relays stayed where the window put them');
    const job = await waitJob(d, r.body.id, 60_000);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.ok(job.log.some((l: { message: string }) => /sync window closed/.test(l.message)), JSON.stringify(job.log));
    const s = await status(d);
    assert.is(s.bootBay, 'A', 'no failover ran');
    assert.is(d.app.bs.gate.keptOffBy(), null, 'the window\'s claim ends with it');
    assert.ok(!es.events.some((e) => e.event === 'alert' && e.data.data.code === 'window-not-closed'), 'the window closed');
    assert.equal((d.app.rig as any).board.violations, []);
    es.close();
  } finally {
    await d.stop();
  }
});

test.run();
