/**
 * Where dpsrd's pino lines go and in which form:
 * - `journal`: under systemd (stdout is the journal stream named by
 *   JOURNAL_STREAM), each JSON line starts with its syslog priority `<N>`
 *   (sd-daemon(3)), so `journalctl -p warning` filters by level while the
 *   message stays JSON for machines;
 * - `pretty`: on a terminal, one readable line per entry;
 * - `json`: anywhere else (pipes, files, log shippers), pino's lines as they are.
 *
 * The pretty form is written here rather than with pino-pretty: it is one
 * short function, and the board install stays without another dependency tree.
 */
import { fstatSync } from 'node:fs';
import pino from 'pino';
import { isatty } from 'node:tty';
import { BadInputError } from '../../src/errors.ts';

export const LOG_FORMATS = ['auto', 'json', 'pretty', 'journal'] as const;
export type LogFormat = Exclude<(typeof LOG_FORMATS)[number], 'auto'>;

/** pino's numeric levels → syslog priorities (RFC 5424 section 6.2.1). */
export function syslogPriority(level: number): number {
  if (level >= 60) return 2; // fatal → crit
  if (level >= 50) return 3; // error → err
  if (level >= 40) return 4; // warn → warning
  if (level >= 30) return 6; // info → info
  return 7; // debug, trace → debug
}

const NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const COLOURS: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '41;97' };
/** Keys every line has, shown in the line's frame rather than as key=value. */
const FRAME = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'svc']);

/** Whether stdout (fd) is the stream systemd connected to the journal (systemd.exec(5), $JOURNAL_STREAM). */
export function isJournalStream(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** The format `auto` stands for on this fd: the journal, else a terminal, else JSON. */
export function resolveLogFormat(requested: string | undefined, fd = 1, env: NodeJS.ProcessEnv = process.env): LogFormat {
  const r = requested ?? 'auto';
  if (!(LOG_FORMATS as readonly string[]).includes(r)) throw new BadInputError(`--log-format is ${JSON.stringify(r)}; allowed: ${LOG_FORMATS.join(', ')}`, { hint: 'auto picks journal under systemd, pretty on a terminal, json otherwise' });
  if (r !== 'auto') return r as LogFormat;
  if (isJournalStream(fd, env)) return 'journal';
  return isatty(fd) ? 'pretty' : 'json';
}

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v !== null && typeof v === 'object' && 'message' in v && typeof (v as { message: unknown }).message === 'string') return JSON.stringify((v as { message: string }).message);
  return JSON.stringify(v) ?? String(v);
}

/** One pino JSON line as `HH:MM:SS.mmm LEVEL message key=value …`. Lines that are not JSON pass unchanged. */
export function prettyLine(line: string, colour = false): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const level = typeof o.level === 'number' ? o.level : 30;
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 23) : '';
  const name = (NAMES[level] ?? String(level)).padEnd(5);
  const extra = Object.entries(o)
    .filter(([k, v]) => !FRAME.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${value(v)}`)
    .join(' ');
  const lvl = colour ? `\x1b[${COLOURS[level] ?? '0'}m${name}\x1b[0m` : name;
  return `${time} ${lvl} ${String(o.msg ?? '')}${extra ? ` ${colour ? `\x1b[90m${extra}\x1b[0m` : extra}` : ''}\n`;
}

/** A synchronous pino destination writing to `fd` in `format`. */
export function logDestination(format: LogFormat, fd = 1, env: NodeJS.ProcessEnv = process.env): { write(line: string): void } {
  // pino's own synchronous destination (sonic-boom) retries short writes on a non-blocking pipe.
  const dest = pino.destination({ dest: fd, sync: true });
  const out = (text: string) => dest.write(text);
  if (format === 'journal') return { write: (line) => out(`<${syslogPriority(Number(/^\{"level":(\d+)/.exec(line)?.[1] ?? 30))}>${line}`) };
  if (format === 'pretty') {
    const colour = isatty(fd) && env.NO_COLOR === undefined;
    return { write: (line) => out(prettyLine(line, colour)) };
  }
  return dest;
}
