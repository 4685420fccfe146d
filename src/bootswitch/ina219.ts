/**
 * INA219 current monitor on a drive's power rail: spin-up draws a surge,
 * a running drive a steady current, a dead one almost nothing, a stuck
 * spindle motor stays at surge level. Registers are big-endian; SMBus words
 * arrive byte-swapped, so reads go through swap16.
 */
import { DeviceError } from '../errors.ts';
import type { I2cBus } from './io.ts';

const swap16 = (v: number) => ((v & 0xff) << 8) | ((v >> 8) & 0xff);

export interface RailReading {
  busVolts: number;
  shuntMillivolts: number;
  milliamps: number;
}

export class Ina219 {
  constructor(
    readonly bus: I2cBus,
    readonly address: number,
    readonly shuntOhms: number,
  ) {}

  async init(): Promise<void> {
    // 32 V range, ±320 mV shunt, 12-bit, continuous shunt and bus.
    await this.#io('configure', () => this.bus.writeWord(this.address, 0x00, swap16(0x399f)));
  }

  async read(): Promise<RailReading> {
    return this.#io('read', async () => {
      const shuntRaw = swap16(await this.bus.readWord(this.address, 0x01));
      const busRaw = swap16(await this.bus.readWord(this.address, 0x02));
      const shuntMillivolts = (shuntRaw & 0x8000 ? shuntRaw - 0x10000 : shuntRaw) / 100;
      const busVolts = ((busRaw >> 3) * 4) / 1000;
      return { busVolts, shuntMillivolts, milliamps: shuntMillivolts / this.shuntOhms };
    });
  }

  async #io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new DeviceError(`INA219 at 0x${this.address.toString(16)}: ${what}: ${(e as Error).message}`, { cause: e });
    }
  }
}

/** What a drive rail's current says, from thresholds typical of 2.5"/3.5" SATA drives on +5 V. */
export function classifyRail(r: RailReading, opts = { deadBelowMa: 30, spinUpAboveMa: 900 }): 'off' | 'dead' | 'spinning-up' | 'running' {
  if (r.busVolts < 4.0) return 'off';
  if (r.milliamps < opts.deadBelowMa) return 'dead';
  if (r.milliamps > opts.spinUpAboveMa) return 'spinning-up';
  return 'running';
}
