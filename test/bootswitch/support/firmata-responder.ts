/**
 * The far end of a serial line, behaving like an Arduino Uno running
 * StandardFirmata 2.5 closely enough for firmata-io and johnny-five: version
 * and firmware reports, capability / analog-mapping / pin-state queries, pin
 * modes, port writes, single-pin writes and digital port reports for inputs.
 * The pin model is public so a test can see what the host wrote and drive
 * inputs (power LED, button) from outside.
 *
 * Behaviour follows StandardFirmata's callbacks: a port write only touches
 * pins in OUTPUT mode (and turns on the pull-up of an INPUT pin written 1);
 * a port report carries only the bits of input pins and is sent when
 * reporting is switched on and afterwards only when the value changes.
 */
import { EventEmitter } from 'node:events';
import { SerialPort } from 'serialport';

export const MODE = { INPUT: 0x00, OUTPUT: 0x01, ANALOG: 0x02, PWM: 0x03, SERVO: 0x04, I2C: 0x06, PULLUP: 0x0b } as const;

const REPORT_VERSION = 0xf9;
const SYSTEM_RESET = 0xff;
const SET_PIN_MODE = 0xf4;
const SET_DIGITAL_PIN_VALUE = 0xf5;
const DIGITAL_MESSAGE = 0x90;
const ANALOG_MESSAGE = 0xe0;
const REPORT_ANALOG = 0xc0;
const REPORT_DIGITAL = 0xd0;
const START_SYSEX = 0xf0;
const END_SYSEX = 0xf7;
const QUERY_FIRMWARE = 0x79;
const CAPABILITY_QUERY = 0x6b;
const CAPABILITY_RESPONSE = 0x6c;
const ANALOG_MAPPING_QUERY = 0x69;
const ANALOG_MAPPING_RESPONSE = 0x6a;
const PIN_STATE_QUERY = 0x6d;
const PIN_STATE_RESPONSE = 0x6e;

const PROTOCOL = [2, 5] as const;
const FIRMWARE = { major: 2, minor: 5, name: 'StandardFirmata.ino' };

/** Uno: 0/1 are the serial line (not usable), 2–19 digital, 14–19 also A0–A5. */
const TOTAL_PINS = 20;
const isDigital = (p: number) => p >= 2 && p <= 19;
const isAnalog = (p: number) => p >= 14 && p <= 19;
const isPwm = (p: number) => [3, 5, 6, 9, 10, 11].includes(p);
const TOTAL_PORTS = Math.ceil(TOTAL_PINS / 8);

export interface PinModel {
  /** Firmata mode number; an Arduino starts every digital pin as INPUT (StandardFirmata's systemReset). */
  mode: number;
  /** For outputs the level written; for inputs the pull-up flag (what PIN_STATE_QUERY answers). */
  state: number;
  /** What the outside world drives onto the pin; undefined = floating. */
  external?: 0 | 1;
}

/** One command as received, for assertions on what the host sent. */
export type Received =
  | { cmd: 'report-version' }
  | { cmd: 'system-reset' }
  | { cmd: 'pin-mode'; pin: number; mode: number }
  | { cmd: 'pin-value'; pin: number; value: number }
  | { cmd: 'port-write'; port: number; value: number }
  | { cmd: 'report-digital'; port: number; on: boolean }
  | { cmd: 'report-analog'; channel: number; on: boolean }
  | { cmd: 'analog-write'; pin: number; value: number }
  | { cmd: 'sysex'; id: number; data: number[] };

export class FirmataResponder extends EventEmitter<{ received: [Received] }> {
  pins: PinModel[] = [];
  readonly received: Received[] = [];
  #reporting = new Array<boolean>(TOTAL_PORTS).fill(false);
  #lastReport = new Array<number>(TOTAL_PORTS).fill(-1);
  #buf: number[] = [];
  #announced = 0;

  private constructor(readonly port: SerialPort) {
    super();
    this.#forget();
    port.on('data', (d: Buffer) => {
      for (const b of d) this.#byte(b);
    });
  }

