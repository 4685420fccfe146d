/**
 * CRC-32 (IEEE 802.3, the one GPT uses). Node ≥ 20.15 has it in zlib; older
 * releases get a small table implementation with the same result.
 */
import * as zlib from 'node:zlib';

let table: Uint32Array | undefined;

function tableCrc32(data: Uint8Array): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = table[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const native: ((data: Uint8Array) => number) | undefined =
  typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? (data) => zlib.crc32(data) >>> 0 : undefined;

export function crc32(data: Uint8Array): number {
  return native ? native(data) : tableCrc32(data);
}

/** Exposed so tests can check both paths agree. */
export const crc32Table = tableCrc32;
