/**
 * A drive with a volatile write cache, for power-cut tests: a write is held
 * in the cache (reads see it) until `flush()` sends every held write to the
 * drive below, in order. `powerCut()` is the power going off: of what is
 * still held, a random choice of sectors reaches the drive (as a drive's
 * cache, or the page cache, may have written any of it back on its own), the
 * rest is lost, and the drive answers nothing more.
 */
import { DeviceError } from '../../src/errors.ts';
import { DeviceWrapper, type BlockDevice } from '../../src/sata-bridge/index.ts';
import { xorshift32 } from './xorshift.ts';

export class VolatileCacheDevice extends DeviceWrapper {
  private held: { position: number; data: Buffer }[] = [];
  private off = false;
  private closed = false;
  /** Writes the cache took, and writes a flush sent on; for tests that cut at a chosen moment. */
  writes = 0;
  flushes = 0;

  constructor(inner: BlockDevice) {
    super(inner);
  }

  /** Bytes written and not yet flushed. */
  get heldBytes(): number {
    return this.held.reduce((n, w) => n + w.data.byteLength, 0);
  }

  override async read(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    if (this.off) throw new DeviceError(`${this.path} has no power`, { fault: 'transport' });
    await this.inner.read(buf, position, length);
    for (const w of this.held) {
      const from = Math.max(position, w.position);
      const to = Math.min(position + length, w.position + w.data.byteLength);
      if (from < to) buf.set(w.data.subarray(from - w.position, to - w.position), from - position);
    }
  }

  override async write(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    if (this.off) throw new DeviceError(`${this.path} has no power`, { fault: 'transport' });
    if (this.closed) throw new DeviceError(`${this.path} is closed`);
    if (!this.writable) throw new DeviceError(`${this.path} was opened read-only`);
    const s = this.logicalSectorSize;
    if (position % s !== 0 || length % s !== 0 || length > buf.byteLength || position < 0) throw new RangeError(`write of ${length} bytes at ${position} on ${this.path} is not aligned to ${s}-byte sectors`);
    if (position + length > this.size) throw new DeviceError(`write of ${length} bytes at ${position} runs past the end of ${this.path} (${this.size} bytes)`);
    this.held.push({ position, data: Buffer.from(buf.subarray(0, length)) });
    this.writes++;
  }

  override async flush(): Promise<void> {
    if (this.off) throw new DeviceError(`${this.path} has no power`, { fault: 'transport' });
    if (this.closed) throw new DeviceError(`${this.path} is closed`);
    const held = this.held;
    this.held = [];
    for (const w of held) await this.inner.write(w.data, w.position, w.data.byteLength);
    await this.inner.flush();
    this.flushes++;
  }

  /** The power goes off: each held sector reaches the drive or not, by `seed`; later calls fail. Returns the bytes that reached it. */
  async powerCut(seed: number): Promise<number> {
    const next = xorshift32(seed);
    const s = this.logicalSectorSize;
    let reached = 0;
    const held = this.held;
    this.held = [];
    this.off = true;
    for (const w of held) {
      for (let at = 0; at < w.data.byteLength; at += s) {
        if (next() % 2 === 0) continue;
        await this.inner.write(w.data.subarray(at, at + s), w.position + at, s);
        reached += s;
      }
    }
    await this.inner.flush();
    return reached;
  }

  override async close(): Promise<void> {
    // The drive below is closed whatever the power: the test's process goes on. What is held is lost, as at a cut.
    this.closed = true;
    this.held = [];
    await this.inner.close();
  }
}
