/**
 * The daemon's events: one bus that numbers every event, keeps the recent
 * ones for clients that reconnect (Last-Event-ID), serves them as
 * server-sent events, and appends the ones an operator cares about to the
 * persisted event log (progress ticks and relay clicks stay out of it).
 */
import { existsSync, renameSync, statSync } from 'node:fs';
import { appendWhole } from '../../src/durable-file.ts';
import { open, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AlertEvent, Bay, BootSwitchEvents } from '../../src/bootswitch/index.ts';
import type { Progress } from '../../src/sync/index.ts';
import type { JobRecord } from './jobs.ts';
import type { BayName } from './pair-config.ts';

export interface DaemonEvent {
  /** `<boot>:<seq>`: a client reconnecting after a restart sees the boot changed. */
  readonly id: string;
  readonly seq: number;
  readonly at: string;
  readonly type: string;
  readonly data: unknown;
}

/** Every event type the daemon emits, for the OpenAPI description and for clients. */
export const EVENT_TYPES = {
  'daemon.started': 'the daemon is up (also after a restart)',
  'daemon.stopping': 'the daemon is shutting down',
  'job.queued': 'a storage job waits for another to finish (one copy at a time, or a shared drive or bridge): { job } (job.pair names its pair)',
  'job.started': 'a storage job started: { job } (job.pair names its pair)',
  'job.progress': 'progress of a running job, a few times a second: { id, kind, progress, pair }',
  'job.note': 'something the operator should know about the running job: { id, message }',
  'job.done': 'a job finished: { job }',
  'job.failed': 'a job failed: { job } (job.error has kind, message, hint)',
  'job.cancelled': 'a job was cancelled: { job }',
  'status.changed': "roles, standby state or generations changed: { active, standby, standbyState, generations } of the boot pair, and pairs: each pair's { id, active, standby, standbyState, generations }",
  'failover': 'the standby took over: { pair, from, to, reason, generation } (bays; a data pair\'s failover moved the host\'s data disk)',
  'failover.state': 'the failover state machine moved: the whole state',
  'switch.step': 'one step of a move of the boot selection or of a data pair\'s drives: { to, step, atMs, tookMs, pair? }',
  'switched': 'a move of the boot selection or of a data pair\'s drives finished: { from, to, totalMs, changed, pair? }',
  'relay': 'a relay or LED output changed: { channel, on }',
  'button': 'the failover button: { kind: press|release|short|hold|startup-hold, heldMs }',
  'host.power': 'the host power LED changed: { power: on|off }',
  'host.heartbeat': 'the host confirmed it runs: { bay, source }',
  'host.shutting-down': "the host's agent said its OS is shutting down cleanly: { bay, source }",
  'boot': 'a boot of the host: { bay, status: pending|confirmed|unconfirmed }',
  'health': 'drive health changed: { bay, health }',
  'drive': 'a drive was pulled, inserted or replaced (simulated rig): { bay, action }',
  'rail': 'a drive power rail changed state (INA219): { bay, state: off|dead|spinning-up|running, milliamps, volts, expectedOn }',
  'alert': 'something needs attention: { level: info|warning|critical, code, message }',
} as const;

export type EventType = keyof typeof EVENT_TYPES;

type JobSummary = Omit<JobRecord, 'log'>;

/** The data of the events the daemon's own parts listen to; `publish` and `on` hold them to it. */
export interface EventData {
  'job.queued': { job: JobSummary };
  'job.started': { job: JobSummary };
  'job.progress': { id: string; kind: JobRecord['kind']; progress: Progress; pair?: string };
  'job.done': { job: JobSummary };
  'job.failed': { job: JobSummary };
  'job.cancelled': { job: JobSummary };
  'status.changed': { active: Bay; standby: Bay; standbyState: string; generations: Record<Bay, number | null>; pairs: { id: string; active: BayName; standby: BayName; standbyState: string; generations: Record<string, number | null> }[] };
  switched: { from: BayName | null; to: BayName; totalMs: number; changed: boolean; pair?: string };
  failover: { from: BayName; to: BayName; reason: string; generation: number | null; pair?: string };
  drive: { bay: BayName; action: 'pulled' | 'inserted' | 'replaced'; path?: string };
  alert: AlertEvent & { bay?: BayName; pair?: string };
}

type DataOf<K extends EventType> = K extends keyof EventData ? EventData[K] : unknown;

