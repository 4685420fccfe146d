/**
 * The Firmata driver over a real serial stack: serialport 13 on one end of a
 * socat pty pair, a StandardFirmata-like responder on the other. Unlike the
 * mock-firmata tests, every byte goes through firmata-io's parser, johnny-five's
 * connect/ready handshake and the kernel's tty layer, so the production
 * transport (`openSerialFirmata`) is what runs.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FirmataDriver } from '../../src/bootswitch/firmata.ts';
import { BootSwitchEmitter, openBootSwitch, type BootSwitchSystem } from '../../src/bootswitch/index.ts';
import { DeviceError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { FirmataResponder, MODE } from './support/firmata-responder.ts';
import { openPtyPair, type PtyPair } from './support/pty-pair.ts';

const require = createRequire(import.meta.url);

/** Nothing here may hang a test run: the whole file is given 60 s. */
const watchdog = setTimeout(() => {
  console.error('firmata-serial: watchdog expired after 60 s');
  process.exit(1);
}, 60_000);
watchdog.unref();

const enabled = requireEnv('Firmata over a pty pair', { tools: ['socat'] });

/** Everything a test opened, torn down in reverse order even when an assertion failed. */
const cleanups: (() => Promise<unknown>)[] = [];
async function cleanup(): Promise<void> {
  while (cleanups.length) await cleanups.pop()!().catch(() => {});
}
test.after.each(cleanup);

async function rig(): Promise<{ pair: PtyPair; fw: FirmataResponder }> {
  const pair = await openPtyPair();
  cleanups.push(() => pair.close());
  const fw = await FirmataResponder.open(pair.a);
  cleanups.push(() => fw.close());
  return { pair, fw };
}

function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let t: ReturnType<typeof setTimeout>;
  return Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)))]).finally(() => clearTimeout(t));
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Uno pins of the test wiring; relays and inputs active-low as on common relay and opto modules. */
const PINS = {
  powerLed: 2,
  button: 3,
  muxA: 4,
  muxB: 5,
  pwrA: 6,
  pwrB: 7,
  atxPower: 8,
  atxReset: 9,
  ledStatus: 10,
  ledFault: 11,
  ledBayA: 12,
  ledBayB: 13,
} as const;
const RELAY_PINS = [PINS.muxA, PINS.muxB, PINS.pwrA, PINS.pwrB, PINS.atxPower, PINS.atxReset];
const LED_PINS = [PINS.ledStatus, PINS.ledFault, PINS.ledBayA, PINS.ledBayB];
const INPUT_PINS = [PINS.powerLed, PINS.button];

function config(port: string): object {
  const ch = (pin: number, activeLow = false) => ({ board: 'io', pin, ...(activeLow ? { activeLow } : {}) });
  return {
    boards: { io: { driver: 'firmata', port, reconnectMs: 200 } },
    channels: {
      muxA: ch(PINS.muxA, true),
      muxB: ch(PINS.muxB, true),
      pwrA: ch(PINS.pwrA, true),
      pwrB: ch(PINS.pwrB, true),
      atxPower: ch(PINS.atxPower, true),
      atxReset: ch(PINS.atxReset, true),
      powerLed: ch(PINS.powerLed, true),
      button: ch(PINS.button, true),
      ledStatus: ch(PINS.ledStatus),
      ledFault: ch(PINS.ledFault),
      ledBayA: ch(PINS.ledBayA),
      ledBayB: ch(PINS.ledBayB),
    },
    timing: { settleMs: 20, powerOffMs: 20, powerOnMs: 20, debounceMs: 20, pollMs: 5, holdMs: 500, blinkMs: 50 },
  };
}

/** Every configured pin has been written since `from` in the responder's log: outputs got OUTPUT mode, inputs PULLUP and reporting. */
function writtenSince(fw: FirmataResponder, from: number): { missing: string[] } {
  const log = fw.received.slice(from);
  const missing: string[] = [];
  for (const pin of [...RELAY_PINS, ...LED_PINS]) {
    const mode = log.findIndex((r) => r.cmd === 'pin-mode' && r.pin === pin && r.mode === MODE.OUTPUT);
    const level = log.findIndex((r, i) => i > mode && r.cmd === 'port-write' && r.port === pin >> 3);
    if (mode < 0 || level < 0) missing.push(`output ${pin}`);
    else if (fw.pins[pin]!.mode !== MODE.OUTPUT) missing.push(`output ${pin} (mode ${fw.pins[pin]!.mode})`);
  }
  for (const pin of INPUT_PINS) {
    const mode = log.some((r) => r.cmd === 'pin-mode' && r.pin === pin && r.mode === MODE.PULLUP);
    const report = log.some((r) => r.cmd === 'report-digital' && r.port === pin >> 3 && r.on);
    if (!mode || !report || fw.pins[pin]!.mode !== MODE.PULLUP) missing.push(`input ${pin}`);
  }
  return { missing };
}

