/**
 * The small hardware seams every driver implements. Levels here are
 * electrical (true = line high / coil driven as the driver sees it);
 * inversion, pulses, debounce and "busy" live one layer up in channel.ts,
 * so a driver only knows its hardware.
 */

export interface DigitalOutput {
  readonly name: string;
  write(level: boolean): Promise<void>;
  /** Read back the output latch (not just the last value we asked for). */
  read(): Promise<boolean>;
  close(): Promise<void>;
}

export interface DigitalInput {
  readonly name: string;
  read(): Promise<boolean>;
  close(): Promise<void>;
}

/** One driver instance per board or bus device: it hands out lines by pin name. */
export interface Driver {
  readonly kind: DriverKind;
  /** `initial` is written explicitly when the line is claimed, never left to chance. */
  output(pin: string | number, initial: boolean): Promise<DigitalOutput>;
  input(pin: string | number): Promise<DigitalInput>;
  /**
   * The output latch of `pin` as the hardware holds it, claimed or not: the
   * electrical level it drives, or null when the line drives nothing the
   * driver can read (an input, or untouched since power-up on hardware that
   * starts as inputs). Start-up uses it to see the relays a previous process
   * left set before claiming them. Changes nothing on the hardware.
   */
  peek(pin: string | number): Promise<boolean | null>;
  close(): Promise<void>;
}

export type DriverKind = 'sim' | 'gpio' | 'firmata' | 'mcp23017' | 'pcf8574';

/**
 * The subset of i2c-bus's PromisifiedBus we use, so the real bus and the
 * simulated one (sim-i2c.ts) are interchangeable.
 */
export interface I2cBus {
  readByte(address: number, command: number): Promise<number>;
  writeByte(address: number, command: number, byte: number): Promise<void>;
  readWord(address: number, command: number): Promise<number>;
  writeWord(address: number, command: number, word: number): Promise<void>;
  receiveByte(address: number): Promise<number>;
  sendByte(address: number, byte: number): Promise<void>;
  i2cWrite(address: number, length: number, buffer: Buffer): Promise<{ bytesWritten: number; buffer: Buffer }>;
  i2cRead(address: number, length: number, buffer: Buffer): Promise<{ bytesRead: number; buffer: Buffer }>;
  close(): Promise<void>;
}

/** A pino-compatible logger subset; the default is silent. */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
