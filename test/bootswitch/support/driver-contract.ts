/**
 * The contract of the digital I/O seam (src/bootswitch/io.ts: Driver,
 * DigitalOutput, DigitalInput, peek), written once and run against every
 * driver: the simulated board, MCP23017 and PCF8574 over the simulated I2C
 * bus, Linux GPIO over a fake sysfs tree, Firmata over mock-firmata. A new
 * relay board passes it before it is used.
 *
 * Levels are electrical; inversion and pulses live above the drivers.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Driver } from '../../../src/bootswitch/index.ts';
import { DeviceError } from '../../../src/errors.ts';

/** One piece of hardware (a board, a chip on a bus, a GPIO controller) for one test. */
export interface ContractHardware {
  /** A driver on this hardware; called again, it is a restarted controller on the same, still-powered hardware. */
  open(): Promise<Driver>;
  /** Two output pins and one input pin of this hardware. */
  readonly outputs: readonly [string | number, string | number];
  readonly input: string | number;
  /** Puts a level on the input pin from outside (a button, the host's power LED). */
  drive(level: boolean): void;
  /** The hardware stops answering (USB pulled, bus hung); absent where that cannot happen. */
  disconnect?(): void;
  cleanup?(): Promise<void>;
}

export interface DriverContractOptions {
  /**
   * What `peek` says of a line on hardware that just powered up: null where
   * lines start as inputs, the power-up latch where the chip has one (the
   * PCF8574's port comes up all high).
   */
  freshPeek: boolean | null;
}

export function driverContract(name: string, hardware: () => Promise<ContractHardware>, opts: DriverContractOptions): void {
  const s = suite(`Driver contract: ${name}`);
  let hw: ContractHardware;
  const open: Driver[] = [];
  const driver = async () => {
    const d = await hw.open();
    open.push(d);
    return d;
  };

  s.before.each(async () => {
    hw = await hardware();
  });
  s.after.each(async () => {
    for (const d of open.splice(0)) await d.close().catch(() => {});
    await hw.cleanup?.();
  });

  s('an output comes up at the level it was claimed with', async () => {
    const d = await driver();
    const [p, q] = hw.outputs;
    const a = await d.output(p, true);
    const b = await d.output(q, false);
    assert.is(await a.read(), true);
    assert.is(await b.read(), false);
    assert.ok(a.name.length > 0 && a.name !== b.name, `names ${a.name}, ${b.name}`);
  });

  s('read-back follows every write, and outputs are independent of each other', async () => {
    const d = await driver();
    const [p, q] = hw.outputs;
    const a = await d.output(p, false);
    const b = await d.output(q, false);
    for (const [la, lb] of [[true, false], [true, true], [false, true], [false, false], [true, false]] as const) {
      await a.write(la);
      await b.write(lb);
      assert.is(await a.read(), la, `${a.name} after writing ${la}`);
      assert.is(await b.read(), lb, `${b.name} after writing ${lb}`);
    }
    await a.write(true);
    await a.write(true);
    assert.is(await a.read(), true, 'writing the same level twice keeps it');
  });

  s(`peek on hardware that just powered up says ${opts.freshPeek}`, async () => {
    const d = await driver();
    assert.is(await d.peek(hw.outputs[0]), opts.freshPeek);
  });

  s('peek reports the latch of a claimed output and changes nothing', async () => {
    const d = await driver();
    const [p, q] = hw.outputs;
    const a = await d.output(p, true);
    const b = await d.output(q, false);
    assert.is(await d.peek(p), true);
    assert.is(await d.peek(q), false);
    await a.write(false);
    await b.write(true);
    assert.is(await d.peek(p), false);
    assert.is(await d.peek(q), true);
    assert.is(await a.read(), false, 'peek left the latch alone');
    assert.is(await b.read(), true, 'peek left the latch alone');
  });

  s('a restarted controller peeks the levels the previous one left, then claims them explicitly', async () => {
    const first = await driver();
    const [p, q] = hw.outputs;
    await (await first.output(p, true)).write(true);
    await (await first.output(q, false)).write(false);
    await first.close();
    const second = await driver();
    assert.is(await second.peek(p), true, `${p} as left`);
    assert.is(await second.peek(q), false, `${q} as left`);
    const a = await second.output(p, false);
    assert.is(await a.read(), false, 'the claim writes its initial level, whatever was there');
    assert.is(await second.peek(q), false, 'claiming one line leaves the others as found');
  });

  s('an input reads the level put on it from outside', async () => {
    const d = await driver();
    hw.drive(true);
    const i = await d.input(hw.input);
    assert.is(await i.read(), true);
    hw.drive(false);
    assert.is(await i.read(), false);
    hw.drive(true);
    assert.is(await i.read(), true);
  });

  s('hardware that stops answering: every call is a DeviceError with a transport fault', async () => {
    if (!hw.disconnect) return;
    const d = await driver();
    const a = await d.output(hw.outputs[0], false);
    const i = await d.input(hw.input);
    hw.disconnect();
    for (const [what, call] of [
      ['write', () => a.write(true)],
      ['read-back', () => a.read()],
      ['input read', () => i.read()],
      ['peek', () => d.peek(hw.outputs[1])],
    ] as const) {
      let err: unknown;
      try {
        await call();
      } catch (e) {
        err = e;
      }
      assert.instance(err, DeviceError, `${what} on unreachable hardware`);
      assert.is((err as DeviceError).fault, 'transport', `${what}: ${(err as Error).message}`);
    }
  });

  s('close can be called twice', async () => {
    const d = await driver();
    await d.output(hw.outputs[0], false);
    await d.close();
    await d.close();
  });

  s.run();
}
