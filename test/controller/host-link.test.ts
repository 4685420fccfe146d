/**
 * HostLinkWatch: the relays are brought to the mode at start, or, under a
 * host that runs from the drive they connect, once the host is off.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pino from 'pino';
import { EventBus } from '../../firmware/controller/events.ts';
import { HostLinkWatch } from '../../firmware/controller/host-link.ts';
import { makeRig } from '../bootswitch/support/rig.ts';

test('inline start under a host running from its SATA port: a warning, nothing moves; once the host is off the drives go to the controller and the export is served', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  const bus = new EventBus(null, { replay: 50, logMaxBytes: 0 });
  const alerts: string[] = [];
  bus.subscribe((e) => void (e.type === 'alert' && alerts.push((e.data as { code: string }).code)));
  const linked: string[] = [];
  const watch = new HostLinkWatch(rig.sys.bootSwitch, rig.sys.events, bus, pino({ level: 'silent' }), async (how) => void linked.push(how));
  try {
    rig.host.powerOn();
    await rig.clock.advance(3000);
    assert.is(rig.host.bootedFrom, 'A');
    assert.is(await watch.start(), 'host-on');
    assert.match(watch.waiting ?? '', /runs with a drive on its SATA port/);
    assert.equal(alerts, ['host-link-waiting']);
    assert.equal(rig.sim.drivesOnHost(), ['A'], 'the running host keeps its drive');
    rig.host.forceOff();
    for (let i = 0; i < 200 && linked.length === 0; i++) await rig.clock.advance(50);
    assert.equal(linked, ['moved']);
    assert.is(watch.waiting, null);
    assert.equal(rig.sim.drivesOnHost(), []);
    assert.equal(rig.exported.connects, ['A'], 'the move connected the export');
    rig.host.powerOn();
    await rig.clock.advance(3000);
    assert.is(rig.host.bootedFrom, 'A');
    assert.equal(rig.sim.violations, []);
  } finally {
    watch.stop();
    await rig.close();
  }
});

test('switched start after inline mode: the isolated relays go back to the selected bay with the host off, and the host boots it over SATA', async () => {
  const rig = await makeRig({ hostLink: 'export' });
  const settle = async <T>(p: Promise<T>): Promise<T> => {
    let done = false;
    void p.finally(() => (done = true)).catch(() => {});
    for (let i = 0; i < 400 && !done; i++) await rig.clock.advance(50);
    return p;
  };
  try {
    await settle(rig.sys.bootSwitch.ensureLink());
    await settle(rig.sys.bootSwitch.moveTo('B'));
    assert.equal(rig.sim.drivesOnHost(), []);
    await settle(rig.restart({ hostLink: 'sata' }));
    const bus = new EventBus(null, { replay: 50, logMaxBytes: 0 });
    const watch = new HostLinkWatch(rig.sys.bootSwitch, rig.sys.events, bus, pino({ level: 'silent' }));
    assert.is(await settle(watch.start()), 'moved');
    assert.equal(rig.sim.drivesOnHost(), ['B'], 'the selected bay, not the fail-safe one');
    rig.host.powerOn();
    await rig.clock.advance(3000);
    assert.is(rig.host.bootedFrom, 'B');
    assert.equal(rig.sim.violations, []);
  } finally {
    await rig.close();
  }
});

test.run();
