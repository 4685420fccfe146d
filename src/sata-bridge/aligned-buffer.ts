/**
 * Page-aligned buffers for O_DIRECT. Node's Buffers are not page-aligned, but
 * the backing store of a WebAssembly.Memory is, so each buffer gets its own.
 */

const WASM_PAGE = 64 * 1024;

export function allocAligned(size: number): Buffer {
  if (!Number.isInteger(size) || size <= 0) throw new RangeError(`aligned buffer size must be a positive integer, got ${size}`);
  const pages = Math.ceil(size / WASM_PAGE);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  return Buffer.from(memory.buffer, 0, size);
}
