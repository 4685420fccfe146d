/**
 * A minimal PNG reader for the images tests render (rsvg-convert's output):
 * 8-bit greyscale, RGB or RGBA, not interlaced (PNG specification, sections
 * 11.2.2 IHDR, 9 filtering). Enough to look at pixels without a dependency.
 */
import { inflateSync } from 'node:zlib';

export interface Image {
  width: number;
  height: number;
  /** RGBA, 4 bytes per pixel, row after row. */
  rgba: Buffer;
}

export function readPng(file: Buffer): Image {
  if (!file.subarray(0, 8).equals(Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]))) throw new Error('not a PNG file');
  let pos = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (pos < file.length) {
    const len = file.readUInt32BE(pos);
    const type = file.toString('latin1', pos + 4, pos + 8);
    const data = file.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const depth = data[8];
      const colour = data[9];
      if (depth !== 8 || data[12] !== 0) throw new Error(`PNG with bit depth ${depth}, interlace ${data[12]}: only 8-bit, not interlaced`);
      channels = ({ 0: 1, 2: 3, 4: 2, 6: 4 } as Record<number, number>)[colour!] ?? 0;
      if (!channels) throw new Error(`PNG colour type ${colour} is not supported`);
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = Buffer.alloc(width * height * 4);
  const prev = Buffer.alloc(stride);
  const cur = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? cur[i - channels]! : 0;
      const b = prev[i]!;
      const c = i >= channels ? prev[i - channels]! : 0;
      let v = line[i]!;
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      cur[i] = v & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 4;
      const s = x * channels;
      if (channels === 1 || channels === 2) {
        out[o] = out[o + 1] = out[o + 2] = cur[s]!;
        out[o + 3] = channels === 2 ? cur[s + 1]! : 255;
      } else {
        out[o] = cur[s]!;
        out[o + 1] = cur[s + 1]!;
        out[o + 2] = cur[s + 2]!;
        out[o + 3] = channels === 4 ? cur[s + 3]! : 255;
      }
    }
    cur.copy(prev);
  }
  return { width, height, rgba: out };
}

/** Whether the pixel differs from opaque white by more than `tolerance` in any channel. */
export function inked(img: Image, x: number, y: number, tolerance = 40): boolean {
  const o = (y * img.width + x) * 4;
  return img.rgba[o + 3]! > 0 && (255 - img.rgba[o]! > tolerance || 255 - img.rgba[o + 1]! > tolerance || 255 - img.rgba[o + 2]! > tolerance);
}
