/**
 * Every digital I/O driver against the one contract
 * (support/driver-contract.ts). onoff hard-codes /sys/class/gpio, so the GPIO
 * run re-executes this file inside a private mount namespace with a tmpfs
 * over /sys/class holding a fake tree (root and unshare needed).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Mcp23017Driver, Pcf8574Driver, SimBoard, SimI2cBus, SimMcp23017, SimPcf8574, type DriverKind } from '../../src/bootswitch/index.ts';
import { FirmataDriver } from '../../src/bootswitch/firmata.ts';
import { requireEnv } from '../support/require.ts';
import { driverContract, type ContractHardware } from './support/driver-contract.ts';
import { emulatedFirmata } from './support/emulated-firmata.ts';
import { CHIPS, fakeTree, kernelGpio, IN_FAKE_SYSFS, runInFakeSysfs } from './support/fake-sysfs-gpio.ts';

/**
 * One run per driver kind the configuration accepts: keyed by DriverKind, so
 * a new kind does not type-check until it has its run here.
 */
const RUNS: Record<DriverKind, { name: string; hardware: () => Promise<ContractHardware>; freshPeek: boolean | null }> = {
  sim: {
    name: 'simulated board',
    hardware: async () => {
      const board = new SimBoard();
      return {
        open: async () => board,
        outputs: ['K_MUX_A', 'K_PWR_B'],
        input: 'HOST_PWR_LED',
        drive: (level) => board.setInput('HOST_PWR_LED', level),
        disconnect: () => board.drop(),
      };
    },
    freshPeek: null,
  },
  mcp23017: {
    name: 'MCP23017 on the simulated I2C bus',
    hardware: async () => {
      const bus = new SimI2cBus();
      const chip = new SimMcp23017();
      bus.attach(0x20, chip);
      return {
        open: () => Mcp23017Driver.open(bus, 0x20),
        outputs: ['A3', 'B0'],
        input: 'B7',
        drive: (level) => (chip.external = level ? chip.external | 0x8000 : chip.external & ~0x8000),
        disconnect: () => bus.drop(),
      };
    },
    freshPeek: null,
  },
  pcf8574: {
    name: 'PCF8574 on the simulated I2C bus',
    hardware: async () => {
      const bus = new SimI2cBus();
      const chip = new SimPcf8574();
      bus.attach(0x38, chip);
      return {
        open: () => Pcf8574Driver.open(bus, 0x38),
        outputs: [1, 2],
        input: 7,
        drive: (level) => (chip.pulledLow = level ? chip.pulledLow & ~0x80 : chip.pulledLow | 0x80),
        disconnect: () => bus.drop(),
      };
    },
    freshPeek: true, // the port powers up all high
  },
  firmata: {
    name: 'Firmata (johnny-five) on mock-firmata',
    hardware: async () => {
      const fw = emulatedFirmata();
      return {
        open: () => FirmataDriver.open('io', { driver: 'firmata', port: '/dev/ttyACM0', reconnectMs: 60_000 }, { io: async () => fw.connect(), readyTimeoutMs: 2000 }),
        outputs: [7, 8],
        input: 2,
        drive: (level) => fw.drive(2, level),
        disconnect: () => fw.io.emit('close'),
      };
    },
    freshPeek: null,
  },
  gpio: {
    name: 'Linux GPIO (onoff) over a fake sysfs tree',
    // Only inside the private mount namespace, where /sys/class is a tmpfs of our own.
    hardware: async () => {
      const { GpioDriver } = await import('../../src/bootswitch/gpio.ts');
      const { Gpio } = await import('onoff');
      const root = '/sys/class/gpio';
      rmSync(root, { recursive: true, force: true });
      fakeTree(root, CHIPS, [529, 530, 539]); // pinctrl-bcm2711 lines 17, 18, 27
      return {
        open: () => GpioDriver.open({ driver: 'gpio', chip: 'pinctrl-bcm2711' }, kernelGpio(Gpio) as never),
        outputs: [17, 18],
        input: 27,
        drive: (level) => writeFileSync(`${root}/gpio539/value`, level ? '1\n' : '0\n'),
      };
    },
    freshPeek: null,
  },
};

if (IN_FAKE_SYSFS) {
  driverContract(RUNS.gpio.name, RUNS.gpio.hardware, RUNS.gpio);
} else {
  for (const [kind, run] of Object.entries(RUNS)) if (kind !== 'gpio') driverContract(run.name, run.hardware, run);

  test('Driver contract: Linux GPIO over a fake sysfs tree (private mount namespace)', () => {
    if (!requireEnv('the Driver contract on GPIO (fake sysfs)', { tools: ['unshare', 'mount'], root: true })) return;
    const { status, out } = runInFakeSysfs(fileURLToPath(import.meta.url));
    assert.is(status, 0, out);
    assert.match(out, /Passed:\s+8\b/, out);
  });
  test.run();
}
