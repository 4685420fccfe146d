import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { checkAgainstWiring, simConfig, validateConfig, wiredPorts, type Wiring } from '../../src/bootswitch/index.ts';
import { BadInputError } from '../../src/errors.ts';

const wiring = JSON.parse(readFileSync(new URL('../../hw/schematics/wiring.json', import.meta.url), 'utf8')) as Wiring;
const example = JSON.parse(readFileSync(new URL('../../hw/schematics/example-config.json', import.meta.url), 'utf8'));

function rejects(raw: unknown, ...parts: string[]) {
  try {
    validateConfig(raw);
  } catch (e) {
    assert.instance(e, BadInputError);
    for (const p of parts) assert.ok((e as Error).message.includes(p), `"${(e as Error).message}" should mention ${p}`);
    return;
  }
  assert.unreachable('config accepted');
}

test('the simulated config and the example hardware config validate; JSON round-trips', () => {
  const c = simConfig();
  assert.equal(validateConfig(JSON.parse(JSON.stringify(c))), c);
  const hw = validateConfig(example);
  checkAgainstWiring(hw, wiring);
  assert.equal(wiredPorts(hw), [['C', 'D']], 'the example wires the first data port');
});

test('the wiring catches a data port relay on the wrong pin', () => {
  const bad = { ...example, channels: { ...example.channels, muxD: { board: 'ports', pin: 'A3', activeLow: true }, pwrD: { board: 'ports', pin: 'A1', activeLow: true } } };
  assert.throws(() => checkAgainstWiring(validateConfig(bad), wiring), /channels\.muxD\.pin is "A3"; the wiring has muxD on pin A1 \(K_MUX_D\)/);
});

test('bad values name the key, the value and what is allowed', () => {
  const c = JSON.parse(JSON.stringify(simConfig()));
  rejects({ ...c, boards: { sim: { driver: 'usb' } } }, 'boards.sim.driver', '"usb"', 'sim, gpio, firmata, mcp23017, pcf8574');
  rejects({ ...c, channels: { ...c.channels, muxA: undefined } }, 'channels.muxA', 'required');
  rejects({ ...c, channels: { ...c.channels, muxB: { board: 'nope', pin: 1 } } }, 'channels.muxB.board', '"nope"');
  rejects({ ...c, channels: { ...c.channels, pwrA: { board: 'sim', pin: 'K_MUX_A' } } }, 'channels.pwrA.pin', 'channels.muxA');
  rejects({ ...c, timing: { holdMs: 100 } }, 'timing.holdMs', '100', 'at least 500');
  rejects({ ...c, timing: { hardOffPulseMs: 1000 } }, 'timing.hardOffPulseMs');
  rejects({ ...c, failover: { bootTries: 0 } }, 'failover.bootTries', '1 to 20');
  rejects({ ...c, extra: 1 }, '(root).extra');
  rejects({ ...example, boards: { ...example.boards, relays: { driver: 'mcp23017', bus: 1, address: 0x40 } } }, 'boards.relays.address', '64');
  rejects({ ...example, channels: { ...example.channels, muxA: { board: 'pi', pin: 1.5 } } }, 'channels.muxA.pin');
});

test('the wiring catches a wrong pin or a missing inversion', () => {
  const bad = JSON.parse(JSON.stringify(example));
  const [a, b] = [bad.channels.muxA.pin, bad.channels.muxB.pin];
  bad.channels.muxA.pin = b;
  bad.channels.muxB.pin = a;
  assert.throws(() => checkAgainstWiring(validateConfig(bad), wiring), /channels\.muxA\.pin/);
  const inv = JSON.parse(JSON.stringify(example));
  inv.channels.button.activeLow = false;
  assert.throws(() => checkAgainstWiring(validateConfig(inv), wiring), /channels\.button\.activeLow/);
});

test.run();
