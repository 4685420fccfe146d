/** Switched mode: a copy in a sync window shuts the host down, takes both drives off it, and boots it again. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeDaemon, openEvents, waitJob, waitFor, idle, sha, type TestDaemon } from './support/harness.ts';

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

test.run();
