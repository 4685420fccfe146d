/**
 * The storage jobs: one per pair at a time, and by default one at a time on
 * the controller, the others queued in order (job-schedule.ts decides). A
 * job has options, progress, a result, timings
 * and a short log; the last N are kept in the state directory, so after a
 * restart the history shows which job the daemon was running when it died
 * (and the daemon can resume it with the same options).
 */
import { join } from 'node:path';
import { BusyError, CancelledError, NotFoundError, RefusedError, errorData, isDpsrError, type ErrorData } from '../../src/errors.ts';
import { ensureSpaceReserve, readJsonChecked, writeJsonDurably, NoSpaceError, ReadOnlyStateError, type WriteOptions } from '../../src/durable-file.ts';
import type { Progress } from '../../src/sync/index.ts';
import type { EventBus } from './events.ts';
import { startable, type JobSlot } from './job-schedule.ts';

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
  /** `late`: the cancel came after the work had completed; the job is done, nothing was stopped or rolled back. */
  cancel?: { at: string; rollback: boolean; late?: true };
  log: { at: string; level: 'info' | 'warn' | 'error'; message: string }[];
}

export interface JobContext {
  readonly job: JobRecord;
  readonly signal: AbortSignal;
  progress(p: Progress): void;
  note(message: string): void;
  log(level: 'info' | 'warn' | 'error', message: string): void;
  /**
   * Says that the work stopped short of what was asked because of the
   * cancel and returns normally with a partial result (a file restore
   * stopped between files). Without it, a run that returns is complete and
   * its job is done, even when a cancel arrived meanwhile.
   */
  stoppedEarly(): void;
}

interface JobsFile {
  nextId: number;
  jobs: JobRecord[];
}

export class JobRunner {
  readonly file: string;
  #data: JobsFile;
  #running = new Map<string, { job: JobRecord; slot: JobSlot; controller: AbortController; done: Promise<void> }>();
  /** Jobs asked for while others hold what they need, oldest first; each plans itself when it starts. */
  #waiting: { job: JobRecord; slot: JobSlot; prepare: () => PreparedJob }[] = [];
  #retry: ReturnType<typeof setTimeout> | null = null;
  /** Jobs found running in the file at start: the daemon died under them. */
  readonly interrupted: JobRecord[] = [];

