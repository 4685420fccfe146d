/**
 * Application consistency around a live snapshot: an optional pre-snapshot
 * hook (freeze: `fsfreeze -f` over SSH, a Windows VSS writer's prepare) and
 * a post-snapshot hook (thaw), each a command or an HTTP call with a timeout.
 * The post hook runs right after the snapshot instant, not after the copy:
 * the host is frozen only while the filter goes in.
 */
import { execFile } from 'node:child_process';
import { BadInputError, DeviceError } from '../errors.ts';

export type HookSpec =
  | {
      /** argv: the program and its arguments (no shell). */
      readonly command: readonly string[];
      readonly timeoutMs?: number;
    }
  | {
      readonly url: string;
      readonly method?: 'GET' | 'POST' | 'PUT';
      readonly headers?: Readonly<Record<string, string>>;
      readonly body?: string;
      readonly timeoutMs?: number;
    };

export interface SnapshotHooks {
  readonly pre?: HookSpec;
  readonly post?: HookSpec;
}

export const DEFAULT_HOOK_TIMEOUT_MS = 30_000;

/** Checks a hook's shape; throws BadInputError naming what is wrong. */
export function checkHook(spec: HookSpec, name: string): HookSpec {
  const t = spec.timeoutMs;
  if (t !== undefined && !(Number.isFinite(t) && t > 0)) throw new BadInputError(`snapshot hook ${name}: timeoutMs ${t} is not a positive number of milliseconds`);
  if ('command' in spec) {
    if (!Array.isArray(spec.command) || spec.command.length === 0 || spec.command.some((a) => typeof a !== 'string')) {
      throw new BadInputError(`snapshot hook ${name}: command must be a non-empty list of strings (the program, then its arguments)`, { hint: 'e.g. ["ssh", "host", "fsfreeze", "-f", "/"]' });
    }
    return spec;
  }
  let u: URL;
  try {
    u = new URL(spec.url);
  } catch {
    throw new BadInputError(`snapshot hook ${name}: ${String(spec.url)} is not a URL`, { hint: 'give command: [...] or url: "http(s)://…"' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new BadInputError(`snapshot hook ${name}: ${spec.url} is not http or https`);
  if (spec.method !== undefined && !['GET', 'POST', 'PUT'].includes(spec.method)) throw new BadInputError(`snapshot hook ${name}: method ${spec.method} is not GET, POST or PUT`);
  return spec;
}

/**
 * Runs one hook. `phase` is passed as DPSR_SNAPSHOT_PHASE (command) or the
 * `X-Dpsr-Snapshot-Phase` header (HTTP). Throws DeviceError when the command
 * exits non-zero, the server answers other than 2xx, or the timeout passes.
 */
export async function runHook(spec: HookSpec, phase: 'pre' | 'post'): Promise<void> {
  const timeoutMs = spec.timeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS;
  if ('command' in spec) {
    const [program, ...args] = spec.command;
    await new Promise<void>((resolve, reject) => {
      execFile(program!, args, { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, DPSR_SNAPSHOT_PHASE: phase } }, (err, _stdout, stderr) => {
        if (!err) return resolve();
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
        const tail = String(stderr).trim().split('\n').slice(-3).join(' / ');
        const why = e.killed ? `did not finish within ${timeoutMs / 1000} s` : typeof e.code === 'number' ? `exited with ${e.code}` : e.message;
        reject(new DeviceError(`the ${phase}-snapshot hook ${program} ${why}${tail ? `: ${tail}` : ''}`, { cause: err }));
      });
    });
    return;
  }
  let res: Response;
  try {
    res = await fetch(spec.url, {
      method: spec.method ?? 'POST',
      headers: { 'X-Dpsr-Snapshot-Phase': phase, ...(spec.headers ?? {}) },
      body: spec.method === 'GET' ? undefined : (spec.body ?? JSON.stringify({ phase })),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    const timedOut = (e as Error).name === 'TimeoutError';
    throw new DeviceError(`the ${phase}-snapshot hook ${spec.url} ${timedOut ? `did not answer within ${timeoutMs / 1000} s` : `could not be reached: ${(e as Error).message}`}`, { cause: e });
  }
  const text = await res.text().catch(() => '');
  if (!res.ok) throw new DeviceError(`the ${phase}-snapshot hook ${spec.url} answered ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`);
}