  /** Opens `path` (the far end of the pty pair). Modem lines are never touched: a pty has none. */
  static async open(path: string): Promise<FirmataResponder> {
    const port = new SerialPort({ path, baudRate: 57600, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(e) : resolve())));
    return new FirmataResponder(port);
  }

  /** The level the sketch would read from the pin right now. */
  level(pin: number): 0 | 1 {
    const p = this.pins[pin]!;
    if (p.mode === MODE.OUTPUT) return p.state ? 1 : 0;
    if (p.external !== undefined) return p.external;
    return p.mode === MODE.PULLUP || (p.mode === MODE.INPUT && p.state === 1) ? 1 : 0;
  }

  /** Drive an input from outside (a lit power LED's opto, a pressed button); undefined lets it float. */
  setExternal(pin: number, level: 0 | 1 | undefined): void {
    this.pins[pin]!.external = level;
    this.#checkInputs(false);
  }

  /**
   * The board restarts (watchdog, brown-out, someone pressed reset): every
   * pin back to an input, reporting off, then the sketch announces itself
   * again as StandardFirmata's setup() does.
   */
  async reset(): Promise<void> {
    this.#forget();
    await this.#send([REPORT_VERSION, ...PROTOCOL]);
    await this.#firmware();
  }

  /** Resolves when `pred` holds, checked after every command received; rejects after `ms`. */
  waitFor(what: string, pred: () => boolean, ms = 3000): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!pred()) return;
        clearTimeout(t);
        this.off('received', check);
        resolve();
      };
      const t = setTimeout(() => {
        this.off('received', check);
        reject(new Error(`responder: timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.on('received', check);
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.port.isOpen ? this.port.close(() => resolve()) : resolve()));
  }

  #forget(): void {
    const external = this.pins.map((p) => p.external);
    this.pins = Array.from({ length: TOTAL_PINS }, (_, i) => ({
      mode: isDigital(i) ? MODE.INPUT : 0x7f,
      state: 0,
      external: external[i],
    }));
    this.#reporting.fill(false);
    this.#lastReport.fill(-1);
  }

  #send(bytes: number[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.port.write(Buffer.from(bytes), (e) => (e ? reject(e) : resolve()));
    });
  }

  #firmware(): Promise<void> {
    const name = [...Buffer.from(FIRMWARE.name)].flatMap((c) => [c & 0x7f, (c >> 7) & 0x7f]);
    return this.#send([START_SYSEX, QUERY_FIRMWARE, FIRMWARE.major, FIRMWARE.minor, ...name, END_SYSEX]);
  }

  #record(r: Received): void {
    this.received.push(r);
  }

  /** Listeners hear of a command only once the model reflects it. */
  #announce(): void {
    while (this.#announced < this.received.length) this.emit('received', this.received[this.#announced++]!);
  }

  /** Message length by command byte, as in the Firmata protocol (sysex handled apart). */
  static #length(cmd: number): number {
    if (cmd === REPORT_VERSION || cmd === SYSTEM_RESET) return 1;
    if (cmd === SET_PIN_MODE || cmd === SET_DIGITAL_PIN_VALUE) return 3;
    const hi = cmd & 0xf0;
    if (hi === DIGITAL_MESSAGE || hi === ANALOG_MESSAGE) return 3;
    if (hi === REPORT_DIGITAL || hi === REPORT_ANALOG) return 2;
    return 1;
  }

  #byte(b: number): void {
    const buf = this.#buf;
    if (buf[0] === START_SYSEX) {
      if (b === END_SYSEX) {
        this.#buf = [];
        this.#sysex(buf[1] ?? -1, buf.slice(2));
        this.#announce();
      } else if (b & 0x80) {
        // A command byte inside a sysex means the sysex was cut off: start over, as the firmware's parser does.
        this.#buf = [b];
      } else buf.push(b);
      return;
    }
    if (b & 0x80) this.#buf = [b];
    else if (buf.length === 0) return; // stray data byte
    else buf.push(b);
    const cmd = this.#buf[0]!;
    if (cmd !== START_SYSEX && this.#buf.length === FirmataResponder.#length(cmd)) {
      const msg = this.#buf;
      this.#buf = [];
      this.#command(msg);
      this.#announce();
    }
  }

  #command(m: number[]): void {
    const cmd = m[0]!;
    const hi = cmd & 0xf0;
    if (cmd === REPORT_VERSION) {
      this.#record({ cmd: 'report-version' });
      void this.#send([REPORT_VERSION, ...PROTOCOL]);
    } else if (cmd === SYSTEM_RESET) {
      this.#record({ cmd: 'system-reset' });
      this.#forget();
    } else if (cmd === SET_PIN_MODE) {
      this.#record({ cmd: 'pin-mode', pin: m[1]!, mode: m[2]! });
      this.#pinMode(m[1]!, m[2]!);
    } else if (cmd === SET_DIGITAL_PIN_VALUE) {
      this.#record({ cmd: 'pin-value', pin: m[1]!, value: m[2]! });
      const p = this.pins[m[1]!];
      if (p && isDigital(m[1]!) && p.mode === MODE.OUTPUT) p.state = m[2] ? 1 : 0;
    } else if (hi === DIGITAL_MESSAGE) {
      const port = cmd & 0x0f;
      const value = m[1]! | (m[2]! << 7);
      this.#record({ cmd: 'port-write', port, value });
      this.#portWrite(port, value);
    } else if (hi === REPORT_DIGITAL) {
      const port = cmd & 0x0f;
      this.#record({ cmd: 'report-digital', port, on: m[1] !== 0 });
      if (port < TOTAL_PORTS) {
        this.#reporting[port] = m[1] !== 0;
        // StandardFirmata answers "report on" with the port's current value at once.
        if (m[1]) this.#report(port, true);
      }
    } else if (hi === REPORT_ANALOG) {
      this.#record({ cmd: 'report-analog', channel: cmd & 0x0f, on: m[1] !== 0 });
    } else if (hi === ANALOG_MESSAGE) {
      this.#record({ cmd: 'analog-write', pin: cmd & 0x0f, value: m[1]! | (m[2]! << 7) });
    }
    this.#checkInputs(false);
  }

  #pinMode(pin: number, mode: number): void {
    const p = this.pins[pin];
    if (!p || p.mode === 0x7f) return;
    const allowed: number[] = [MODE.INPUT, MODE.OUTPUT, MODE.PULLUP];
    if (isPwm(pin)) allowed.push(MODE.PWM);
    if (isAnalog(pin)) allowed.push(MODE.ANALOG);
    if (!allowed.includes(mode)) return;
    p.mode = mode;
    // setPinModeCallback clears the state; PULLUP sets it to 1 (the pull-up is on).
    p.state = mode === MODE.PULLUP ? 1 : 0;
  }

  #portWrite(port: number, value: number): void {
    for (let i = 0; i < 8; i++) {
      const pin = port * 8 + i;
      const p = this.pins[pin];
      if (!p || !isDigital(pin)) continue;
      const bit = (value >> i) & 1;
      if (p.mode === MODE.OUTPUT) p.state = bit;
      else if (p.mode === MODE.INPUT) {
        // Arduino > 1.0: writing 1 to an INPUT pin turns on its pull-up (pinMode INPUT_PULLUP).
        if (bit === 1 && p.state !== 1) p.mode = MODE.PULLUP;
        p.state = bit;
      }
    }
  }

  /** The value StandardFirmata's readPort gives: only bits of pins configured as inputs. */
  #portValue(port: number): number {
    let v = 0;
    for (let i = 0; i < 8; i++) {
      const pin = port * 8 + i;
      const p = this.pins[pin];
      if (!p || !isDigital(pin) || (p.mode !== MODE.INPUT && p.mode !== MODE.PULLUP)) continue;
      if (this.level(pin)) v |= 1 << i;
    }
    return v;
  }

  #report(port: number, force: boolean): void {
    const v = this.#portValue(port);
    if (!force && v === this.#lastReport[port]) return;
    this.#lastReport[port] = v;
    void this.#send([DIGITAL_MESSAGE | port, v & 0x7f, (v >> 7) & 0x7f]);
  }

  /** The sketch's loop(): report every enabled port whose inputs changed. */
  #checkInputs(force: boolean): void {
    for (let port = 0; port < TOTAL_PORTS; port++) if (this.#reporting[port]) this.#report(port, force);
  }

  #sysex(id: number, data: number[]): void {
    this.#record({ cmd: 'sysex', id, data });
    if (id === QUERY_FIRMWARE) void this.#firmware();
    else if (id === CAPABILITY_QUERY) {
      const out = [START_SYSEX, CAPABILITY_RESPONSE];
      for (let pin = 0; pin < TOTAL_PINS; pin++) {
        if (isDigital(pin)) out.push(MODE.INPUT, 1, MODE.PULLUP, 1, MODE.OUTPUT, 1);
        if (isAnalog(pin)) out.push(MODE.ANALOG, 10);
        if (isPwm(pin)) out.push(MODE.PWM, 8);
        out.push(0x7f);
      }
      out.push(END_SYSEX);
      void this.#send(out);
    } else if (id === ANALOG_MAPPING_QUERY) {
      const out = [START_SYSEX, ANALOG_MAPPING_RESPONSE];
      for (let pin = 0; pin < TOTAL_PINS; pin++) out.push(isAnalog(pin) ? pin - 14 : 0x7f);
      out.push(END_SYSEX);
      void this.#send(out);
    } else if (id === PIN_STATE_QUERY) {
      const pin = data[0] ?? 0;
      const out = [START_SYSEX, PIN_STATE_RESPONSE, pin];
      const p = this.pins[pin];
      if (p) {
        out.push(p.mode, p.state & 0x7f);
        if (p.state > 0x7f) out.push((p.state >> 7) & 0x7f);
      }
      out.push(END_SYSEX);
      void this.#send(out);
    }
  }
}
