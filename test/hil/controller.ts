/**
 * The HIL tier's view of the controller: `dpsrd` as a child process (started,
 * SIGKILLed and restarted on the same port, as a power loss of the board
 * would), its HTTP API, and its event stream, which reconnects across
 * restarts. Everything goes through the public API, like any other client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { EventEmitter } from 'node:events';
import { DeviceError } from './errors.ts';

const REPO = new URL('../../', import.meta.url).pathname;

export interface ApiReply<T = any> {
  status: number;
  body: T;
}

/** An API error reply turned into an exception that carries its status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: any,
    what: string,
  ) {
    super(`${what}: HTTP ${status}: ${body?.error?.message ?? JSON.stringify(body)}`);
  }
}

export interface ControllerEvent {
  id: string;
  type: string;
  at: string;
  data: any;
  /** performance.now() when it arrived here. */
  received: number;
}

export interface DpsrdOptions {
  stateDir: string;
  configFile: string;
  /** Name for the log file under DPSR_HIL_LOG_DIR. */
  name: string;
  logLevel?: string;
}

/** dpsrd in its own process; `kill()` is a power loss of the controller, `start()` its next boot. */
export class Dpsrd extends EventEmitter {
  url = '';
  token = '';
  private child?: ChildProcess;
  private port = 0;
  private output = '';
  private exited?: Promise<void>;
  private stream?: EventStream;
  private readonly logFile?: string;

  constructor(readonly opts: DpsrdOptions) {
    super();
    const dir = process.env.DPSR_HIL_LOG_DIR;
    this.logFile = dir ? join(dir, `${opts.name}.dpsrd.log`) : undefined;
    if (dir) mkdirSync(dir, { recursive: true });
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  /** The last lines the daemon wrote, for failure reports. */
  tail(n = 15): string {
    return this.output.split('\n').slice(-n).join('\n');
  }

  async start(): Promise<void> {
    if (this.child) return;
    const args = ['bin/dpsrd.js', '--state-dir', this.opts.stateDir, '--listen', `127.0.0.1:${this.port}`, '--config', this.opts.configFile, '--log-level', this.opts.logLevel ?? 'info'];
    const child = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.output = '';
    const onData = (d: Buffer) => {
      const text = String(d);
      this.output = (this.output + text).slice(-200_000);
      if (this.logFile) appendFileSync(this.logFile, text);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        this.emit('exit', { code, signal });
        resolve();
      }),
    );
    const started = performance.now();
    for (;;) {
      const m = /"url":"(http:[^"]+)"/.exec(this.output);
      if (m) {
        this.url = m[1]!;
        break;
      }
      if (!this.child) throw new DeviceError(`dpsrd exited while starting:\n${this.tail()}`);
      if (performance.now() - started > 60_000) throw new DeviceError(`dpsrd did not start within 60 s:\n${this.tail()}`);
      await sleep(50);
    }
    // The same port after a restart, so clients (and the event stream) find it again.
    this.port = Number(new URL(this.url).port);
    this.token = readFileSync(join(this.opts.stateDir, 'api-token'), 'utf8').trim();
    this.emit('started');
  }

  /** SIGKILL: the controller loses power mid-whatever. */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c) return;
    c.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<void> {
    this.stream?.close();
    const c = this.child;
    if (!c) return;
    c.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([this.exited!.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10_000)))]);
    clearTimeout(timer);
    if (!done) await this.kill();
  }

  async api<T = any>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<ApiReply<T>> {
    if (!this.url) throw new DeviceError('dpsrd has not started');
    const res = await fetch(new URL(path, this.url), {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON (metrics)
    }
    return { status: res.status, body: parsed as T };
  }

  /** The reply body of a 2xx, else ApiError. */
  async ok<T = any>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const r = await this.api<T>(method, path, body);
    if (r.status < 200 || r.status > 299) throw new ApiError(r.status, r.body, `${method} ${path}`);
    return r.body;
  }

  status(): Promise<any> {
    return this.ok('GET', '/api/status');
  }

  /** One event stream for the process lifetime, reconnecting (Last-Event-ID) after restarts. */
  events(): EventStream {
    this.stream ??= new EventStream(this);
    return this.stream;
  }

  async waitJob(id: string, timeoutMs = 120_000): Promise<any> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      const j = await this.ok('GET', `/api/jobs/${id}`);
      if (j.state !== 'running' && j.state !== 'queued') return j;
      if (performance.now() > end) throw new DeviceError(`job ${id} still ${j.state} after ${timeoutMs / 1000} s`);
      await sleep(200);
    }
  }

  /** Waits until no job runs. */
  async idle(timeoutMs = 120_000): Promise<void> {
    const end = performance.now() + timeoutMs;
    while ((await this.status()).job !== null) {
      if (performance.now() > end) throw new DeviceError(`dpsrd still busy after ${timeoutMs / 1000} s`);
      await sleep(200);
    }
  }
}

