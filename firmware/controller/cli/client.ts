/**
 * `dpsr <command> --url URL`: the CLI as a client of a running dpsrd. The
 * token comes from --token-file, else DPSR_TOKEN, else
 * <state-dir>/api-token. A started job is followed on the daemon's event
 * stream with the same progress bar as a local copy; Ctrl-C asks whether to
 * cancel the job on the daemon or to detach from it. Errors from the daemon
 * keep their meaning, so the exit codes are those of the local commands.
 */
import { CONFIRMATIONS, partitionConfirmation } from '../confirmations.ts';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createParser } from 'eventsource-parser';
import { BadInputError, BusyError, CancelledError, DeviceError, NotFoundError, RefusedError, exitCodeFor, type DpsrError } from '../../../src/errors.ts';
import type { Progress } from '../../../src/sync/index.ts';
import { defaultStateDir, formatBytes, verifyHeadline, type VerifyReport } from '../../../src/sync/index.ts';
import { choose, confirmOrRequireYes, isTerminal, printJson, progressReporter, type ConfirmedCommand, type ProgressReporter } from './terminal.ts';
import { formatAge, parseMode, parsePartitionArgs } from './local.ts';
import type { Invocation, Opts } from './program.ts';

export class DaemonClient {
  constructor(
    readonly url: string,
    private readonly token: string,
  ) {}

  #headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, ...extra };
  }

  async request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(new URL(path, this.url), {
        method,
        headers: this.#headers(body !== undefined ? { 'content-type': 'application/json' } : {}),
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
    throw errorFrom(res.status, data);
  }

  /**
   * Server-sent events of the given types until `signal` aborts or the
   * stream ends; resolves once the stream is open (the daemon answered 200).
   */
  async events(types: string, onEvent: (type: string, data: unknown) => void, signal: AbortSignal): Promise<{ ended: Promise<void> }> {
    let res: Response;
    try {
      res = await fetch(new URL(`/api/events?types=${encodeURIComponent(types)}`, this.url), { headers: this.#headers({ accept: 'text/event-stream' }), signal });
    } catch (e) {
      throw new DeviceError(`no dpsrd answers at ${this.url}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`);
    }
    if (!res.ok || !res.body) throw errorFrom(res.status, await res.json().catch(() => ({})));
    const parser = createParser({
      onEvent: (e) => {
        // Each frame carries the daemon's event envelope { id, seq, at, type, data }.
        let envelope: { type?: string; data?: unknown };
        try {
          envelope = JSON.parse(e.data) as { type?: string; data?: unknown };
        } catch {
          return;
        }
        onEvent(e.event ?? envelope.type ?? 'message', envelope.data);
      },
    });
    const body = res.body;
    const ended = (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of body) parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
      } catch {
        // aborted, or the daemon went away: the caller polls the job instead
      }
    })();
    return { ended };
  }
}

function errorFrom(status: number, data: unknown): DpsrError {
  const err = (data as { error?: { kind?: string; message?: string; hint?: string } }).error ?? {};
  const msg = err.message ?? `HTTP ${status}`;
  const opts = { hint: err.hint };
  if (status === 401) return new BadInputError(`the daemon refused the token: ${msg}`, { hint: err.hint ?? 'pass --token-file' });
  if (err.kind === 'refused') return new RefusedError(msg, opts);
  if (err.kind === 'bad-input') return new BadInputError(msg, opts);
  if (err.kind === 'busy') return new BusyError(msg, opts);
  if (err.kind === 'not-found' || status === 404) return new NotFoundError(msg, opts);
  if (err.kind === 'cancelled') return new CancelledError(msg, opts);
  if (status === 400 || status === 413 || status === 415) return new BadInputError(msg, opts);
  return new DeviceError(msg, opts);
}

