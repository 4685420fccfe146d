/**
 * `dpsr status|sync|failover --url URL`: the CLI as a client of a running
 * dpsrd. The token comes from --token-file, else DPSR_TOKEN, else
 * <state-dir>/api-token. Errors from the daemon keep their meaning, so the
 * exit codes are the same as for the local commands.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BadInputError, BusyError, CancelledError, DeviceError, NotFoundError, RefusedError, type DpsrError } from '../../../src/errors.ts';
import { defaultStateDir, formatBytes } from '../../../src/sync/index.ts';
import { confirm, isTerminal, printJson } from './terminal.ts';

const USAGE = `Usage: dpsr <status|sync|failover> --url URL [options]   (talks to a running dpsrd)

  status                        roles, standby state, generations, job, host, health
  sync [--partition N]... [--mode compare|manifest] [--no-wait]
                                start a sync and follow it to the end (exit 1 if it fails)
  failover --yes [--hard-off] [--no-wait]
                                boot the standby (the host is shut down and powered on again)

  --url URL          the daemon, e.g. http://127.0.0.1:8750
  --token-file FILE  the API token (default: env DPSR_TOKEN, else <state-dir>/api-token)
  --state-dir DIR    where the token is (env DPSR_STATE_DIR)
  --json             machine-readable output`;

const OPTIONS = {
  url: { type: 'string' },
  'token-file': { type: 'string' },
  'state-dir': { type: 'string' },
  json: { type: 'boolean' },
  yes: { type: 'boolean', short: 'y' },
  partition: { type: 'string', short: 'p', multiple: true },
  mode: { type: 'string' },
  'hard-off': { type: 'boolean' },
  'no-wait': { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
} as const;

const ACCEPTS: Record<string, string[]> = {
  status: ['url', 'token-file', 'state-dir', 'json'],
  sync: ['url', 'token-file', 'state-dir', 'json', 'partition', 'mode', 'no-wait', 'quiet'],
  failover: ['url', 'token-file', 'state-dir', 'json', 'yes', 'hard-off', 'no-wait', 'quiet'],
};

export class DaemonClient {
  constructor(
    readonly url: string,
    private readonly token: string,
  ) {}

  async request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(new URL(path, this.url), {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (e) {
      throw new DeviceError(`no dpsrd answers at ${this.url}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`, { hint: 'is the daemon running? check --url' });
    }
    const text = await res.text();
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      throw new DeviceError(`${this.url} answered ${res.status} with something that is not JSON: is it a dpsrd?`);
    }
    if (res.ok) return data as T;
    const err = (data as { error?: { kind?: string; message?: string; hint?: string } }).error ?? {};
    const msg = err.message ?? `HTTP ${res.status}`;
    const opts = { hint: err.hint };
    let e: DpsrError;
    if (res.status === 401) e = new BadInputError(`the daemon refused the token: ${msg}`, { hint: err.hint ?? 'pass --token-file' });
    else if (err.kind === 'refused') e = new RefusedError(msg, opts);
    else if (err.kind === 'busy') e = new BusyError(msg, opts);
    else if (err.kind === 'not-found' || res.status === 404) e = new NotFoundError(msg, opts);
    else if (err.kind === 'cancelled') e = new CancelledError(msg, opts);
    else if (res.status === 400 || res.status === 413 || res.status === 415) e = new BadInputError(msg, opts);
    else e = new DeviceError(msg, opts);
    throw e;
  }
}

function readToken(values: Record<string, unknown>): string {
  const file = (values['token-file'] as string | undefined) ?? (process.env.DPSR_TOKEN ? undefined : join((values['state-dir'] as string | undefined) ?? defaultStateDir(), 'api-token'));
  if (!file) return process.env.DPSR_TOKEN!;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new BadInputError(`cannot read the API token from ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: 'pass --token-file FILE (the daemon keeps it in <state-dir>/api-token), or set DPSR_STATE_DIR' });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface StatusBody {
  rig: string;
  active: string;
  standby: string;
  standbyState: string;
  paired: boolean;
  pairId: string | null;
  generations: Record<string, number | null>;
  bootBay: string | null;
  job: { id: string; kind: string; progress: { percent: number; phase: string } | null } | null;
  host: { power: string; lastHeartbeat: { at: string } | null };
  health: Record<string, string>;
  lastSync: { kind: string; result: string; at: string; message?: string } | null;
  failover: { switching: unknown; halted: string | null; failovers: number };
}

interface JobBody {
  id: string;
  kind: string;
  state: string;
  progress: { percent: number; phase: string; bytesDone: number; bytesTotal: number; rate: number } | null;
  result: { bytesWritten?: number; seconds?: number; generation?: number } | null;
  error: { kind: string; message: string; hint?: string } | null;
}

export async function runClient(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new BadInputError((e as Error).message.replace(/\. To specify.*$/s, ''), { hint: 'run `dpsr --url URL --help`' });
  }
  const values = parsed.values as Record<string, unknown>;
  const [command, ...rest] = parsed.positionals;
  if (values.help || !command) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  if (!ACCEPTS[command]) throw new BadInputError(`"${command}" does not work against a daemon; allowed with --url: status, sync, failover`, { hint: 'run it without --url for the local command' });
  if (rest.length) throw new BadInputError(`${command} with --url takes no arguments, got: ${rest.join(' ')}`, { hint: 'the daemon knows its drives' });
  for (const k of Object.keys(values)) if (!ACCEPTS[command]!.includes(k)) throw new BadInputError(`--${k} does not go with ${command} --url`, { hint: 'run `dpsr --url URL --help`' });
  const url = values.url as string;
  if (!/^https?:\/\/[^\s/]+/.test(url)) throw new BadInputError(`--url is ${JSON.stringify(url)}; allowed: http://HOST:PORT`);
  const client = new DaemonClient(url, readToken(values));
  const json = values.json === true;
  const quiet = values.quiet === true || json;

  switch (command) {
    case 'status': {
      const s = await client.request<StatusBody>('GET', '/api/status');
      if (json) printJson(s);
      else {
        console.log(`dpsrd at ${url} (${s.rig} rig)`);
        console.log(`  active   bay ${s.active}  generation ${s.generations[s.active] ?? '-'}`);
        console.log(`  standby  bay ${s.standby}  generation ${s.generations[s.standby] ?? '-'}  ${s.standbyState.toUpperCase()}${s.paired ? '' : ' (not paired)'}`);
        console.log(`  boot selection bay ${s.bootBay ?? 'NONE'}; host power ${s.host.power}${s.host.lastHeartbeat ? `, last heartbeat ${s.host.lastHeartbeat.at}` : ''}`);
        console.log(`  job ${s.job ? `${s.job.kind} ${s.job.id} ${s.job.progress ? `${s.job.progress.phase} ${s.job.progress.percent.toFixed(1)} %` : 'starting'}` : 'none'}`);
        console.log(`  drive health A ${s.health.A}, B ${s.health.B}`);
        if (s.lastSync) console.log(`  last ${s.lastSync.kind}: ${s.lastSync.result} at ${s.lastSync.at}${s.lastSync.message ? ` (${s.lastSync.message})` : ''}`);
        if (s.failover.halted) console.log(`  FAILOVER HALTED: ${s.failover.halted}`);
      }
      return 0;
    }
    case 'sync': {
      const partitions = ((values.partition as string[] | undefined) ?? []).map((v) => {
        if (!/^\d+$/.test(v) || Number(v) < 1) throw new BadInputError(`--partition ${v} is not a partition number`);
        return Number(v);
      });
      const mode = values.mode as string | undefined;
      if (mode !== undefined && mode !== 'compare' && mode !== 'manifest') throw new BadInputError(`--mode ${mode} is not known`, { hint: 'use --mode compare or --mode manifest' });
      const started = await client.request<{ id: string }>('POST', '/api/sync', { ...(partitions.length ? { partitions } : {}), ...(mode ? { mode } : {}) });
      if (!quiet) process.stderr.write(`sync job ${started.id} started\n`);
      if (values['no-wait']) {
        if (json) printJson(started);
        return 0;
      }
      let job: JobBody;
      let lastPrint = 0;
      for (;;) {
        job = await client.request<JobBody>('GET', `/api/jobs/${started.id}`);
        if (job.state !== 'running' && job.state !== 'queued') break;
        if (!quiet && job.progress && Date.now() - lastPrint > 2000) {
          lastPrint = Date.now();
          process.stderr.write(`${job.progress.phase} ${job.progress.percent.toFixed(1)} % ${formatBytes(job.progress.bytesDone)}/${formatBytes(job.progress.bytesTotal)} ${formatBytes(job.progress.rate)}/s\n`);
        }
        await sleep(500);
      }
      if (json) printJson(job);
      else if (job.state === 'done') console.log(`sync done: ${formatBytes(job.result?.bytesWritten ?? 0)} written in ${(job.result?.seconds ?? 0).toFixed(1)} s, generation ${job.result?.generation}`);
      else console.log(`sync ${job.state}: ${job.error?.message ?? ''}${job.error?.hint ? `\n  ${job.error.hint}` : ''}`);
      return job.state === 'done' ? 0 : 1;
    }
    case 'failover': {
      if (!values.yes) {
        if (!isTerminal()) throw new BadInputError('failover shuts the host down and boots the standby: it needs confirmation', { hint: 'pass --yes' });
        if (!(await confirm('This shuts the host down and boots it from the standby drive.'))) throw new CancelledError('not confirmed: nothing was changed');
      }
      const r = await client.request<{ from: string; to: string }>('POST', '/api/failover', values['hard-off'] ? { hardOff: true } : {});
      if (!quiet) process.stderr.write(`failover from bay ${r.from} to bay ${r.to} started\n`);
      if (values['no-wait']) {
        if (json) printJson(r);
        return 0;
      }
      const deadline = Date.now() + 300_000;
      let s: StatusBody;
      do {
        await sleep(500);
        s = await client.request<StatusBody>('GET', '/api/status');
      } while (s.failover.switching && Date.now() < deadline);
      const ok = s.active === r.to && s.bootBay === r.to;
      if (json) printJson({ ...r, done: ok, status: s });
      else console.log(ok ? `failover done: bay ${r.to} is active and boots the host` : `failover did not complete: active bay ${s.active}, boot selection ${s.bootBay}${s.failover.halted ? `, halted: ${s.failover.halted}` : ''}`);
      return ok ? 0 : 1;
    }
  }
  return 2;
}