interface Waiter {
  pred: (e: ControllerEvent) => boolean;
  resolve: (e: ControllerEvent) => void;
}

/** Server-sent events of dpsrd, kept open across daemon restarts. */
export class EventStream extends EventEmitter {
  readonly seen: ControllerEvent[] = [];
  private req?: ClientRequest;
  private lastId?: string;
  private closed = false;
  private waiters = new Set<Waiter>();
  private connected!: Promise<void>;

  constructor(private readonly d: Dpsrd) {
    super();
    this.connect();
    d.on('started', () => this.connect());
  }

  /** Resolves once the stream is attached to the running daemon. */
  ready(): Promise<void> {
    return this.connected;
  }

  private connect(): void {
    if (this.closed) return;
    this.req?.destroy();
    this.connected = new Promise((resolve) => {
      const req = httpRequest(new URL('/api/events', this.d.url), { headers: { authorization: `Bearer ${this.d.token}`, ...(this.lastId ? { 'last-event-id': this.lastId } : {}) } });
      this.req = req;
      req.on('response', (res) => {
        resolve();
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          buf += c;
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            this.frame(block);
          }
        });
        res.on('error', () => {});
        res.on('close', () => {
          // A daemon that stopped comes back through start() (the 'started' event reconnects).
          if (!this.closed && this.d.running) setTimeout(() => this.req === req && this.connect(), 500);
        });
      });
      req.on('error', () => resolve());
      req.end();
    });
  }

  private frame(block: string): void {
    const f: Record<string, string> = {};
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      const k = line.indexOf(':');
      if (k > 0) f[line.slice(0, k)] = line.slice(k + 1).trim();
    }
    if (!f.event || !f.data) return;
    const raw = JSON.parse(f.data) as { id: string; at: string; type: string; data: unknown };
    if (f.id) this.lastId = f.id;
    const e: ControllerEvent = { id: raw.id, type: raw.type, at: raw.at, data: raw.data, received: performance.now() };
    this.seen.push(e);
    if (this.seen.length > 20_000) this.seen.splice(0, 10_000);
    this.emit('event', e);
    for (const w of [...this.waiters]) if (w.pred(e)) {
      this.waiters.delete(w);
      w.resolve(e);
    }
  }

  /** The next matching event after `since` (performance.now()), or one already seen after it. */
  wait(pred: (e: ControllerEvent) => boolean, timeoutMs: number, what: string, since = -1): Promise<ControllerEvent> {
    const found = this.seen.find((e) => e.received >= since && pred(e));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w: Waiter = { pred: (e) => e.received >= since && pred(e), resolve: (e) => (clearTimeout(t), resolve(e)) };
      const t = setTimeout(() => {
        this.waiters.delete(w);
        reject(new DeviceError(`no ${what} event within ${(timeoutMs / 1000).toFixed(0)} s; last events: ${this.seen.slice(-8).map((e) => e.type).join(', ')}`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }

  close(): void {
    this.closed = true;
    this.req?.destroy();
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