/** The API token; a file that does not hold one is named, its contents never shown. */
export function readToken(opts: Opts): string {
  const file = opts.tokenFile ?? (process.env.DPSR_TOKEN ? undefined : join(opts.stateDir ?? defaultStateDir(), 'api-token'));
  if (!file) return process.env.DPSR_TOKEN!.trim();
  const hint = 'pass --token-file FILE (the daemon keeps it in <state-dir>/api-token), or set DPSR_STATE_DIR';
  let text: string;
  try {
    if (statSync(file).size > 4096) throw new BadInputError(`${file} is not an API token file: it is larger than 4 KiB`, { hint });
    // Read in bounds too: a device or pipe reports no size (--token-file /dev/zero read forever).
    const fd = openSync(file, 'r');
    try {
      const buf = Buffer.alloc(4097);
      let got = 0;
      for (let n; got < buf.length && (n = readSync(fd, buf, got, buf.length - got, null)) > 0; ) got += n;
      if (got > 4096) throw new BadInputError(`${file} is not an API token file: it holds more than 4 KiB`, { hint });
      text = buf.subarray(0, got).toString('utf8').trim();
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (e instanceof BadInputError) throw e;
    throw new BadInputError(`cannot read the API token from ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint });
  }
  // A bearer token is one printable word; anything else would end up in an HTTP header (and its error messages).
  if (!/^[\x21-\x7e]{1,1024}$/.test(text)) throw new BadInputError(`${file} does not hold an API token (one line of printable characters)`, { hint });
  return text;
}

interface StatusBody {
  rig: string;
  active: string;
  standby: string;
  standbyState: string;
  paired: boolean;
  pairId: string | null;
  generations: Record<string, number | null>;
  bootBay: string | null;
  pendingCopy?: unknown;
  problems?: string[];
  /** Drives of the pair that show another geometry than at pairing. */
  geometryChanged?: string[];
  job: { id: string; kind: string; progress: { percent: number; phase: string } | null } | null;
  drives?: Record<string, { present: boolean; path: string | null; key: string | null; generation: number | null }>;
  host: { power: string; lastHeartbeat: { at: string } | null };
  health: Record<string, string>;
  lastSync: { kind: string; result: string; at: string; message?: string } | null;
  failover: { switching: unknown; halted: string | null; failovers: number; failed?: Record<string, boolean> };
  /** Inline mode: the host's export of the active drive and the bytes written since the last sync. */
  mode?: string;
  inline?: { hostUri: string; bay: string | null; running: boolean; dirtyBytes: number | null; hostDisk?: { kind: string; attached: boolean; connected: boolean; detail: string } | null } | null;
  /** Standby rotation: every standby of the active drive. */
  standbys?: { pairId: string; lastPath: string | null; present: boolean; ageSeconds: number | null; lastSyncedAt: string | null }[];
  /** The drive pairs (several on a controller with data pairs). */
  pairs?: PairStatusBody[];
}

/** One pair as GET /api/pairs/{id}/status answers (GET /api/status lists them without `drives`). */
interface PairStatusBody {
  id: string;
  label: string;
  role: string;
  active: string;
  standby: string;
  standbyState: string;
  paired: boolean;
  pendingCopy?: unknown;
  generations: Record<string, number | null>;
  lastSync?: { kind: string; result: string } | null;
  lastSuccess: string | null;
  fileRestore?: { state: string; partition: number } | null;
  geometryChanged?: string[];
  job: { id: string; kind: string; state: string } | null;
  drives: Record<string, { path: string | null; present: boolean; health?: string }>;
}

interface JobBody {
  id: string;
  kind: string;
  state: string;
  trigger?: string;
  createdAt?: string;
  seconds?: number | null;
  progress: Progress | null;
  result: { bytesWritten?: number; seconds?: number; generation?: number; identical?: boolean; differenceCount?: number; differingBytes?: number; message?: string } | null;
  error: { kind: string; message: string; hint?: string } | null;
}

/** Options each command takes with --url (commander keys); anything else typed is bad usage. */
const REMOTE_ACCEPTS: Record<string, string[]> = {
  status: ['pair'],
  jobs: [],
  cancel: ['rollback'],
  sync: ['partition', 'mode', 'forceGeneration', 'wait', 'quiet', 'yes', 'window', 'pair'],
  verify: ['partition', 'wait', 'quiet', 'window', 'pair'],
  clone: ['force', 'addStandby', 'wait', 'quiet', 'yes', 'window', 'pair'],
  recover: ['wait', 'quiet', 'yes', 'pair'],
  reprotect: ['wait', 'quiet', 'yes', 'window', 'pair'],
  restore: ['iMeanRestore', 'partition', 'wait', 'quiet', 'yes', 'window', 'pair'],
  failover: ['yes', 'hardOff', 'wait', 'quiet', 'pair'],
};
const ALWAYS = ['url', 'tokenFile', 'stateDir', 'json'];
const flag = (key: string) => `--${key === 'wait' ? 'no-wait' : key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** Whether the daemon's boot pair needs an operator: `dpsr status --url` exits 1 then. */
export function daemonNeedsAttention(s: StatusBody): string[] {
  const why: string[] = [];
  if (!s.paired) why.push('the drives are not paired');
  else if (s.standbyState !== 'consistent') why.push(`the standby is ${s.standbyState}`);
  if (s.pendingCopy) why.push('a copy was interrupted');
  for (const [bay, h] of Object.entries(s.health ?? {})) if (h !== 'ok' && h !== 'unknown') why.push(`drive ${bay} health is ${h}`);
  for (const [bay, failed] of Object.entries(s.failover.failed ?? {})) {
    if (!failed) continue;
    const now = bay === s.active ? 'the host runs from it now' : `the host runs from bay ${s.active} now`;
    why.push(`bay ${bay} is marked failed after a failover away from it (${now}; no failover goes back to it): check or replace its drive, then \`dpsr reprotect\` copies the active drive onto it and makes it the standby again (POST /api/failover/reset only clears the mark, e.g. after a drill)`);
  }
  if (s.failover.halted) why.push(`failover halted: ${s.failover.halted}`);
  if (s.lastSync && s.lastSync.result !== 'done') why.push(`the last ${s.lastSync.kind} ${s.lastSync.result}`);
  if (s.problems?.length) why.push(`state problems: ${s.problems.join('; ')}`);
  why.push(...(s.geometryChanged ?? []));
  if (s.inline && !s.inline.running) why.push("the host's export is not running");
  return why;
}

/** Whether one pair (GET /api/pairs/{id}/status) needs an operator, by the same measures as the boot pair. */
export function pairNeedsAttention(p: PairStatusBody): string[] {
  const why: string[] = [];
  if (!p.paired) why.push('the drives are not paired');
  else if (p.standbyState !== 'consistent') why.push(`the standby is ${p.standbyState}`);
  if (p.pendingCopy) why.push('a copy was interrupted');
  for (const [bay, d] of Object.entries(p.drives ?? {})) if (d.health && d.health !== 'ok' && d.health !== 'unknown') why.push(`drive ${bay} health is ${d.health}`);
  if (p.lastSync && p.lastSync.result !== 'done') why.push(`the last ${p.lastSync.kind} ${p.lastSync.result}`);
  if (p.fileRestore?.state === 'interrupted') why.push(`a restore of files onto partition ${p.fileRestore.partition} was interrupted`);
  why.push(...(p.geometryChanged ?? []));
  return why;
}

/** The commands that act on one pair: with several pairs they need --pair. */
const PAIR_COMMANDS = new Set(['sync', 'verify', 'clone', 'recover', 'reprotect', 'restore', 'failover']);

export async function runRemote(inv: Invocation): Promise<number> {
  const { command, args, opts, given } = inv;
  const accepts = REMOTE_ACCEPTS[command];
  if (!accepts) throw new BadInputError(`${command} does not work through the daemon`, { hint: 'run it without --url, on the controller' });
  const takesId = command === 'jobs' || command === 'cancel';
  if (args.length > (takesId ? 1 : 0)) throw new BadInputError(`${command} with --url takes ${takesId ? 'at most a job id' : 'no arguments'}, got: ${args.join(' ')}`, { hint: 'the daemon knows its drives' });
  for (const k of given) if (!ALWAYS.includes(k) && !accepts.includes(k)) throw new BadInputError(`${flag(k)} does not go with ${command} --url`, { hint: `run \`dpsr ${command} --help\`` });
  const url = opts.url!;
  if (!/^https?:\/\/[^\s/]+/.test(url)) {
    const guess = /^[^\s/:]+:\d+\/?$/.test(url) ? `--url http://${url.replace(/\/$/, '')}` : '--url http://127.0.0.1:8750';
    throw new BadInputError(`--url is ${JSON.stringify(url)}; allowed: http://HOST:PORT`, { hint: `for example ${guess} (dpsrd prints its URL when it starts)` });
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new BadInputError(`--url is ${JSON.stringify(url)}, which is not a valid URL (a port is 1 to 65535)`, { hint: 'for example --url http://127.0.0.1:8750 (dpsrd prints its URL when it starts)' });
  }
  if (parsed.username || parsed.password) {
    parsed.password = parsed.password ? '***' : '';
    throw new BadInputError(`--url ${JSON.stringify(parsed.href.replace(/\/$/, ''))} holds a user name or password; the daemon takes its token as a bearer token`, { hint: 'leave them out of --url and pass --token-file FILE (the daemon keeps it in <state-dir>/api-token)' });
  }
  if (takesId && args[0] === '') throw new BadInputError(`the job id is empty`, { hint: `leave it out ${command === 'jobs' ? 'to list the jobs' : 'to cancel the running job'}, or give an id \`dpsr jobs --url ${url}\` lists` });
  const pair = opts.pair as string | undefined;
  if (pair !== undefined && !/^[a-z][a-z0-9-]{0,31}$/.test(pair)) throw new BadInputError(`--pair is ${JSON.stringify(pair)}; allowed: a pair id as the config names it (lower-case letters, digits, dashes)`, { hint: `\`dpsr status --url ${url}\` lists the pairs` });
  /** The route of a pair-specific command: the pair's own with --pair, else the old one (the daemon's only pair). */
  const route = (name: string) => (pair ? `/api/pairs/${pair}/${name}` : `/api/${name}`);
  const client = new DaemonClient(url, readToken(opts));
  const json = opts.json === true;
  const say = (line: string) => {
    if (!json && !opts.quiet) process.stderr.write(`${line}\n`);
  };
  if (!pair && PAIR_COMMANDS.has(command)) {
    // The daemon would refuse the pair-less route naming its API; the operator needs the option.
    const { pairs } = await client.request<{ pairs: { id: string }[] }>('GET', '/api/pairs');
    if (pairs.length > 1) {
      const ids = pairs.map((p) => p.id);
      throw new BadInputError(`this controller has ${ids.length} pairs (${ids.join(', ')}): dpsr ${command} --url needs --pair to say which`, { hint: `e.g. dpsr ${command} --url ${url} --pair ${ids[0]}` });
    }
  }

  switch (command) {
    case 'status': {
      if (pair) {
        const p = await client.request<PairStatusBody>('GET', `/api/pairs/${pair}/status`);
        const why = pairNeedsAttention(p);
        if (json) printJson(p);
        else {
          console.log(`pair ${p.id} (${p.label}, ${p.role}) at ${url}`);
          console.log(`  active   bay ${p.active}  generation ${p.generations[p.active] ?? '-'}`);
          console.log(`  standby  bay ${p.standby}  generation ${p.generations[p.standby] ?? '-'}  ${p.standbyState.toUpperCase()}${p.paired ? '' : ' (not paired)'}`);
          console.log(`  job ${p.job ? `${p.job.kind} ${p.job.id} ${p.job.state}` : 'none'}`);
          if (p.lastSuccess) console.log(`  last success ${p.lastSuccess}`);
          if (why.length) console.log(`  NEEDS ATTENTION: ${why.join('; ')}`);
        }
        return why.length ? 1 : 0;
      }
      const s = await client.request<StatusBody>('GET', '/api/status');
      const attention = daemonNeedsAttention(s);
      // The top lines are the boot pair's; every other pair is asked for its own status (with its drives' health).
      for (const p of s.pairs ?? []) {
        if (p.role === 'boot') continue;
        for (const why of pairNeedsAttention(await client.request<PairStatusBody>('GET', `/api/pairs/${p.id}/status`))) attention.push(`pair ${p.id}: ${why}`);
      }
      if (json) printJson(s);
      else {
        console.log(`dpsrd at ${url} (${s.rig} rig${s.mode === 'inline' ? ', inline mode' : ''})`);
        if (s.inline) {
          const dirty = s.inline.dirtyBytes === null ? 'unknown' : `${(s.inline.dirtyBytes / 1024 / 1024).toFixed(1)} MiB`;
          console.log(`  export   ${s.inline.running ? `bay ${s.inline.bay} at ${s.inline.hostUri}` : 'NOT RUNNING'}; written since the last sync ${dirty}`);
          const hd = s.inline.hostDisk;
          if (hd) console.log(`  host disk ${hd.kind === 'usb-gadget' ? 'USB gadget' : hd.kind}: ${hd.attached && hd.connected ? 'attached' : 'NOT ATTACHED'} (${hd.detail})`);
        }
        console.log(`  active   bay ${s.active}  generation ${s.generations[s.active] ?? '-'}`);
        // A failed-over-from standby still holds the copy of its generation, but the host's writes since are only on the active drive.
        const failedStandby = s.failover.failed?.[s.standby] ? ` (as of the failover; bay ${s.standby} is marked failed)` : '';
        console.log(`  standby  bay ${s.standby}  generation ${s.generations[s.standby] ?? '-'}  ${s.standbyState.toUpperCase()}${s.paired ? '' : ' (not paired)'}${failedStandby}`);
        console.log(`  boot selection bay ${s.bootBay ?? 'NONE'}; host power ${s.host.power}${s.host.lastHeartbeat ? `, last heartbeat ${s.host.lastHeartbeat.at}` : ''}`);
        console.log(`  job ${s.job ? `${s.job.kind} ${s.job.id} ${s.job.progress ? `${s.job.progress.phase} ${s.job.progress.percent.toFixed(1)} %` : 'starting'}` : 'none'}`);
        console.log(`  drive health A ${s.health.A}, B ${s.health.B}`);
        if (s.lastSync) console.log(`  last ${s.lastSync.kind}: ${s.lastSync.result} at ${s.lastSync.at}${s.lastSync.message ? ` (${s.lastSync.message})` : ''}`);
        for (const x of s.standbys ?? []) {
          console.log(`  standby ${x.lastPath ?? '?'} (pair ${x.pairId}) ${x.present ? 'in its bay' : 'not in a bay'}, ${x.ageSeconds === null ? 'never synced' : `age ${formatAge(x.ageSeconds)} (last synced ${x.lastSyncedAt})`}`);
        }
        if (s.failover.halted) console.log(`  FAILOVER HALTED: ${s.failover.halted}`);
        if ((s.pairs?.length ?? 0) > 1) {
          for (const p of s.pairs!) console.log(`  pair ${p.id} (${p.label}): active bay ${p.active}, standby bay ${p.standby} ${p.standbyState.toUpperCase()}${p.job ? `, ${p.job.kind} ${p.job.id} ${p.job.state}` : ''}`);
        }
        if (attention.length) console.log(`  NEEDS ATTENTION: ${attention.join('; ')}`);
      }
      return attention.length ? 1 : 0;
    }
    case 'jobs': {
      if (args[0]) {
        const job = await client.request<JobBody & { log?: { at: string; level: string; message: string }[] }>('GET', `/api/jobs/${encodeURIComponent(args[0])}`);
        if (json) printJson(job);
        else {
          console.log(jobLine(job));
          if (job.error) console.log(`  ${job.error.message}${job.error.hint ? `\n  ${job.error.hint}` : ''}`);
          for (const l of job.log ?? []) console.log(`  ${l.at} ${l.level} ${l.message}`);
        }
        return 0;
      }
      const { jobs } = await client.request<{ jobs: JobBody[] }>('GET', '/api/jobs');
      if (json) printJson({ jobs });
      else if (jobs.length === 0) console.log('no jobs yet');
      else for (const j of jobs) console.log(jobLine(j));
      return 0;
    }
    case 'cancel': {
      const id = args[0] ?? (await client.request<StatusBody>('GET', '/api/status')).job?.id;
      if (!id) throw new NotFoundError('no job runs on the daemon', { hint: `\`dpsr jobs --url ${url}\` lists the past ones` });
      const body = opts.rollback === undefined ? {} : { rollback: opts.rollback === true };
      const r = await client.request<{ id: string; job: JobBody }>('POST', `/api/jobs/${encodeURIComponent(id)}/cancel`, body);
      if (json) printJson(r);
      else console.log(`cancel requested for ${r.job.kind} job ${r.id}`);
      return 0;
    }
    case 'failover': {
      await confirmOrRequireYes('failover', opts.yes, 'This shuts the host down and boots it from the standby drive.');
      const body = { confirm: CONFIRMATIONS.failover, ...(opts.hardOff ? { hardOff: true } : {}) };
      if (pair && (await client.request<PairStatusBody>('GET', `/api/pairs/${pair}/status`)).role === 'data') return failoverDataPair(client, pair, body, { json, wait: opts.wait !== false, say });
      const r = await client.request<{ from: string; to: string }>('POST', route('failover'), body);
      say(`failover from bay ${r.from} to bay ${r.to} started`);
      if (opts.wait === false) {
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

  // The storage jobs: start one, then follow it.
  let path: string;
  let body: Record<string, unknown> = {};
  let question: string | null = null;
  if (command === 'sync') {
    const partitions = parsePartitionArgs(opts.partition);
    const mode = parseMode(opts.mode);
    body = { ...(partitions.length ? { partitions } : {}), ...(mode ? { mode } : {}), ...(opts.forceGeneration ? { forceGeneration: true } : {}) };
    path = route('sync');
    question = `This makes the drive in the STANDBY bay a copy of the active drive${partitions.length ? ` (partitions ${partitions.join(', ')})` : ''}, writing what differs.`;
  } else if (command === 'verify') {
    const partitions = parsePartitionArgs(opts.partition);
    body = partitions.length ? { partitions } : {};
    path = route('verify');
  } else if (command === 'clone') {
    body = { ...(opts.force ? { force: true } : {}), ...(opts.addStandby ? { addStandby: true } : {}) };
    path = route('clone');
    question = 'This overwrites the whole drive in the STANDBY bay with the active drive.';
  } else if (command === 'recover') {
    path = route('recover');
    question = 'This rolls the drive in the standby bay back to its previous backup.';
  } else if (command === 'reprotect') {
    path = route('reprotect');
    body = { confirm: CONFIRMATIONS.reprotect };
    question = 'This makes the drive in the STANDBY bay a backup of the active drive again (a new drive is cloned whole).';
  } else {
    if (!opts.iMeanRestore) throw new BadInputError('restore overwrites the ACTIVE drive with the backup and needs --i-mean-restore', { hint: `dpsr restore --url ${url} --i-mean-restore; nothing was changed` });
    const partitions = parsePartitionArgs(opts.partition);
    if (partitions.length > 1) throw new BadInputError(`restore --url takes at most one --partition, got ${partitions.join(', ')}`, { hint: 'restore one partition at a time, or the whole drive without --partition' });
    if (partitions.length === 1) {
      body = { partition: partitions[0], confirm: partitionConfirmation(partitions[0]!) };
      path = route('restore/partition');
      question = `This OVERWRITES PARTITION ${partitions[0]} OF THE ACTIVE DRIVE (and its partition table) with the backup on the standby.`;
    } else {
      body = { confirm: CONFIRMATIONS.restore };
      path = route('restore');
      question = 'This OVERWRITES THE ACTIVE DRIVE with the backup on the standby.';
    }
  }
  if (question && !opts.yes && isTerminal()) {
    if (pair) {
      const p = await client.request<PairStatusBody>('GET', `/api/pairs/${pair}/status`);
      const bay = command === 'restore' ? p.active : p.standby;
      process.stderr.write(`pair ${p.id}: ${command === 'restore' ? 'ACTIVE' : 'STANDBY'} bay ${bay}: ${p.drives[bay]?.path ?? 'empty'}  generation ${p.generations[bay] ?? '-'}\n`);
    } else {
      const s = await client.request<StatusBody>('GET', '/api/status');
      const bay = command === 'restore' ? s.active : s.standby;
      const d = s.drives?.[bay];
      process.stderr.write(`${command === 'restore' ? 'ACTIVE' : 'STANDBY'} bay ${bay}: ${d?.path ?? 'empty'}${d?.key ? `  (${d.key})` : ''}  generation ${d?.generation ?? '-'}  health ${s.health[bay] ?? '?'}\n`);
    }
  }
  if (question) await confirmOrRequireYes(command as ConfirmedCommand, opts.yes, question);
  // Absent: the daemon's sync.window decides.
  if (typeof opts.window === 'boolean') body = { ...body, window: opts.window };
  const started = await client.request<{ id: string; job: JobBody }>('POST', path, body);
  say(`${command} job ${started.id} started on ${url}`);
  if (opts.wait === false) {
    if (json) printJson(started);
    return 0;
  }
  const progress = progressReporter({ json, quiet: opts.quiet });
  const followed = await follow(client, started.id, progress, url);
  progress.stop();
  if (followed === 'detached') return 0;
  const job = followed;
  if (json) printJson(job);
  else if (job.state === 'done') {
    const r = job.result ?? {};
    if (command === 'verify') console.log(r.identical ? 'identical: the standby matches the active drive' : `${verifyHeadline(r as unknown as VerifyReport)} (\`dpsr jobs ${job.id} --url ${url} --json\` lists them)`);
    else if (command === 'recover') console.log(r.message ?? 'recover done');
    else console.log(`${command} done: ${formatBytes(r.bytesWritten ?? 0)} written in ${(r.seconds ?? job.seconds ?? 0).toFixed(1)} s${r.generation !== undefined ? `, generation ${r.generation}` : ''}`);
  } else {
    const why = job.error && job.error.message !== job.state ? `: ${job.error.message}` : '';
    console.log(`${command} ${job.state}${why}${job.error?.hint ? `\n  ${job.error.hint}` : ''}`);
  }
  // A refusal is a refusal whether it was decided here or by the daemon's job: exit 3 (nothing written), not 1.
  if (job.state !== 'done') return job.error ? exitCodeFor(errorFrom(0, { error: job.error })) : 1;
  return command === 'verify' && job.result?.identical === false ? 1 : 0;
}

/**
 * A data pair's failover: the daemon answers once the move is under way and
 * tells the outcome on the event stream (a `failover` event naming the pair,
 * or a `failover-failed` alert after the relays rolled back), so the stream is
 * opened before the request. Without a stream the pair's roles are polled:
 * the swap shows there once it is recorded. Exit 0 when the standby became
 * the host's data disk, 1 otherwise.
 */
async function failoverDataPair(client: DaemonClient, pair: string, body: Record<string, unknown>, o: { json: boolean; wait: boolean; say: (line: string) => void }): Promise<number> {
  const stop = new AbortController();
  let settle: (outcome: { ok: boolean; message: string }) => void = () => {};
  const outcome = new Promise<{ ok: boolean; message: string }>((resolve) => (settle = resolve));
  try {
    if (o.wait) {
      try {
        await client.events(
          'failover,alert',
          (type, data) => {
            const d = data as { pair?: string; code?: string; message?: string; to?: string };
            if (d.pair !== pair) return;
            if (type === 'failover') settle({ ok: true, message: `failover of pair ${pair} done: bay ${d.to} is the host's data disk` });
            else if (type === 'alert' && d.code === 'failover-failed') settle({ ok: false, message: d.message ?? `the failover of pair ${pair} failed` });
          },
          stop.signal,
        );
      } catch {
        // no stream: the roles are polled below
      }
    }
    const r = await client.request<{ from: string; to: string }>('POST', `/api/pairs/${pair}/failover`, body);
    o.say(`failover of pair ${pair} from bay ${r.from} to bay ${r.to} started`);
    if (!o.wait) {
      if (o.json) printJson(r);
      return 0;
    }
    const deadline = Date.now() + 300_000;
    let result: { ok: boolean; message: string } | null = null;
    while (!result && Date.now() < deadline) {
      result = await Promise.race([outcome, sleep(1000).then(() => null)]);
      if (!result && (await client.request<PairStatusBody>('GET', `/api/pairs/${pair}/status`)).active === r.to) {
        result = { ok: true, message: `failover of pair ${pair} done: bay ${r.to} is the host's data disk` };
      }
    }
    result ??= { ok: false, message: `the failover of pair ${pair} did not finish within 5 minutes: \`dpsr status --url ${client.url} --pair ${pair}\` shows where it stands` };
    if (o.json) printJson({ ...r, done: result.ok, message: result.message, status: await client.request<PairStatusBody>('GET', `/api/pairs/${pair}/status`) });
    else console.log(result.message);
    return result.ok ? 0 : 1;
  } finally {
    stop.abort();
  }
}

function jobLine(j: JobBody): string {
  const p = j.progress && j.state === 'running' ? ` ${j.progress.phase} ${j.progress.percent.toFixed(1)}%` : '';
  return `${j.id}  ${j.kind.padEnd(9)} ${j.state.padEnd(9)}${p}  ${j.createdAt ?? ''}${j.trigger ? `  by ${j.trigger}` : ''}${j.error ? `  ${j.error.message}` : ''}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const FINISHED = new Set(['done', 'failed', 'cancelled']);

/**
 * Follows job `id` to its end: progress and notes from the event stream
 * (polling when the stream is unavailable). Ctrl-C on a terminal asks whether
 * to cancel the job on the daemon or to detach; elsewhere it detaches.
 */
async function follow(client: DaemonClient, id: string, progress: ProgressReporter, url: string): Promise<JobBody | 'detached'> {
  const stop = new AbortController();
  // Wakes the loop below early: the job ended on the stream, or the operator detached.
  let wake = () => {};
  let woken = false;
  const finished = () => {
    woken = true;
    wake();
  };
  let asking = false;
  let detached = false;
  const onSigint = async () => {
    if (asking) return;
    if (!isTerminal()) {
      detached = true;
      finished();
      return;
    }
    asking = true;
    progress.stop();
    process.stderr.write(`Ctrl-C: job ${id} goes on running on the daemon until you choose.\n`);
    const answer = await choose('Cancel it, detach from it, or watch on?', ['watch', 'cancel', 'detach'] as const);
    asking = false;
    if (answer === 'detach') {
      detached = true;
      finished();
    } else if (answer === 'cancel') {
      try {
        await client.request('POST', `/api/jobs/${encodeURIComponent(id)}/cancel`, {});
        progress.note(`cancel requested: waiting for ${id} to stop`);
      } catch (e) {
        progress.note(`cancel failed: ${(e as Error).message}`);
      }
    }
  };
  process.on('SIGINT', onSigint);
  try {
    let stream: { ended: Promise<void> } | null = null;
    try {
      stream = await client.events(
        'job.',
        (type, data) => {
          const d = data as { id?: string; progress?: Progress; message?: string; job?: { id: string } };
          if (type === 'job.progress' && d.id === id && d.progress && !asking) progress.update(d.progress);
          else if (type === 'job.note' && d.id === id && d.message) progress.note(`note: ${d.message}`);
          else if ((type === 'job.done' || type === 'job.failed' || type === 'job.cancelled') && d.job?.id === id) finished();
        },
        stop.signal,
      );
    } catch {
      stream = null; // an older daemon or a proxy without streaming: poll
    }
    // The job may have ended before the stream opened; and a stream that ends early falls back to polling.
    for (;;) {
      const job = await client.request<JobBody>('GET', `/api/jobs/${encodeURIComponent(id)}`);
      if (FINISHED.has(job.state)) return job;
      if (detached) break;
      if (!stream && job.progress && !asking) progress.update(job.progress);
      const open = stream;
      if (!woken) await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, open ? 5000 : 500);
        open?.ended.then(() => {
          stream = null;
          resolve();
        });
      });
      woken = false;
      if (detached) break;
    }
    progress.stop();
    process.stderr.write(`detached: ${id} keeps running; \`dpsr jobs ${id} --url ${url}\` shows it, \`dpsr cancel ${id} --url ${url}\` stops it\n`);
    return 'detached';
  } finally {
    process.off('SIGINT', onSigint);
    stop.abort();
  }
}
