import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BootSwitchEmitter, Ina219, ManualClock, Mcp23017Driver, Pcf8574Driver, SimI2cBus, SimIna219, SimMcp23017, SimPcf8574, SimSsd1306, Ssd1306,
  classifyRail, openBootSwitch, renderStatus, validateConfig,
} from '../../src/bootswitch/index.ts';
import { DeviceError } from '../../src/errors.ts';

test('MCP23017: output comes up at its initial level, read-back reads OLAT, inputs read GPIO', async () => {
  const bus = new SimI2cBus();
  const chip = new SimMcp23017();
  bus.attach(0x20, chip);
  const d = await Mcp23017Driver.open(bus, 0x20);
  const out = await d.output('A3', true);
  assert.is(chip.pin(3), true);
  const firstWrites = bus.log.filter((l) => l.startsWith('w 0x20'));
  assert.ok(firstWrites[0].includes(' 20 '), `latch (OLATA=0x14=20) written before direction: ${firstWrites.join(' | ')}`);
  await out.write(false);
  assert.is(chip.pin(3), false);
  assert.is(await out.read(), false);
  const b = await d.output(9, false);
  await b.write(true);
  assert.is(chip.pin(9), true);
  assert.is(chip.pin(3), false, 'other pins untouched');
  const inp = await d.input('B7');
  chip.external = 0xffff & ~(1 << 15);
  assert.is(await inp.read(), false);
  assert.is(await d.peek('A3'), false);
  assert.is(await d.peek('B7'), null);
});

test('PCF8574: keeps the port as found, inputs released, read-back through the port', async () => {
  const bus = new SimI2cBus();
  const chip = new SimPcf8574();
  chip.latch = 0b1111_1110; // a previous process left P0 low (an active-low relay energised)
  bus.attach(0x38, chip);
  const d = await Pcf8574Driver.open(bus, 0x38);
  const inp = await d.input(7);
  assert.is(chip.latch & 1, 0, 'claiming an input did not release P0');
  const out = await d.output(1, false);
  assert.is(chip.latch, 0b1111_1100);
  assert.is(await out.read(), false);
  await out.write(true);
  assert.is(await out.read(), true);
  chip.pulledLow = 0x80;
  assert.is(await inp.read(), false);
});

test('a missing or dropped device is a DeviceError naming the address', async () => {
  const bus = new SimI2cBus();
  try {
    await Mcp23017Driver.open(bus, 0x21);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, DeviceError);
    assert.match((e as Error).message, /0x21/);
  }
  bus.attach(0x20, new SimMcp23017());
  const d = await Mcp23017Driver.open(bus, 0x20);
  const o = await d.output(0, false);
  bus.drop();
  try {
    await o.write(true);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, DeviceError);
  }
});

test('SSD1306: status screen reaches display RAM', async () => {
  const bus = new SimI2cBus();
  const oled = new SimSsd1306();
  bus.attach(0x3c, oled);
  const d = new Ssd1306(bus, 0x3c);
  await d.init();
  assert.is(oled.on, true);
  const fb = renderStatus({ activeBay: 'B', lastSync: '2024-05-01 02:00', progress: 42, job: 'sync', alert: 'bay A failed' });
  await d.show(fb);
  assert.equal(Array.from(oled.ram), Array.from(fb.bytes));
  // "A" of ACTIVE starts at column 0 of page 0.
  assert.is(oled.ram[0], 0x7e);
  assert.ok(oled.ascii()[44].includes('#'), 'progress bar drawn on page 5');
});

test('INA219: rail current and classification', async () => {
  const bus = new SimI2cBus();
  const mon = new SimIna219();
  bus.attach(0x40, mon);
  const ina = new Ina219(bus, 0x40, 0.1);
  await ina.init();
  mon.busV = 5.04;
  mon.shuntMv = 45; // 450 mA through 0.1 Ω
  const r = await ina.read();
  assert.ok(Math.abs(r.milliamps - 450) < 1, `${r.milliamps}`);
  assert.ok(Math.abs(r.busVolts - 5.04) < 0.01);
  assert.is(classifyRail(r), 'running');
  mon.shuntMv = 120;
  assert.is(classifyRail(await ina.read()), 'spinning-up');
  mon.shuntMv = 0.5;
  assert.is(classifyRail(await ina.read()), 'dead');
  mon.shuntMv = -5;
  assert.ok((await ina.read()).milliamps < 0, 'negative shunt voltage is signed');
});

test('a whole boot switch on MCP23017 relays over the simulated bus', async () => {
  const bus = new SimI2cBus();
  const chip = new SimMcp23017();
  bus.attach(0x20, chip);
  const clock = new ManualClock();
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-i2c-'));
  const ch = (pin: string, activeLow = true) => ({ board: 'relays', pin, activeLow });
  const config = validateConfig({
    boards: { relays: { driver: 'mcp23017', bus: 1, address: 0x20 } },
    channels: {
      muxA: ch('A0'), muxB: ch('A1'), pwrA: ch('A2'), pwrB: ch('A3'), atxPower: ch('A4'), atxReset: ch('A5'),
      powerLed: ch('B0'), button: ch('B1'),
    },
    timing: { settleMs: 10, powerOffMs: 10, powerOnMs: 10 },
  });
  // Power LED dark (input high), button released (high).
  const sys = await openBootSwitch({ config, stateDir: dir, clock, openI2c: async () => bus, events: new BootSwitchEmitter() });
  try {
    // Active-low relay module: released relays are driven high.
    assert.equal([0, 1, 2, 3].map((n) => chip.pin(n)), [true, true, true, true]);
    const p = sys.bootSwitch.moveTo('B');
    for (let i = 0; i < 50 && sys.bootSwitch.moving; i++) await clock.advance(10);
    await p;
    assert.equal([0, 1, 2, 3].map((n) => chip.pin(n)), [false, false, true, true], 'K_MUX_A and K_MUX_B energised (low)');
  } finally {
    await sys.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
