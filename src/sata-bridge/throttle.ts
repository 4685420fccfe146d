/**
 * A drive as slow as a USB–SATA bridge: the simulated rig wraps its image
 * files in it so syncs take the time they would on the hardware (progress,
 * cancellation and sync windows then behave as they do there).
 */
import { DeviceWrapper, type BlockDevice } from './block-device.ts';

/** Spaces I/O out to a throughput in bytes per millisecond; one per bay, shared by every handle on it. */
export class Throttle {
  #nextFree = 0;
  #held: { released: Promise<void>; release: () => void } | null = null;
  constructor(readonly bytesPerMs: number) {
    if (!(bytesPerMs > 0)) throw new RangeError(`throttle rate must be positive, got ${bytesPerMs} bytes/ms`);
  }

  /**
   * Stalls the bridge as a hung one does: every I/O that has not yet had its
   * turn waits until the returned function is called (calling it twice is
   * harmless). Lets a test keep a job running until it has acted on it.
   */
  hold(): () => void {
    if (!this.#held) {
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      this.#held = { released, release };
    }
    const held = this.#held;
    return () => {
      if (this.#held === held) this.#held = null;
      held.release();
    };
  }

  async take(bytes: number): Promise<void> {
    while (this.#held) await this.#held.released;
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
