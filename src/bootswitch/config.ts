/**
 * The board configuration: plain JSON, validated in one place. A bad value
 * throws BadInputError naming the key, the value and what is allowed, and
 * nothing is built from it.
 */
import { BadInputError } from '../errors.ts';
import type { DriverKind } from './io.ts';

/** A position of a pair's switch: A its first bay (on the host with every coil released), B its second. */
export type Bay = 'A' | 'B';
export const BAYS: readonly Bay[] = ['A', 'B'];

/**
 * The host's data ports beyond the boot port, each served by two bays the
 * wiring gives one host SATA port: bays C and D, E and F, G and H. The first
 * bay of a port is on the host with every coil released, as bay A is.
 */
export const DATA_PORTS = [
  ['C', 'D'],
  ['E', 'F'],
  ['G', 'H'],
] as const;
export type DataPort = (typeof DATA_PORTS)[number];
export type DataBay = DataPort[number];

export type BoardConfig =
  | { driver: 'sim' }
  /** `chip` is the gpiochip label; pins are line offsets on that chip. */
  | { driver: 'gpio'; chip: string; sysfsRoot?: string }
  | { driver: 'firmata'; port: string; baudRate?: number; reconnectMs?: number }
  | { driver: 'mcp23017'; bus: number; address: number }
  | { driver: 'pcf8574'; bus: number; address: number };

export interface ChannelRef {
  board: string;
  pin: string | number;
  /** Electrical low means "on" (most relay modules and opto inputs). */
  activeLow?: boolean;
}

/** Relay outputs the sequence needs; every one is required. */
export const RELAYS = ['muxA', 'muxB', 'pwrA', 'pwrB', 'atxPower', 'atxReset'] as const;
export type RelayName = (typeof RELAYS)[number];
/** Required inputs. */
export const INPUTS = ['powerLed', 'button'] as const;
/** Optional lines: LEDs, and contact sense of the mux relays for read-back. */
export const OPTIONAL_OUTPUTS = ['ledStatus', 'ledFault', 'ledBayA', 'ledBayB'] as const;
export const OPTIONAL_INPUTS = ['senseMuxA', 'senseMuxB'] as const;
/** A data port's relays (mux and power per bay, given all four or none), its bay LEDs and contact sense. */
export const PORT_RELAYS = DATA_PORTS.flatMap(([c, d]) => [`mux${c}`, `mux${d}`, `pwr${c}`, `pwr${d}`] as const);
export const PORT_OUTPUTS = [...PORT_RELAYS, ...DATA_PORTS.flatMap(([c, d]) => [`ledBay${c}`, `ledBay${d}`] as const)];
export const PORT_INPUTS = DATA_PORTS.flatMap(([c, d]) => [`senseMux${c}`, `senseMux${d}`] as const);
export type PortRelayName = (typeof PORT_RELAYS)[number];
export type OutputName = RelayName | (typeof OPTIONAL_OUTPUTS)[number] | (typeof PORT_OUTPUTS)[number];
export type InputName = (typeof INPUTS)[number] | (typeof OPTIONAL_INPUTS)[number] | (typeof PORT_INPUTS)[number];

/** The channels of a data port's switch by position: A its first bay's, B its second's. */
export function portChannels([c, d]: DataPort): { muxA: PortRelayName; muxB: PortRelayName; pwrA: PortRelayName; pwrB: PortRelayName; senseMuxA: InputName; senseMuxB: InputName; ledBayA: OutputName; ledBayB: OutputName } {
  return { muxA: `mux${c}`, muxB: `mux${d}`, pwrA: `pwr${c}`, pwrB: `pwr${d}`, senseMuxA: `senseMux${c}`, senseMuxB: `senseMux${d}`, ledBayA: `ledBay${c}`, ledBayB: `ledBay${d}` };
}

/** The data ports whose four relays the config names: the controller switches those. */
export function wiredPorts(config: Pick<BootSwitchConfig, 'channels'>): DataPort[] {
  return DATA_PORTS.filter((port) => {
    const ch = portChannels(port);
    return config.channels[ch.muxA] !== undefined;
  });
}

