import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeDaemon, openEvents, waitJob, waitFor, idle, sha, type TestDaemon } from './support/harness.ts';

const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;

test('a failover end to end: roles, relays and the booted bay change in status and events', async () => {
  const d = await makeDaemon();
  try {
    await idle(d);
    await waitFor(async () => (await status(d)).host.lastHeartbeat?.bay === 'A', 10_000, 'host running on A');
    const es = openEvents(d.url, d.token);
    await es.ready;
    const before = await status(d);
    const r = await d.api('POST', '/api/failover', { confirm: 'failover' });
    assert.is(r.status, 202);
    assert.equal(r.body, { from: 'A', to: 'B', accepted: true });
    const again = await d.api('POST', '/api/failover', { confirm: 'failover' });
    assert.is(again.status, 409, 'a running failover refuses a second one');
    const fo = await es.wait((e) => e.event === 'failover');
    assert.is(fo.data.data.from, 'A');
    assert.is(fo.data.data.to, 'B');
    assert.is(fo.data.data.generation, before.generations.B + 1);
    await es.wait((e) => e.event === 'switched' && e.data.data.to === 'B');
    await es.wait((e) => e.event === 'relay' && e.data.data.channel === 'muxB' && e.data.data.on === true);
    await es.wait((e) => e.event === 'host.power' && e.data.data.power === 'off');
    await es.wait((e) => e.event === 'host.heartbeat' && e.data.data.bay === 'B');
    await es.wait((e) => e.event === 'boot' && e.data.data.bay === 'B' && e.data.data.status === 'confirmed');
    const s = await status(d);
    assert.is(s.active, 'B');
    assert.is(s.standby, 'A');
    assert.is(s.bootBay, 'B');
    assert.is(s.relays.muxA, true);
    assert.is(s.relays.muxB, true);
    assert.is(s.host.bootedFrom, 'B');
    assert.is(s.failover.failovers, 1);
    assert.is(s.failover.failed.A, true);
    assert.equal((d.app.rig as any).board.violations, []);
    // Re-protect the old active drive: an ordinary sync the other way, which clears its failed mark.
    await d.api('POST', '/api/sim/host/write', { mib: 2 });
    const rp = await d.api('POST', '/api/reprotect', { confirm: 'reprotect' });
    assert.is(rp.status, 202);
    const job = await waitJob(d, rp.body.id);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(job.options.newDrive, false);
    const s2 = await status(d);
    assert.is(s2.standbyState, 'consistent');
    assert.is(s2.failover.failed.A, false);
    assert.is(sha(s2.drives.A.path), sha(s2.drives.B.path));
    const log = (await d.api('GET', '/api/events/log?types=failover')).body.events;
    assert.is(log.length, 1);
    es.close();
  } finally {
    await d.stop();
  }
});

test('failover refused (409) while the standby is inconsistent, with the way out in the hint', async () => {
  const d = await makeDaemon({ sim: { bridgeMiBps: 48 } });
  try {
    await idle(d);
    await d.api('POST', '/api/sim/host/write', { mib: 8 });
    const r = await d.api('POST', '/api/sync', {});
    // Cancelled once it copies: a job cancelled before it starts leaves nothing to roll back or refuse
    await waitFor(async () => ((await d.api('GET', `/api/jobs/${r.body.id}`)).body.progress?.bytesDone > 0 ? true : undefined), 20_000, 'the sync under way');
    await d.api('POST', `/api/jobs/${r.body.id}/cancel`, { rollback: false });
    const job = await waitJob(d, r.body.id);
    assert.is(job.state, 'cancelled');
    const s = await status(d);
    assert.is(s.standbyState, 'inconsistent');
    assert.ok(s.pendingCopy);
    const fo = await d.api('POST', '/api/failover', { confirm: 'failover' });
    assert.is(fo.status, 409);
    assert.is(fo.body.error.kind, 'refused');
    assert.match(fo.body.error.message, /standby in bay B is inconsistent/);
    assert.match(fo.body.error.hint, /recover/);
    // The button is refused the same way by the state machine, which heard the standby is not consistent.
    const es = openEvents(d.url, d.token, '?types=alert,failover');
    await es.ready;
    await d.api('POST', '/api/sim/button', { holdMs: 1200 });
    const alert = await es.wait((e) => e.event === 'alert' && e.data.data.code === 'failover-refused', 5000);
    assert.match(alert.data.data.message, /no consistent copy/);
    es.close();
    const rec = await d.api('POST', '/api/recover', {});
    const rj = await waitJob(d, rec.body.id);
    assert.is(rj.state, 'done');
    assert.is(rj.result.action, 'rolled-back');
    assert.is((await status(d)).standbyState, 'consistent');
  } finally {
    await d.stop();
  }
});

