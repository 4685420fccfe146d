/**
 * The guest agent's serial line protocol (README.md), in one place for both
 * consoles that speak it: QEMU's stdio (the simulated rig) and a USB serial
 * adapter (the real rig).
 */
import { BadInputError, DeviceError } from './errors.ts';
import type { BootInfo, CommandReply, DataRecord, Heartbeat, RecordStat } from './qemu-host.ts';

const WORD = /^[A-Za-z0-9._-]{1,32}$/;

/**
 * Boot loader and kernel output carry CRs and escape sequences; the protocol
 * is plain ASCII. Returns the printable text, starting at `DPSR-` when a
 * protocol line is glued to other output, or '' for an empty line.
 */
export function cleanLine(raw: string): string {
  const text = raw.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/[^\x20-\x7e\t]/g, '').trim();
  const at = text.indexOf('DPSR-');
  return at > 0 ? text.slice(at) : text;
}

export function fieldsOf(words: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq > 0) out[w.slice(0, eq)] = w.slice(eq + 1);
  }
  return out;
}

export type AgentLine = { kind: 'boot'; info: BootInfo } | { kind: 'heartbeat'; heartbeat: Heartbeat } | { kind: 'panic' } | { kind: 'other' };

/** What a (cleaned) line says, `at` ms after power-on. */
export function interpretLine(text: string, at: number): AgentLine {
  const [kind, ...rest] = text.split(' ');
  if (kind === 'DPSR-BOOT') {
    const f = fieldsOf(rest);
    return { kind: 'boot', info: { bay: f.bay ?? 'unknown', image: f.image ?? 'unknown', kernel: f.kernel ?? 'unknown', root: f.root ?? 'unknown', data: f.data ?? 'none', guestUptime: Number(f.uptime ?? NaN), at } };
  }
  if (kind === 'DPSR-HEARTBEAT') {
    const seq = Number(rest[0]);
    if (Number.isInteger(seq)) return { kind: 'heartbeat', heartbeat: { seq, bay: fieldsOf(rest.slice(1)).bay ?? 'unknown', at } };
  }
  if (kind === 'DPSR-PANIC' || /Kernel panic/.test(text)) return { kind: 'panic' };
  return { kind: 'other' };
}

/** The command line for the agent; words are checked so nothing can inject a second command. */
export function commandLine(id: string, verb: string, args: Array<string | number>): string {
  const words = [verb, ...args.map(String)];
  for (const w of words) if (!WORD.test(w)) throw new BadInputError(`agent command words must be 1-32 of [A-Za-z0-9._-], got "${w}"`);
  return `DPSR-CMD ${id} ${words.join(' ')}`;
}

/** Collects the DATA lines and the REPLY of one command. */
export class ReplyCollector {
  readonly reply: CommandReply;
  error: string | undefined;

  constructor(readonly id: string) {
    this.reply = { id, fields: {}, words: [], data: [] };
  }

  /** Feeds one line; true once the reply has arrived. */
  offer(text: string): boolean {
    const m = /^DPSR-(REPLY|DATA) (\S+) ?(.*)$/.exec(text);
    if (!m || m[2] !== this.id) return false;
    if (m[1] === 'DATA') {
      this.reply.data.push(m[3]!);
      return false;
    }
    const [status, ...rest] = m[3]!.split(' ');
    if (status === 'OK') {
      this.reply.words = rest.filter(Boolean);
      this.reply.fields = fieldsOf(this.reply.words);
    } else this.error = rest.join(' ') || 'error';
    return true;
  }
}

export function toStat(f: Record<string, string>): RecordStat {
  const count = Number(f.count);
  const last = Number(f.last);
  if (!Number.isInteger(count) || !Number.isInteger(last) || !f.md5) throw new DeviceError(`malformed record stat from the agent: ${JSON.stringify(f)}`);
  return { count, last, md5: f.md5 };
}

export type SendCommand = (verb: string, args?: Array<string | number>, timeoutMs?: number) => Promise<CommandReply>;

/** Appends `count` records to the data partition; `sync` false leaves them in the guest's page cache. */
export async function writeRecords(send: SendCommand, count: number, tag = 't', sync = true): Promise<RecordStat> {
  return toStat((await send(sync ? 'write' : 'write-nosync', [count, tag])).fields);
}

export async function readRecords(send: SendCommand, who: string): Promise<RecordStat & { records: DataRecord[] }> {
  const reply = await send('read', [], 60_000);
  const records = reply.data.map((line) => {
    const m = /^REC (\d+) (\S+)$/.exec(line);
    if (!m) throw new DeviceError(`${who}: malformed record "${line}"`);
    return { seq: Number(m[1]), tag: m[2]! };
  });
  return { ...toStat(reply.fields), records };
}

export async function recordStat(send: SendCommand): Promise<RecordStat> {
  return toStat((await send('stat')).fields);
}
