/**
 * SSD1306 128×64 OLED over I2C: the operator's status screen (active bay,
 * last sync, job progress, alert). Drawn into a frame buffer with a 5×7
 * font and sent in one data transfer per page.
 */
import { DeviceError } from '../errors.ts';
import type { I2cBus } from './io.ts';

/** 5×7 glyphs, one byte per column, bit 0 at the top. Lower case is shown as upper case. */
const FONT: Record<string, number[]> = {
  ' ': [0, 0, 0, 0, 0], '0': [0x3e, 0x51, 0x49, 0x45, 0x3e], '1': [0x00, 0x42, 0x7f, 0x40, 0x00], '2': [0x42, 0x61, 0x51, 0x49, 0x46],
  '3': [0x21, 0x41, 0x45, 0x4b, 0x31], '4': [0x18, 0x14, 0x12, 0x7f, 0x10], '5': [0x27, 0x45, 0x45, 0x45, 0x39], '6': [0x3c, 0x4a, 0x49, 0x49, 0x30],
  '7': [0x01, 0x71, 0x09, 0x05, 0x03], '8': [0x36, 0x49, 0x49, 0x49, 0x36], '9': [0x06, 0x49, 0x49, 0x29, 0x1e], A: [0x7e, 0x11, 0x11, 0x11, 0x7e],
  B: [0x7f, 0x49, 0x49, 0x49, 0x36], C: [0x3e, 0x41, 0x41, 0x41, 0x22], D: [0x7f, 0x41, 0x41, 0x22, 0x1c], E: [0x7f, 0x49, 0x49, 0x49, 0x41],
  F: [0x7f, 0x09, 0x09, 0x09, 0x01], G: [0x3e, 0x41, 0x49, 0x49, 0x7a], H: [0x7f, 0x08, 0x08, 0x08, 0x7f], I: [0x00, 0x41, 0x7f, 0x41, 0x00],
  J: [0x20, 0x40, 0x41, 0x3f, 0x01], K: [0x7f, 0x08, 0x14, 0x22, 0x41], L: [0x7f, 0x40, 0x40, 0x40, 0x40], M: [0x7f, 0x02, 0x0c, 0x02, 0x7f],
  N: [0x7f, 0x04, 0x08, 0x10, 0x7f], O: [0x3e, 0x41, 0x41, 0x41, 0x3e], P: [0x7f, 0x09, 0x09, 0x09, 0x06], Q: [0x3e, 0x41, 0x51, 0x21, 0x5e],
  R: [0x7f, 0x09, 0x19, 0x29, 0x46], S: [0x46, 0x49, 0x49, 0x49, 0x31], T: [0x01, 0x01, 0x7f, 0x01, 0x01], U: [0x3f, 0x40, 0x40, 0x40, 0x3f],
  V: [0x1f, 0x20, 0x40, 0x20, 0x1f], W: [0x3f, 0x40, 0x38, 0x40, 0x3f], X: [0x63, 0x14, 0x08, 0x14, 0x63], Y: [0x07, 0x08, 0x70, 0x08, 0x07],
  Z: [0x61, 0x51, 0x49, 0x45, 0x43], ':': [0x00, 0x36, 0x36, 0x00, 0x00], '.': [0x00, 0x60, 0x60, 0x00, 0x00], '-': [0x08, 0x08, 0x08, 0x08, 0x08],
  '/': [0x20, 0x10, 0x08, 0x04, 0x02], '%': [0x23, 0x13, 0x08, 0x64, 0x62], '!': [0x00, 0x00, 0x5f, 0x00, 0x00], '?': [0x02, 0x01, 0x51, 0x09, 0x06],
};

export interface StatusScreen {
  /** The boot pair's active bay (the drive the host boots from). */
  activeBay: 'A' | 'B';
  lastSync: string | null;
  /** 0-100 while a job runs. */
  progress: number | null;
  job?: string;
  alert?: string | null;
  /** The data pairs, one line each (at most three): the pair, the bay the host has as its data disk, the standby's state. */
  pairs?: { id: string; active: string; state: string }[];
}

/** The free rows the data pairs' lines take, in order: below the active bay, below the last sync, above the alert. */
const PAIR_ROWS = [1, 3, 6];

export class FrameBuffer {
  readonly bytes = new Uint8Array(128 * 8);
  text(col: number, page: number, s: string): void {
    let x = col;
    for (const ch of s.toUpperCase()) {
      const g = FONT[ch] ?? FONT['?'];
      for (const column of g) if (x < 128) this.bytes[page * 128 + x++] = column;
      x++;
    }
  }
  bar(page: number, percent: number): void {
    const w = Math.round((Math.max(0, Math.min(100, percent)) / 100) * 126);
    for (let x = 0; x < 128; x++) this.bytes[page * 128 + x] = x === 0 || x === 127 ? 0x7e : x <= w ? 0x7e : 0x42;
  }
}

export function renderStatus(s: StatusScreen): FrameBuffer {
  const fb = new FrameBuffer();
  fb.text(0, 0, `ACTIVE BAY ${s.activeBay}`);
  fb.text(0, 2, `SYNC ${s.lastSync ?? 'NEVER'}`.slice(0, 21));
  (s.pairs ?? []).slice(0, PAIR_ROWS.length).forEach((p, i) => fb.text(0, PAIR_ROWS[i]!, `${p.id.slice(0, 8)} ${p.active} ${p.state}`.slice(0, 21)));
  if (s.progress !== null) {
    fb.text(0, 4, `${(s.job ?? 'JOB').slice(0, 14)} ${Math.round(s.progress)}%`);
    fb.bar(5, s.progress);
  }
  if (s.alert) fb.text(0, 7, `! ${s.alert}`.slice(0, 21));
  return fb;
}

export class Ssd1306 {
  constructor(
    readonly bus: I2cBus,
    readonly address: number,
  ) {}

  async #cmd(...bytes: number[]): Promise<void> {
    const buf = Buffer.from([0x00, ...bytes]);
    await this.bus.i2cWrite(this.address, buf.length, buf);
  }

  async #io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new DeviceError(`SSD1306 at 0x${this.address.toString(16)}: ${what}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The usual 128×64 init: charge pump on, horizontal addressing, display on. */
  init(): Promise<void> {
    return this.#io('init', () =>
      this.#cmd(0xae, 0xd5, 0x80, 0xa8, 0x3f, 0xd3, 0x00, 0x40, 0x8d, 0x14, 0x20, 0x00, 0xa1, 0xc8, 0xda, 0x12, 0x81, 0xcf, 0xd9, 0xf1, 0xdb, 0x40, 0xa4, 0xa6, 0xaf),
    );
  }

  show(fb: FrameBuffer): Promise<void> {
    return this.#io('draw', async () => {
      await this.#cmd(0x21, 0, 127, 0x22, 0, 7);
      for (let page = 0; page < 8; page++) {
        const buf = Buffer.alloc(129);
        buf[0] = 0x40;
        buf.set(fb.bytes.subarray(page * 128, page * 128 + 128), 1);
        await this.bus.i2cWrite(this.address, buf.length, buf);
      }
    });
  }
}
