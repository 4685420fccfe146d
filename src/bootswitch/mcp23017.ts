/**
 * MCP23017 16-bit I2C expander (IOCON.BANK = 0 register map). Outputs are
 * set up latch first, direction second, so the pin comes up at its initial
 * level; read-back reads the OLAT register, the latch the pins drive from.
 */
import { BadInputError, DeviceError } from '../errors.ts';
import type { DigitalInput, DigitalOutput, Driver, I2cBus } from './io.ts';
import { Mutex } from './mutex.ts';

export const MCP23017 = { IODIRA: 0x00, IODIRB: 0x01, GPPUA: 0x0c, GPPUB: 0x0d, GPIOA: 0x12, GPIOB: 0x13, OLATA: 0x14, OLATB: 0x15 } as const;

/** "A0".."B7" or 0..15 (A0 = 0, B0 = 8) → port and bit. */
export function mcpPin(pin: string | number): { port: 0 | 1; bit: number; label: string } {
  let n: number;
  if (typeof pin === 'number') n = pin;
  else if (/^(GP)?[AB][0-7]$/.test(pin)) {
    const p = pin.replace(/^GP/, '');
    n = (p[0] === 'B' ? 8 : 0) + Number(p[1]);
  } else n = Number(pin);
  if (!Number.isInteger(n) || n < 0 || n > 15) throw new BadInputError(`MCP23017 pin ${JSON.stringify(pin)}: allowed are 0-15 or A0-A7, B0-B7`);
  const port = n < 8 ? 0 : 1;
  return { port, bit: n % 8, label: `${port ? 'B' : 'A'}${n % 8}` };
}

export class Mcp23017Driver implements Driver {
  readonly kind = 'mcp23017' as const;
  #lock = new Mutex();

  private constructor(
    readonly bus: I2cBus,
    readonly address: number,
  ) {}

  static async open(bus: I2cBus, address: number): Promise<Mcp23017Driver> {
    const d = new Mcp23017Driver(bus, address);
    // A register read proves the chip answers at this address before anything is claimed.
    await d.#io('probe', () => bus.readByte(address, MCP23017.IODIRA));
    return d;
  }

  async #io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new DeviceError(`MCP23017 at 0x${this.address.toString(16)}: ${what}: ${(e as Error).message}`, { cause: e, fault: 'transport' });
    }
  }

  #update(reg: number, bit: number, on: boolean): Promise<void> {
    return this.#lock.run(async () => {
      const v = await this.bus.readByte(this.address, reg);
      const next = on ? v | (1 << bit) : v & ~(1 << bit);
      if (next !== v) await this.bus.writeByte(this.address, reg, next & 0xff);
    });
  }

  async #bit(reg: number, bit: number): Promise<boolean> {
    return ((await this.bus.readByte(this.address, reg)) & (1 << bit)) !== 0;
  }

  async peek(pin: string | number): Promise<boolean | null> {
    const { port, bit } = mcpPin(pin);
    return this.#io('peek', async () => ((await this.#bit(MCP23017.IODIRA + port, bit)) ? null : this.#bit(MCP23017.OLATA + port, bit)));
  }

  async output(pin: string | number, initial: boolean): Promise<DigitalOutput> {
    const { port, bit, label } = mcpPin(pin);
    const olat = MCP23017.OLATA + port;
    await this.#io(`claim ${label}`, async () => {
      await this.#update(olat, bit, initial);
      await this.#update(MCP23017.IODIRA + port, bit, false);
    });
    return {
      name: `mcp23017@0x${this.address.toString(16)}:${label}`,
      write: (level) => this.#io(`write ${label}`, () => this.#update(olat, bit, level)),
      read: () => this.#io(`read back ${label}`, () => this.#bit(olat, bit)),
      close: async () => {},
    };
  }

  async input(pin: string | number): Promise<DigitalInput> {
    const { port, bit, label } = mcpPin(pin);
    await this.#io(`claim ${label}`, async () => {
      await this.#update(MCP23017.IODIRA + port, bit, true);
      await this.#update(MCP23017.GPPUA + port, bit, true);
    });
    return {
      name: `mcp23017@0x${this.address.toString(16)}:${label}`,
      read: () => this.#io(`read ${label}`, () => this.#bit(MCP23017.GPIOA + port, bit)),
      close: async () => {},
    };
  }

  async close(): Promise<void> {}
}
