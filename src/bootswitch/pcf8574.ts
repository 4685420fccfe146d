/**
 * PCF8574 8-bit quasi-bidirectional I2C expander. The chip has one port
 * byte and no separate latch register: a 1 is a weak pull-up (also how an
 * input is read), a 0 a strong low. We keep the byte we last wrote, start it
 * from the port as found (so claiming one line does not release relays the
 * previous process left set), and read back by reading the port.
 */
import { BadInputError, DeviceError } from '../errors.ts';
import type { DigitalInput, DigitalOutput, Driver, I2cBus } from './io.ts';
import { Mutex } from './mutex.ts';

function bitOf(pin: string | number): number {
  const n = typeof pin === 'number' ? pin : Number(String(pin).replace(/^P/, ''));
  if (!Number.isInteger(n) || n < 0 || n > 7) throw new BadInputError(`PCF8574 pin ${JSON.stringify(pin)}: allowed are 0-7 (P0-P7)`);
  return n;
}

export class Pcf8574Driver implements Driver {
  readonly kind = 'pcf8574' as const;
  #lock = new Mutex();
  #shadow: number;
  #outputs = 0;

  private constructor(
    readonly bus: I2cBus,
    readonly address: number,
    found: number,
  ) {
    this.#shadow = found;
  }

  static async open(bus: I2cBus, address: number): Promise<Pcf8574Driver> {
    try {
      return new Pcf8574Driver(bus, address, await bus.receiveByte(address));
    } catch (e) {
      throw new DeviceError(`PCF8574 at 0x${address.toString(16)}: probe: ${(e as Error).message}`, { cause: e, fault: 'transport' });
    }
  }

  async #io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new DeviceError(`PCF8574 at 0x${this.address.toString(16)}: ${what}: ${(e as Error).message}`, { cause: e, fault: 'transport' });
    }
  }

  #set(bit: number, level: boolean): Promise<void> {
    return this.#lock.run(async () => {
      const next = level ? this.#shadow | (1 << bit) : this.#shadow & ~(1 << bit);
      await this.bus.sendByte(this.address, next & 0xff);
      this.#shadow = next & 0xff;
    });
  }

  async #pin(bit: number): Promise<boolean> {
    return ((await this.bus.receiveByte(this.address)) & (1 << bit)) !== 0;
  }

  async peek(pin: string | number): Promise<boolean | null> {
    const bit = bitOf(pin);
    return this.#io('peek', () => this.#pin(bit));
  }

  async output(pin: string | number, initial: boolean): Promise<DigitalOutput> {
    const bit = bitOf(pin);
    this.#outputs |= 1 << bit;
    await this.#io(`claim P${bit}`, () => this.#set(bit, initial));
    return {
      name: `pcf8574@0x${this.address.toString(16)}:P${bit}`,
      write: (level) => this.#io(`write P${bit}`, () => this.#set(bit, level)),
      read: () => this.#io(`read back P${bit}`, () => this.#pin(bit)),
      close: async () => {},
    };
  }

  async input(pin: string | number): Promise<DigitalInput> {
    const bit = bitOf(pin);
    if (this.#outputs & (1 << bit)) throw new BadInputError(`PCF8574 P${bit} is already an output`);
    // An input must be released (written 1) or the chip itself holds it low.
    await this.#io(`claim P${bit}`, () => this.#set(bit, true));
    return {
      name: `pcf8574@0x${this.address.toString(16)}:P${bit}`,
      read: () => this.#io(`read P${bit}`, () => this.#pin(bit)),
      close: async () => {},
    };
  }

  async close(): Promise<void> {}
}
