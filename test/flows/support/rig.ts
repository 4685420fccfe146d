/**
 * A real dpsrd on the simulated rig for the Node-RED tests: in-process on a
 * free port with a temporary state directory, restartable on the same port
 * and state (the events node must find it again at the same URL).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { startDaemon, type Daemon } from '../../../firmware/controller/daemon.ts';

export const require = createRequire(import.meta.url);

export interface RigOptions {
  /** Simulated USB bridge throughput: slow enough that a sync shows progress. */
  bridgeMiBps?: number;
  driveSizeMiB?: number;
  /** The daemon's config pairs (default its one boot pair). */
  pairs?: unknown[];
}

export class Rig {
  daemon!: Daemon;
  readonly stateDir = mkdtempSync(join(tmpdir(), 'dpsr-flows-'));
  constructor(private readonly opts: RigOptions = {}) {}

  get url(): string {
    return this.daemon.url;
  }
  get token(): string {
    return this.daemon.token;
  }

  async start(listen = '127.0.0.1:0'): Promise<this> {
    this.daemon = await startDaemon({
      stateDir: this.stateDir,
      listen,
      config: {
        sim: { driveSizeMiB: this.opts.driveSizeMiB ?? 16, bridgeMiBps: this.opts.bridgeMiBps ?? 0, hostBootMs: 100, hostShutdownMs: 100, heartbeatMs: 100 },
        health: { intervalSeconds: 1 },
        ...(this.opts.pairs ? { pairs: this.opts.pairs } : {}),
      },
      logLevel: process.env.DPSR_TEST_LOG ?? 'silent',
    });
    await this.waitIdle();
    return this;
  }

  /** Stops and starts the daemon on the same port and state directory. */
  async restart(downMs = 0): Promise<void> {
    const port = new URL(this.url).port;
    await this.daemon.close();
    if (downMs) await sleep(downMs);
    await this.start(`127.0.0.1:${port}`);
  }

  async api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
  }

  /** Waits for no job (the first start clones bay A onto bay B). */
  async waitIdle(timeoutMs = 30_000): Promise<any> {
    return until(async () => {
      const s = (await this.api('GET', '/api/status')).body;
      return s.job === null && !s.failover?.switching ? s : undefined;
    }, timeoutMs, 'the daemon to be idle');
  }

  async close(): Promise<void> {
    await this.daemon?.close();
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function until<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, what: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(50);
  }
}
