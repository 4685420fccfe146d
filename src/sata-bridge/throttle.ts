/**
 * A drive as slow as a USB–SATA bridge: the simulated rig wraps its image
 * files in it so syncs take the time they would on the hardware (progress,
 * cancellation and sync windows then behave as they do there).
 */
import { DeviceWrapper, type BlockDevice } from './block-device.ts';

/** Spaces I/O out to a throughput in bytes per millisecond; one per bay, shared by every handle on it. */
export class Throttle {
  #nextFree = 0;
  constructor(readonly bytesPerMs: number) {
    if (!(bytesPerMs > 0)) throw new RangeError(`throttle rate must be positive, got ${bytesPerMs} bytes/ms`);
  }
  async take(bytes: number): Promise<void> {
    const now = performance.now();
    const start = Math.max(now, this.#nextFree);
    this.#nextFree = start + bytes / this.bytesPerMs;
    const wait = this.#nextFree - now;
    if (wait >= 1) await new Promise((r) => setTimeout(r, wait));
  }
}

/** Every read and write waits its turn on the throttle, then goes to the drive below. */
export class ThrottledDevice extends DeviceWrapper {
  constructor(
    inner: BlockDevice,
    readonly throttle: Throttle,
  ) {
    super(inner);
  }
  override async read(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    await this.throttle.take(length);
    return this.inner.read(buf, position, length);
  }
  override async write(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    await this.throttle.take(length);
    return this.inner.write(buf, position, length);
  }
}