test('the button held fails over; bootselect is 409 while the host is powered, and nothing waives that', async () => {
  const d = await makeDaemon();
  try {
    await idle(d);
    // Wait for a confirmed boot: a host cut off before confirming gets its boot retried by the state machine.
    await waitFor(async () => (await status(d)).host.lastHeartbeat?.bay === 'A', 5000, 'host up');
    const sel = await d.api('POST', '/api/bootselect', { bay: 'B' });
    assert.is(sel.status, 409);
    assert.match(sel.body.error.message, /host is powered/);
    assert.match(sel.body.error.hint, /shut the host down first/);
    // The former "force" moved the boot drive under the running host (DESIGN rule 4): refused before anything moves.
    const forced = await d.api('POST', '/api/bootselect', { bay: 'B', force: true });
    assert.is(forced.status, 400, JSON.stringify(forced.body));
    assert.match(forced.body.error.message, /force is no longer accepted: the boot selection never changes under a powered host/);
    assert.is((await status(d)).bootBay, 'A');
    assert.is((await status(d)).host.power, 'on');
    assert.equal((d.app.rig as any).board.violations, []);
    await d.api('POST', '/api/sim/host/power', { power: 'off' });
    await waitFor(async () => (await status(d)).host.power === 'off', 5000, 'host off');
    const moved = await d.api('POST', '/api/bootselect', { bay: 'B' });
    assert.is(moved.status, 200, JSON.stringify(moved.body));
    assert.is(moved.body.to, 'B');
    assert.is(moved.body.changed, true);
    let s = await status(d);
    assert.is(s.bootBay, 'B');
    assert.is(s.active, 'A', 'a maintenance selection does not change roles');
    const back = await d.api('POST', '/api/bootselect', { bay: 'A', powerOn: true });
    assert.is(back.status, 200, JSON.stringify(back.body));
    await waitFor(async () => (await status(d)).host.lastHeartbeat?.bay === 'A', 5000, 'host up on A');
    assert.is((await d.api('POST', '/api/bootselect', { bay: 'A' })).status, 409, 'not even to the bay already selected while the host runs');

    const es = openEvents(d.url, d.token, '?types=button,failover');
    await es.ready;
    await d.api('POST', '/api/sim/button', { holdMs: 1200 });
    await es.wait((e) => e.event === 'button' && e.data.data.kind === 'hold', 5000);
    await es.wait((e) => e.event === 'failover', 10_000);
    s = await waitFor(async () => {
      const x = await status(d);
      return x.host.bootedFrom === 'B' ? x : undefined;
    }, 10_000, 'booted from B');
    assert.is(s.active, 'B');
    es.close();
  } finally {
    await d.stop();
  }
});