/** Levels on the responder's relay pins (electrical: active-low, so 1 = de-energised). */
const relayLevels = (fw: FirmataResponder) => Object.fromEntries(RELAY_PINS.map((p) => [p, fw.level(p)]));
const ALL_OFF = Object.fromEntries(RELAY_PINS.map((p) => [p, 1]));

if (enabled) {
  test('driver over a pty: connects, writes outputs, reads them back from the board, sees input changes', async () => {
    const { pair, fw } = await rig();
    const d = await within(8000, 'connect', FirmataDriver.open('io', { driver: 'firmata', port: pair.b }, { readyTimeoutMs: 5000 }));
    cleanups.push(() => d.close());
    assert.ok(d.connected);

    const out = await d.output(7, true);
    await fw.waitFor('pin 7 high', () => fw.pins[7]!.mode === MODE.OUTPUT && fw.level(7) === 1);
    assert.is(await out.read(), true, 'read back through PIN_STATE_QUERY');
    await out.write(false);
    await fw.waitFor('pin 7 low', () => fw.level(7) === 0);
    assert.is(await out.read(), false);

    fw.setExternal(2, 1);
    const inp = await d.input(2);
    await fw.waitFor('pin 2 pull-up and reporting', () => fw.pins[2]!.mode === MODE.PULLUP && fw.received.some((r) => r.cmd === 'report-digital' && r.port === 0 && r.on));
    await delay(50);
    assert.is(await inp.read(), true);
    fw.setExternal(2, 0);
    await within(2000, 'input low seen', (async () => { while ((await inp.read()) !== false) await delay(10); })());
    assert.is(fw.level(7), 0, 'the port report did not disturb the output on the same port');
  });

  test('driver over a pty: the cable is pulled, the board stays silent for a while after it is back, then the driver reconnects and rewrites its pins', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dpsr-firmata-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const links: [string, string] = [join(dir, 'board'), join(dir, 'host')];
    const pair = await openPtyPair({ links });
    cleanups.push(() => pair.close());
    let fw = await FirmataResponder.open(pair.a);
    cleanups.push(() => fw.close());
    const errors: string[] = [];
    const d = await within(8000, 'connect', FirmataDriver.open('io', { driver: 'firmata', port: pair.b, reconnectMs: 200 }, { readyTimeoutMs: 800, onError: (e) => errors.push((e as Error).message) }));
    cleanups.push(() => d.close());
    const out = await d.output(7, true);
    const inp = await d.input(2);

    const lost = new Promise<void>((r) => d.once('disconnected', () => r()));
    await fw.close();
    await pair.close();
    await within(3000, 'loss noticed', lost);
    try {
      await out.write(false);
      assert.unreachable('a write with the board gone must fail');
    } catch (e) {
      assert.instance(e, DeviceError);
    }

    // Back, but the sketch is not answering yet: at least one handshake attempt times out.
    const again = await openPtyPair({ links });
    cleanups.push(() => again.close());
    await delay(2000);
    assert.is(d.connected, false);
    const connected = new Promise<void>((r) => d.once('connected', () => r()));
    fw = await FirmataResponder.open(again.a);
    fw.setExternal(2, 0);
    await within(5000, 'reconnected', connected);
    await fw.waitFor('pins rewritten', () => fw.pins[7]!.mode === MODE.OUTPUT && fw.level(7) === 1 && fw.pins[2]!.mode === MODE.PULLUP);
    await out.write(false);
    await fw.waitFor('write after reconnect', () => fw.level(7) === 0);
    await within(2000, 'input seen after reconnect', (async () => { while ((await inp.read()) !== false) await delay(10); })());
    assert.ok(errors.some((m) => /lost/.test(m)), 'the loss was reported');
  });

  test('system over a pty: every pin written at connect, relay moves arrive, power LED and button seen, all pins rewritten after a board reset', async () => {
    const { pair, fw } = await rig();
    const dir = mkdtempSync(join(tmpdir(), 'dpsr-firmata-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    // Host off: the power-LED opto does not conduct, the line idles high (active-low input reads "off").
    fw.setExternal(PINS.powerLed, 1);
    const sigint = process.listenerCount('SIGINT');
    const five = require('johnny-five') as { Repl: { ref: unknown } };

    const sys: BootSwitchSystem = await within(10_000, 'openBootSwitch', openBootSwitch({ config: config(pair.b), stateDir: dir }));
    cleanups.push(() => sys.close());
    const driver = sys.board.drivers.get('io') as FirmataDriver;
    assert.ok(driver instanceof FirmataDriver && driver.connected);
    assert.is(process.listenerCount('SIGINT'), sigint, 'johnny-five added no SIGINT handler');
    assert.is(five.Repl.ref, null, 'johnny-five started no REPL');

    // Connect: every configured pin written explicitly, relays de-energised (bay A to host, drives powered).
    // Firmata writes are unacknowledged, so the last bytes may still be in the pty when open resolves.
    await fw.waitFor('every pin written at connect', () => writtenSince(fw, 0).missing.length === 0, 2000).catch(() => {
      throw new Error(`not written at connect: ${writtenSince(fw, 0).missing.join(', ')}`);
    });
    assert.equal(relayLevels(fw), ALL_OFF);
    // The LEDs are set once the relays are read back, after the claim: wait for that write too.
    await fw.waitFor('bay A LED lit', () => fw.level(PINS.ledBayA) === 1, 2000);
    assert.is(fw.level(PINS.ledBayB), 0);

    // Relay writes: a move to bay B energises both mux relays (A to its bridge, B to the host).
    const report = await within(10_000, 'moveTo B', sys.bootSwitch.moveTo('B'));
    assert.ok(report);
    assert.equal(relayLevels(fw), { ...ALL_OFF, [PINS.muxA]: 0, [PINS.muxB]: 0 });
    const drivesCut = fw.received.some((r) => r.cmd === 'port-write' && r.port === 0 && ((r.value >> PINS.pwrA) & 1) === 0 && ((r.value >> PINS.pwrB) & 1) === 0);
    assert.ok(drivesCut, 'both drive power relays were energised during the move');

    // Inputs: the host's power LED comes on, then goes off.
    const hostSeen: boolean[] = [];
    sys.events.on('host', (h) => hostSeen.push(h.powered));
    fw.setExternal(PINS.powerLed, 0);
    await within(2000, 'power LED on seen', (async () => { while (!hostSeen.includes(true)) await delay(10); })());
    assert.is(await sys.board.inputs.powerLed!.value(), true);
    fw.setExternal(PINS.powerLed, 1);
    await within(2000, 'power LED off seen', (async () => { while (hostSeen.at(-1) !== false) await delay(10); })());

    // The button: a short press.
    const button: string[] = [];
    sys.events.on('button', (b) => button.push(b.kind));
    fw.setExternal(PINS.button, 0);
    // Let go once the press got through the debounce: a fixed hold can be shorter than it under load.
    await within(2000, 'press seen', (async () => { while (!button.includes('press')) await delay(10); })());
    fw.setExternal(PINS.button, undefined); // released: the pull-up takes the line high again
    await within(2000, 'short press seen', (async () => { while (!button.includes('short')) await delay(10); })());

    // A board reset: the Arduino forgets every pin; the driver writes all of them again.
    const before = relayLevels(fw);
    const ledsBefore = LED_PINS.map((p) => fw.level(p));
    let resets = 0;
    driver.on('reset', () => resets++);
    const mark = fw.received.length;
    await fw.reset();
    assert.equal(fw.pins[PINS.muxA]!.mode, MODE.INPUT, 'the responder really forgot');
    await fw.waitFor('every pin rewritten after reset', () => writtenSince(fw, mark).missing.length === 0, 3000).catch(() => {
      throw new Error(`not rewritten after reset: ${writtenSince(fw, mark).missing.join(', ')}`);
    });
    assert.is(resets, 1);
    assert.equal(relayLevels(fw), before, 'relays back to bay B, not to the power-on default');
    // The status LED may blink on its own (a pending boot); the others must be as before the reset.
    assert.equal(LED_PINS.slice(1).map((p) => fw.level(p)), ledsBefore.slice(1), 'LEDs as before the reset');
    await fw.waitFor('status LED as the driver commands it', () => fw.level(PINS.ledStatus) === (sys.board.outputs.ledStatus!.commanded ? 1 : 0), 1000);

    // Inputs still reported after the reset.
    fw.setExternal(PINS.powerLed, 0);
    await within(2000, 'power LED seen after reset', (async () => { while (hostSeen.at(-1) !== true) await delay(10); })());
    fw.setExternal(PINS.powerLed, 1);
    await within(2000, 'power LED off after reset', (async () => { while (hostSeen.at(-1) !== false) await delay(10); })());

    await sys.close();
    assert.is(driver.connected, false);
  });

  test('system over a pty: inputs read at start-up are the board\'s levels (recovery gesture, host already running)', async () => {
    const { pair, fw } = await rig();
    const dir = mkdtempSync(join(tmpdir(), 'dpsr-firmata-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    fw.setExternal(PINS.powerLed, 0); // host running
    fw.setExternal(PINS.button, 0); // held while the controller starts
    const hostSeen: boolean[] = [];
    const events = new BootSwitchEmitter();
    events.on('host', (h) => hostSeen.push(h.powered));
    // Held through holdMs as the controller counts it (connecting may take longer than holdMs), then let go.
    const heldThrough = new Promise<void>((r) => events.on('button', (b) => void (b.kind === 'startup-hold' && r())));
    const opening = openBootSwitch({ config: config(pair.b), stateDir: dir, events });
    await within(10_000, 'startup hold seen', heldThrough);
    fw.setExternal(PINS.button, undefined);
    const sys = await within(10_000, 'openBootSwitch', opening);
    cleanups.push(() => sys.close());
    assert.is(sys.recoveryGesture, true, 'the button held through start-up was seen');
    assert.is(await sys.board.inputs.powerLed!.value(), true);
    await delay(100);
    assert.equal(hostSeen, [], 'no host power "change": the first reading was already the board\'s');
  });
}

test.run();
