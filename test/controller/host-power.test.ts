/**
 * The host's power around the controller's own actions: a shutdown the
 * operator asks for is not a failed boot, and a power-on skipped because a
 * job kept the host off is made when that job ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SimRig } from '../../firmware/controller/sim/rig.ts';
import { makeDaemon, idle, waitFor, waitJob, type TestDaemon } from './support/harness.ts';

const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;
const alerts = async (d: TestDaemon) => ((await d.api('GET', '/api/events/log?types=alert&limit=1000')).body.events as { data: { code: string; message: string } }[]).map((e) => e.data);

test("the operator's shutdown (POST /api/host/shutdown) before the host's first heartbeat is not retried as a failed boot", async () => {
  // A slow boot, so the shutdown lands before any heartbeat; the firmware ignores ACPI while booting: a hard off.
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false, hostBootMs: 30_000 }, bootswitch: { timing: { shutdownTimeoutMs: 300 } } });
  try {
    await idle(d);
    assert.is((await d.api('POST', '/api/bootselect', { bay: 'A', powerOn: true })).status, 200);
    await waitFor(async () => (await status(d)).host.power === 'on', 5000, 'host booting');
    const off = await d.api('POST', '/api/host/shutdown', { hardOff: true });
    assert.is(off.status, 200, JSON.stringify(off.body));
    assert.is(off.body.how, 'hard-off');
    await new Promise((r) => setTimeout(r, 3000));
    const s = await status(d);
    assert.is(s.host.power, 'off', 'not powered on again by a boot retry');
    assert.not.ok((await alerts(d)).some((a) => a.code === 'boot-unconfirmed'), 'no failed boot counted');
  } finally {
    await d.stop();
  }
});

test("the host's agent saying it shuts down (POST /api/host/shutting-down) before its first heartbeat: the power-off is not a failed boot", async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false, hostBootMs: 30_000 } });
  try {
    await idle(d);
    assert.is((await d.api('POST', '/api/bootselect', { bay: 'A', powerOn: true })).status, 200);
    await waitFor(async () => (await status(d)).host.power === 'on', 5000, 'host booting');
    // The OS shuts down from its menu: the agent's stop hook reports it, then the power goes.
    assert.is((await d.api('POST', '/api/host/shutting-down', {})).status, 200);
    assert.is((await d.api('POST', '/api/sim/host/power', { power: 'off' })).status, 200);
    await new Promise((r) => setTimeout(r, 3000));
    const s = await status(d);
    assert.is(s.host.power, 'off', 'not powered on again by a boot retry');
    assert.is(s.failover.triesLeft.A, s.failover.triesLeft.B, 'no try spent');
    const codes = (await alerts(d)).map((a) => a.code);
    assert.ok(codes.includes('boot-shut-down'), codes.join(', '));
    assert.not.ok(codes.includes('boot-unconfirmed'), 'no failed boot counted');
  } finally {
    await d.stop();
  }
});

test("a sync window closing while another pair's job keeps the host off: the host is powered on when that job ends (and not before)", async () => {
  const d = await makeDaemon({
    pairs: [{ id: 'system', bays: ['A', 'B'] }, { id: 'data', bays: ['C', 'D'], bridge: 'usb2' }],
    jobs: { parallel: true },
    sim: { bridgeMiBps: 96 },
  });
  const rig = d.app.rig as SimRig;
  const holds: (() => void)[] = [];
  try {
    await d.app.jobs.idle();
    await waitFor(async () => (await status(d)).host.lastHeartbeat !== null, 10_000, 'host up');
    // The data pair's copy in a window: the host (running) is shut down for it.
    const releaseD = rig.holdBridge('D');
    holds.push(releaseD);
    const data = await d.api('POST', '/api/pairs/data/sync', { window: true });
    assert.is(data.status, 202, JSON.stringify(data.body));
    await waitFor(async () => (await status(d)).host.power === 'off', 20_000, 'host shut down for the window');
    // Meanwhile a copy of the system pair with no window: it keeps the host off until it ends.
    const releaseB = rig.holdBridge('B');
    holds.push(releaseB);
    const sys = await d.api('POST', '/api/pairs/system/sync', { window: false });
    assert.is(sys.status, 202, JSON.stringify(sys.body));
    await waitFor(async () => (await d.api('GET', `/api/jobs/${sys.body.id}`)).body.state === 'running', 10_000, 'system sync running');
    await waitFor(() => d.app.bs.gate.keptOffBy(), 10_000, 'the system sync keeping the host off');
    releaseD();
    const dataJob = await waitJob(d, data.body.id);
    assert.is(dataJob.state, 'done', JSON.stringify(dataJob.error));
    assert.ok(dataJob.log.some((l: { message: string }) => /the host stays off: job .* needs it off/.test(l.message)), JSON.stringify(dataJob.log));
    await new Promise((r) => setTimeout(r, 1500));
    assert.is((await status(d)).host.power, 'off', 'off while the system copy runs');
    releaseB();
    assert.is((await waitJob(d, sys.body.id)).state, 'done');
    await waitFor(async () => (await status(d)).host.power === 'on', 10_000, 'host powered on once the job ended');
    const resumed = (await alerts(d)).find((a) => a.code === 'power-on-resumed');
    assert.match(resumed?.message ?? '', /the power-on after the sync window of pair data was skipped while a job kept the host off/);
    assert.equal((rig as any).board.violations, []);
  } finally {
    for (const release of holds) release();
    await d.stop();
  }
});

test.run();
