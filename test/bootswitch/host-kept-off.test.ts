/**
 * A job that uses the active drive with no window (a restore of files, of a
 * partition or of the whole drive, a sync that found the host off) claims
 * that the host stays off: the failover machine's automatic power-ons (the
 * retry of a boot it did not see confirmed, the power-on after a failover)
 * are skipped with an alert while the claim is held; the power-on after a
 * failover is owed and made when the claim ends (and only then). A
 * shutdown the operator asks the controller for is its own: the boot it
 * cuts short is not retried.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RefusedError } from '../../src/errors.ts';
import { makeRig, type Rig } from './support/rig.ts';

async function until(rig: Rig, cond: () => boolean, maxMs = 60_000, step = 50) {
  for (let t = 0; t < maxMs && !cond(); t += step) await rig.clock.advance(step);
  assert.ok(cond(), 'condition not reached in simulated time');
}

/** Awaits `p` while the manual clock runs (pulses and waits sleep on it). */
async function settle<T>(rig: Rig, p: Promise<T>, maxMs = 60_000): Promise<T> {
  let done = false;
  const q = p.finally(() => { done = true; });
  q.catch(() => {});
  await until(rig, () => done, maxMs, 10);
  return q;
}

/** The error `p` rejects with (fails when it resolves). */
async function rejection(rig: Rig, p: Promise<unknown>): Promise<Error> {
  try {
    await settle(rig, p);
  } catch (e) {
    return e as Error;
  }
  throw new assert.Assertion({ message: 'expected a rejection', operator: 'rejects', generated: false, actual: 'resolved', expects: 'rejected' });
}

/** The host powered on and switched off (its power cut) before its boot was confirmed: the failover machine sees an unconfirmed boot and retries it. */
async function shutDownDuringBoot(rig: Rig): Promise<void> {
  rig.host.powerOn();
  await until(rig, () => rig.sys.failover.state.pendingBoot !== null);
  rig.host.forceOff();
  assert.is(rig.host.powered, false);
}

test('without a claim, a shutdown before the boot is confirmed is retried: the host powers on again', async () => {
  const rig = await makeRig({ hostBootMs: 5000 });
  try {
    await shutDownDuringBoot(rig);
    await until(rig, () => rig.host.powered, 5000);
  } finally {
    await rig.close();
  }
});