/** Not written to the operator log: frequent, and visible through status and metrics. */
const NOT_LOGGED = new Set<string>(['job.progress', 'relay', 'switch.step', 'host.heartbeat', 'failover.state']);

type Listener = (e: DaemonEvent) => void;

export class EventBus {
  readonly boot = randomBytes(4).toString('hex');
  #seq = 0;
  #recent: DaemonEvent[] = [];
  #listeners = new Set<Listener>();

  constructor(
    private readonly logFile: string | null,
    private readonly opts: { replay: number; logMaxBytes: number },
    private readonly onLogError: (e: unknown) => void = () => {},
  ) {}

  publish<K extends EventType>(type: K, data: DataOf<K>): DaemonEvent {
    const seq = ++this.#seq;
    const e: DaemonEvent = { id: `${this.boot}:${seq}`, seq, at: new Date().toISOString(), type, data };
    if (this.opts.replay > 0) {
      this.#recent.push(e);
      if (this.#recent.length > this.opts.replay) this.#recent.splice(0, this.#recent.length - this.opts.replay);
    }
    if (!NOT_LOGGED.has(type)) this.#append(e);
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch (err) {
        this.onLogError(err);
      }
    }
    return e;
  }

  subscribe(l: Listener): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  /** Calls `fn` with the data of each event of the given types; returns the unsubscribe. */
  on<K extends keyof EventData>(types: K | readonly K[], fn: (data: EventData[K], type: K) => void): () => void {
    const wanted = new Set<string>(typeof types === 'string' ? [types] : types);
    return this.subscribe((e) => {
      if (wanted.has(e.type)) fn(e.data as EventData[K], e.type as K);
    });
  }

  /** Number of the newest event: anything cached from the state is stale once it moves. */
  get seq(): number {
    return this.#seq;
  }

  get listenerCount(): number {
    return this.#listeners.size;
  }

  /** Events after `lastId`; all kept ones when the id is from another boot or unknown. */
  since(lastId: string | undefined): DaemonEvent[] {
    if (!lastId) return [];
    const [boot, seqText] = lastId.split(':');
    if (boot !== this.boot) return [...this.#recent];
    const seq = Number(seqText);
    return this.#recent.filter((e) => e.seq > seq);
  }

  #append(e: DaemonEvent): void {
    if (!this.logFile) return;
    try {
      const line = Buffer.from(JSON.stringify(e) + '\n');
      if (existsSync(this.logFile) && statSync(this.logFile).size + line.length > this.opts.logMaxBytes) renameSync(this.logFile, `${this.logFile}.1`);
      appendWhole(this.logFile, line);
    } catch (err) {
      this.onLogError(err);
    }
  }

  /**
   * The persisted operator log, oldest first: the newest `limit` entries
   * (optionally only of some types), read backwards from the end of the log
   * and then of its rotated predecessor. Memory stays bounded by one read
   * chunk, one line and `limit` entries whatever the log's size, and the
   * reads are asynchronous, so a large log never stalls the daemon.
   * `signal` stops the scan before its next read (the client went away):
   * the promise then rejects with the signal's reason. `onRead` hears the
   * bytes of each read.
   */
  async readLog(limit: number, types?: string[], scan: LogScan = {}): Promise<DaemonEvent[]> {
    if (!this.logFile) return [];
    const newestFirst: DaemonEvent[] = [];
    for (const f of [this.logFile, `${this.logFile}.1`]) {
      if (newestFirst.length >= limit) break;
      for await (const line of linesBackwards(f, TAIL_CHUNK, MAX_LINE, scan)) {
        const e = parseLine(line, types);
        if (!e) continue;
        newestFirst.push(e);
        if (newestFirst.length >= limit) break;
      }
    }
    return newestFirst.reverse();
  }
}

/** What a caller of a log scan may give: a signal that stops it, and a listener for each read's bytes. */
export interface LogScan {
  readonly signal?: AbortSignal;
  readonly onRead?: (bytes: number) => void;
}

/** Bytes read per step when walking a log backwards. */
const TAIL_CHUNK = 64 * 1024;
/** Longer lines are not ours (a torn or foreign write): skipped rather than buffered. */
const MAX_LINE = 1024 * 1024;

/**
 * The lines of a file from the last to the first, without their newlines.
 * A missing file has none. Holds at most one chunk plus one line. An
 * aborted `scan.signal` stops it before its next read (throws its reason).
 */
