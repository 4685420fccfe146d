/**
 * Firmata through johnny-five: against mock-firmata, given the firmware's
 * behaviour it lacks (support/emulated-firmata.ts).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { FirmataDriver } from '../../src/bootswitch/firmata.ts';
import { DeviceError } from '../../src/errors.ts';
import { emulatedFirmata } from './support/emulated-firmata.ts';

const require = createRequire(import.meta.url);
const MockFirmata = (require('mock-firmata') as { Firmata: new () => any }).Firmata;

function firmware() {
  const fw = emulatedFirmata();
  fw.connect();
  return fw;
}

test('pins are written explicitly at connect and read back through pin-state queries', async () => {
  const fw = firmware();
  const d = await FirmataDriver.open('io', { driver: 'firmata', port: '/dev/null' }, { io: async () => fw.io, readyTimeoutMs: 2000 });
  const out = await d.output(7, true);
  assert.equal(fw.state.get(7), { mode: fw.io.MODES.OUTPUT, value: 1 });
  await out.write(false);
  assert.is(await out.read(), false);
  const inp = await d.input(2);
  fw.drive(2, false);
  assert.is(await inp.read(), false);
  await d.close();
});

test('after a board reset every claimed pin is written again', async () => {
  const fw = firmware();
  const d = await FirmataDriver.open('io', { driver: 'firmata', port: '/dev/null' }, { io: async () => fw.io, readyTimeoutMs: 2000 });
  await d.output(5, true);
  await d.output(6, false);
  let resets = 0;
  d.on('reset', () => resets++);
  fw.reset();
  assert.is(resets, 1);
  assert.equal(fw.state.get(5)?.value, 1);
  assert.equal(fw.state.get(6), { mode: fw.io.MODES.OUTPUT, value: 0 });
  await d.close();
});

test('a lost board makes writes fail with DeviceError; it reconnects', async () => {
  let fw = firmware();
  let opens = 0;
  const d = await FirmataDriver.open('io', { driver: 'firmata', port: '/dev/null', reconnectMs: 100 }, {
    io: async () => {
      opens++;
      if (opens > 1) fw = firmware();
      return fw.io;
    },
    readyTimeoutMs: 2000,
  });
  const out = await d.output(8, true);
  fw.io.emit('close');
  try {
    await out.write(false);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, DeviceError);
  }
  await new Promise<void>((r) => d.once('connected', () => r()));
  assert.is(opens, 2);
  assert.equal(fw.state.get(8)?.value, 1, 'state restored on the new connection');
  await out.write(false);
  assert.equal(fw.state.get(8)?.value, 0);
  await d.close();
});

test('a board that never answers fails with a DeviceError', async () => {
  const io = new MockFirmata();
  try {
    await FirmataDriver.open('io', { driver: 'firmata', port: '/dev/ttyACM9' }, { io: async () => io, readyTimeoutMs: 200 });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, DeviceError);
    assert.match((e as Error).message, /no answer/);
  }
});

test.run();
