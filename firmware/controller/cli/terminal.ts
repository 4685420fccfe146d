/** Talking to an operator on a terminal: progress bar, notes, confirmation, output. */
import { createInterface } from 'node:readline/promises';
import type { Progress } from '../../../src/sync/index.ts';
import { formatBytes } from '../../../src/sync/index.ts';
import { BadInputError, CancelledError } from '../../../src/errors.ts';

export const isTerminal = (): boolean => !!process.stderr.isTTY && !!process.stdin.isTTY;

/** Byte count in binary units, whole bytes (a rate is fractional). */
export const human = (bytes: number): string => formatBytes(Math.round(bytes));

/** Seconds as 45s, 12m05s or 3h07m; "--" when unknown. */
export function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return '--';
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 100 * 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return '--';
}

/**
 * One progress line of at most `width` characters (the bar takes what the
 * other fields leave), e.g.
 * `copying    [##########..........]  48.2% of 2.00 GiB  95.3 MiB/s  ETA 12s`.
 */
export function progressLine(p: Progress, width = 77): string {
  const pct = `${p.percent.toFixed(1)}%`.padStart(6);
  const rest = ` ${pct} of ${human(p.bytesTotal)}  ${human(p.rate)}/s  ETA ${formatEta(p.etaSeconds)}`;
  const phase = p.phase.padEnd(10);
  const barWidth = Math.max(5, Math.min(40, width - phase.length - 3 - rest.length));
  const filled = Math.round((barWidth * Math.min(100, Math.max(0, p.percent))) / 100);
  return `${phase} [${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]${rest}`.slice(0, width);
}

export interface ProgressReporter {
  update(p: Progress): void;
  /** A line printed above the bar (the bar is redrawn below it). */
  note(line: string): void;
  stop(): void;
}

/**
 * A progress bar on stderr when it is a terminal; plain lines every few
 * seconds otherwise; nothing with --json or --quiet (notes still print unless
 * --json). Written here rather than with cli-progress, which restores a cursor
 * position saved when the bar started and so lands on the wrong line once
 * notes have scrolled the screen.
 */
export function progressReporter(options: { json: boolean; quiet?: boolean }, stream: NodeJS.WriteStream = process.stderr): ProgressReporter {
  const plainNote = (line: string) => {
    if (!options.json) stream.write(`${line}\n`);
  };
  if (options.json || options.quiet) return { update() {}, note: plainNote, stop() {} };
  if (!stream.isTTY) {
    let last = 0;
    return {
      update(p) {
        const now = Date.now();
        if (now - last < 5000 && p.phase !== 'done') return;
        last = now;
        stream.write(`${p.phase} ${p.percent.toFixed(1)}% of ${human(p.bytesTotal)}, ${human(p.bytesDone)} done, ${human(p.rate)}/s\n`);
      },
      note: plainNote,
      stop() {},
    };
  }
  let drawn = '';
  // Two columns stay free for the "^C" the terminal echoes, so Ctrl-C never wraps the bar.
  const width = () => Math.min(stream.columns || 80, 80) - 3;
  const draw = (line: string) => {
    drawn = line;
    stream.write(`\r${line}\x1b[K`);
  };
  return {
    update(p) {
      const line = progressLine(p, width());
      if (line !== drawn) draw(line);
    },
    note(line) {
      if (!drawn) return void stream.write(`${line}\n`);
      stream.write(`\r\x1b[K${line}\n`);
      draw(drawn);
    },
    stop() {
      if (drawn) stream.write('\n');
      drawn = '';
    },
  };
}

/**
 * The commands that change a drive, the host's boot or the recorded pairs,
 * and what each does: every one asks before it acts, in its local form and
 * with --url alike, unless --yes is given.
 */
export const CONFIRMED_COMMANDS = {
  clone: 'overwrites the standby drive',
  sync: 'writes to the standby drive',
  restore: 'overwrites the active drive',
  recover: 'rolls the standby drive back',
  reprotect: 'overwrites the drive in the standby bay',
  migrate: 'writes a partition onto another drive',
  failover: 'shuts the host down and boots the standby',
  forget: 'drops a recorded pair',
} as const;
export type ConfirmedCommand = keyof typeof CONFIRMED_COMMANDS;

/**
 * Goes on when `yes` (--yes) is true; on a terminal asks `question` and
 * throws CancelledError unless the operator types "yes"; off a terminal
 * throws BadInputError (exit 2) naming --yes. Called before anything is
 * changed.
 */
export async function confirmOrRequireYes(command: ConfirmedCommand, yes: unknown, question: string): Promise<void> {
  if (yes === true) return;
  if (!isTerminal()) {
    throw new BadInputError(`${command} ${CONFIRMED_COMMANDS[command]} and needs confirmation: pass --yes`, { hint: 'pass --yes when running it from a script (on a terminal dpsr asks instead); nothing was changed' });
  }
  if (!(await confirm(question))) throw new CancelledError('not confirmed: nothing was changed');
}

/** Asks the operator to type "yes". */
export async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question}\nType "yes" to continue: `);
    return answer.trim().toLowerCase() === 'yes';
  } finally {
    rl.close();
  }
}

/** Asks the operator to pick one of `choices` (which must start with different letters; the first letter is enough); the first choice when the answer is empty. */
export async function choose<T extends string>(question: string, choices: readonly T[]): Promise<T> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    for (;;) {
      const answer = (await rl.question(`${question} [${choices.join('/')}] `)).trim().toLowerCase();
      if (answer === '') return choices[0]!;
      const hit = choices.find((c) => c === answer || c[0] === answer[0]);
      if (hit) return hit;
    }
  } finally {
    rl.close();
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