export async function* linesBackwards(file: string, chunkBytes = TAIL_CHUNK, maxLine = MAX_LINE, scan: LogScan = {}): AsyncGenerator<string> {
  scan.signal?.throwIfAborted();
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  try {
    let pos = (await fh.stat()).size;
    // The start of a line whose beginning lies before `pos` (its end was read already).
    let carry: Buffer = Buffer.alloc(0);
    // True while walking through a line longer than maxLine: its pieces are dropped.
    let skipping = false;
    const buf = Buffer.allocUnsafe(chunkBytes);
    const empty = Buffer.alloc(0);
    while (pos > 0) {
      const n = Math.min(chunkBytes, pos);
      pos -= n;
      scan.signal?.throwIfAborted();
      const { bytesRead } = await fh.read(buf, 0, n, pos);
      scan.onRead?.(bytesRead);
      if (bytesRead !== n) throw new Error(`${file} shrank while being read`);
      const chunk = carry.length ? Buffer.concat([buf.subarray(0, n), carry]) : buf.subarray(0, n);
      const first = chunk.indexOf(10);
      if (first < 0) {
        // No line starts in this chunk: all of it belongs to the line that ends further on.
        carry = skipping ? empty : Buffer.from(chunk);
      } else {
        // A newline is a character boundary: everything after the first one decodes as whole lines, in one go.
        const lines = chunk.toString('utf8', first + 1).split('\n');
        if (skipping) {
          lines.pop(); // the start of the over-long line
          skipping = false;
        }
        for (let i = lines.length - 1; i >= 0; i--) if (lines[i]) yield lines[i]!;
        // Copied: `buf` is overwritten by the next read.
        carry = Buffer.from(chunk.subarray(0, first));
      }
      if (carry.length > maxLine) {
        carry = empty;
        skipping = true;
      }
    }
    if (carry.length && !skipping) yield carry.toString('utf8');
  } finally {
    await fh.close();
  }
}

/** One log line as an event when it is one (of the wanted types); torn and foreign lines give null. */
function parseLine(line: string, types: readonly string[] | undefined): DaemonEvent | null {
  // Our lines name their type early ({"id","seq","at","type",…}): unwanted ones are skipped without parsing.
  if (types) {
    const m = /^\{"id":"[^"]*","seq":\d+,"at":"[^"]*","type":"([^"\\]*)"/.exec(line);
    if (m && !matches(m[1]!, types)) return null;
  }
  let e: unknown;
  try {
    e = JSON.parse(line);
  } catch {
    return null; // a line torn by a power cut
  }
  if (typeof e !== 'object' || e === null || typeof (e as DaemonEvent).type !== 'string') return null;
  if (types && !matches((e as DaemonEvent).type, types)) return null;
  return e as DaemonEvent;
}

/** `types` holds exact names or prefixes ending in "." ("job." matches job.done). */
export function matches(type: string, types: readonly string[]): boolean {
  return types.some((t) => (t.endsWith('.') ? type.startsWith(t) : type === t));
}

/** Each event is serialised once, however many streams send it. */
const frames = new WeakMap<DaemonEvent, string>();

function frame(e: DaemonEvent): string {
  let text = frames.get(e);
  if (text === undefined) {
    text = `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify({ seq: e.seq, at: e.at, type: e.type, data: e.data })}\n\n`;
    frames.set(e, text);
  }
  return text;
}

/** Most unsent bytes a slow client may pile up before it is dropped (it reconnects with Last-Event-ID). */
const MAX_BACKLOG = 4 * 1024 * 1024;

export function serveEvents(req: IncomingMessage, res: ServerResponse, bus: EventBus, opts: { heartbeatSeconds: number; types?: string[]; lastEventId?: string }): void {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(`retry: 2000\n: dpsr events, boot ${bus.boot}\n\n`);
  const want = (e: DaemonEvent) => !opts.types || matches(e.type, opts.types);
  for (const e of bus.since(opts.lastEventId)) if (want(e)) res.write(frame(e));
  const unsubscribe = bus.subscribe((e) => {
    if (!want(e)) return;
    if (res.writableLength > MAX_BACKLOG) {
      res.destroy();
      return;
    }
    res.write(frame(e));
  });
  const beat = setInterval(() => res.write(': ping\n\n'), opts.heartbeatSeconds * 1000);
  beat.unref();
  const done = () => {
    clearInterval(beat);
    unsubscribe();
  };
  req.on('close', done);
  res.on('close', done);
}
