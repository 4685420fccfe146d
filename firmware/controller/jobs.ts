/**
 * One storage job at a time. A job has options, progress, a result, timings
 * and a short log; the last N are kept in the state directory, so after a
 * restart the history shows which job the daemon was running when it died
 * (and the daemon can resume it with the same options).
 */
import { join } from 'node:path';
import { BusyError, CancelledError, NotFoundError, RefusedError, errorData, isDpsrError, type ErrorData } from '../../src/errors.ts';
import { ensureSpaceReserve, readJsonChecked, writeJsonDurably, NoSpaceError, type WriteOptions } from '../../src/durable-file.ts';
import type { Progress } from '../../src/sync/index.ts';
import type { EventBus } from './events.ts';

export const JOB_KINDS = ['clone', 'sync', 'verify', 'recover', 'reprotect', 'restore', 'restore-files', 'diff'] as const;
export type JobKind = (typeof JOB_KINDS)[number];
export const JOB_STATES = ['queued', 'running', 'done', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface JobRecord {
  id: string;
  kind: JobKind;
  state: JobState;
  /** Who asked: api, a restart resuming an interrupted job, the rig's first start. */
  trigger: string;
  /** The drive pair the job works on (config pairs[].id); absent in histories from before pairs. */
  pair?: string;
  options: Record<string, unknown>;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  seconds: number | null;
  progress: Progress | null;
  result: unknown;
  /** `kind` is an error kind, or 'interrupted' for a job the daemon's restart cut short. */
  error: (Omit<ErrorData, 'kind'> & { kind: string }) | null;
  /** Set when the daemon stopped while the job ran. */
  interrupted?: boolean;
  cancel?: { at: string; rollback: boolean };
  log: { at: string; level: 'info' | 'warn' | 'error'; message: string }[];
}

export interface JobContext {
  readonly job: JobRecord;
  readonly signal: AbortSignal;
  progress(p: Progress): void;
  note(message: string): void;
  log(level: 'info' | 'warn' | 'error', message: string): void;
}

interface JobsFile {
  nextId: number;
  jobs: JobRecord[];
}

export class JobRunner {
  readonly file: string;
  #data: JobsFile;
  #current: { job: JobRecord; controller: AbortController; done: Promise<void> } | null = null;
  /** Jobs found running in the file at start: the daemon died under them. */
  readonly interrupted: JobRecord[] = [];

  constructor(
    private readonly stateDir: string,
    private readonly opts: { history: number; logLines: number },
    private readonly bus: EventBus,
    /** A reason no storage job may start now (a failover moving the drives), or null. */
    private readonly blockedBy: () => string | null = () => null,
  ) {
    this.file = join(stateDir, 'jobs.json');
    let data: JobsFile | undefined;
    try {
      data = readJsonChecked<JobsFile>(this.file);
    } catch {
      data = undefined; // a damaged history is not worth refusing to start over; the pair state is what matters
    }
    this.#data = data ?? { nextId: 1, jobs: [] };
    for (const j of this.#data.jobs) {
      if (j.state === 'running' || j.state === 'queued') {
        j.state = 'failed';
        j.interrupted = true;
        j.finishedAt = j.finishedAt ?? null;
        j.error = { kind: 'interrupted', message: 'the daemon stopped while this job ran' };
        this.interrupted.push(j);
      }
    }
    if (this.interrupted.length) {
      try {
        this.#save();
      } catch {
        /* a full state directory must not keep the daemon from starting (and recovering): the history is informational */
      }
    }
  }

  get current(): JobRecord | null {
    return this.#current?.job ?? null;
  }

  /** The running job of a pair, or null. */
  forPair(pair: string): JobRecord | null {
    const j = this.current;
    return j && j.pair === pair ? j : null;
  }

  list(): JobRecord[] {
    return [...this.#data.jobs].reverse();
  }

  get(id: string): JobRecord {
    const j = this.#data.jobs.find((x) => x.id === id);
    if (!j) throw new NotFoundError(`no job ${id}`, { hint: 'GET /api/jobs lists the kept history' });
    return j;
  }

  #save(options?: WriteOptions): void {
    writeJsonDurably(this.file, this.#data, options);
  }

  /** A recovery may use the state directory's space reserve: it is what a full state directory needs most. */
  #writeOptions(kind: JobKind): WriteOptions | undefined {
    return kind === 'recover' ? { reserve: this.stateDir } : undefined;
  }

  /** Refuses (BusyError, 409) while another job runs or a failover moves the drives. */
  checkIdle(): void {
    const cur = this.#current?.job;
    if (cur) throw new BusyError(`a ${cur.kind} job (id ${cur.id}) is running${cur.progress ? ` at ${cur.progress.percent.toFixed(1)} %` : ''}`, { hint: `wait for it, or cancel it: POST /api/jobs/${cur.id}/cancel` });
    const why = this.blockedBy();
    if (why) throw new BusyError(why, { hint: 'wait until it has finished' });
  }

  /**
   * Starts a job now and returns its record at once; `run` does the work.
   * Whatever `run` returns becomes the result.
   */
  start(kind: JobKind, options: Record<string, unknown>, trigger: string, run: (ctx: JobContext) => Promise<unknown>, pair?: string): JobRecord {
    this.checkIdle();
    const now = new Date().toISOString();
    const job: JobRecord = {
      id: String(this.#data.nextId),
      kind,
      state: 'running',
      trigger,
      ...(pair ? { pair } : {}),
      options,
      createdAt: now,
      startedAt: now,
      finishedAt: null,
      seconds: null,
      progress: null,
      result: null,
      error: null,
      log: [],
    };
    const controller = new AbortController();
    const log = (level: 'info' | 'warn' | 'error', message: string) => {
      job.log.push({ at: new Date().toISOString(), level, message });
      if (job.log.length > this.opts.logLines) job.log.splice(0, job.log.length - this.opts.logLines);
    };
    const ctx: JobContext = {
      job,
      signal: controller.signal,
      progress: (p) => {
        job.progress = p;
        this.bus.publish('job.progress', { id: job.id, kind, progress: p });
      },
      note: (message) => {
        log('info', message);
        this.bus.publish('job.note', { id: job.id, kind, message });
      },
      log,
    };
    log('info', `${kind} started (${trigger})`);
    // Recorded before it is listed or run: a job that cannot be recorded (a full state directory) never starts.
    const next: JobsFile = { nextId: this.#data.nextId + 1, jobs: [...this.#data.jobs, job].slice(-this.opts.history) };
    try {
      writeJsonDurably(this.file, next, this.#writeOptions(kind));
    } catch (e) {
      if (!(e instanceof NoSpaceError)) throw e;
      throw new NoSpaceError(`the state directory ${this.stateDir} is full: the ${kind} could not be recorded, so it did not start`, {
        hint: `free space on its filesystem (an interrupted sync's undo journal is freed by recover), then try again`,
        cause: e,
      });
    }
    this.#data = next;
    this.bus.publish('job.started', { job: summary(job) });
    const started = performance.now();
    const done = (async () => {
      try {
        job.result = (await run(ctx)) ?? null;
        job.state = job.cancel ? 'cancelled' : 'done';
        log('info', `${kind} ${job.state}`);
      } catch (e) {
        const cancelled = e instanceof CancelledError || (controller.signal.aborted && !isDpsrError(e));
        job.state = cancelled ? 'cancelled' : 'failed';
        job.error = errorData(e);
        log(cancelled ? 'warn' : 'error', job.error.message);
      } finally {
        job.finishedAt = new Date().toISOString();
        job.seconds = (performance.now() - started) / 1000;
        this.#current = null;
        try {
          this.#save(this.#writeOptions(kind));
        } catch {
          /* the history is informational: a full disk must not hide the result from the event stream */
        }
        if (kind === 'recover') ensureSpaceReserve(this.stateDir);
        this.bus.publish(job.state === 'done' ? 'job.done' : job.state === 'cancelled' ? 'job.cancelled' : 'job.failed', { job: summary(job) });
      }
    })();
    this.#current = { job, controller, done };
    return job;
  }

  cancel(id: string, rollback: boolean): JobRecord {
    const job = this.get(id);
    if (this.#current?.job !== job) throw new RefusedError(`job ${id} is ${job.state}, not running: nothing to cancel`);
    if (!job.cancel) {
      job.cancel = { at: new Date().toISOString(), rollback };
      job.log.push({ at: job.cancel.at, level: 'warn', message: `cancel requested${rollback ? ' (then roll back)' : ''}` });
      this.#current.controller.abort(new CancelledError(`job ${id} was cancelled`));
    }
    return job;
  }

  /** Resolves when the running job (if any) has finished. */
  async idle(): Promise<void> {
    while (this.#current) await this.#current.done;
  }
}

/** A job without its log, for events and status. */
export function summary(j: JobRecord): Omit<JobRecord, 'log'> {
  const { log: _log, ...rest } = j;
  return rest;
}
