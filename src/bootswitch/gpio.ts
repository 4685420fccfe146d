/**
 * Linux GPIO through onoff's sysfs interface. Lines are named by chip label
 * and offset (gpio-chip.ts finds the base). Outputs are created with their
 * level in the same write as the direction ("high"/"low"), so claiming a
 * line never glitches a relay; they are left exported on close, because
 * unexporting turns them into inputs and would release every relay.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Gpio as OnoffGpio } from 'onoff';
import { DeviceError } from '../errors.ts';
import type { BoardConfig } from './config.ts';
import { resolveLine, SYSFS_GPIO } from './gpio-chip.ts';
import type { DigitalInput, DigitalOutput, Driver } from './io.ts';

type GpioCtor = new (n: number, direction: 'in' | 'out' | 'high' | 'low', edge?: 'none', options?: { reconfigureDirection?: boolean }) => OnoffGpio;

export class GpioDriver implements Driver {
  readonly kind = 'gpio' as const;
  #inputs: OnoffGpio[] = [];

  private constructor(
    readonly chip: string,
    readonly root: string,
    private readonly Gpio: GpioCtor,
  ) {}

  static async open(cfg: Extract<BoardConfig, { driver: 'gpio' }>, Gpio?: GpioCtor): Promise<GpioDriver> {
    const root = cfg.sysfsRoot ?? SYSFS_GPIO;
    const ctor = Gpio ?? ((await import('onoff')).Gpio as unknown as GpioCtor);
    resolveLine(cfg.chip, 0, root); // fail at start-up when the chip is missing
    return new GpioDriver(cfg.chip, root, ctor);
  }

  #number(pin: string | number): number {
    return resolveLine(this.chip, Number(pin), this.root);
  }

  #wrap<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw new DeviceError(`GPIO ${this.chip}: ${what}: ${(e as Error).message}`, { cause: e });
    }
  }

  async peek(pin: string | number): Promise<boolean | null> {
    const dir = join(this.root, `gpio${this.#number(pin)}`);
    try {
      if (readFileSync(join(dir, 'direction'), 'utf8').trim() !== 'out') return null;
      return readFileSync(join(dir, 'value'), 'utf8').trim() === '1';
    } catch {
      return null; // not exported: the line is in its reset state, which we cannot read as a latch
    }
  }

  async output(pin: string | number, initial: boolean): Promise<DigitalOutput> {
    const n = this.#number(pin);
    const gpio = this.#wrap(`claim line ${pin} (gpio${n})`, () => new this.Gpio(n, initial ? 'high' : 'low'));
    const name = `${this.chip}:${pin}`;
    return {
      name,
      write: async (level) => this.#wrap(`write ${name}`, () => gpio.writeSync(level ? 1 : 0)),
      read: async () => this.#wrap(`read ${name}`, () => gpio.readSync() === 1),
      close: async () => {},
    };
  }

  async input(pin: string | number): Promise<DigitalInput> {
    const n = this.#number(pin);
    const gpio = this.#wrap(`claim line ${pin} (gpio${n})`, () => new this.Gpio(n, 'in', 'none'));
    this.#inputs.push(gpio);
    const name = `${this.chip}:${pin}`;
    return {
      name,
      read: async () => this.#wrap(`read ${name}`, () => gpio.readSync() === 1),
      close: async () => {
        gpio.unexport();
      },
    };
  }

  async close(): Promise<void> {
    for (const g of this.#inputs.splice(0)) {
      try {
        g.unexport();
      } catch {
        /* already gone */
      }
    }
  }
}
