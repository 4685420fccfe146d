import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BusyError, DeviceError, RefusedError } from '../../src/errors.ts';
import { hostPowerDecision, startupRelayDecision, type MovePhase, type StartupRelayAction } from '../../src/bootswitch/boot-switch.ts';
import { patternFor, ISOLATED } from '../../src/bootswitch/relay-pattern.ts';
import { makeRig } from './support/rig.ts';

async function move(rig: Awaited<ReturnType<typeof makeRig>>, to: 'A' | 'B', opts = {}) {
  const p = rig.sys.bootSwitch.moveTo(to, opts);
  let err: unknown;
  p.catch((e) => (err = e));
  for (let i = 0; i < 400 && rig.sys.bootSwitch.moving; i++) await rig.clock.advance(50);
  if (err) throw err;
  return p;
}

test('starts fail-safe on bay A and moves to B with break before make', async () => {
  const rig = await makeRig();
  try {
    assert.is(rig.sys.bootSwitch.bay, 'A');
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    const order: string[] = [];
    rig.sim.on('contact', (r, e) => order.push(`${r}=${e ? 1 : 0}`));
    const report = await move(rig, 'B');
    assert.equal(order, ['K_PWR_A=1', 'K_PWR_B=1', 'K_MUX_A=1', 'K_MUX_B=1', 'K_PWR_A=0', 'K_PWR_B=0']);
    assert.equal(rig.sim.drivesOnHost(), ['B']);
    assert.is(report.changed, true);
    assert.equal(report.steps.map((s) => s.step), ['host confirmed off', 'intent persisted', 'drives powered down', 'old connection broken', 'new connection made', 'drives powered up', 'read back', 'persisted']);
    assert.is(report.waitedMs, 200 + 100 + 100 + 200);
    assert.equal(rig.sim.violations, []);
    // Idempotent: moving again changes nothing.
    order.length = 0;
    const again = await move(rig, 'B');
    assert.is(again.changed, false);
    assert.equal(order, []);
  } finally {
    await rig.close();
  }
});