  constructor(
    private readonly stateDir: string,
    private readonly opts: { history: number; logLines: number; parallel?: boolean },
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
        const queued = j.state === 'queued';
        j.state = 'failed';
        j.interrupted = true;
        j.finishedAt = j.finishedAt ?? null;
        j.error = { kind: 'interrupted', message: queued ? 'the daemon stopped while this job waited in the queue; it never started' : 'the daemon stopped while this job ran' };
        if (!queued) this.interrupted.push(j);
      }
    }
    if (this.interrupted.length || this.#data.jobs.some((j) => j.interrupted && j.startedAt === null)) {
      try {
        this.#save();
      } catch {
        /* a full state directory must not keep the daemon from starting (and recovering): the history is informational */
      }
    }
  }

  /** The running job (the oldest, when copies of several pairs run at once), or null. */
  get current(): JobRecord | null {
    return this.#running.values().next().value?.job ?? null;
  }

  /** Every running job, oldest first. */
  get running(): JobRecord[] {
    return [...this.#running.values()].map((r) => r.job);
  }

  /** The jobs waiting in the queue, oldest first. */
  get queued(): JobRecord[] {
    return this.#waiting.map((w) => w.job);
  }

  /** The running or waiting job of a pair, or null. */
  forPair(pair: string): JobRecord | null {
    return this.running.find((j) => j.pair === pair) ?? this.queued.find((j) => j.pair === pair) ?? null;
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

  #busy(cur: JobRecord): BusyError {
    const where = cur.pair ? ` on pair ${cur.pair}` : '';
    if (cur.state === 'queued') return new BusyError(`a ${cur.kind} job (id ${cur.id}) is queued${where}`, { hint: `wait for it, or cancel it: POST /api/jobs/${cur.id}/cancel` });
    return new BusyError(`a ${cur.kind} job (id ${cur.id}) is running${cur.progress ? ` at ${cur.progress.percent.toFixed(1)} %` : ''}${where}`, { hint: `wait for it, or cancel it: POST /api/jobs/${cur.id}/cancel` });
  }

  /** Refuses (BusyError, 409) while another job runs or waits, or a failover moves the drives. */
  checkIdle(): void {
    const cur = this.current ?? this.queued[0];
    if (cur) throw this.#busy(cur);
    const why = this.blockedBy();
    if (why) throw new BusyError(why, { hint: 'wait until it has finished' });
  }

  /** Refuses (BusyError, 409) a job of `pair` while the pair has one running or waiting, or a failover moves the drives. */
  checkPair(pair: string): void {
    const cur = this.forPair(pair);
    if (cur) throw this.#busy(cur);
    const why = this.blockedBy();
    if (why) throw new BusyError(why, { hint: 'wait until it has finished' });
  }

  #newRecord(kind: JobKind, options: Record<string, unknown>, trigger: string, pair: string | null, state: 'running' | 'queued'): JobRecord {
    const now = new Date().toISOString();
    return {
      id: String(this.#data.nextId),
      kind,
      state,
      trigger,
      ...(pair ? { pair } : {}),
      options,
      createdAt: now,
      startedAt: state === 'running' ? now : null,
      finishedAt: null,
      seconds: null,
      progress: null,
      result: null,
      error: null,
      log: [],
    };
  }

  /** Records a new job before it is listed or run: a job that cannot be recorded (a full state directory) never starts. */
  #record(job: JobRecord): void {
    // Waiting and running jobs stay in the file whatever the history length.
    const keep = new Set([...this.#running.keys(), ...this.#waiting.map((w) => w.job.id)]);
    const all = [...this.#data.jobs, job];
    const cut = all.length - this.opts.history;
    const next: JobsFile = { nextId: this.#data.nextId + 1, jobs: all.filter((j, i) => i >= cut || keep.has(j.id)) };
    try {
      writeJsonDurably(this.file, next, this.#writeOptions(job.kind));
    } catch (e) {
      if (e instanceof ReadOnlyStateError) throw new ReadOnlyStateError(`${e.message}: the ${job.kind} could not be recorded, so it did not start`, { hint: e.hint, cause: e });
      if (!(e instanceof NoSpaceError)) throw e;
      throw new NoSpaceError(`the state directory ${this.stateDir} is full: the ${job.kind} could not be recorded, so it did not start`, {
        hint: `free space on its filesystem (an interrupted sync's undo journal is freed by recover), then try again`,
        cause: e,
      });
    }
    this.#data = next;
  }

  /**
   * Starts a job now and returns its record at once; `run` does the work.
   * Whatever `run` returns becomes the result. A job started this way runs
   * alone: refused (BusyError) while any other runs or waits.
   */
  start(kind: JobKind, options: Record<string, unknown>, trigger: string, run: (ctx: JobContext) => Promise<unknown>, pair?: string): JobRecord {
    this.checkIdle();
    const job = this.#newRecord(kind, options, trigger, pair ?? null, 'running');
    this.#record(job);
    this.#launch(job, { id: job.id, pair: null, bays: [], bridge: null }, run);
    return job;
  }

  /**
   * A job of one pair: started at once when the schedule lets it (config
   * jobs.parallel, see job-schedule.ts), else queued in order and started
   * when its turn comes. `prepare` plans it from the state at that moment
   * (roles may have changed meanwhile); its refusal then fails the job.
   * Throws BusyError while the pair has a job running or waiting; a
   * refusal of `prepare` for a job that starts at once is thrown as is.
   */
  enqueue(kind: JobKind, trigger: string, slot: Omit<JobSlot, 'id'> & { pair: string }, prepare: () => PreparedJob): JobRecord {
    this.checkPair(slot.pair);
    const id = String(this.#data.nextId);
    const now = startable([...this.#waitingSlots(), { ...slot, id }], this.#runningSlots(), { parallel: this.opts.parallel === true }).includes(id);
    if (now) {
      const p = prepare();
      const job = this.#newRecord(kind, p.options, trigger, slot.pair, 'running');
      this.#record(job);
      this.#launch(job, { ...slot, id }, p.run);
      return job;
    }
    const job = this.#newRecord(kind, {}, trigger, slot.pair, 'queued');
    this.#record(job);
    job.log.push({ at: job.createdAt, level: 'info', message: `${kind} queued (${trigger}) behind ${[...this.running, ...this.queued].filter((j) => j !== job).map((j) => `${j.kind} ${j.id}`).join(', ')}` });
    this.#waiting.push({ job, slot: { ...slot, id }, prepare });
    this.bus.publish('job.queued', { job: summary(job) });
    return job;
  }

  #waitingSlots(): JobSlot[] {
    return this.#waiting.map((w) => w.slot);
  }

  #runningSlots(): JobSlot[] {
    return [...this.#running.values()].map((r) => r.slot);
  }

  /** Starts the waiting jobs whose turn has come. */
  #pump(): void {
    for (;;) {
      const ids = startable(this.#waitingSlots(), this.#runningSlots(), { parallel: this.opts.parallel === true });
      if (ids.length === 0) return;
      if (this.blockedBy()) {
        // A failover is moving the drives: look again shortly.
        this.#retry ??= setTimeout(() => {
          this.#retry = null;
          this.#pump();
        }, 250);
        return;
      }
      let failed = false;
      for (const id of ids) {
        const i = this.#waiting.findIndex((w) => w.job.id === id);
        const [w] = this.#waiting.splice(i, 1);
        const { job } = w!;
        let p: PreparedJob;
        try {
          p = w!.prepare();
        } catch (e) {
          // Refused now that its turn came (roles or drives changed while it waited).
          job.state = 'failed';
          job.error = errorData(e);
          job.finishedAt = new Date().toISOString();
          job.log.push({ at: job.finishedAt, level: 'error', message: job.error.message });
          this.#saveQuietly(job.kind);
          this.bus.publish('job.failed', { job: summary(job) });
          failed = true;
          continue;
        }
        job.options = p.options;
        job.state = 'running';
        job.startedAt = new Date().toISOString();
        this.#saveQuietly(job.kind);
        this.#launch(job, w!.slot, p.run);
      }
      if (!failed) return;
    }
  }

  #saveQuietly(kind: JobKind): void {
    try {
      this.#save(this.#writeOptions(kind));
    } catch {
      /* the history is informational: a full disk must not hide the result from the event stream */
    }
  }

  #launch(job: JobRecord, slot: JobSlot, run: (ctx: JobContext) => Promise<unknown>): void {
    const { kind, trigger } = job;
    const controller = new AbortController();
    let stoppedEarly = false;
    const log = (level: 'info' | 'warn' | 'error', message: string) => {
      job.log.push({ at: new Date().toISOString(), level, message });
      if (job.log.length > this.opts.logLines) job.log.splice(0, job.log.length - this.opts.logLines);
    };
    const ctx: JobContext = {
      job,
      signal: controller.signal,
      progress: (p) => {
        job.progress = p;
        this.bus.publish('job.progress', { id: job.id, kind, progress: p, ...(job.pair ? { pair: job.pair } : {}) });
      },
      note: (message) => {
        log('info', message);
        this.bus.publish('job.note', { id: job.id, kind, message });
      },
      log,
      stoppedEarly: () => {
        stoppedEarly = true;
      },
    };
    log('info', `${kind} started (${trigger})`);
    this.bus.publish('job.started', { job: summary(job) });
    const started = performance.now();
    const done = (async () => {
      try {
        job.result = (await run(ctx)) ?? null;
        // Only a run that stopped short is cancelled: a cancel that came once the work was whole changes nothing.
        job.state = stoppedEarly ? 'cancelled' : 'done';
        if (job.cancel && !stoppedEarly) {
          job.cancel.late = true;
          ctx.note(`the cancel came too late: the ${kind} had already completed${job.cancel.rollback ? ' (nothing was rolled back)' : ''}`);
        }
        log('info', `${kind} ${job.state}`);
      } catch (e) {
        const cancelled = e instanceof CancelledError || (controller.signal.aborted && !isDpsrError(e));
        job.state = cancelled ? 'cancelled' : 'failed';
        job.error = errorData(e);
        log(cancelled ? 'warn' : 'error', job.error.message);
      } finally {
        job.finishedAt = new Date().toISOString();
        job.seconds = (performance.now() - started) / 1000;
        this.#running.delete(job.id);
        this.#saveQuietly(kind);
        if (kind === 'recover') ensureSpaceReserve(this.stateDir);
        this.bus.publish(job.state === 'done' ? 'job.done' : job.state === 'cancelled' ? 'job.cancelled' : 'job.failed', { job: summary(job) });
        this.#pump();
      }
    })();
    this.#running.set(job.id, { job, slot, controller, done });
  }

  /** Cancels a running job (it stops and may roll back) or takes a waiting one out of the queue. */
  cancel(id: string, rollback: boolean): JobRecord {
    const job = this.get(id);
    const i = this.#waiting.findIndex((w) => w.job === job);
    if (i >= 0) {
      this.#waiting.splice(i, 1);
      const at = new Date().toISOString();
      job.cancel = { at, rollback: false };
      job.state = 'cancelled';
      job.finishedAt = at;
      job.log.push({ at, level: 'warn', message: 'cancelled while queued: it never started' });
      this.#saveQuietly(job.kind);
      this.bus.publish('job.cancelled', { job: summary(job) });
      this.#pump();
      return job;
    }
    const run = this.#running.get(id);
    if (run?.job !== job) throw new RefusedError(`job ${id} is ${job.state}, not running: nothing to cancel`);
    if (!job.cancel) {
      job.cancel = { at: new Date().toISOString(), rollback };
      job.log.push({ at: job.cancel.at, level: 'warn', message: `cancel requested${rollback ? ' (then roll back)' : ''}` });
      run.controller.abort(new CancelledError(`job ${id} was cancelled`));
    }
    return job;
  }

  /**
   * Stops everything for a daemon shutdown: waiting jobs leave the queue
   * (cancelled, never started), running ones are cancelled without
   * rollback, so the next start resumes them.
   */
  async stopAll(): Promise<void> {
    for (const w of [...this.#waiting]) this.cancel(w.job.id, false);
    for (const j of this.running) this.cancel(j.id, false);
    await this.idle();
  }

  /** Resolves when no job runs or waits. */
  async idle(): Promise<void> {
    for (;;) {
      const runs = [...this.#running.values()].map((r) => r.done);
      if (runs.length) await Promise.race(runs);
      else if (this.#waiting.length) await new Promise((r) => setTimeout(r, 100));
      else return;
    }
  }
}

/** What a queued job is once planned at its start: the options it records and the work. */
export interface PreparedJob {
  options: Record<string, unknown>;
  run: (ctx: JobContext) => Promise<unknown>;
}

/** A job without its log, for events and status. */
export function summary(j: JobRecord): Omit<JobRecord, 'log'> {
  const { log: _log, ...rest } = j;
  return rest;
}
