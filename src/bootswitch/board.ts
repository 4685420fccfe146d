/**
 * Building the board from the validated configuration: one driver per
 * configured board, one channel per configured line. Which hardware runs is
 * configuration only; real drivers are loaded lazily so a simulated rig
 * never needs the native modules.
 */
import { createRequire } from 'node:module';
import { BadInputError, DeviceError } from '../errors.ts';
import { InputChannel, OutputChannel } from './channel.ts';
import type { Clock } from './clock.ts';
import { INPUTS, OPTIONAL_INPUTS, OPTIONAL_OUTPUTS, PORT_INPUTS, PORT_OUTPUTS, RELAYS, type BoardConfig, type BootSwitchConfig, type InputName, type OutputName, type PortRelayName } from './config.ts';
import type { Driver, I2cBus } from './io.ts';
import { SimBoard } from './sim-board.ts';

export interface BoardDeps {
  clock: Clock;
  /** The simulated board every 'sim' board entry maps to (created when absent). */
  sim?: SimBoard;
  /** Opens an I2C bus by number; defaults to i2c-bus's openPromisified. */
  openI2c?: (bus: number) => Promise<I2cBus>;
  /** Gives a Firmata board its IO object (mock-firmata, or a Firmata over a custom transport). */
  firmataIo?: (cfg: Extract<BoardConfig, { driver: 'firmata' }>) => Promise<unknown>;
  onError?: (e: unknown) => void;
}

export async function defaultOpenI2c(bus: number): Promise<I2cBus> {
  const i2c = createRequire(import.meta.url)('i2c-bus') as { openPromisified(n: number): Promise<I2cBus> };
  try {
    return await i2c.openPromisified(bus);
  } catch (e) {
    throw new DeviceError(`cannot open I2C bus ${bus}: ${(e as Error).message}`, { cause: e, hint: 'is the i2c-dev module loaded and /dev/i2c-N present?' });
  }
}

async function createDriver(id: string, cfg: BoardConfig, deps: BoardDeps & { sim: SimBoard }, buses: Map<number, Promise<I2cBus>>): Promise<Driver> {
  const bus = (n: number) => {
    if (!buses.has(n)) buses.set(n, (deps.openI2c ?? defaultOpenI2c)(n));
    return buses.get(n)!;
  };
  switch (cfg.driver) {
    case 'sim':
      return deps.sim;
    case 'gpio': {
      const { GpioDriver } = await import('./gpio.ts');
      return GpioDriver.open(cfg);
    }
    case 'firmata': {
      const { FirmataDriver } = await import('./firmata.ts');
      return FirmataDriver.open(id, cfg, { io: deps.firmataIo, onError: deps.onError });
    }
    case 'mcp23017': {
      const { Mcp23017Driver } = await import('./mcp23017.ts');
      return Mcp23017Driver.open(await bus(cfg.bus), cfg.address);
    }
    case 'pcf8574': {
      const { Pcf8574Driver } = await import('./pcf8574.ts');
      return Pcf8574Driver.open(await bus(cfg.bus), cfg.address);
    }
  }
}

export class Board {
  readonly outputs: Partial<Record<OutputName, OutputChannel>> = {};
  readonly inputs: Partial<Record<InputName, InputChannel>> = {};
  readonly sim: SimBoard;

  private constructor(
    readonly config: BootSwitchConfig,
    readonly drivers: Map<string, Driver>,
    private readonly buses: Map<number, Promise<I2cBus>>,
    private readonly deps: BoardDeps & { sim: SimBoard },
  ) {
    this.sim = deps.sim;
  }

  /** Open every driver and claim the inputs; outputs are claimed by claimOutputs with their initial states. */
  static async open(config: BootSwitchConfig, deps: BoardDeps): Promise<Board> {
    const full = { ...deps, sim: deps.sim ?? new SimBoard(deps.clock) };
    const drivers = new Map<string, Driver>();
    const buses = new Map<number, Promise<I2cBus>>();
    const board = new Board(config, drivers, buses, full);
    try {
      for (const [id, b] of Object.entries(config.boards)) drivers.set(id, await createDriver(id, b, full, buses));
      for (const name of [...INPUTS, ...OPTIONAL_INPUTS, ...PORT_INPUTS]) {
        const ref = config.channels[name];
        if (!ref) continue;
        const line = await drivers.get(ref.board)!.input(ref.pin);
        board.inputs[name] = new InputChannel(name, line, ref.activeLow === true, deps.clock, config.timing.debounceMs, config.timing.pollMs, deps.onError);
      }
    } catch (e) {
      await board.close();
      throw e;
    }
    return board;
  }

  /** What the output latches hold before we claim them (logical), where the driver can tell. */
  async peek(name: OutputName): Promise<boolean | null> {
    const ref = this.config.channels[name];
    if (!ref) return null;
    const level = await this.drivers.get(ref.board)!.peek(ref.pin).catch(() => null);
    return level === null ? null : level !== (ref.activeLow === true);
  }

  /**
   * Claim the outputs, writing each one's initial logical state explicitly
   * (false where `initial` names none). `first`: claimed before the others,
   * in that order (break before make); `leave`: not claimed now, left as
   * the hardware holds them; `only`: claim just these (a later claim of
   * lines left before).
   */
  async claimOutputs(
    initial: Partial<Record<OutputName, boolean>>,
    onChange: (name: string, on: boolean) => void,
    opts: { first?: readonly OutputName[]; leave?: ReadonlySet<OutputName>; only?: readonly OutputName[] } = {},
  ): Promise<void> {
    const all: OutputName[] = [...RELAYS, ...OPTIONAL_OUTPUTS, ...PORT_OUTPUTS];
    const order = opts.only ?? [...new Set([...(opts.first ?? []), ...all])];
    for (const name of order) {
      const ref = this.config.channels[name];
      if (!ref || opts.leave?.has(name) || this.outputs[name]) continue;
      const on = initial[name] ?? false;
      const line = await this.drivers.get(ref.board)!.output(ref.pin, on !== (ref.activeLow === true));
      this.outputs[name] = new OutputChannel(name, line, ref.activeLow === true, this.deps.clock, on, onChange);
    }
  }

  relay(name: (typeof RELAYS)[number] | PortRelayName): OutputChannel {
    const ch = this.outputs[name];
    if (!ch) throw new BadInputError(`relay ${name} is not claimed yet`);
    return ch;
  }

  async close(): Promise<void> {
    for (const ch of Object.values(this.inputs)) ch?.stop();
    for (const d of this.drivers.values()) await d.close().catch(() => {});
    for (const b of this.buses.values()) await (await b.catch(() => null))?.close().catch(() => {});
  }
}
