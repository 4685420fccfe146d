/** The sync window: both drives taken off the host and onto the controller's bridges, and back. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RefusedError, DeviceError, BusyError } from '../../src/errors.ts';
import { makeRig, type Rig } from './support/rig.ts';

async function settle<T>(rig: Rig, p: Promise<T>): Promise<T> {
  let err: unknown;
  let done = false;
  p.then(() => (done = true), (e) => ((err = e), (done = true)));
  for (let i = 0; i < 600 && !done; i++) await rig.clock.advance(50);
  if (err) throw err;
  return p;
}

test('isolate shuts the host down, takes both drives off it, and moveTo ends the window', async () => {
  const rig = await makeRig();
  try {
    rig.host.powerOn();
    await rig.clock.advance(3000);
    assert.is(rig.host.state, 'running');
    const r = await settle(rig, rig.sys.bootSwitch.isolate());
    assert.is(r.changed, true);
    assert.is(r.host, 'acpi');
    assert.is(rig.host.state, 'off');
    assert.equal(rig.sim.drivesOnHost(), []);
    assert.ok(rig.sys.bootSwitch.isolated);
    assert.is(rig.sys.bootSwitch.bay, null);
    // Idempotent.
    const again = await settle(rig, rig.sys.bootSwitch.isolate());
    assert.is(again.changed, false);
    // Back to bay A with the host powered on again.
    await settle(rig, rig.sys.bootSwitch.moveTo('A', { powerOn: true }));
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.not.ok(rig.sys.bootSwitch.isolated);
    await rig.clock.advance(3000);
    assert.is(rig.host.state, 'running');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a host that ignores the shutdown request keeps its drive: isolate is refused and nothing moves', async () => {
  const rig = await makeRig();
  try {
    rig.host.powerOn();
    await rig.clock.advance(3000);
    rig.host.ignoresAcpi = true;
    const before = rig.sim.snapshot();
    try {
      await settle(rig, rig.sys.bootSwitch.isolate());
      assert.unreachable('should refuse');
    } catch (e) {
      assert.instance(e, RefusedError);
    }
    assert.equal(rig.sim.snapshot(), before);
    assert.is(rig.sys.bootSwitch.bay, 'A');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a welded mux contact during isolation is caught and the bay restored', async () => {
  const rig = await makeRig();
  try {
    rig.sim.stick('K_MUX_A', false);
    try {
      await settle(rig, rig.sys.bootSwitch.isolate());
      assert.unreachable('should fail');
    } catch (e) {
      assert.instance(e, DeviceError);
    }
    assert.not.ok(rig.sys.bootSwitch.isolated);
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('one operation at a time: isolating during a move is busy', async () => {
  const rig = await makeRig();
  try {
    const move = rig.sys.bootSwitch.moveTo('B');
    let err: unknown;
    try {
      await rig.sys.bootSwitch.isolate();
    } catch (e) {
      err = e;
    }
    assert.instance(err, BusyError);
    await settle(rig, move);
  } finally {
    await rig.close();
  }
});

test('after a controller restart the isolated state is kept (the daemon decides where to go)', async () => {
  const rig = await makeRig();
  try {
    await settle(rig, rig.sys.bootSwitch.isolate());
    await rig.restart();
    assert.ok(rig.sys.bootSwitch.isolated);
    assert.equal(rig.sim.drivesOnHost(), []);
  } finally {
    await rig.close();
  }
});

test.run();