test('a job that keeps the host off: the boot retry is not made, nothing powers the host on until it is released', async () => {
  const rig = await makeRig({ hostBootMs: 5000 });
  try {
    await shutDownDuringBoot(rig);
    // Taken as the file restore does: before the failover machine's retry pulses the power button.
    const release = await rig.sys.bootSwitch.keepHostOff('job 7 (restore-files on pair system)');
    await rig.clock.advance(60_000);
    assert.is(rig.host.powered, false, 'the host stayed off while the job ran');
    // Whether the off reached the failover machine before the claim (its retry skipped with an alert) or after (counted as the controller's own off): no power-on.
    const held = rig.alerts.find((a) => a.code === 'retry-boot-held');
    if (held) assert.match(held.message, /job 7 \(restore-files on pair system\) keeps the host off/);
    // Every power-on through the switch is refused, naming the job.
    const refused = await rejection(rig, rig.sys.bootSwitch.powerOnHost());
    assert.instance(refused, RefusedError);
    assert.match(refused.message, /job 7/);
    assert.is(rig.host.powered, false);
    release();
    // No power-on was owed (a boot retry is not): releasing the claim powers nothing on.
    await rig.clock.advance(10_000);
    assert.is(rig.host.powered, false, 'nothing owed, nothing powered on');
    assert.not.ok(rig.alerts.some((a) => a.code === 'power-on-resumed'));
    await settle(rig, rig.sys.bootSwitch.powerOnHost());
    await until(rig, () => rig.host.powered, 5000);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a failover whose power-on a job skipped: the host is powered on when the job ends, with an alert', async () => {
  const rig = await makeRig();
  try {
    await rig.sys.failover.dispatch({ type: 'consistency', bay: 'B', consistent: true });
    // A job on a data port's drives (a job on the boot switch's own drives refuses the failover's move).
    const release = rig.sys.gate.keepOff('job 9 (restore on pair data)', 'data port C/D');
    void rig.sys.failover.dispatch({ type: 'failover-request', source: 'api' });
    await until(rig, () => rig.sys.failover.state.active === 'B' && rig.alerts.some((a) => a.code === 'power-on-held'));
    assert.match(rig.alerts.find((a) => a.code === 'power-on-held')!.message, /power-on skipped: job 9 \(restore on pair data\) keeps the host off; the host is powered on when it ends/);
    await rig.clock.advance(10_000);
    assert.is(rig.host.powered, false, 'off while the job runs');
    assert.is(rig.sys.gate.pendingPowerOn, 'the power-on after the failover');
    release();
    await until(rig, () => rig.host.state === 'running', 10_000);
    assert.is(rig.host.bootedFrom, 'B');
    assert.match(rig.alerts.find((a) => a.code === 'power-on-resumed')?.message ?? '', /host powered on: the power-on after the failover was skipped while a job kept the host off/);
    assert.is(rig.sys.gate.pendingPowerOn, null, 'made once');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('an owed power-on is dropped when the host is powered on meanwhile, and is not made twice', async () => {
  const rig = await makeRig();
  try {
    const first = rig.sys.gate.keepOff('job 10');
    const second = rig.sys.gate.keepOff('job 11');
    rig.sys.gate.deferPowerOn('the power-on after the sync window of pair data');
    first();
    await rig.clock.advance(5000);
    assert.is(rig.host.powered, false, 'job 11 still keeps the host off');
    second();
    await until(rig, () => rig.host.powered, 5000);
    let pulses = 0;
    rig.sim.on('atx', (line, pressed) => line === 'power' && pressed && pulses++);
    const third = rig.sys.gate.keepOff('job 12');
    third();
    await rig.clock.advance(5000);
    assert.is(pulses, 0, 'nothing owed any more');
  } finally {
    await rig.close();
  }
});

test("the operator's shutdown through the controller before the boot is confirmed is not a failed boot: not retried, no try spent", async () => {
  // A slow boot: the firmware ignores the ACPI request, so the operator's shutdown ends as a hard off before the OS is up.
  const rig = await makeRig({ hostBootMs: 30_000, failover: { confirmTimeoutMs: 60_000 } });
  try {
    rig.host.powerOn();
    await until(rig, () => rig.sys.failover.state.pendingBoot !== null);
    const tries = rig.sys.failover.state.triesLeft.A;
    rig.sys.gate.expectOperatorOff("the operator's shutdown");
    assert.is(await settle(rig, rig.sys.bootSwitch.shutdownHost({ hardOff: true })), 'hard-off');
    await until(rig, () => rig.sys.failover.state.pendingBoot === null, 5000);
    await rig.clock.advance(30_000);
    assert.is(rig.host.powered, false, 'not powered on again');
    assert.not.ok(rig.alerts.some((a) => a.code === 'boot-unconfirmed'), JSON.stringify(rig.alerts));
    assert.is(rig.sys.failover.state.triesLeft.A, tries + 1, 'the try the cut-short boot took is given back');
    // The mark is spent: a power cut on the next boot is a failed boot again.
    rig.host.powerOn();
    await until(rig, () => rig.sys.failover.state.pendingBoot !== null);
    rig.host.forceOff();
    await until(rig, () => rig.alerts.some((a) => a.code === 'boot-unconfirmed'), 5000);
    await until(rig, () => rig.host.powered, 5000); // the retry's power-on pulse ends
  } finally {
    await rig.close();
  }
});

test('the claim is refused while the host is on or a power-on pulse is under way', async () => {
  const rig = await makeRig({ hostBootMs: 5000 });
  try {
    const pulse = rig.sys.bootSwitch.powerOnHost();
    assert.match((await rejection(rig, rig.sys.bootSwitch.keepHostOff('job 8'))).message, /being powered on/);
    await settle(rig, pulse);
    await until(rig, () => rig.host.powered, 5000);
    assert.match((await rejection(rig, rig.sys.bootSwitch.keepHostOff('job 8'))).message, /the host is powered: job 8 needs it off/);
    assert.is(rig.sys.gate.keptOffBy(), null, 'a refused claim is not kept');
  } finally {
    await rig.close();
  }
});

test('a job that keeps the host off: no failover moves the relays under it, from the button or the machine; after it, the button works', async () => {
  const rig = await makeRig({ hostBootMs: 5000 });
  try {
    await settle(rig, rig.sys.failover.dispatch({ type: 'consistency', bay: 'B', consistent: true }));
    rig.host.forceOff();
    await rig.clock.advance(2000);
    const before = await rig.sys.bootSwitch.readRelays();
    const release = await settle(rig, rig.sys.bootSwitch.keepHostOff('job 9 (restore-files on pair system)'));
    // The failover button's long press goes straight to the failover machine, past the API's job checks.
    await settle(rig, rig.sys.failover.dispatch({ type: 'failover-request', source: 'button' }));
    await settle(rig, rig.sys.failover.idle());
    assert.equal(await rig.sys.bootSwitch.readRelays(), before, 'no relay moved');
    assert.is(rig.sys.bootSwitch.bay, 'A');
    assert.is(rig.sys.failover.state.active, 'A');
    assert.is(rig.sys.failover.state.switching, null);
    const refused = rig.alerts.find((a) => a.code === 'failover-refused');
    assert.ok(refused, JSON.stringify(rig.alerts));
    assert.match(refused!.message, /job 9 \(restore-files on pair system\) is using the drives of the boot switch with the host off/);
    // A move asked for directly is refused the same way, naming the job.
    const moved = await rejection(rig, rig.sys.bootSwitch.moveTo('B'));
    assert.match(moved.message, /job 9/);
    release();
    await settle(rig, rig.sys.failover.dispatch({ type: 'failover-request', source: 'button' }));
    await until(rig, () => rig.sys.failover.state.active === 'B' && rig.sys.failover.state.switching === null);
    assert.is(rig.sys.bootSwitch.bay, 'B');
    // Once moved, the failover powers the host on from the standby.
    await until(rig, () => rig.host.powered, 10_000);
    await settle(rig, rig.sys.failover.idle());
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test.run();
