/**
 * Jobs and alerts as the log and the metrics see them: a finished job is
 * counted and may have moved roles or states (the status is re-read), a
 * started or finished job and every alert are logged, progress sets its
 * gauge.
 */
import type { Logger } from 'pino';
import type { AlertEvent } from '../../src/bootswitch/index.ts';
import type { DaemonEvent, EventBus } from './events.ts';
import type { JobRunner } from './jobs.ts';
import type { Metrics } from './metrics.ts';
import type { StatusView } from './status-view.ts';

export class JobEvents {
  #unsubscribe: (() => void) | null = null;

  constructor(
    private readonly bus: EventBus,
    private readonly jobs: JobRunner,
    private readonly metrics: Metrics,
    private readonly status: StatusView,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.#unsubscribe = this.bus.subscribe((e) => this.#on(e));
  }

  stop(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  #on(e: DaemonEvent): void {
    if (e.type === 'job.done' || e.type === 'job.failed' || e.type === 'job.cancelled') {
      const j = this.jobs.get((e.data as { job: { id: string } }).job.id);
      this.metrics.jobFinished(j);
      this.status.publishChange();
      this.log[j.state === 'failed' ? 'error' : 'info']({ job: j.id, kind: j.kind, state: j.state, seconds: j.seconds, error: j.error?.message }, `job ${j.kind} ${j.state}`);
    } else if (e.type === 'job.started') {
      const j = (e.data as { job: { id: string; kind: string; trigger: string } }).job;
      this.log.info({ job: j.id, kind: j.kind, trigger: j.trigger }, `job ${j.kind} started`);
    } else if (e.type === 'alert') {
      const a = e.data as AlertEvent;
      this.log[a.level === 'critical' ? 'error' : a.level === 'warning' ? 'warn' : 'info']({ code: a.code }, a.message);
    } else if (e.type === 'job.progress') {
      const p = e.data as { progress: { percent: number } };
      this.metrics.jobProgress.set(p.progress.percent / 100);
    }
  }
}
