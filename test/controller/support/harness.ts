/** Test helpers: a daemon on port 0 in a temp state directory, an HTTP client, an SSE reader. */
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { spawn, type ChildProcess } from 'node:child_process';
import { startDaemon, type Daemon, type DaemonOptions } from '../../../firmware/controller/daemon.ts';

/** Quick rig timings so a failover takes well under a second of simulated boot. */
export const FAST_SIM = { hostBootMs: 150, hostShutdownMs: 100, heartbeatMs: 100, driveSizeMiB: 64 };

export interface TestDaemon extends Daemon {
  dir: string;
  logs: string[];
  api<T = any>(method: string, path: string, body?: unknown, opts?: { token?: string | null; raw?: string; headers?: Record<string, string> }): Promise<{ status: number; body: T; headers: Record<string, string | string[] | undefined> }>;
  stop(): Promise<void>;
}

export async function makeDaemon(config: Record<string, unknown> = {}, dir = mkdtempSync(join(tmpdir(), 'dpsrd-test-')), more: Pick<DaemonOptions, 'serviceManager'> = {}): Promise<TestDaemon> {
  const logs: string[] = [];
  const logStream = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const sim = (config.sim ?? {}) as Record<string, unknown>;
  const d = await startDaemon({ stateDir: dir, listen: '127.0.0.1:0', config: { ...config, sim: { ...FAST_SIM, ...sim } }, logStream, logLevel: 'info', ...more });
  const api = (method: string, path: string, body?: unknown, opts: { token?: string | null; raw?: string; headers?: Record<string, string> } = {}) =>
    call(d.url, method, path, body, { token: opts.token === undefined ? d.token : opts.token, raw: opts.raw, headers: opts.headers });
  return Object.assign(d, {
    dir,
    logs,
    api,
    async stop() {
      await d.close();
      rmSync(dir, { recursive: true, force: true });
    },
  }) as TestDaemon;
}

/** One API request; an https base is trusted only when its certificate is `opts.ca`. */
export function call(base: string, method: string, path: string, body?: unknown, opts: { token?: string | null; raw?: string; headers?: Record<string, string>; ca?: string } = {}) {
  return new Promise<{ status: number; body: any; headers: Record<string, string | string[] | undefined> }>((resolve, reject) => {
    const text = opts.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const url = new URL(path, base);
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method,
      ...(opts.ca ? { ca: opts.ca } : {}),
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(text !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } : {}),
        ...opts.headers,
      },
    });
    req.on('response', (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => {
        let parsed: unknown = data;
        try {
          parsed = JSON.parse(data);
        } catch {
          /* text (metrics) */
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
      });
    });
    req.on('error', reject);
    if (text !== undefined) req.write(text);
    req.end();
  });
}

export interface SseEvent {
  id: string;
  event: string;
  data: any;
}

/** Opens an event stream and collects its events until closed. */
export function openEvents(base: string, token: string, query = '', headers: Record<string, string> = {}) {
  const events: SseEvent[] = [];
  const waiters: { pred: (e: SseEvent) => boolean; resolve: (e: SseEvent) => void }[] = [];
  let status = 0;
  const req = httpRequest(new URL(`/api/events${query}`, base), { headers: { authorization: `Bearer ${token}`, ...headers } });
  const ready = new Promise<void>((resolve, reject) => {
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const f: Record<string, string> = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const k = line.indexOf(':');
            if (k > 0) f[line.slice(0, k)] = line.slice(k + 1).trim();
          }
          if (!f.event) continue;
          const e = { id: f.id!, event: f.event, data: JSON.parse(f.data!) };
          events.push(e);
          for (const w of [...waiters]) if (w.pred(e)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(e);
          }
        }
      });
      resolve();
    });
    req.on('error', reject);
  });
  req.end();
  return {
    events,
    ready,
    get status() {
      return status;
    },
    wait(pred: (e: SseEvent) => boolean, ms = 20_000): Promise<SseEvent> {
      const found = events.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no matching event within ${ms} ms; got ${events.map((e) => e.event).join(', ')}`)), ms);
        waiters.push({ pred, resolve: (e) => (clearTimeout(t), resolve(e)) });
      });
    },
    close() {
      req.destroy();
    },
  };
}

export async function waitFor<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, ms = 20_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function waitJob(d: TestDaemon, id: string, ms = 30_000) {
  return waitFor(async () => {
    const r = await d.api('GET', `/api/jobs/${id}`);
    return r.body.state !== 'running' && r.body.state !== 'queued' ? r.body : undefined;
  }, ms, `job ${id}`);
}

/** Waits until no job runs (the first start's clone). */
export async function idle(d: { api: TestDaemon['api'] }, ms = 30_000) {
  return waitFor(async () => ((await d.api('GET', '/api/status')).body.job === null ? true : undefined), ms, 'idle daemon');
}

export function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export interface ChildDaemon {
  child: ChildProcess;
  url: string;
  token: string;
  output: () => string;
  api: TestDaemon['api'];
  exited: Promise<number | null>;
}

/** A daemon in its own process (for SIGKILL tests), reading its URL from the log. */
export async function spawnDaemon(dir: string, configFile?: string): Promise<ChildDaemon> {
  const args = ['bin/dpsrd.js', '--state-dir', dir, '--listen', '127.0.0.1:0', ...(configFile ? ['--config', configFile] : [])];
  const child = spawn(process.execPath, args, { cwd: new URL('../../../', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const url = await waitFor(() => /"url":"(http:[^"]+)"/.exec(out)?.[1], 30_000, `daemon start (output: ${out})`);
  const token = readFileSync(join(dir, 'api-token'), 'utf8').trim();
  return {
    child,
    url,
    token,
    output: () => out,
    exited,
    api: (method, path, body, opts = {}) => call(url, method, path, body, { token: opts.token === undefined ? token : opts.token, raw: opts.raw, headers: opts.headers }),
  };
}
