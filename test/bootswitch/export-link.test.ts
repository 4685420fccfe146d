/**
 * The boot switch in export mode (inline mode): both drives stay on the
 * controller's bridges, a move only re-points the export (the connect hook)
 * with the host off, and the relays reach the isolated pattern through the
 * interlocked sequence, never under a powered host.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { DeviceError, RefusedError } from '../../src/errors.ts';
import { ISOLATED } from '../../src/bootswitch/index.ts';
import { makeRig, type Rig } from './support/rig.ts';

async function settle<T>(rig: Rig, p: Promise<T>): Promise<T> {
  let err: unknown;
  let done = false;
  p.then(() => (done = true), (e) => ((err = e), (done = true)));
  for (let i = 0; i < 2000 && !done; i++) await rig.clock.advance(50);
  if (!done) throw new Error('did not settle');
  if (err) throw err;
  return p;
}

const switchRelays = (rig: Rig) => ({ muxA: rig.sim.coil('K_MUX_A'), muxB: rig.sim.coil('K_MUX_B'), pwrA: rig.sim.coil('K_PWR_A'), pwrB: rig.sim.coil('K_PWR_B') });

/** Records every mux and drive-power contact that moves. */
function watchContacts(rig: Rig): string[] {
  const moved: string[] = [];
  rig.sim.on('contact', (relay, on) => {
    if (relay.startsWith('K_MUX') || relay.startsWith('K_PWR')) moved.push(`${relay}=${on}`);
  });
  return moved;
}

