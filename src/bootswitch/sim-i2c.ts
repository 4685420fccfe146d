/**
 * A simulated I2C bus with register models of the parts we use (MCP23017,
 * PCF8574, SSD1306, INA219), behind the same I2cBus interface as i2c-bus's
 * PromisifiedBus. A missing address fails like a real bus (no ACK).
 */
import { DeviceError } from '../errors.ts';
import type { I2cBus } from './io.ts';

export interface SimI2cDevice {
  readByte(cmd: number): number;
  writeByte(cmd: number, value: number): void;
  receive(): number;
  send(value: number): void;
  write(bytes: Buffer): void;
  read(length: number): Buffer;
}

abstract class RegisterDevice implements SimI2cDevice {
  protected regs = new Uint8Array(256);
  protected pointer = 0;
  readByte(cmd: number): number {
    return this.regs[cmd];
  }
  writeByte(cmd: number, value: number): void {
    this.regs[cmd] = value & 0xff;
  }
  receive(): number {
    return this.readByte(this.pointer);
  }
  send(value: number): void {
    this.pointer = value & 0xff;
  }
  write(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.pointer = bytes[0];
    for (let i = 1; i < bytes.length; i++) this.writeByte(this.pointer++, bytes[i]);
  }
  read(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = this.readByte(this.pointer++);
    return out;
  }
}

/** MCP23017, BANK = 0: IODIR resets to inputs; GPIO reads pins (outputs show OLAT). */
export class SimMcp23017 extends RegisterDevice {
  /** Levels driven onto input pins from outside (bit per pin, A = low byte). */
  external = 0xffff;
  constructor() {
    super();
    this.regs[0x00] = 0xff;
    this.regs[0x01] = 0xff;
  }
  override readByte(cmd: number): number {
    if (cmd === 0x12 || cmd === 0x13) {
      const port = cmd - 0x12;
      const dir = this.regs[0x00 + port];
      const ext = (this.external >> (port * 8)) & 0xff;
      return ((this.regs[0x14 + port] & ~dir) | (ext & dir)) & 0xff;
    }
    return this.regs[cmd];
  }
  override writeByte(cmd: number, value: number): void {
    // Writing GPIO writes the latch, as on the chip.
    super.writeByte(cmd === 0x12 || cmd === 0x13 ? cmd + 2 : cmd, value);
  }
  /** Logical output level of pin 0-15 as driven on the wire (null while an input). */
  pin(n: number): boolean | null {
    const port = n < 8 ? 0 : 1;
    if (this.regs[port] & (1 << n % 8)) return null;
    return (this.regs[0x14 + port] & (1 << n % 8)) !== 0;
  }
}

/** PCF8574: one quasi-bidirectional port; powers up all high. */
export class SimPcf8574 implements SimI2cDevice {
  latch = 0xff;
  /** Pins pulled low from outside. */
  pulledLow = 0;
  readByte(): number {
    return this.receive();
  }
  writeByte(_cmd: number, value: number): void {
    this.send(value);
  }
  receive(): number {
    return this.latch & ~this.pulledLow & 0xff;
  }
  send(value: number): void {
    this.latch = value & 0xff;
  }
  write(bytes: Buffer): void {
    if (bytes.length) this.send(bytes[bytes.length - 1]);
  }
  read(length: number): Buffer {
    return Buffer.alloc(length, this.receive());
  }
}

/**
 * SSD1306 in horizontal addressing mode: control byte 0x00 = commands,
 * 0x40 = display data written at the column/page window.
 */
