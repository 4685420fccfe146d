/**
 * Channel semantics shared by every driver: active-low inversion, bounded
 * pulses that always release, debounced inputs, and a busy error instead of
 * a queue when an operation already runs on a channel (a queued relay move
 * would run later, against a situation nobody checked).
 */
import { BadInputError, BusyError, DeviceError } from '../errors.ts';
import type { Clock } from './clock.ts';
import type { DigitalInput, DigitalOutput } from './io.ts';

export class OutputChannel {
  #busy: string | null = null;
  #last: boolean;

  constructor(
    readonly name: string,
    readonly line: DigitalOutput,
    readonly activeLow: boolean,
    private readonly clock: Clock,
    initialOn: boolean,
    private readonly onChange: (name: string, on: boolean) => void = () => {},
  ) {
    this.#last = initialOn;
  }

  get busy(): boolean {
    return this.#busy !== null;
  }

  /** The state we last commanded (logical, inversion applied). */
  get commanded(): boolean {
    return this.#last;
  }

  #claim(op: string): void {
    if (this.#busy) throw new BusyError(`channel ${this.name} is busy (${this.#busy}); refused ${op}`, { hint: 'wait for the running operation to finish' });
    this.#busy = op;
  }

  async #write(on: boolean): Promise<void> {
    try {
      await this.line.write(on !== this.activeLow);
    } catch (e) {
      throw e instanceof DeviceError ? e : new DeviceError(`channel ${this.name}: write failed: ${(e as Error).message}`, { cause: e });
    }
    if (on !== this.#last) {
      this.#last = on;
      this.onChange(this.name, on);
    }
  }

  async set(on: boolean): Promise<void> {
    this.#claim(on ? 'on' : 'off');
    try {
      await this.#write(on);
    } finally {
      this.#busy = null;
    }
  }

  /** The output latch read back from the hardware, inversion applied. */
  async readBack(): Promise<boolean> {
    try {
      return (await this.line.read()) !== this.activeLow;
    } catch (e) {
      throw new DeviceError(`channel ${this.name}: read-back failed: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * On for `ms`, then off — off also when anything throws or the signal
   * aborts, so an ATX line is never left held.
   */
  async pulse(ms: number, bounds: { minMs: number; maxMs: number }, signal?: AbortSignal): Promise<void> {
    if (!Number.isFinite(ms) || ms < bounds.minMs || ms > bounds.maxMs) {
      throw new BadInputError(`pulse on ${this.name}: ${ms} ms is outside ${bounds.minMs}-${bounds.maxMs} ms`);
    }
    this.#claim(`pulse ${ms} ms`);
    try {
      await this.#write(true);
      await this.clock.sleep(ms, signal);
    } finally {
      try {
        await this.#write(false);
      } finally {
        this.#busy = null;
      }
    }
  }
}

/**
 * A sampled, debounced input: a new level counts only after it has been
 * seen unchanged for `debounceMs`. Sampling by polling works the same on
 * every driver (sysfs, Firmata reports, I2C expanders).
 */
export class InputChannel {
  #stable: boolean | null = null;
  #candidate: boolean | null = null;
  #candidateSince = 0;
  #timer: unknown = null;
  #listeners = new Set<(on: boolean, at: number) => void>();
  #stopped = true;
  #errors = 0;

  constructor(
    readonly name: string,
    readonly line: DigitalInput,
    readonly activeLow: boolean,
    private readonly clock: Clock,
    private readonly debounceMs: number,
    private readonly pollMs: number,
    private readonly onError: (e: unknown) => void = () => {},
  ) {}

  /** The debounced level; reads the line once if sampling has not started. */
  async value(): Promise<boolean> {
    if (this.#stable !== null) return this.#stable;
    return (await this.line.read()) !== this.activeLow;
  }

  /** The line right now, without debounce: for safety checks that must not act on a stale level. */
  async readNow(): Promise<boolean> {
    return (await this.line.read()) !== this.activeLow;
  }

  onChange(fn: (on: boolean, at: number) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  async start(): Promise<void> {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#stable = (await this.line.read()) !== this.activeLow;
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== null) this.clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = this.clock.setTimeout(() => void this.sample(), this.pollMs);
  }

  /** One sampling step; exposed so a driver with edge interrupts can sample at once. */
  async sample(): Promise<void> {
    let level: boolean;
    try {
      level = (await this.line.read()) !== this.activeLow;
      this.#errors = 0;
    } catch (e) {
      // Report the first failure of a run, not one per poll.
      if (this.#errors++ === 0) this.onError(e);
      this.#schedule();
      return;
    }
    const now = this.clock.now();
    if (level === this.#stable) {
      this.#candidate = null;
    } else if (this.#candidate !== level) {
      this.#candidate = level;
      this.#candidateSince = now;
    }
    if (this.#candidate !== null && now - this.#candidateSince >= this.debounceMs) {
      this.#stable = level;
      this.#candidate = null;
      for (const fn of [...this.#listeners]) fn(level, now);
    }
    this.#schedule();
  }
}
