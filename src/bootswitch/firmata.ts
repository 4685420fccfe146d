/**
 * A Firmata I/O board (an Arduino running StandardFirmata) through
 * johnny-five, over a serialport 13 transport. johnny-five's REPL and SIGINT
 * handler are off: the daemon owns the terminal and its shutdown. Every
 * claimed pin's mode and level are written explicitly whenever the board
 * (re)connects, because an Arduino resets to all-inputs on every reset; a
 * reset is seen as a fresh REPORT_VERSION, a lost port as close/disconnect,
 * after which the driver reopens it every `reconnectMs`.
 */
import { createRequire } from 'node:module';
import { EventEmitter } from 'node:events';
import { DeviceError } from '../errors.ts';
import type { BoardConfig } from './config.ts';
import type { DigitalInput, DigitalOutput, Driver } from './io.ts';

const require = createRequire(import.meta.url);

/** The parts of a Firmata-compatible IO object (firmata-io, mock-firmata) we use. */
export interface FirmataIo extends EventEmitter {
  isReady?: boolean;
  MODES: { INPUT: number; OUTPUT: number; PULLUP?: number };
  pins: { mode?: number; value?: number; state?: number }[];
  pinMode(pin: number, mode: number): void;
  digitalWrite(pin: number, value: 0 | 1): void;
  digitalRead(pin: number, cb: (value: number) => void): void;
  queryPinState(pin: number, cb: () => void): void;
  reportDigitalPin?(pin: number, on: 0 | 1): void;
  transport?: { close?(cb?: (e?: Error) => void): void; isOpen?: boolean };
}

type FirmataCfg = Extract<BoardConfig, { driver: 'firmata' }>;

/** The default IO: Firmata over a serialport 13 port. */
export async function openSerialFirmata(cfg: FirmataCfg): Promise<FirmataIo> {
  const { SerialPort } = await import('serialport');
  const { Firmata } = require('firmata-io') as { Firmata: new (port: unknown, opts: object) => FirmataIo };
  const port = new SerialPort({ path: cfg.port, baudRate: cfg.baudRate ?? 57600, autoOpen: false });
  await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(e) : resolve())));
  // A board that does not auto-reset on open never volunteers its version: ask soon.
  return new Firmata(port, { reportVersionTimeout: 300 });
}

export interface FirmataDeps {
  io?: (cfg: FirmataCfg) => Promise<unknown>;
  onError?: (e: unknown) => void;
  readyTimeoutMs?: number;
  queryTimeoutMs?: number;
}

interface Claimed {
  kind: 'out' | 'in';
  level: boolean;
  /** Inputs: a report from the board has set `level` (until then it is a placeholder). */
  seen?: boolean;
  onSeen?: () => void;
}

export class FirmataDriver extends EventEmitter<{ connected: []; disconnected: [reason: string]; reset: [] }> implements Driver {
  readonly kind = 'firmata' as const;
  #io: FirmataIo | null = null;
  #claimed = new Map<number, Claimed>();
  /** Input pins whose report listener is on an IO already: re-applying only re-enables reporting. */
  #listening = new WeakMap<FirmataIo, Set<number>>();
  #reconnect: ReturnType<typeof setTimeout> | null = null;
  #closed = false;
  #connecting: Promise<void> | null = null;

  private constructor(
    readonly id: string,
    readonly cfg: FirmataCfg,
    private readonly deps: FirmataDeps,
  ) {
    super();
  }

  static async open(id: string, cfg: FirmataCfg, deps: FirmataDeps = {}): Promise<FirmataDriver> {
    const d = new FirmataDriver(id, cfg, deps);
    await d.#connect();
    return d;
  }

  get connected(): boolean {
    return this.#io !== null;
  }