export interface TimingConfig {
  /** Wait after a mux relay moves before the next one (contact bounce, SATA link drop). */
  settleMs: number;
  /** Wait after cutting a drive's power (spin-down) before moving its mux. */
  powerOffMs: number;
  /** Wait after restoring a drive's power before reading back and booting. */
  powerOnMs: number;
  /** ATX power pulse that asks the OS for an ACPI shutdown. */
  shutdownPulseMs: number;
  /** ATX power held this long forces the PSU off (hard off). */
  hardOffPulseMs: number;
  /** Pulse to power the host on. */
  powerOnPulseMs: number;
  /** How long to wait for the power LED to go dark after a shutdown request. */
  shutdownTimeoutMs: number;
  /** Bounds every pulse on the ATX lines must respect. */
  pulseMinMs: number;
  pulseMaxMs: number;
  debounceMs: number;
  pollMs: number;
  holdMs: number;
  blinkMs: number;
}

export interface FailoverConfig {
  /** Unconfirmed boots allowed per bay before failing over. */
  bootTries: number;
  /** A boot counts as good when a heartbeat arrives within this time of power-on. */
  confirmTimeoutMs: number;
  /** Whether a button failover may force the host off when it ignores the shutdown request. */
  hardOffOnButton: boolean;
}

export interface I2cPeripheralsConfig {
  bus: number;
  oled?: { address: number };
  ina219?: { bay: Bay; address: number; shuntOhms: number }[];
}

export interface BootSwitchConfig {
  boards: Record<string, BoardConfig>;
  channels: Partial<Record<OutputName | InputName, ChannelRef>>;
  timing: TimingConfig;
  failover: FailoverConfig;
  i2c?: I2cPeripheralsConfig;
}

export const DEFAULT_TIMING: TimingConfig = {
  settleMs: 200,
  powerOffMs: 1000,
  powerOnMs: 500,
  shutdownPulseMs: 300,
  hardOffPulseMs: 6000,
  powerOnPulseMs: 300,
  shutdownTimeoutMs: 90_000,
  pulseMinMs: 50,
  pulseMaxMs: 8000,
  debounceMs: 30,
  pollMs: 10,
  holdMs: 3000,
  blinkMs: 250,
};

export const DEFAULT_FAILOVER: FailoverConfig = { bootTries: 3, confirmTimeoutMs: 300_000, hardOffOnButton: false };

const DRIVERS: readonly DriverKind[] = ['sim', 'gpio', 'firmata', 'mcp23017', 'pcf8574'];

