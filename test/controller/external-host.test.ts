/**
 * The simulated rig with an external host (sim.host "external"): the daemon
 * keeps the board, another process plays the host. Here the test plays it:
 * it follows the ATX relay events and reports the power LED and heartbeats.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { validateDaemonConfig } from '../../firmware/controller/config.ts';
import { BadInputError } from '../../src/errors.ts';
import { makeDaemon, openEvents, idle, waitFor, type TestDaemon } from './support/harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'dpsr-ext-'));
const image = join(dir, 'system.img');
writeFileSync(image, randomBytes(3 * 1024 * 1024));

const msg = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.instance(e, BadInputError);
    return (e as Error).message;
  }
  throw new Error('no error');
};

const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;

test('config: host and systemImage are checked; an external host is not powered at start', () => {
  assert.is(validateDaemonConfig({}).sim.host, 'simulated');
  assert.is(validateDaemonConfig({}).sim.hostPoweredAtStart, true);
  const c = validateDaemonConfig({ sim: { host: 'external', systemImage: image } });
  assert.is(c.sim.hostPoweredAtStart, false);
  assert.is(c.sim.systemImage, image);
  assert.match(msg(() => validateDaemonConfig({ sim: { host: 'qemu' } })), /config: sim.host is "qemu"; allowed: "simulated", "external"/);
  assert.match(msg(() => validateDaemonConfig({ sim: { host: 'external', hostPoweredAtStart: true } })), /sim.hostPoweredAtStart is true; allowed: false or absent with sim.host "external"/);
  assert.match(msg(() => validateDaemonConfig({ sim: { systemImage: 'disk.img' } })), /sim.systemImage is "disk.img"; allowed: an absolute path/);
  assert.match(msg(() => validateDaemonConfig({ sim: { systemImage: join(dir, 'none.img') } })), /sim.systemImage is ".*none.img"; allowed: an existing raw disk image \(ENOENT\)/);
  assert.match(msg(() => validateDaemonConfig({ sim: { systemImage: dir } })), /allowed: a regular file/);
  assert.match(msg(() => validateDaemonConfig({ sim: { systemImage: image, driveSizeMiB: 16, hostx: 1 } })), /sim.hostx is 1; allowed: no such key/);
  const big = join(dir, 'big.img');
  writeFileSync(big, Buffer.alloc(0));
  assert.match(msg(() => validateDaemonConfig({ sim: { systemImage: big } })), /non-zero multiple of 512 bytes \(it has 0\)/);
});

test('external host: the image is bay A, power reports only set the LED, ATX pulses and heartbeats go through the API', async () => {
  const d = await makeDaemon({ sim: { host: 'external', systemImage: image, driveSizeMiB: 16, hostBootMs: 10 } });
  const es = openEvents(d.url, d.token);
  try {
    await es.ready;
    await idle(d);
    let s = await status(d);
    assert.is(s.host.power, 'off', 'nobody powered the external host');
    assert.is(s.host.simState, 'external');
    assert.is(s.standbyState, 'consistent', 'bay B is cloned from the image');
    const a = readFileSync(s.drives.A.path);
    assert.is(a.length, 16 * 1024 * 1024);
    assert.ok(a.subarray(0, 3 * 1024 * 1024).equals(readFileSync(image)), 'bay A starts with the image');
    assert.ok(readFileSync(s.drives.B.path).equals(a), 'bay B is a clone of it');

    // Power-on through the relay: the daemon pulses ATX power; the external host answers with its LED.
    const sel = await d.api('POST', '/api/bootselect', { bay: 'A', powerOn: true });
    assert.is(sel.status, 200);
    await es.wait((e) => e.event === 'relay' && e.data.data.channel === 'atxPower' && e.data.data.on === true);
    await es.wait((e) => e.event === 'relay' && e.data.data.channel === 'atxPower' && e.data.data.on === false);
    await new Promise((r) => setTimeout(r, 300));
    assert.is((await status(d)).host.power, 'off', 'no simulated host answers the pulse');
    const on = await d.api('POST', '/api/sim/host/power', { power: 'on' });
    assert.equal(on.body, { state: 'external', powerLed: true });
    await es.wait((e) => e.event === 'boot' && e.data.data.status === 'pending');
    assert.is((await status(d)).host.lastHeartbeat, null, 'the LED is not a boot: no heartbeat is made up');
    await d.api('POST', '/api/host/heartbeat', { bay: 'A' });
    await es.wait((e) => e.event === 'boot' && e.data.data.status === 'confirmed');

    // Refusals that only make sense with the daemon's own host.
    assert.is((await d.api('POST', '/api/sim/host/crash', {})).status, 409);
    assert.is((await d.api('POST', '/api/sim/host/write', { mib: 1 })).status, 409);
    assert.is((await d.api('POST', '/api/bootselect', { bay: 'B' })).status, 409, 'boot select with the host powered');

    // Shutdown: a short ATX pulse; the host goes dark on its own.
    const seen = es.events.length;
    const off = d.api('POST', '/api/host/shutdown', {});
    await es.wait((e) => es.events.indexOf(e) >= seen && e.event === 'relay' && e.data.data.channel === 'atxPower' && e.data.data.on === false);
    await d.api('POST', '/api/sim/host/power', { power: 'off' });
    const r = await off;
    assert.is(r.status, 200);
    assert.equal(r.body, { how: 'acpi' });
    assert.equal((await d.api('POST', '/api/host/shutdown', {})).body, { how: 'was-off' });
    s = await waitFor(async () => ((await status(d)).host.power === 'off' ? status(d) : undefined), 5000, 'LED off');
    assert.is(s.host.power, 'off');
    assert.is((await d.api('POST', '/api/host/shutdown', { hardOff: 'yes' })).status, 400);
  } finally {
    es.close();
    await d.stop();
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
