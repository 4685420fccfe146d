/**
 * Jobs and alerts as the log and the metrics see them: a finished job is
 * counted and may have moved roles or states (the status is re-read), a
 * started or finished job and every alert are logged, progress sets its
 * gauge.
 */
import type { Logger } from 'pino';
import type { EventBus } from './events.ts';
import type { JobRunner } from './jobs.ts';
import type { Metrics } from './metrics.ts';
import type { StatusView } from './status-view.ts';

export class JobEvents {
  #unsubscribe: (() => void)[] = [];

  constructor(
    private readonly bus: EventBus,
    private readonly jobs: JobRunner,
    private readonly metrics: Metrics,
    private readonly status: StatusView,
    private readonly log: Logger,
  ) {}

  start(): void {
    const { bus, log } = this;
    this.#unsubscribe = [
      bus.on(['job.done', 'job.failed', 'job.cancelled'], ({ job }) => {
        const j = this.jobs.get(job.id);
        this.metrics.jobFinished(j);
        this.status.publishChange();
        log[j.state === 'failed' ? 'error' : 'info']({ job: j.id, kind: j.kind, state: j.state, seconds: j.seconds, error: j.error?.message }, `job ${j.kind} ${j.state}`);
      }),
      bus.on('job.started', ({ job: j }) => {
        this.metrics.setJob(this.jobs.get(j.id));
        log.info({ job: j.id, kind: j.kind, trigger: j.trigger, pair: j.pair }, `job ${j.kind} started`);
      }),
      bus.on('job.queued', ({ job: j }) => log.info({ job: j.id, kind: j.kind, trigger: j.trigger, pair: j.pair }, `job ${j.kind} queued`)),
      bus.on('alert', (a) => log[a.level === 'critical' ? 'error' : a.level === 'warning' ? 'warn' : 'info']({ code: a.code }, a.message)),
      bus.on('job.progress', ({ progress }) => this.metrics.jobProgress.set(progress.percent / 100)),
    ];
  }

  stop(): void {
    for (const off of this.#unsubscribe) off();
    this.#unsubscribe = [];
  }
}
