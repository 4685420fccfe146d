/**
 * A Firmata board for tests: mock-firmata's IO object given the firmware
 * behaviour it lacks (pin modes and levels kept on the board and reported
 * back by pin-state queries, input reports when reporting is switched on).
 * The board outlives a connection: `connect()` again is a controller that
 * restarted while the board kept power; `reset()` is the board restarting
 * (every pin back to an input, then its version announced).
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const MockFirmata = (require('mock-firmata') as { Firmata: new () => any }).Firmata;

export interface EmulatedFirmata {
  /** A new IO object on this board; it announces itself on the next tick. */
  connect(): any;
  /** The IO object of the latest connection. */
  readonly io: any;
  /** What the board holds per pin. */
  readonly state: Map<number, { mode: number; value: number }>;
  reset(): void;
  /** The level the outside world puts on an input pin. */
  drive(pin: number, level: boolean): void;
}

export function emulatedFirmata(): EmulatedFirmata {
  const state = new Map<number, { mode: number; value: number }>();
  const external = new Map<number, number>();
  const readers = new Map<number, (v: number) => void>();
  let current: any = null;
  const board: EmulatedFirmata = {
    connect() {
      const io = new MockFirmata();
      const INPUT = io.MODES.INPUT as number;
      io.pinMode = (pin: number, mode: number) => state.set(pin, { mode, value: state.get(pin)?.value ?? 0 });
      io.digitalWrite = (pin: number, value: number) => state.set(pin, { mode: state.get(pin)?.mode ?? INPUT, value });
      // firmata-io fills in mode and state from the board's PIN_STATE_RESPONSE.
      io.queryPinState = (pin: number, cb: () => void) => {
        io.pins[pin].mode = state.get(pin)?.mode ?? INPUT;
        io.pins[pin].state = state.get(pin)?.value ?? 0;
        setImmediate(cb);
      };
      io.digitalRead = (pin: number, cb: (v: number) => void) => {
        readers.set(pin, cb);
        // StandardFirmata reports the port at once when reporting is switched on (pull-up: high).
        setImmediate(() => cb(external.get(pin) ?? 1));
      };
      io.reportDigitalPin = (pin: number, on: number) => {
        if (on) setImmediate(() => readers.get(pin)?.(external.get(pin) ?? 1));
      };
      setImmediate(() => {
        io.emit('connect');
        io.emit('ready');
      });
      current = io;
      return io;
    },
    get io() {
      return current;
    },
    state,
    reset() {
      state.clear();
      current?.emit('reportversion');
    },
    drive(pin, level) {
      external.set(pin, level ? 1 : 0);
      readers.get(pin)?.(level ? 1 : 0);
    },
  };
  return board;
}