  #connect(): Promise<void> {
    this.#connecting ??= this.#doConnect().finally(() => (this.#connecting = null));
    return this.#connecting;
  }

  async #doConnect(): Promise<void> {
    let io: FirmataIo;
    try {
      io = (await (this.deps.io ?? openSerialFirmata)(this.cfg)) as FirmataIo;
    } catch (e) {
      throw new DeviceError(`Firmata board ${this.id} on ${this.cfg.port}: cannot open: ${(e as Error).message}`, { cause: e, fault: 'transport' });
    }
    const five = require('johnny-five') as { Board: new (opts: object) => EventEmitter };
    const board = new five.Board({ io, repl: false, debug: false, sigint: false, timeout: this.deps.readyTimeoutMs ?? 10_000 });
    // johnny-five re-emits every IO error on the Board after 'ready', and its connect timer can still
    // fire 'error' after we gave up on a handshake: without a listener either would crash the daemon.
    // Loss is handled through the IO's own events below.
    board.on('error', () => {});
    let early: ((e: unknown) => void) | undefined;
    const handshake = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new DeviceError(`Firmata board ${this.id} on ${this.cfg.port}: no answer within ${this.deps.readyTimeoutMs ?? 10_000} ms`, { hint: 'is StandardFirmata loaded and the baud rate right?', fault: 'transport' })), this.deps.readyTimeoutMs ?? 10_000);
      board.once('ready', () => {
        clearTimeout(t);
        resolve();
      });
      early = (e: unknown) => {
        clearTimeout(t);
        reject(new DeviceError(`Firmata board ${this.id}: ${(e as Error)?.message ?? e}`, { fault: 'transport' }));
      };
      board.once('error', early);
      io.once('error', early);
      // firmata-io emits 'connect' only on its transport's 'open'; a port opened before the IO was
      // built (openSerialFirmata) never shows it, and johnny-five holds 'ready' until 'connect'.
      if (io.transport?.isOpen && !io.isReady) io.emit('connect');
    });
    try {
      await handshake;
    } catch (e) {
      // Free the port: the next attempt opens it again and serialport locks it exclusively.
      await closeTransport(io);
      throw e;
    } finally {
      io.off('error', early!);
    }
    this.#io = io;
    this.#applyAll(io);
    // After ready, a REPORT_VERSION only arrives when the board restarted and forgot every pin.
    io.on('reportversion', () => {
      if (this.#io !== io) return;
      this.#applyAll(io);
      this.emit('reset');
    });
    const lost = (reason: string) => {
      if (this.#io !== io) return;
      this.#io = null;
      // After an error the port may still be open (and locked); the reconnect needs it closed.
      void closeTransport(io);
      this.emit('disconnected', reason);
      this.deps.onError?.(new DeviceError(`Firmata board ${this.id} lost: ${reason}; reconnecting`, { fault: 'transport' }));
      this.#scheduleReconnect();
    };
    io.on('close', () => lost('port closed'));
    io.on('disconnect', () => lost('disconnected'));
    io.on('error', (e: unknown) => lost(`error: ${(e as Error)?.message ?? e}`));
    this.emit('connected');
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#reconnect) return;
    this.#reconnect = setTimeout(() => {
      this.#reconnect = null;
      this.#connect().catch(() => this.#scheduleReconnect());
    }, this.cfg.reconnectMs ?? 2000);
  }

  /** Write every claimed pin's mode and level: the board keeps nothing across a reset. */
  #applyAll(io: FirmataIo): void {
    for (const [pin, c] of this.#claimed) this.#apply(io, pin, c);
  }

  #apply(io: FirmataIo, pin: number, c: Claimed): void {
    if (c.kind === 'out') {
      io.pinMode(pin, io.MODES.OUTPUT);
      io.digitalWrite(pin, c.level ? 1 : 0);
    } else {
      io.pinMode(pin, io.MODES.PULLUP ?? io.MODES.INPUT);
      const listening = this.#listening.get(io) ?? new Set<number>();
      this.#listening.set(io, listening);
      // After a board reset the listener is still there; only the board's reporting must be switched on again.
      if (listening.has(pin) && io.reportDigitalPin) return io.reportDigitalPin(pin, 1);
      listening.add(pin);
      io.digitalRead(pin, (v) => {
        const cl = this.#claimed.get(pin);
        if (!cl) return;
        cl.level = v === 1;
        cl.seen = true;
        cl.onSeen?.();
      });
    }
  }

  #live(what: string): FirmataIo {
    if (!this.#io) throw new DeviceError(`Firmata board ${this.id} not connected (${what})`, { hint: `check the USB cable to ${this.cfg.port}; reconnecting`, fault: 'transport' });
    return this.#io;
  }

  /** The board's own record of an output, via a pin-state query. */
  async #query(pin: number): Promise<boolean> {
    const io = this.#live(`query pin ${pin}`);
    await this.#queryState(io, pin);
    return io.pins[pin]?.state === 1;
  }

  /** Asks the board for a pin's mode and state; firmata-io puts the answer in `io.pins`. */
  #queryState(io: FirmataIo, pin: number): Promise<void> {
    const ms = this.deps.queryTimeoutMs ?? 1000;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new DeviceError(`Firmata board ${this.id}: pin ${pin} state query unanswered after ${ms} ms`, { fault: 'transport' })), ms);
      io.queryPinState(pin, () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /**
   * The board's own record of a pin (a pin-state query): its level when the
   * board has it in OUTPUT mode, null otherwise. A board that kept power
   * while the controller restarted still drives what it was told; one that
   * reset has every pin back to an input.
   */
  async peek(pin: string | number): Promise<boolean | null> {
    const n = Number(pin);
    const io = this.#live(`peek pin ${n}`);
    await this.#queryState(io, n);
    return io.pins[n]?.mode === io.MODES.OUTPUT ? io.pins[n]?.state === 1 : null;
  }

  async output(pin: string | number, initial: boolean): Promise<DigitalOutput> {
    const n = Number(pin);
    const c: Claimed = { kind: 'out', level: initial };
    this.#claimed.set(n, c);
    this.#apply(this.#live(`claim pin ${n}`), n, c);
    return {
      name: `firmata:${this.id}:${n}`,
      write: async (level) => {
        const io = this.#live(`write pin ${n}`);
        c.level = level;
        io.digitalWrite(n, level ? 1 : 0);
      },
      read: () => this.#query(n),
      close: async () => {},
    };
  }

  async input(pin: string | number): Promise<DigitalInput> {
    const n = Number(pin);
    const c: Claimed = { kind: 'in', level: true };
    this.#claimed.set(n, c);
    this.#apply(this.#live(`claim pin ${n}`), n, c);
    // Callers read an input right after claiming it (host power at start-up, the button held through
    // start-up): wait for the board's first report (StandardFirmata sends it when reporting is switched
    // on) instead of answering with a guess.
    const ms = this.deps.queryTimeoutMs ?? 1000;
    await new Promise<void>((resolve, reject) => {
      if (c.seen) return resolve();
      const t = setTimeout(() => reject(new DeviceError(`Firmata board ${this.id}: no report for input pin ${n} within ${ms} ms`, { fault: 'transport' })), ms);
      c.onSeen = () => {
        clearTimeout(t);
        c.onSeen = undefined;
        resolve();
      };
    });
    return {
      name: `firmata:${this.id}:${n}`,
      read: async () => {
        this.#live(`read pin ${n}`);
        return c.level;
      },
      close: async () => {},
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#reconnect) clearTimeout(this.#reconnect);
    const io = this.#io;
    this.#io = null;
    if (io) await closeTransport(io);
  }
}

function closeTransport(io: FirmataIo): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = io.transport;
    if (t?.close && t.isOpen !== false) t.close(() => resolve());
    else resolve();
  });
}