test('a pulled drive: health alert, failover, re-protect onto a replacement drive', async () => {
  // The hung host ignores ACPI: a short wait before the (at least 4 s) forced power-off.
  const d = await makeDaemon({ bootswitch: { timing: { shutdownTimeoutMs: 300 } } });
  try {
    await idle(d);
    const es = openEvents(d.url, d.token, '?types=alert,drive,health');
    await es.ready;
    const pull = await d.api('POST', '/api/sim/drive/A/pull', {});
    assert.is(pull.status, 200);
    await es.wait((e) => e.event === 'alert' && e.data.data.code === 'drive-missing' && e.data.data.bay === 'A');
    let s = await status(d);
    assert.is(s.drives.A.present, false);
    assert.is(s.health.A, 'missing');
    const sync = await d.api('POST', '/api/sync', {});
    assert.is(sync.status, 409);
    assert.match(sync.body.error.message, /bay A \(the active drive\) holds no drive/);
    const fo = await d.api('POST', '/api/failover', { confirm: 'failover', hardOff: true });
    assert.is(fo.status, 202, JSON.stringify(fo.body));
    s = await waitFor(async () => {
      const x = await status(d);
      return x.host.bootedFrom === 'B' ? x : undefined;
    }, 20_000, 'booted from B');
    assert.is(s.active, 'B');
    const ins = await d.api('POST', '/api/sim/drive/A/insert', { replacement: true });
    assert.is(ins.status, 200);
    s = await status(d);
    assert.is(s.standbyState, 'inconsistent', 'a new drive holds no backup');
    const foNo = await d.api('POST', '/api/failover', { confirm: 'failover' });
    assert.is(foNo.status, 409);
    const rp = await d.api('POST', '/api/reprotect', { confirm: 'reprotect' });
    const job = await waitJob(d, rp.body.id);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(job.options.newDrive, true);
    s = await status(d);
    assert.is(s.standbyState, 'consistent');
    assert.is(s.active, 'B');
    assert.is(s.drives.A.path, ins.body.path);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
    es.close();
  } finally {
    await d.stop();
  }
});

test('unreadable sectors on the active drive: the sync finishes with errors and says where', async () => {
  const d = await makeDaemon();
  try {
    await idle(d);
    await d.api('POST', '/api/sim/host/write', { mib: 2 });
    const bad = await d.api('POST', '/api/sim/drive/A/read-errors', { lbas: [40000, 40001] });
    assert.is(bad.status, 200);
    const beyond = await d.api('POST', '/api/sim/drive/A/read-errors', { lbas: [1e9] });
    assert.is(beyond.status, 400);
    assert.match(beyond.body.error.message, /lbas\[0\] is 1000000000/);
    await waitFor(async () => (await status(d)).health.A === 'warning', 5000, 'pending sectors warning');
    const r = await d.api('POST', '/api/sync', {});
    const job = await waitJob(d, r.body.id);
    assert.is(job.state, 'done');
    assert.is(job.result.result, 'done-with-errors');
    assert.is(job.result.unreadable[0].firstLba, 40000);
    assert.is(job.result.unreadableFiles[0].partition, 2, 'the unreadable sectors are placed in their partition');
    await d.api('POST', '/api/sim/drive/A/read-errors', { lbas: [] });
  } finally {
    await d.stop();
  }
});

test('sim controls come from the simulated rig: the hardware rig adds none to the route table', async () => {
  const { buildRoutes } = await import('../../firmware/controller/api.ts');
  const { HardwareRig } = await import('../../firmware/controller/hardware-rig.ts');
  const d = await makeDaemon();
  try {
    assert.ok(buildRoutes(d.app, { metricsText: async () => '' }).some((r) => r.path === '/api/sim/drive/:bay/pull'));
    const onHardware = Object.create(d.app);
    Object.defineProperty(onHardware, 'rig', { value: new HardwareRig({ ...d.app.config, rig: 'hardware', drives: { A: '/dev/null-a', B: '/dev/null-b' } }) });
    const routes = buildRoutes(onHardware, { metricsText: async () => '' });
    assert.not.ok(routes.some((r) => r.path.startsWith('/api/sim/')));
    assert.ok(routes.some((r) => r.path === '/api/failover'));
  } finally {
    await d.stop();
  }
});

test.run();