export class SimSsd1306 implements SimI2cDevice {
  readonly ram = new Uint8Array(128 * 8);
  on = false;
  #col = [0, 127];
  #page = [0, 7];
  #c = 0;
  #p = 0;
  #pendingCmd: number[] = [];
  readByte(): number {
    return 0;
  }
  writeByte(cmd: number, value: number): void {
    this.write(Buffer.from([cmd, value]));
  }
  receive(): number {
    return 0;
  }
  send(): void {}
  read(length: number): Buffer {
    return Buffer.alloc(length);
  }
  write(bytes: Buffer): void {
    if (bytes.length === 0) return;
    const control = bytes[0];
    if (control === 0x40) {
      for (let i = 1; i < bytes.length; i++) {
        this.ram[this.#p * 128 + this.#c] = bytes[i];
        if (++this.#c > this.#col[1]) {
          this.#c = this.#col[0];
          if (++this.#p > this.#page[1]) this.#p = this.#page[0];
        }
      }
      return;
    }
    for (let i = 1; i < bytes.length; i++) this.#command(bytes[i]);
  }
  #command(b: number): void {
    if (this.#pendingCmd.length) {
      this.#pendingCmd.push(b);
      const [op] = this.#pendingCmd;
      const need = op === 0x21 || op === 0x22 ? 3 : 2;
      if (this.#pendingCmd.length < need) return;
      if (op === 0x21) {
        this.#col = [this.#pendingCmd[1] & 127, this.#pendingCmd[2] & 127];
        this.#c = this.#col[0];
      } else if (op === 0x22) {
        this.#page = [this.#pendingCmd[1] & 7, this.#pendingCmd[2] & 7];
        this.#p = this.#page[0];
      }
      this.#pendingCmd = [];
      return;
    }
    if (b === 0xaf) this.on = true;
    else if (b === 0xae) this.on = false;
    else if ([0x20, 0x21, 0x22, 0x81, 0x8d, 0xa8, 0xd3, 0xd5, 0xd9, 0xda, 0xdb].includes(b)) this.#pendingCmd = [b];
  }
  pixel(x: number, y: number): boolean {
    return (this.ram[(y >> 3) * 128 + x] & (1 << (y & 7))) !== 0;
  }
  /** The frame as text rows ('#' lit), for assertions and debugging. */
  ascii(): string[] {
    const rows: string[] = [];
    for (let y = 0; y < 64; y++) {
      let r = '';
      for (let x = 0; x < 128; x++) r += this.pixel(x, y) ? '#' : '.';
      rows.push(r);
    }
    return rows;
  }
}

/**
 * INA219 with 16-bit big-endian registers (SMBus words arrive
 * little-endian, as on Linux). Set `shuntMv` and `busV` to model a rail.
 */
export class SimIna219 implements SimI2cDevice {
  config = 0x399f;
  calibration = 0;
  shuntMv = 0;
  busV = 5.0;
  #pointer = 0;
  #reg(n: number): number {
    switch (n) {
      case 0:
        return this.config;
      case 1:
        return Math.round(this.shuntMv * 100) & 0xffff; // 10 µV per bit, two's complement
      case 2:
        return ((Math.round((this.busV * 1000) / 4) << 3) | 0b10) & 0xffff; // CNVR set
      case 5:
        return this.calibration;
      default:
        return 0;
    }
  }
  readByte(cmd: number): number {
    return this.#reg(cmd) >> 8;
  }
  writeByte(): void {}
  receive(): number {
    return this.#reg(this.#pointer) >> 8;
  }
  send(v: number): void {
    this.#pointer = v;
  }
  write(bytes: Buffer): void {
    this.#pointer = bytes[0];
    if (bytes.length >= 3) {
      const v = (bytes[1] << 8) | bytes[2];
      if (this.#pointer === 0) this.config = v;
      if (this.#pointer === 5) this.calibration = v;
    }
  }
  read(length: number): Buffer {
    const v = this.#reg(this.#pointer);
    return Buffer.from([v >> 8, v & 0xff]).subarray(0, length);
  }
  /** SMBus word access as the Linux driver sees it (little-endian byte order). */
  word(cmd: number): number {
    const v = this.#reg(cmd);
    return ((v & 0xff) << 8) | (v >> 8);
  }
  setWord(cmd: number, swapped: number): void {
    const v = ((swapped & 0xff) << 8) | (swapped >> 8);
    this.write(Buffer.from([cmd, v >> 8, v & 0xff]));
  }
}

export class SimI2cBus implements I2cBus {
  readonly devices = new Map<number, SimI2cDevice>();
  #dropped = false;
  /** Every transaction, for tests that check what went over the wire. */
  readonly log: string[] = [];

  attach(address: number, device: SimI2cDevice): this {
    this.devices.set(address, device);
    return this;
  }
  /** The bus hangs or the cable comes off: every transfer fails. */
  drop(): void {
    this.#dropped = true;
  }
  restore(): void {
    this.#dropped = false;
  }
  #dev(address: number): SimI2cDevice {
    if (this.#dropped) throw new DeviceError(`I2C bus: transfer to 0x${address.toString(16)} failed (bus dropped)`);
    const d = this.devices.get(address);
    if (!d) throw new DeviceError(`I2C bus: no ACK from 0x${address.toString(16)} (ENXIO)`);
    return d;
  }
  async readByte(address: number, command: number): Promise<number> {
    return this.#dev(address).readByte(command);
  }
  async writeByte(address: number, command: number, byte: number): Promise<void> {
    this.log.push(`w 0x${address.toString(16)} ${command} ${byte}`);
    this.#dev(address).writeByte(command, byte);
  }
  async readWord(address: number, command: number): Promise<number> {
    const d = this.#dev(address);
    if (d instanceof SimIna219) return d.word(command);
    return d.readByte(command) | (d.readByte(command + 1) << 8);
  }
  async writeWord(address: number, command: number, word: number): Promise<void> {
    const d = this.#dev(address);
    if (d instanceof SimIna219) return d.setWord(command, word);
    d.writeByte(command, word & 0xff);
    d.writeByte(command + 1, word >> 8);
  }
  async receiveByte(address: number): Promise<number> {
    return this.#dev(address).receive();
  }
  async sendByte(address: number, byte: number): Promise<void> {
    this.log.push(`s 0x${address.toString(16)} ${byte}`);
    this.#dev(address).send(byte);
  }
  async i2cWrite(address: number, length: number, buffer: Buffer): Promise<{ bytesWritten: number; buffer: Buffer }> {
    this.#dev(address).write(buffer.subarray(0, length));
    return { bytesWritten: length, buffer };
  }
  async i2cRead(address: number, length: number, buffer: Buffer): Promise<{ bytesRead: number; buffer: Buffer }> {
    this.#dev(address).read(length).copy(buffer);
    return { bytesRead: length, buffer };
  }
  async close(): Promise<void> {}
}
