/**
 * Prometheus metrics on a registry of their own (a test running two daemons
 * in one process must not share counters). dpsr's own are prefixed dpsr_;
 * prom-client's default process metrics keep their standard names
 * (process_*, nodejs_*), so dashboards and rules written for any Node
 * service work unchanged. dpsr_build_info carries the version as labels.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { JobRecord } from './jobs.ts';
import { packageVersion } from './cli/version.ts';

const STANDBY_STATES = ['consistent', 'syncing', 'inconsistent', 'unpaired'] as const;

export class Metrics {
  readonly registry = new Registry();
  readonly syncBytesWritten = new Counter({ name: 'dpsr_sync_bytes_written_total', help: 'Bytes written to a target by clone, sync and re-protect jobs', labelNames: ['kind', 'pair'], registers: [this.registry] });
  readonly syncBytesWalked = new Counter({ name: 'dpsr_sync_bytes_walked_total', help: 'Bytes read and compared by copy and verify jobs', labelNames: ['kind', 'pair'], registers: [this.registry] });
  readonly jobDuration = new Histogram({
    name: 'dpsr_job_duration_seconds',
    help: 'Duration of finished jobs',
    labelNames: ['kind', 'state', 'pair'],
    buckets: [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600],
    registers: [this.registry],
  });
  readonly jobsTotal = new Counter({ name: 'dpsr_jobs_total', help: 'Finished jobs by kind, final state and pair', labelNames: ['kind', 'state', 'pair'], registers: [this.registry] });
  readonly lastSuccess = new Gauge({ name: 'dpsr_last_sync_success_timestamp_seconds', help: 'Unix time of the last completed sync, clone or re-protect of the pair (0: never)', labelNames: ['pair'], registers: [this.registry] });
  readonly lastSyncDuration = new Gauge({ name: 'dpsr_last_sync_duration_seconds', help: 'Duration of the last completed sync of the pair', labelNames: ['pair'], registers: [this.registry] });
  readonly standbyState = new Gauge({ name: 'dpsr_standby_state', help: "1 for the pair's standby drive state, 0 for the others", labelNames: ['state', 'pair'], registers: [this.registry] });
  readonly jobState = new Gauge({ name: 'dpsr_job_state', help: '1 when a job of this kind runs (state="running"), else 1 on state="idle"', labelNames: ['state', 'kind'], registers: [this.registry] });
  readonly jobProgress = new Gauge({ name: 'dpsr_job_progress_ratio', help: 'Progress of the running job from 0 to 1', registers: [this.registry] });
  readonly generation = new Gauge({ name: 'dpsr_generation', help: 'Generation of the data each bay holds', labelNames: ['bay', 'role', 'pair'], registers: [this.registry] });
  readonly hostPowered = new Gauge({ name: 'dpsr_host_powered', help: '1 while the host power LED is lit', registers: [this.registry] });
  readonly bootBay = new Gauge({ name: 'dpsr_boot_bay', help: '1 for the bay the relays connect to the host', labelNames: ['bay'], registers: [this.registry] });
  /** By pair (config pairs[].id); summed over `pair` it is the count the unlabelled metric gave before data pairs. */
  readonly failovers = new Counter({ name: 'dpsr_failovers_total', help: 'Failovers since the daemon started, by pair', labelNames: ['pair'], registers: [this.registry] });
  readonly driveHealthy = new Gauge({ name: 'dpsr_drive_health_ok', help: '1 when the drive in the bay passes its SMART checks and thresholds', labelNames: ['bay'], registers: [this.registry] });
  readonly driveTemperature = new Gauge({ name: 'dpsr_drive_temperature_celsius', help: 'Drive temperature from SMART', labelNames: ['bay'], registers: [this.registry] });
  readonly driveReallocated = new Gauge({ name: 'dpsr_drive_reallocated_sectors', help: 'Reallocated sectors from SMART', labelNames: ['bay'], registers: [this.registry] });
  readonly drivePending = new Gauge({ name: 'dpsr_drive_pending_sectors', help: 'Pending (unreadable) sectors from SMART', labelNames: ['bay'], registers: [this.registry] });
  readonly eventClients = new Gauge({ name: 'dpsr_event_stream_clients', help: 'Open event-stream connections', registers: [this.registry] });
  readonly inlineDirtyBytes = new Gauge({ name: 'dpsr_inline_dirty_bytes', help: "Inline mode: bytes the host wrote to the pair's export since its last sync started (the live dirty bitmap)", labelNames: ['pair'], registers: [this.registry] });
  readonly inlineExportUp = new Gauge({ name: 'dpsr_inline_export_up', help: "Inline mode: 1 while qemu-storage-daemon serves the pair's export to the host", labelNames: ['pair'], registers: [this.registry] });
  readonly eventLogReadBytes = new Counter({ name: 'dpsr_event_log_read_bytes_total', help: 'Bytes read from the event log by GET /api/events/log scans', registers: [this.registry] });
  readonly eventLogScans = new Counter({ name: 'dpsr_event_log_scans_total', help: 'Finished GET /api/events/log scans: result="done", or "stopped" when the client went away first', labelNames: ['result'], registers: [this.registry] });
  readonly httpRequests = new Counter({ name: 'dpsr_http_requests_total', help: 'API requests by route and status', labelNames: ['route', 'status'], registers: [this.registry] });

  readonly buildInfo = new Gauge({ name: 'dpsr_build_info', help: 'Always 1; the labels name the running dpsr version and Node.js version', labelNames: ['version', 'nodeversion'], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    this.buildInfo.set({ version: packageVersion(), nodeversion: process.version }, 1);
    this.definePairs(['system']);
    this.setJob(null);
  }

  /** The controller's pairs (config pairs[].id): each starts unpaired and never synced. */
  definePairs(ids: string[]): void {
    this.standbyState.reset();
    this.lastSuccess.reset();
    this.failovers.reset();
    this.#pairs = ids;
    for (const pair of ids) {
      this.setStandbyState('unpaired', pair);
      this.lastSuccess.set({ pair }, 0);
      this.failovers.inc({ pair }, 0);
    }
  }

  #pairs: string[] = [];

  setStandbyState(state: (typeof STANDBY_STATES)[number], pair: string): void {
    for (const s of STANDBY_STATES) this.standbyState.set({ state: s, pair }, s === state ? 1 : 0);
  }

  setJob(job: JobRecord | null): void {
    this.jobState.reset();
    if (job) this.jobState.set({ state: 'running', kind: job.kind }, 1);
    else this.jobState.set({ state: 'idle', kind: '' }, 1);
    this.jobProgress.set(job?.progress ? job.progress.percent / 100 : 0);
  }

  jobFinished(job: JobRecord): void {
    // A job of no pair (the files' jobs) works on the boot pair's drives, the first pair.
    const pair = job.pair ?? this.#pairs[0] ?? 'system';
    this.jobsTotal.inc({ kind: job.kind, state: job.state, pair });
    if (job.seconds !== null) this.jobDuration.observe({ kind: job.kind, state: job.state, pair }, job.seconds);
    const r = job.result as { bytesWritten?: number; bytesTotal?: number; bytesCompared?: number } | null;
    if (r?.bytesWritten) this.syncBytesWritten.inc({ kind: job.kind, pair }, r.bytesWritten);
    const walked = r?.bytesTotal ?? r?.bytesCompared;
    if (walked) this.syncBytesWalked.inc({ kind: job.kind, pair }, walked);
    if (job.state === 'done' && job.kind !== 'verify' && job.kind !== 'recover') {
      this.lastSuccess.set({ pair }, Date.parse(job.finishedAt ?? new Date().toISOString()) / 1000);
      if (job.seconds !== null) this.lastSyncDuration.set({ pair }, job.seconds);
    }
    this.setJob(null);
  }

  /**
   * Values the pair records hold across restarts, refreshed at each scrape:
   * a restarted daemon reports the last successful sync it recorded, not 0.
   */
  observeStatus(s: { pairs: { id: string; lastSuccess: string | null }[] }): void {
    for (const p of s.pairs) {
      const at = p.lastSuccess ? Date.parse(p.lastSuccess) / 1000 : 0;
      if (Number.isFinite(at) && at > 0) this.lastSuccess.set({ pair: p.id }, at);
    }
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