test('first start in export mode: the relays go to the isolated pattern with the host off, the export serves the bay, the host boots from it', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  try {
    // A fresh board: de-energised relays hand bay A to the host's SATA port.
    assert.equal(rig.sim.drivesOnHost(), ['A']);
    assert.is(await settle(rig, rig.sys.bootSwitch.ensureLink()), 'moved');
    assert.equal(switchRelays(rig), ISOLATED);
    assert.equal(rig.sim.drivesOnHost(), [], 'no drive on the host port');
    assert.equal(rig.exported.connects, ['A']);
    assert.is(rig.sys.bootSwitch.bay, 'A', 'the selection is kept although no mux selects it');
    assert.not.ok(rig.sys.bootSwitch.isolated, 'not a sync window');
    assert.is(await settle(rig, rig.sys.bootSwitch.ensureLink()), 'ready', 'idempotent');
    rig.host.powerOn();
    await rig.clock.advance(3000);
    assert.is(rig.host.state, 'running');
    assert.is(rig.host.bootedFrom, 'A', 'booted from the export');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a host running from its SATA port at an inline start keeps its drive until it is off', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  try {
    rig.host.powerOn();
    await rig.clock.advance(3000);
    assert.is(rig.host.bootedFrom, 'A');
    const before = rig.sim.snapshot();
    assert.is(await settle(rig, rig.sys.bootSwitch.ensureLink()), 'host-on');
    assert.equal(rig.sim.snapshot(), before, 'nothing moved under the running host');
    assert.equal(rig.exported.connects, []);
    rig.host.forceOff();
    await rig.clock.advance(100);
    assert.is(await settle(rig, rig.sys.bootSwitch.ensureLink()), 'moved');
    assert.equal(rig.sim.drivesOnHost(), []);
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('failover in export mode: host off, no mux or power relay moves, the export is re-pointed, the host boots the other drive', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  try {
    await settle(rig, rig.sys.bootSwitch.ensureLink());
    rig.host.powerOn();
    await rig.clock.advance(3000);
    assert.is(rig.host.bootedFrom, 'A');
    const moved = watchContacts(rig);
    const report = await settle(rig, rig.sys.bootSwitch.moveTo('B', { powerOn: true }));
    assert.ok(report.changed);
    assert.ok(report.steps.some((s) => s.step === 'host off (acpi)'), 'the host was shut down first');
    assert.equal(moved, [], 'drives stay on the controller and powered under the export');
    assert.equal(rig.exported.connects, ['A', 'B']);
    assert.is(rig.sys.bootSwitch.bay, 'B');
    assert.equal(rig.sys.bootSwitch.record.relays, ISOLATED);
    await rig.clock.advance(3000);
    assert.is(rig.host.state, 'running');
    assert.is(rig.host.bootedFrom, 'B');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test("the failover machine's failover (button, API, boot policy) goes the same way", async () => {
  const rig = await makeRig({ hostLink: 'export' });
  try {
    await settle(rig, rig.sys.bootSwitch.ensureLink());
    rig.host.powerOn();
    await rig.clock.advance(3000);
    await settle(rig, rig.sys.failover.dispatch({ type: 'consistency', bay: 'B', consistent: true }));
    const moved = watchContacts(rig);
    void rig.sys.failover.dispatch({ type: 'failover-request', source: 'button' });
    for (let i = 0; i < 400 && rig.sys.bootSwitch.bay !== 'B'; i++) await rig.clock.advance(50);
    await rig.clock.advance(5000);
    assert.is(rig.sys.failover.state.active, 'B');
    assert.equal(moved, []);
    assert.is(rig.host.state, 'running');
    assert.is(rig.host.bootedFrom, 'B');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a failed re-point leaves the relays isolated and the selection where it was, with an alert', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  try {
    await settle(rig, rig.sys.bootSwitch.ensureLink());
    rig.exported.connectFails = true;
    try {
      await settle(rig, rig.sys.bootSwitch.moveTo('B'));
      assert.unreachable('the move should fail');
    } catch (e) {
      assert.match((e as Error).message, /export of bay B failed/);
    }
    assert.is(rig.sys.bootSwitch.bay, 'A');
    assert.equal(switchRelays(rig), ISOLATED);
    assert.equal(rig.sim.drivesOnHost(), []);
    assert.ok(rig.alerts.some((a) => a.code === 'switch-failed'));
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('a welded mux contact while isolating: rolled back, nothing on the host beyond what was', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  try {
    rig.sim.stick('K_MUX_A', false);
    try {
      await settle(rig, rig.sys.bootSwitch.ensureLink());
      assert.unreachable('should fail');
    } catch (e) {
      assert.instance(e, DeviceError);
    }
    assert.ok(rig.sim.drivesOnHost().length <= 1);
    assert.equal(rig.exported.connects, [], 'nothing served while a drive may still reach the host');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test('export mode has no sync window', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  try {
    try {
      await settle(rig, rig.sys.bootSwitch.isolate());
      assert.unreachable('should refuse');
    } catch (e) {
      assert.instance(e, RefusedError);
    }
  } finally {
    await rig.close();
  }
});

test('a restart keeps the selection of isolated relays (bay B stays active)', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  try {
    await settle(rig, rig.sys.bootSwitch.ensureLink());
    await settle(rig, rig.sys.bootSwitch.moveTo('B'));
    await settle(rig, rig.restart());
    assert.is(rig.sys.bootSwitch.bay, 'B');
    assert.is(rig.sys.failover.state.active, 'B');
    assert.equal(switchRelays(rig), ISOLATED);
    assert.is(await settle(rig, rig.sys.bootSwitch.ensureLink()), 'ready');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

type Cmd = { t: 'request' } | { t: 'host-on' } | { t: 'host-off' } | { t: 'hang' } | { t: 'move'; bay: 'A' | 'B' } | { t: 'restart' } | { t: 'power-loss' } | { t: 'stick'; relay: 'K_MUX_A' | 'K_MUX_B' } | { t: 'unstick' } | { t: 'fail-connect'; on: boolean } | { t: 'wait'; ms: number };
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.constant({ t: 'request' as const }),
  fc.constant({ t: 'host-on' as const }),
  fc.constant({ t: 'host-off' as const }),
  fc.constant({ t: 'hang' as const }),
  fc.record({ t: fc.constant('move' as const), bay: fc.constantFrom<'A' | 'B'>('A', 'B') }),
  fc.constant({ t: 'restart' as const }),
  fc.constant({ t: 'power-loss' as const }),
  fc.record({ t: fc.constant('stick' as const), relay: fc.constantFrom<'K_MUX_A' | 'K_MUX_B'>('K_MUX_A', 'K_MUX_B') }),
  fc.constant({ t: 'unstick' as const }),
  fc.record({ t: fc.constant('fail-connect' as const), on: fc.boolean() }),
  fc.record({ t: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 20_000 }) }),
);

test('export mode over random sequences: no rule broken, and once isolated no drive reaches the host port until a power loss releases the relays', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(cmd, { minLength: 1, maxLength: 12 }), async (cmds) => {
      const rig = await makeRig({ hostLink: 'export', failover: { bootTries: 2, confirmTimeoutMs: 8000 } });
      // What the controller does at start in inline mode: isolate when the host is off.
      const link = () => settle(rig, rig.sys.bootSwitch.ensureLink()).catch(() => 'failed');
      let isolatedOnce = (await link()) !== 'host-on';
      try {
        for (const c of cmds) {
          switch (c.t) {
            case 'request':
              void rig.sys.failover.dispatch({ type: 'failover-request', source: 'api' });
              break;
            case 'host-on':
              rig.host.powerOn();
              break;
            case 'host-off':
              rig.host.forceOff();
              await rig.clock.advance(10);
              if (!rig.sys.bootSwitch.moving && (await link()) !== 'host-on') isolatedOnce ||= rig.sim.drivesOnHost().length === 0;
              break;
            case 'hang':
              rig.host.hang();
              break;
            case 'move':
              void rig.sys.bootSwitch.moveTo(c.bay).catch(() => {});
              break;
            case 'stick':
              rig.sim.stick(c.relay);
              break;
            case 'unstick':
              if (!rig.host.powered) {
                rig.sim.unstick('K_MUX_A');
                rig.sim.unstick('K_MUX_B');
              }
              break;
            case 'fail-connect':
              rig.exported.connectFails = c.on;
              break;
            case 'power-loss':
            case 'restart':
              for (let i = 0; i < 600 && rig.sys.bootSwitch.moving; i++) await rig.clock.advance(100);
              if (c.t === 'power-loss') {
                rig.sim.powerLoss();
                rig.exported.bay = null; // the export died with the controller
                isolatedOnce = false;
              }
              await settle(rig, rig.restart());
              if (rig.sim.drivesOnHost().length === 0) rig.exported.bay = rig.sys.bootSwitch.bay;
              else if ((await link()) !== 'host-on') isolatedOnce = rig.sim.drivesOnHost().length === 0;
              break;
            case 'wait':
              await rig.clock.advance(c.ms);
              break;
          }
          await rig.clock.advance(10);
          assert.equal(rig.sim.violations, [], 'no relay rule broken');
          if (isolatedOnce && !rig.sim.powerLossMoves.length) assert.equal(rig.sim.drivesOnHost(), [], 'no drive on the host port in export mode');
        }
        for (let i = 0; i < 600 && rig.sys.bootSwitch.moving; i++) await rig.clock.advance(100);
        assert.equal(rig.sim.violations, []);
      } finally {
        rig.sim.releaseButton();
        for (let i = 0; i < 600 && rig.sys.bootSwitch.moving; i++) await rig.clock.advance(100);
        // Closing waits for the failover's actions in flight (a power-on, a
        // boot retry), which run on the manual clock: it is advanced until the
        // close itself ends, not only until no move is under way.
        await settle(rig, rig.close());
      }
    }),
    { numRuns: Number(process.env.DPSR_PROPERTY_RUNS ?? 40) },
  );
});

test.run();
