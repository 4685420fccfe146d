/**
 * The failover button: press-and-hold (holdMs) asks for a failover, with the
 * status LED blinking while it is held so the operator sees the count run;
 * a short press asks for status on the display. A button already held when
 * the controller starts is the recovery gesture, reported separately so it
 * never doubles as a failover.
 */
import type { InputChannel, OutputChannel } from './channel.ts';
import type { Clock } from './clock.ts';

export type ButtonGesture = { kind: 'press' | 'release' | 'short' | 'hold' | 'startup-hold'; heldMs: number };

export class ButtonWatcher {
  #pressedAt: number | null = null;
  #holdTimer: unknown = null;
  #blinkTimer: unknown = null;
  #blinkOn = false;
  #fired = false;
  #startup = false;
  #unsubscribe: (() => void) | null = null;

  constructor(
    private readonly input: InputChannel,
    private readonly led: OutputChannel | undefined,
    private readonly clock: Clock,
    private readonly opts: { holdMs: number; blinkMs: number },
    private readonly onGesture: (g: ButtonGesture) => void,
  ) {}

  /**
   * Start watching. Resolves with true when the button was held for holdMs
   * from start-up (the recovery gesture), false otherwise; a press at start
   * that is let go early is ignored.
   */
  async start(): Promise<boolean> {
    await this.input.start();
    this.#unsubscribe = this.input.onChange((on, at) => (on ? this.#press(at) : this.#release(at)));
    if (!(await this.input.value())) return false;
    this.#startup = true;
    this.#press(this.clock.now());
    return new Promise<boolean>((resolve) => {
      const done = (held: boolean) => {
        off();
        resolve(held);
      };
      const off = this.input.onChange((on) => {
        if (!on) done(false);
      });
      const check = () => (this.#fired ? done(true) : this.#pressedAt === null ? done(false) : this.clock.setTimeout(check, this.opts.blinkMs));
      this.clock.setTimeout(check, this.opts.holdMs);
    });
  }

  stop(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    this.#clearTimers();
    this.input.stop();
  }

  get held(): boolean {
    return this.#pressedAt !== null;
  }

  #press(at: number): void {
    if (this.#pressedAt !== null) return;
    this.#pressedAt = at;
    this.#fired = false;
    this.onGesture({ kind: 'press', heldMs: 0 });
    this.#holdTimer = this.clock.setTimeout(() => this.#holdReached(), this.opts.holdMs);
    this.#blink();
  }

  #holdReached(): void {
    this.#holdTimer = null;
    if (this.#pressedAt === null) return;
    this.#fired = true;
    this.#stopBlink();
    this.onGesture({ kind: this.#startup ? 'startup-hold' : 'hold', heldMs: this.clock.now() - this.#pressedAt });
  }

  #release(at: number): void {
    if (this.#pressedAt === null) return;
    const heldMs = at - this.#pressedAt;
    const fired = this.#fired;
    this.#pressedAt = null;
    this.#startup = false;
    this.#clearTimers();
    this.onGesture({ kind: 'release', heldMs });
    if (!fired) this.onGesture({ kind: 'short', heldMs });
  }

  #blink(): void {
    if (!this.led || this.#pressedAt === null) return;
    this.#blinkOn = !this.#blinkOn;
    this.led.set(this.#blinkOn).catch(() => {});
    this.#blinkTimer = this.clock.setTimeout(() => this.#blink(), this.opts.blinkMs);
  }

  #stopBlink(): void {
    if (this.#blinkTimer !== null) this.clock.clearTimeout(this.#blinkTimer);
    this.#blinkTimer = null;
    if (this.led && this.#blinkOn) {
      this.#blinkOn = false;
      this.led.set(false).catch(() => {});
    }
  }

  #clearTimers(): void {
    if (this.#holdTimer !== null) this.clock.clearTimeout(this.#holdTimer);
    this.#holdTimer = null;
    this.#stopBlink();
  }
}
