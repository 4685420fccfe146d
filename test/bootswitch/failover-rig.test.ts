import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { RefusedError } from '../../src/errors.ts';
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

async function refused(p: Promise<unknown>, re: RegExp) {
  try {
    await p;
  } catch (e) {
    assert.instance(e, RefusedError);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable('expected a refusal');
}

/** Every switch of the host (boot and data ports) knows its relays again. */
const allKnown = (rig: Rig) => rig.sys.bootSwitch.unknown === null && rig.sys.ports.every((p) => p.sw.unknown === null);

/** The relay contacts in the order they moved, from now on. */
function contactOrder(rig: Rig): string[] {
  const order: string[] = [];
  rig.sim.on('contact', (r, e) => order.push(`${r}=${e ? 1 : 0}`));
  return order;
}

test('restart with the host running on relays other than recorded drives none of them: state unknown, moves refused, the record applied once the host is off', async () => {
  const rig = await makeRig();
  try {
    const p = rig.sys.bootSwitch.moveTo('B');
    await until(rig, () => !rig.sys.bootSwitch.moving);
    await p;
    rig.sim.powerLoss(); // relays fall back to bay A...
    rig.host.powerOn(); // ...and someone boots the host from it
    await rig.clock.advance(3000);
    const before = rig.sim.snapshot();
    const claims = rig.sim.claims.get('K_MUX_A');
    await rig.restart();
    assert.equal(rig.sim.snapshot(), before, 'no relay moved');
    assert.equal(rig.sim.violations, []);
    assert.is(rig.sim.claims.get('K_MUX_A'), claims! + 1, 'claimed at the level found');
    const sw = rig.sys.bootSwitch;
    assert.match(sw.unknown ?? '', /host is powered and relays \{"muxA":false,"muxB":false,"pwrA":false,"pwrB":false\} differ from the record; recorded \{"muxA":true,"muxB":true,"pwrA":false,"pwrB":false\} \(bay B\)/);
    const alert = rig.alerts.find((a) => a.code === 'relays-unknown');
    assert.is(alert?.level, 'critical');
    assert.match(alert!.message, /Shut the host down/);
    await refused(sw.moveTo('A'), /unknown state/);
    await refused(sw.isolate(), /unknown state/);
    await refused(sw.keepHostOff('a restore'), /unknown state/);
    assert.equal(rig.sim.snapshot(), before);
    // Shut down at the host: the recorded bay B is applied, break before make, and read back.
    const order = contactOrder(rig);
    rig.host.forceOff();
    await until(rig, () => allKnown(rig));
    assert.equal(order, ['K_PWR_A=1', 'K_PWR_B=1', 'K_MUX_A=1', 'K_MUX_B=1', 'K_PWR_A=0', 'K_PWR_B=0']);
    assert.equal(rig.sim.drivesOnHost(), ['B']);
    assert.is(sw.bay, 'B');
    assert.ok(rig.alerts.some((a) => a.code === 'relays-applied'));
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('restart with the host running and relay latches that cannot be read back claims none of them until the host is off', async () => {
  const rig = await makeRig();
  try {
    rig.host.powerOn();
    await rig.clock.advance(3000);
    rig.sim.powerLoss({ latchesLost: true });
    const claims = rig.sim.claims.get('K_MUX_A');
    await rig.restart();
    assert.is(rig.sim.claims.get('K_MUX_A'), claims, 'an unreadable line is not claimed (claiming writes it)');
    assert.match(rig.sys.bootSwitch.unknown ?? '', /relay latches muxA, muxB, pwrA, pwrB cannot be read back/);
    assert.ok(rig.alerts.some((a) => a.code === 'relays-unknown' && a.level === 'critical'));
    await refused(rig.sys.bootSwitch.moveTo('B'), /unknown state/);
    rig.host.forceOff();
    await until(rig, () => allKnown(rig));
    assert.is(rig.sim.claims.get('K_MUX_A'), claims! + 1);
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.equal(rig.sim.violations, []);
    // Known again: moves work.
    const p = rig.sys.bootSwitch.moveTo('B');
    await until(rig, () => !rig.sys.bootSwitch.moving);
    await p;
    assert.equal(rig.sim.drivesOnHost(), ['B']);
  } finally {
    await rig.close();
  }
});

test('with the host off, a switch whose recorded pattern does not apply (a welded contact) keeps no other switch unknown, and is tried again until it applies', async () => {
  const rig = await makeRig();
  try {
    rig.host.powerOn();
    await until(rig, () => rig.host.state === 'running' && rig.sys.failover.state.pendingBoot === null);
    rig.sim.powerLoss({ latchesLost: true });
    await rig.restart();
    assert.ok(rig.sys.bootSwitch.unknown !== null && rig.sys.ports.every((p) => p.sw.unknown !== null));
    rig.host.forceOff();
    // Bay A's mux fails to make (its drive stays off the host): the boot switch's pattern cannot be read back.
    rig.sim.stick('K_MUX_A', true);
    await until(rig, () => rig.sys.ports.every((p) => p.sw.unknown === null));
    assert.ok(rig.sys.bootSwitch.unknown !== null, 'the boot switch is still unknown');
    assert.ok(rig.alerts.some((a) => a.code === 'relays-not-applied' && /^boot switch: /.test(a.message)));
    assert.is(rig.host.powered, false);
    // Nor does the operator power the host onto relays in an unknown state.
    await refused(rig.sys.bootSwitch.powerOnHost(), /not powered on: the relay state of boot switch is unknown/);
    await refused(rig.sys.bootSwitch.resetHost(), /not reset: the relay state of boot switch is unknown/);
    assert.is(rig.host.powered, false);
    // The relay is freed with the host still off: the next attempt applies the record.
    rig.sim.unstick('K_MUX_A');
    await until(rig, () => allKnown(rig), 30_000);
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.equal(rig.sim.violations, []);
    const on = rig.sys.bootSwitch.powerOnHost();
    await until(rig, () => rig.host.powered);
    await on;
  } finally {
    await rig.close();
  }
});

test('a controller closed while it applies a recorded pattern drives no relay after closing', async () => {
  const rig = await makeRig();
  try {
    rig.host.powerOn();
    await rig.clock.advance(3000);
    rig.sim.powerLoss({ latchesLost: true });
    await rig.restart();
    rig.host.forceOff();
    await until(rig, () => rig.sim.coil('K_PWR_A'), 5000, 10); // the apply has begun: bay A's drive powered down
    const old = rig.sys;
    const order = contactOrder(rig);
    await old.close();
    await rig.clock.advance(10_000);
    assert.equal(order, [], 'no relay moved after close');
    assert.not.ok(rig.alerts.some((a) => a.code === 'relays-not-applied'), 'a stop at close is not a failure');
    await rig.restart();
    // The host is off: the new start writes the record, break before make.
    assert.is(rig.sys.bootSwitch.unknown, null);
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a controller that lost power drives nothing: a boot retry it still had in flight presses no power button', async () => {
  const rig = await makeRig();
  try {
    const old = rig.sys;
    rig.sim.powerLoss({ latchesLost: true });
    const pressed = await old.bootSwitch.powerOnHost().then(() => 'pressed', (e: Error) => e.message);
    assert.match(pressed, /lost power/);
    await rig.clock.advance(1000);
    assert.not.ok(rig.host.powered, 'the dead controller did not power the host on');
    await rig.restart();
    // The host was off at the new start: the record is applied and known.
    assert.is(rig.sys.bootSwitch.unknown, null);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

/** The ATX lines the controller pressed (power, reset), from now on. */
function atxPresses(rig: Rig): string[] {
  const presses: string[] = [];
  rig.sim.on('atx', (line, pressed) => pressed && presses.push(line));
  return presses;
}

/** The host booting (its boot not confirmed yet) when the controller loses power, latches and all: the restart finds the relays unreadable under a powered host. */
async function unknownUnderBootingHost(rig: Rig): Promise<void> {
  rig.host.powerOn();
  await until(rig, () => rig.sys.failover.state.pendingBoot !== null, 5000, 10);
  rig.sim.powerLoss({ latchesLost: true });
  await rig.restart();
  assert.ok(rig.sys.bootSwitch.unknown !== null);
  assert.ok(rig.sys.failover.state.pendingBoot !== null, 'the boot is still awaited');
}

test('a boot not confirmed while the relays are unknown is not retried: no reset of the running host onto them, a critical alert says why', async () => {
  const rig = await makeRig({ hostBootMs: 60_000, failover: { confirmTimeoutMs: 5000 } });
  try {
    await unknownUnderBootingHost(rig);
    const presses = atxPresses(rig);
    await until(rig, () => rig.alerts.some((a) => a.code === 'retry-boot-relays-unknown'), 30_000);
    const alert = rig.alerts.find((a) => a.code === 'retry-boot-relays-unknown')!;
    assert.is(alert.level, 'critical');
    assert.match(alert.message, /^retry-boot refused: the relays of the boot switch \(the host is powered and relay latches muxA, muxB, pwrA, pwrB cannot be read back; .*\) are in an unknown state, so the host is neither powered on nor reset onto them/);
    assert.equal(presses, [], 'no reset, no power button');
    assert.ok(rig.sys.bootSwitch.unknown !== null);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a host off while a switch stays unknown (a welded contact) is not powered on by a boot retry; once the record applies, retries work again', async () => {
  const rig = await makeRig({ hostBootMs: 60_000, failover: { bootTries: 3, confirmTimeoutMs: 120_000 } });
  try {
    await unknownUnderBootingHost(rig);
    const presses = atxPresses(rig);
    rig.host.forceOff();
    // Bay A's mux fails to make: the recorded pattern does not read back with the host off.
    rig.sim.stick('K_MUX_A', true);
    await until(rig, () => rig.alerts.some((a) => a.code === 'retry-boot-relays-unknown'), 30_000);
    assert.ok(rig.alerts.some((a) => a.code === 'relays-not-applied'));
    await rig.clock.advance(30_000);
    assert.equal(presses, [], 'the power button was not pressed');
    assert.is(rig.host.powered, false, 'the host stays off onto unknown relays');
    // Freed with the host off: the record applies; a boot that now fails is retried as before.
    rig.sim.unstick('K_MUX_A');
    await until(rig, () => allKnown(rig), 30_000);
    rig.host.powerOn();
    await until(rig, () => rig.sys.failover.state.pendingBoot !== null, 5000, 10);
    rig.host.forceOff();
    await until(rig, () => rig.host.powered, 10_000);
    assert.equal(presses, ['power']);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('restart with the host running on latches that connect both drives leaves them: no mux moves under the host', async () => {
  const rig = await makeRig();
  try {
    // A previous process (or a fault) left K_MUX_B energised beside a released K_MUX_A (with the host off: the sim logs it, cleared here).
    await rig.sim.output('K_MUX_B', true);
    rig.sim.violations.length = 0;
    rig.host.powerOn();
    await rig.clock.advance(3000);
    const before = rig.sim.snapshot();
    await rig.restart();
    assert.equal(rig.sim.snapshot(), before, 'no relay moved under the running host');
    assert.equal(rig.sim.violations, []);
    assert.match(rig.sys.bootSwitch.unknown ?? '', /connect both drives to the host/);
    assert.ok(rig.alerts.some((a) => a.code === 'relays-unknown' && /recorded \{"muxA":false,"muxB":false,"pwrA":false,"pwrB":false\} \(bay A\)/.test(a.message)));
    rig.host.forceOff();
    await until(rig, () => rig.sys.bootSwitch.unknown === null);
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    // The host was forced off before its boot was confirmed: the failover machine boots it again.
    await until(rig, () => rig.sys.failover.state.pendingBoot === null && rig.host.state === 'running');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('restart with the host off applies the recorded pattern break before make: bay B found, bay A recorded', async () => {
  const rig = await makeRig();
  try {
    const p = rig.sys.bootSwitch.moveTo('B');
    await until(rig, () => !rig.sys.bootSwitch.moving);
    await p;
    // The record says bay A (as a fresh state directory does); the latches hold bay B.
    rmSync(join(rig.dir, 'switch.json'), { force: true });
    rmSync(join(rig.dir, 'switch.json.bak'), { force: true });
    const order = contactOrder(rig);
    await rig.restart();
    assert.equal(rig.sim.violations, [], 'never both drives on the host');
    assert.equal(order.slice(0, 2), ['K_MUX_B=0', 'K_MUX_A=0'], 'B leaves the host before A is connected');
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.is(rig.sys.bootSwitch.unknown, null);
  } finally {
    await rig.close();
  }
});

test('a shutdown made at the host before its first heartbeat is not a failed boot; a power cut then still is', async () => {
  // The agent's first heartbeat comes 5 s after the OS is up (booted 2 s after power-on).
  const rig = await makeRig({ hostFirstHeartbeatMs: 5000 });
  try {
    const boots: string[] = [];
    rig.sys.events.on('boot', (b) => boots.push(`${b.bay}:${b.status}`));
    rig.host.powerOn();
    await until(rig, () => rig.host.state === 'running');
    rig.host.shutDownFromOs(); // the OS menu: the agent's stop hook sends its notice
    await until(rig, () => rig.host.state === 'off');
    await rig.clock.advance(15_000);
    assert.is(rig.host.state, 'off', 'not booted again: nothing failed');
    assert.equal(boots, ['A:pending']);
    assert.is(rig.sys.failover.state.triesLeft.A, 3, 'the try is given back');
    assert.is(rig.sys.failover.state.pendingBoot, null);
    assert.ok(rig.alerts.some((a) => a.code === 'boot-shut-down'));
    assert.not.ok(rig.alerts.some((a) => a.code === 'boot-unconfirmed'));
    // A power cut sends no notice: the same early power-off is a failed boot, retried.
    rig.host.powerOn();
    await until(rig, () => rig.host.state === 'running');
    rig.host.forceOff();
    await until(rig, () => rig.alerts.some((a) => a.code === 'boot-unconfirmed'));
    assert.equal(boots.slice(1, 3), ['A:pending', 'A:unconfirmed']);
    await until(rig, () => rig.sys.failover.state.pendingBoot === null && rig.host.state === 'running' && boots.includes('A:confirmed'));
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