function bad(key: string, value: unknown, allowed: string): never {
  throw new BadInputError(`bootswitch config: ${key} is ${JSON.stringify(value) ?? String(value)}; allowed: ${allowed}`, {
    hint: 'fix the configuration file; nothing was changed',
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function int(key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(key, v, `an integer from ${min} to ${max}`);
  return v;
}

function nonEmptyString(key: string, v: unknown): string {
  if (typeof v !== 'string' || v.trim() === '') bad(key, v, 'a non-empty string');
  return v;
}

function noExtraKeys(key: string, obj: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(obj)) if (!allowed.includes(k)) bad(`${key}.${k}`, obj[k], `no such key; known keys: ${allowed.join(', ')}`);
}

function board(key: string, v: unknown): BoardConfig {
  if (!isObject(v)) bad(key, v, `an object with "driver" (${DRIVERS.join(', ')})`);
  const driver = v.driver;
  if (typeof driver !== 'string' || !DRIVERS.includes(driver as DriverKind)) bad(`${key}.driver`, driver, DRIVERS.join(', '));
  switch (driver as DriverKind) {
    case 'sim':
      noExtraKeys(key, v, ['driver']);
      return { driver: 'sim' };
    case 'gpio': {
      noExtraKeys(key, v, ['driver', 'chip', 'sysfsRoot']);
      const out: BoardConfig = { driver: 'gpio', chip: nonEmptyString(`${key}.chip`, v.chip) };
      if (v.sysfsRoot !== undefined) out.sysfsRoot = nonEmptyString(`${key}.sysfsRoot`, v.sysfsRoot);
      return out;
    }
    case 'firmata': {
      noExtraKeys(key, v, ['driver', 'port', 'baudRate', 'reconnectMs']);
      const out: BoardConfig = { driver: 'firmata', port: nonEmptyString(`${key}.port`, v.port) };
      if (v.baudRate !== undefined) {
        const rates = [9600, 19200, 38400, 57600, 115200];
        if (!rates.includes(v.baudRate as number)) bad(`${key}.baudRate`, v.baudRate, rates.join(', '));
        out.baudRate = v.baudRate as number;
      }
      if (v.reconnectMs !== undefined) out.reconnectMs = int(`${key}.reconnectMs`, v.reconnectMs, 100, 600_000);
      return out;
    }
    case 'mcp23017':
      noExtraKeys(key, v, ['driver', 'bus', 'address']);
      return { driver: 'mcp23017', bus: int(`${key}.bus`, v.bus, 0, 255), address: int(`${key}.address`, v.address, 0x20, 0x27) };
    case 'pcf8574': {
      noExtraKeys(key, v, ['driver', 'bus', 'address']);
      const address = int(`${key}.address`, v.address, 0x20, 0x3f);
      // PCF8574 answers at 0x20-0x27, the PCF8574A at 0x38-0x3F.
      if (address > 0x27 && address < 0x38) bad(`${key}.address`, address, '0x20-0x27 (PCF8574) or 0x38-0x3F (PCF8574A)');
      return { driver: 'pcf8574', bus: int(`${key}.bus`, v.bus, 0, 255), address };
    }
  }
}

/** Pins each driver kind accepts, so a typo fails at load and not at the first switch. */
export function checkPin(key: string, kind: DriverKind, pin: unknown): string | number {
  switch (kind) {
    case 'sim':
      if (typeof pin === 'string' && pin !== '') return pin;
      if (typeof pin === 'number' && Number.isInteger(pin) && pin >= 0) return pin;
      return bad(key, pin, 'a pin name or a non-negative integer');
    case 'gpio':
      return int(key, pin, 0, 1023);
    case 'firmata':
      return int(key, pin, 2, 69); // 0 and 1 are the serial link itself
    case 'mcp23017':
      if (typeof pin === 'string' && /^(GP)?[AB][0-7]$/.test(pin)) return pin.replace(/^GP/, '');
      return int(key, pin, 0, 15);
    case 'pcf8574':
      return int(key, pin, 0, 7);
  }
}

function channel(key: string, v: unknown, boards: Record<string, BoardConfig>): ChannelRef {
  if (!isObject(v)) bad(key, v, 'an object { board, pin, activeLow? }');
  noExtraKeys(key, v, ['board', 'pin', 'activeLow']);
  const b = nonEmptyString(`${key}.board`, v.board);
  if (!boards[b]) bad(`${key}.board`, b, `one of the configured boards: ${Object.keys(boards).join(', ') || '(none)'}`);
  const pin = checkPin(`${key}.pin`, boards[b].driver, v.pin);
  if (v.activeLow !== undefined && typeof v.activeLow !== 'boolean') bad(`${key}.activeLow`, v.activeLow, 'true or false');
  return { board: b, pin, activeLow: v.activeLow === true };
}

export function validateConfig(raw: unknown): BootSwitchConfig {
  if (!isObject(raw)) bad('(root)', raw, 'an object with boards, channels, timing?, failover?, i2c?');
  noExtraKeys('(root)', raw, ['boards', 'channels', 'timing', 'failover', 'i2c']);
  if (!isObject(raw.boards) || Object.keys(raw.boards).length === 0) bad('boards', raw.boards, 'an object naming at least one board');
  const boards: Record<string, BoardConfig> = {};
  for (const [id, b] of Object.entries(raw.boards)) boards[id] = board(`boards.${id}`, b);

  if (!isObject(raw.channels)) bad('channels', raw.channels, 'an object mapping channel names to { board, pin }');
  const known = [...RELAYS, ...INPUTS, ...OPTIONAL_OUTPUTS, ...OPTIONAL_INPUTS, ...PORT_OUTPUTS, ...PORT_INPUTS] as string[];
  noExtraKeys('channels', raw.channels, known);
  const channels: BootSwitchConfig['channels'] = {};
  for (const name of [...RELAYS, ...INPUTS]) {
    if (raw.channels[name] === undefined) bad(`channels.${name}`, undefined, 'a { board, pin } entry: this channel is required');
  }
  const used = new Map<string, string>();
  for (const [name, ref] of Object.entries(raw.channels)) {
    const c = channel(`channels.${name}`, ref, boards);
    const id = `${c.board}:${c.pin}`;
    if (used.has(id)) bad(`channels.${name}.pin`, c.pin, `a pin not already used by channels.${used.get(id)} on board ${c.board}`);
    used.set(id, name);
    channels[name as OutputName | InputName] = c;
  }
  // A data port is switched by all four of its relays or not at all: half a port could put both drives on the host.
  for (const port of DATA_PORTS) {
    const ch = portChannels(port);
    const relays = [ch.muxA, ch.muxB, ch.pwrA, ch.pwrB];
    const given = relays.filter((n) => channels[n] !== undefined);
    if (given.length > 0 && given.length < 4) {
      const missing = relays.find((n) => channels[n] === undefined)!;
      bad(`channels.${missing}`, undefined, `a { board, pin } entry: bays ${port.join(' and ')} share a host data port, so ${relays.join(', ')} are given together or not at all`);
    }
    for (const n of [ch.senseMuxA, ch.senseMuxB, ch.ledBayA, ch.ledBayB]) {
      if (channels[n] !== undefined && given.length === 0) bad(`channels.${n}`, raw.channels[n], `nothing until ${relays.join(', ')} are given (the port of bays ${port.join(' and ')} is not switched)`);
    }
  }

  const timing = { ...DEFAULT_TIMING };
  if (raw.timing !== undefined) {
    if (!isObject(raw.timing)) bad('timing', raw.timing, 'an object of millisecond values');
    noExtraKeys('timing', raw.timing, Object.keys(DEFAULT_TIMING));
    for (const [k, v] of Object.entries(raw.timing)) timing[k as keyof TimingConfig] = int(`timing.${k}`, v, 0, 3_600_000);
  }
  if (timing.pulseMinMs > timing.pulseMaxMs) bad('timing.pulseMinMs', timing.pulseMinMs, `at most timing.pulseMaxMs (${timing.pulseMaxMs})`);
  for (const k of ['shutdownPulseMs', 'hardOffPulseMs', 'powerOnPulseMs'] as const) {
    if (timing[k] < timing.pulseMinMs || timing[k] > timing.pulseMaxMs) bad(`timing.${k}`, timing[k], `from timing.pulseMinMs (${timing.pulseMinMs}) to timing.pulseMaxMs (${timing.pulseMaxMs})`);
  }
  if (timing.shutdownPulseMs >= 4000) bad('timing.shutdownPulseMs', timing.shutdownPulseMs, 'below 4000: a 4 s press forces most PSUs off');
  if (timing.hardOffPulseMs < 4000) bad('timing.hardOffPulseMs', timing.hardOffPulseMs, 'at least 4000: ATX needs a 4 s press to force off');
  if (timing.pollMs < 1) bad('timing.pollMs', timing.pollMs, 'at least 1');
  if (timing.blinkMs < 20) bad('timing.blinkMs', timing.blinkMs, 'at least 20');
  if (timing.holdMs < 500) bad('timing.holdMs', timing.holdMs, 'at least 500: shorter holds fail over by accident');

  const failover = { ...DEFAULT_FAILOVER };
  if (raw.failover !== undefined) {
    if (!isObject(raw.failover)) bad('failover', raw.failover, 'an object { bootTries, confirmTimeoutMs, hardOffOnButton }');
    noExtraKeys('failover', raw.failover, Object.keys(DEFAULT_FAILOVER));
    if (raw.failover.bootTries !== undefined) failover.bootTries = int('failover.bootTries', raw.failover.bootTries, 1, 20);
    if (raw.failover.confirmTimeoutMs !== undefined) failover.confirmTimeoutMs = int('failover.confirmTimeoutMs', raw.failover.confirmTimeoutMs, 1000, 86_400_000);
    if (raw.failover.hardOffOnButton !== undefined) {
      if (typeof raw.failover.hardOffOnButton !== 'boolean') bad('failover.hardOffOnButton', raw.failover.hardOffOnButton, 'true or false');
      failover.hardOffOnButton = raw.failover.hardOffOnButton;
    }
  }

  let i2c: I2cPeripheralsConfig | undefined;
  if (raw.i2c !== undefined) {
    if (!isObject(raw.i2c)) bad('i2c', raw.i2c, 'an object { bus, oled?, ina219? }');
    noExtraKeys('i2c', raw.i2c, ['bus', 'oled', 'ina219']);
    i2c = { bus: int('i2c.bus', raw.i2c.bus, 0, 255) };
    if (raw.i2c.oled !== undefined) {
      if (!isObject(raw.i2c.oled)) bad('i2c.oled', raw.i2c.oled, 'an object { address }');
      noExtraKeys('i2c.oled', raw.i2c.oled, ['address']);
      const a = int('i2c.oled.address', raw.i2c.oled.address, 0x3c, 0x3d);
      i2c.oled = { address: a };
    }
    if (raw.i2c.ina219 !== undefined) {
      if (!Array.isArray(raw.i2c.ina219)) bad('i2c.ina219', raw.i2c.ina219, 'a list of { bay, address, shuntOhms }');
      i2c.ina219 = raw.i2c.ina219.map((m: unknown, i: number) => {
        const key = `i2c.ina219[${i}]`;
        if (!isObject(m)) bad(key, m, 'an object { bay, address, shuntOhms }');
        noExtraKeys(key, m, ['bay', 'address', 'shuntOhms']);
        if (m.bay !== 'A' && m.bay !== 'B') bad(`${key}.bay`, m.bay, 'A or B');
        const shunt = m.shuntOhms;
        if (typeof shunt !== 'number' || !(shunt > 0 && shunt <= 10)) bad(`${key}.shuntOhms`, shunt, 'a number above 0 and at most 10');
        return { bay: m.bay, address: int(`${key}.address`, m.address, 0x40, 0x4f), shuntOhms: shunt };
      });
      const addrs = i2c.ina219.map((m) => m.address);
      if (i2c.oled) addrs.push(i2c.oled.address);
      const dup = addrs.find((a, i) => addrs.indexOf(a) !== i);
      if (dup !== undefined) bad('i2c.ina219', `0x${dup.toString(16)}`, 'distinct I2C addresses per device');
    }
    // Expanders on the peripheral bus must not collide with the peripherals.
    for (const [id, b] of Object.entries(boards)) {
      if ((b.driver === 'mcp23017' || b.driver === 'pcf8574') && b.bus === i2c.bus) {
        const taken = [...(i2c.ina219 ?? []).map((m) => m.address), ...(i2c.oled ? [i2c.oled.address] : [])];
        if (taken.includes(b.address)) bad(`boards.${id}.address`, b.address, 'an address not used by the OLED or the INA219 monitors');
      }
    }
  }

  return { boards, channels, timing, failover, ...(i2c ? { i2c } : {}) };
}

/** A complete configuration on the simulated board: the simulated rig and tests start from it. */
export function simConfig(overrides: { timing?: Partial<TimingConfig>; failover?: Partial<FailoverConfig> } = {}): BootSwitchConfig {
  return validateConfig({
    boards: { sim: { driver: 'sim' } },
    channels: {
      muxA: { board: 'sim', pin: 'K_MUX_A' },
      muxB: { board: 'sim', pin: 'K_MUX_B' },
      pwrA: { board: 'sim', pin: 'K_PWR_A' },
      pwrB: { board: 'sim', pin: 'K_PWR_B' },
      atxPower: { board: 'sim', pin: 'K_ATX_PWR' },
      atxReset: { board: 'sim', pin: 'K_ATX_RST' },
      powerLed: { board: 'sim', pin: 'HOST_PWR_LED' },
      button: { board: 'sim', pin: 'BTN_FAILOVER', activeLow: true },
      ledStatus: { board: 'sim', pin: 'LED_STATUS' },
      ledFault: { board: 'sim', pin: 'LED_FAULT' },
      ledBayA: { board: 'sim', pin: 'LED_BAY_A' },
      ledBayB: { board: 'sim', pin: 'LED_BAY_B' },
      senseMuxA: { board: 'sim', pin: 'SENSE_MUX_A' },
      senseMuxB: { board: 'sim', pin: 'SENSE_MUX_B' },
      // Every data port is wired on the simulated board: a data pair's failover and windows move its relays.
      ...Object.fromEntries(
        DATA_PORTS.flatMap((bays) =>
          bays.flatMap((b) => [
            [`mux${b}`, { board: 'sim', pin: `K_MUX_${b}` }],
            [`pwr${b}`, { board: 'sim', pin: `K_PWR_${b}` }],
            [`senseMux${b}`, { board: 'sim', pin: `SENSE_MUX_${b}` }],
            [`ledBay${b}`, { board: 'sim', pin: `LED_BAY_${b}` }],
          ]),
        ),
      ),
    },
    timing: { ...overrides.timing },
    failover: { ...overrides.failover },
  });
}
