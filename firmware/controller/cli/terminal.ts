/** Talking to an operator on a terminal: progress bar, confirmation, output. */
import { createInterface } from 'node:readline/promises';
import cliProgress from 'cli-progress';
import type { Progress } from '../../../src/sync/index.ts';
import { formatBytes } from '../../../src/sync/index.ts';

export const isTerminal = (): boolean => !!process.stderr.isTTY && !!process.stdin.isTTY;

/** A progress bar on stderr when it is a terminal; plain lines every few seconds otherwise (unless quiet). */
export function progressReporter(options: { json: boolean; quiet?: boolean }): { update(p: Progress): void; stop(): void } {
  if (options.json || options.quiet) return { update() {}, stop() {} };
  if (!process.stderr.isTTY) {
    let last = 0;
    return {
      update(p) {
        const now = Date.now();
        if (now - last < 5000 && p.phase !== 'done') return;
        last = now;
        process.stderr.write(`${p.phase} ${p.percent.toFixed(1)}% ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)} ${formatBytes(p.rate)}/s\n`);
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: '{phase} [{bar}] {percentage}% | {done}/{total} | {rate}/s | ETA {eta_text} | written {written}',
      hideCursor: true,
      clearOnComplete: false,
      barsize: 30,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(p) {
      const payload = {
        phase: p.phase.padEnd(9),
        done: formatBytes(p.bytesDone),
        total: formatBytes(p.bytesTotal),
        rate: formatBytes(p.rate),
        written: formatBytes(p.bytesWritten),
        eta_text: p.etaSeconds === null ? '?' : `${Math.ceil(p.etaSeconds)} s`,
      };
      if (!started) {
        bar.start(Math.max(1, p.bytesTotal), p.bytesDone, payload);
        started = true;
      } else bar.update(p.bytesDone, payload);
    },
    stop() {
      if (started) bar.stop();
    },
  };
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

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
