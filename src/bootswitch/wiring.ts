/**
 * The wiring as data (hw/schematics/wiring.json): which pin of which board
 * carries which net. A configuration is checked against it so a config that
 * drives the wrong pin, or forgets an inversion the hardware has, is refused
 * before it touches a relay.
 */
import { BadInputError } from '../errors.ts';
import type { BootSwitchConfig } from './config.ts';
import type { DriverKind } from './io.ts';

export interface WiringNet {
  /** The config channel this net is driven or read by. */
  channel: string;
  kind: 'relay' | 'input' | 'led' | 'sense';
  activeLow: boolean;
  description: string;
}

export interface WiringBoard {
  driver: Exclude<DriverKind, 'sim'>;
  part: string;
  chip?: string;
  bus?: number;
  address?: number;
  /** Pin (as the config names it) → net name. */
  pins: Record<string, string>;
}

export interface Wiring {
  title: string;
  revision: string;
  boards: Record<string, WiringBoard>;
  nets: Record<string, WiringNet>;
  i2c?: { bus: number; devices: { part: string; address: number; role: string; bay?: 'A' | 'B' }[] };
}

function bad(key: string, value: unknown, allowed: string): never {
  throw new BadInputError(`bootswitch config does not match the wiring: ${key} is ${JSON.stringify(value)}; the wiring has ${allowed}`, {
    hint: 'fix the configuration, or update hw/schematics/wiring.json if the hardware really changed',
  });
}

export function checkAgainstWiring(config: BootSwitchConfig, wiring: Wiring): void {
  for (const [id, b] of Object.entries(config.boards)) {
    if (b.driver === 'sim') continue;
    const w = wiring.boards[id];
    if (!w) bad(`boards.${id}`, id, `boards ${Object.keys(wiring.boards).join(', ')}`);
    if (w.driver !== b.driver) bad(`boards.${id}.driver`, b.driver, w.driver);
    if (b.driver === 'gpio' && w.chip !== undefined && b.chip !== w.chip) bad(`boards.${id}.chip`, b.chip, w.chip);
    if ((b.driver === 'mcp23017' || b.driver === 'pcf8574') && w.address !== undefined && b.address !== w.address) {
      bad(`boards.${id}.address`, b.address, `0x${w.address.toString(16)}`);
    }
  }
  for (const [name, ref] of Object.entries(config.channels)) {
    if (!ref || config.boards[ref.board].driver === 'sim') continue;
    const w = wiring.boards[ref.board];
    const net = w.pins[String(ref.pin)];
    const expected = Object.entries(w.pins).find(([, n]) => wiring.nets[n]?.channel === name);
    const where = expected ? `${name} on pin ${expected[0]} (${expected[1]})` : `no pin for ${name} on board ${ref.board}`;
    if (!net || wiring.nets[net]?.channel !== name) bad(`channels.${name}.pin`, ref.pin, where);
    const activeLow = wiring.nets[net].activeLow;
    if ((ref.activeLow === true) !== activeLow) bad(`channels.${name}.activeLow`, ref.activeLow === true, `${net} ${activeLow ? 'active-low' : 'active-high'}`);
  }
  if (config.i2c && wiring.i2c) {
    if (config.i2c.bus !== wiring.i2c.bus) bad('i2c.bus', config.i2c.bus, String(wiring.i2c.bus));
    const has = (part: string, address: number) => wiring.i2c!.devices.some((d) => d.part === part && d.address === address);
    if (config.i2c.oled && !has('SSD1306', config.i2c.oled.address)) bad('i2c.oled.address', config.i2c.oled.address, 'no SSD1306 there');
    for (const [i, m] of (config.i2c.ina219 ?? []).entries()) {
      const dev = wiring.i2c.devices.find((d) => d.part === 'INA219' && d.address === m.address);
      if (!dev) bad(`i2c.ina219[${i}].address`, m.address, 'no INA219 there');
      if (dev.bay && dev.bay !== m.bay) bad(`i2c.ina219[${i}].bay`, m.bay, `that monitor on bay ${dev.bay}`);
    }
  }
}
