import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeRig, type Rig } from './support/rig.ts';

async function until(rig: Rig, cond: () => boolean, maxMs = 60_000, step = 100) {
  for (let t = 0; t < maxMs && !cond(); t += step) await rig.clock.advance(step);
  assert.ok(cond(), 'condition not reached in simulated time');
}

test('hold the button 3 s with the host off: boot moves to the standby and the host powers on', async () => {
  const rig = await makeRig();
  try {
    await rig.sys.failover.dispatch({ type: 'consistency', bay: 'B', consistent: true });
    const buttons: string[] = [];
    rig.sys.events.on('button', (b) => buttons.push(b.kind));
    let blinks = 0;
    rig.sim.on('line', (pin) => pin === 'LED_STATUS' && blinks++);
    rig.sim.holdButton(3500);
    await until(rig, () => rig.sys.bootSwitch.bay === 'B' && rig.host.state === 'running');
    assert.ok(blinks >= 4, `status LED blinked while held (${blinks} changes)`);
    assert.equal(buttons.slice(0, 2), ['press', 'hold']);
    assert.is(rig.sys.failover.state.active, 'B');
    assert.is(rig.host.bootedFrom, 'B');
    await until(rig, () => rig.sys.failover.state.pendingBoot === null);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a short press shows status and switches nothing', async () => {
  const rig = await makeRig();
  try {
    await rig.sys.failover.dispatch({ type: 'consistency', bay: 'B', consistent: true });
    let shown = 0;
    rig.sys.events.on('show-status', () => shown++);
    rig.sim.holdButton(400);
    await rig.clock.advance(5000);
    assert.is(shown, 1);
    assert.is(rig.sys.bootSwitch.bay, 'A');
  } finally {
    await rig.close();
  }
});

test('boots that are never confirmed use up tries, then fail over; both failing halts', async () => {
  const rig = await makeRig({ failover: { bootTries: 2, confirmTimeoutMs: 5000 } });
  try {
    await rig.sys.failover.dispatch({ type: 'consistency', bay: 'B', consistent: true });
    rig.host.bootable.A = false;
    rig.host.bootable.B = false;
    rig.host.powerOn();
    await until(rig, () => rig.sys.failover.state.active === 'B', 120_000);
    assert.ok(rig.alerts.some((a) => a.code === 'failover-started'));
    await until(rig, () => rig.sys.failover.state.halted !== null, 120_000);
    assert.ok(rig.alerts.some((a) => a.code === 'both-bays-failed'));
    const switches = rig.sys.failover.state.failovers;
    await rig.clock.advance(120_000);
    assert.is(rig.sys.failover.state.failovers, switches, 'no further switching');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a confirmed boot keeps the bay', async () => {
  const rig = await makeRig();
  try {
    const boots: string[] = [];
    rig.sys.events.on('boot', (b) => boots.push(`${b.bay}:${b.status}`));
    rig.host.powerOn();
    await rig.clock.advance(20_000);
    assert.equal(boots, ['A:pending', 'A:confirmed']);
    assert.is(rig.sys.failover.state.triesLeft.A, 3);
  } finally {
    await rig.close();
  }
});

test('restart restores the persisted relays; a power loss with the host off is undone', async () => {
  const rig = await makeRig();
  try {
    await rig.sys.failover.dispatch({ type: 'consistency', bay: 'B', consistent: true });
    const p = rig.sys.bootSwitch.moveTo('B');
    await until(rig, () => !rig.sys.bootSwitch.moving);
    await p;
    rig.sim.powerLoss();
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    await rig.restart();
    assert.equal(rig.sim.drivesOnHost(), ['B']);
    assert.is(rig.sys.bootSwitch.bay, 'B');
    assert.is(rig.sim.claims.get('K_MUX_B'), 2, 'each start claims and writes the line again');
  } finally {
    await rig.close();
  }
});

test('a controller power loss under a host running from B drops it to bay A (fail-safe wiring), never both bays', async () => {
  const rig = await makeRig();
  try {
    const p = rig.sys.bootSwitch.moveTo('B');
    await until(rig, () => !rig.sys.bootSwitch.moving);
    await p;
    rig.host.powerOn();
    await rig.clock.advance(3000);
    rig.sim.powerLoss();
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.equal(rig.sim.violations, [], 'not a controller decision, and never both bays');
    assert.equal(rig.sim.powerLossMoves.map((m) => m.detail.split(' ')[0]), ['K_MUX_B', 'K_MUX_A'], 'B leaves the host before A returns');
  } finally {
    await rig.close();
  }
});

test('restart with the host running on other relays adopts them instead of switching under it', async () => {
  const rig = await makeRig();
  try {
    const p = rig.sys.bootSwitch.moveTo('B');
    await until(rig, () => !rig.sys.bootSwitch.moving);
    await p;
    rig.sim.powerLoss(); // relays fall back to bay A...
    rig.host.powerOn(); // ...and someone boots the host from it
    await rig.clock.advance(3000);
    await rig.restart();
    assert.equal(rig.sim.violations, []);
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.is(rig.sys.bootSwitch.bay, 'A');
    assert.is(rig.sys.failover.state.active, 'A');
    assert.ok(rig.alerts.some((a) => a.code === 'relays-adopted'));
  } finally {
    await rig.close();
  }
});

test('holding the button through start-up is the recovery gesture, not a failover', async () => {
  const rig = await makeRig();
  try {
    await rig.sys.failover.dispatch({ type: 'consistency', bay: 'B', consistent: true });
    await rig.sys.failover.dispatch({ type: 'reset' });
    // Mark a halt, then restart with the button held.
    await rig.sys.close();
    rig.sim.pressButton();
    let opened = false;
    const opening = rig.restart().then(() => (opened = true));
    for (let i = 0; i < 100 && !opened; i++) await rig.clock.advance(100);
    await opening;
    rig.sim.releaseButton();
    await rig.clock.advance(1000);
    assert.is(rig.sys.recoveryGesture, true);
    assert.ok(rig.alerts.some((a) => a.code === 'recovery-gesture'));
    assert.is(rig.sys.bootSwitch.bay, 'A');
  } finally {
    await rig.close();
  }
});

test.run();