test('host powered: ACPI shutdown first; stays on → refused and nothing moves', async () => {
  const rig = await makeRig();
  try {
    rig.host.powerOn();
    await rig.clock.advance(3000);
    assert.is(rig.host.state, 'running');
    const r = await move(rig, 'B');
    assert.ok(r.steps[0].step.includes('acpi'));
    assert.is(rig.host.state, 'off');
    assert.equal(rig.sim.drivesOnHost(), ['B']);

    rig.host.powerOn();
    await rig.clock.advance(3000);
    rig.host.ignoresAcpi = true;
    const before = rig.sim.snapshot();
    try {
      await move(rig, 'A');
      assert.unreachable('should refuse');
    } catch (e) {
      assert.instance(e, RefusedError);
    }
    assert.equal(rig.sim.snapshot(), before);
    assert.is(rig.sys.bootSwitch.bay, 'B');
    // With hard off allowed the host is forced off and the move happens.
    await move(rig, 'A', { hardOff: true });
    assert.is(rig.host.state, 'off');
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('the host-power decision of a move never lets a relay move under a lit or unreadable power LED (DESIGN rule 4)', () => {
  const table: [MovePhase, boolean | null, ReturnType<typeof hostPowerDecision>][] = [
    ['before', false, 'proceed'],
    ['before', true, 'shut-down'],
    ['before', null, 'stop'],
    ['during', false, 'proceed'],
    ['during', true, 'stop'],
    ['during', null, 'stop'],
    ['roll-back', false, 'proceed'],
    ['roll-back', true, 'leave'],
    ['roll-back', null, 'leave'],
    ['start-up', false, 'proceed'],
    ['start-up', true, 'leave'],
    ['start-up', null, 'leave'],
  ];
  for (const [phase, powered, want] of table) assert.is(hostPowerDecision(phase, powered), want, `${phase}, LED ${powered}`);
  // No input waives the rule: the function takes none besides the phase and the LED.
  assert.is(hostPowerDecision.length, 2);
});

test('start-up drives no relay unless the host is off: relays unreadable, not as recorded or both on the host are held (DESIGN rule 4)', () => {
  const A = patternFor('A');
  const B = patternFor('B');
  const both = { muxA: false, muxB: true, pwrA: false, pwrB: false };
  const table: [found: typeof A | null, recorded: typeof A, powered: boolean | null, want: StartupRelayAction][] = [
    // Host off: the recorded pattern is applied whatever was found.
    [A, A, false, { action: 'apply' }],
    [B, A, false, { action: 'apply' }],
    [null, B, false, { action: 'apply' }],
    [both, A, false, { action: 'apply' }],
    // Host on or unknown: found as recorded is kept; anything else is held, relays untouched.
    [A, A, true, { action: 'keep' }],
    [B, B, null, { action: 'keep' }],
    [ISOLATED, ISOLATED, true, { action: 'keep' }],
    [null, A, true, { action: 'hold', found: 'unreadable' }],
    [null, A, null, { action: 'hold', found: 'unreadable' }],
    [A, B, true, { action: 'hold', found: 'differs' }],
    [B, A, null, { action: 'hold', found: 'differs' }],
    [ISOLATED, A, true, { action: 'hold', found: 'differs' }],
    [{ ...A, pwrA: true }, A, true, { action: 'hold', found: 'differs' }],
    [both, A, true, { action: 'hold', found: 'both-on-host' }],
    [both, B, null, { action: 'hold', found: 'both-on-host' }],
  ];
  for (const [found, recorded, powered, want] of table) assert.equal(startupRelayDecision(found, recorded, powered), want, `found ${JSON.stringify(found)}, recorded ${JSON.stringify(recorded)}, LED ${powered}`);
});

test('an option of an older caller ("force") does not move the boot drive under a running host', async () => {
  const rig = await makeRig();
  try {
    rig.host.powerOn();
    await rig.clock.advance(3000);
    rig.host.ignoresAcpi = true;
    const before = rig.sim.snapshot();
    try {
      await move(rig, 'B', { force: true });
      assert.unreachable('should refuse');
    } catch (e) {
      assert.instance(e, RefusedError);
    }
    assert.equal(rig.sim.snapshot(), before);
    assert.is(rig.host.state, 'running');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a welded mux relay is caught by the contact read-back and rolled back', async () => {
  const rig = await makeRig();
  try {
    rig.sim.stick('K_MUX_A', false); // bay A welded to the host
    try {
      await move(rig, 'B');
      assert.unreachable('should fail');
    } catch (e) {
      assert.instance(e, DeviceError);
      assert.match((e as Error).message, /muxA/);
    }
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.equal(rig.sim.violations, []);
    assert.is(rig.sys.bootSwitch.bay, 'A');
    assert.ok(rig.sys.bootSwitch.record.fault);
    assert.ok(rig.alerts.some((a) => a.code === 'switch-failed'));
    assert.is(rig.sim.contact('K_PWR_A'), false, 'drive A powered again');
  } finally {
    await rig.close();
  }
});

test('a connect hook (inline mode re-pointing the export) runs in every move while the host is off; its failure rolls the relays back', async () => {
  const rig = await makeRig();
  try {
    const calls: { to: string; hostOn: boolean; onHost: string[] }[] = [];
    rig.sys.bootSwitch.setConnectHook(async (to) => {
      calls.push({ to, hostOn: await rig.sys.bootSwitch.hostPowered(), onHost: rig.sim.drivesOnHost() });
    });
    const report = await move(rig, 'B');
    assert.equal(calls, [{ to: 'B', hostOn: false, onHost: ['B'] }]);
    assert.ok(report.steps.some((s) => s.step === 'drive connected'));
    assert.not.ok((await move(rig, 'B')).changed);
    assert.is(calls.length, 1, 'nothing to connect when the bay is already selected');

    rig.sys.bootSwitch.setConnectHook(async () => {
      throw new DeviceError('qemu-storage-daemon did not come up');
    });
    try {
      await move(rig, 'A');
      assert.unreachable('should fail');
    } catch (e) {
      assert.instance(e, DeviceError);
      assert.match((e as Error).message, /did not come up/);
    }
    assert.equal(rig.sim.drivesOnHost(), ['B'], 'rolled back to the bay that was selected');
    assert.is(rig.sys.bootSwitch.bay, 'B');
    assert.equal(rig.sim.violations, []);
    rig.sys.bootSwitch.setConnectHook(null);
    assert.is((await move(rig, 'A')).changed, true);
  } finally {
    await rig.close();
  }
});

test('a dropped board fails the move with a device error and never connects both', async () => {
  const rig = await makeRig();
  try {
    rig.sim.on('contact', (r) => {
      if (r === 'K_MUX_A') rig.sim.drop();
    });
    try {
      await move(rig, 'B');
      assert.unreachable('should fail');
    } catch (e) {
      assert.instance(e, DeviceError);
    }
    assert.ok(rig.sim.drivesOnHost().length <= 1);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a second move while one runs is busy, not queued', async () => {
  const rig = await makeRig();
  try {
    const first = rig.sys.bootSwitch.moveTo('B');
    try {
      await rig.sys.bootSwitch.moveTo('A');
      assert.unreachable('should be busy');
    } catch (e) {
      assert.instance(e, BusyError);
    }
    for (let i = 0; i < 100 && rig.sys.bootSwitch.moving; i++) await rig.clock.advance(50);
    await first;
    assert.is(rig.sys.bootSwitch.bay, 'B');
  } finally {
    await rig.close();
  }
});

test('every step is reported with its timing', async () => {
  const rig = await makeRig();
  try {
    const steps: { step: string; tookMs: number }[] = [];
    rig.sys.events.on('switch-step', (s) => steps.push(s));
    await move(rig, 'B');
    const down = steps.find((s) => s.step === 'old connection broken')!;
    assert.ok(down.tookMs >= 300, `break step includes the power-off wait and settle: ${down.tookMs}`);
  } finally {
    await rig.close();
  }
});

test.run();
