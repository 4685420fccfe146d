/** Progress of a long job: bytes done, rate and ETA, reported at a bounded rate. */

export type Phase = 'preparing' | 'copying' | 'comparing' | 'verifying' | 'hashing' | 'recovering' | 'flushing' | 'done';

export interface Progress {
  readonly phase: Phase;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  /** Bytes written to the target so far. */
  readonly bytesWritten: number;
  /** Bytes a second over the last few seconds. */
  readonly rate: number;
  /** Seconds left at the current rate, or null while unknown. */
  readonly etaSeconds: number | null;
  readonly percent: number;
}

export type ProgressListener = (p: Progress) => void;

export class ProgressTracker {
  private bytesDone = 0;
  private bytesWritten = 0;
  private lastEmit = 0;
  private readonly samples: { t: number; bytes: number }[] = [];

  constructor(
    private phase: Phase,
    private readonly bytesTotal: number,
    private readonly listener?: ProgressListener,
    private readonly intervalMs = 250,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.samples.push({ t: this.now(), bytes: 0 });
  }

  setPhase(phase: Phase): void {
    this.phase = phase;
    this.emit(true);
  }

  /** `bytes` more of the walk are finished, `written` of them went to the target. */
  advance(bytes: number, written = 0): void {
    this.bytesDone += bytes;
    this.bytesWritten += written;
    this.emit(false);
  }

  snapshot(): Progress {
    const t = this.now();
    while (this.samples.length > 2 && t - this.samples[0]!.t > 5000) this.samples.shift();
    const first = this.samples[0]!;
    const seconds = (t - first.t) / 1000;
    const rate = seconds > 0.05 ? (this.bytesDone - first.bytes) / seconds : 0;
    const left = this.bytesTotal - this.bytesDone;
    return {
      phase: this.phase,
      bytesDone: this.bytesDone,
      bytesTotal: this.bytesTotal,
      bytesWritten: this.bytesWritten,
      rate,
      etaSeconds: rate > 0 ? left / rate : this.bytesDone >= this.bytesTotal ? 0 : null,
      percent: this.bytesTotal > 0 ? Math.min(100, (this.bytesDone / this.bytesTotal) * 100) : 100,
    };
  }

  emit(force: boolean): void {
    const t = this.now();
    if (!force && t - this.lastEmit < this.intervalMs) return;
    this.lastEmit = t;
    this.samples.push({ t, bytes: this.bytesDone });
    this.listener?.(this.snapshot());
  }
}
