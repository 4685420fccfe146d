/**
 * `dpsr`: the operator's command line. Every command takes --json; exit codes
 * are 0 done, 1 differences or a failed operation (and, for status, a pair
 * that needs attention), 2 bad usage or input, 3 refused to protect data.
 * With --url a command runs through a dpsrd (client.ts) instead of on the
 * drives (local.ts); both are loaded only when a command runs, so --help and
 * --version start fast.
 */
import { CommanderError, type Command } from 'commander';
import { BadInputError, describeError, exitCodeFor, isDpsrError } from '../../../src/errors.ts';
import { buildProgram } from './program.ts';

/** Runs dpsr with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const result = { code: 0 };
  const program = buildProgram(async (inv) => {
    if (inv.opts.url !== undefined) return (await import('./client.ts')).runRemote(inv);
    return (await import('./local.ts')).runLocal(inv);
  }, result);
  try {
    await program.parseAsync(commandFirst(argv, program), { from: 'user' });
    return result.code;
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    // --help and --version end with exit code 0; every usage error is 2 (the usage is already printed).
    if (e.exitCode === 0) return 0;
    if (argv.includes('--json')) printJsonError(new BadInputError(e.message.replace(/^error: /, '')));
    return 2;
  }
}

/**
 * Options given before the command (`dpsr --json status`, `dpsr --url U sync`,
 * which dpsr has always accepted) moved behind it, where commander looks for
 * them.
 */
export function commandFirst(argv: string[], program: Command): string[] {
  // `dpsr help synk`: commander would print the overview without saying why; as `dpsr synk` it names the typo and suggests the command.
  if (argv[0] === 'help' && argv[1] && !argv[1].startsWith('-') && !program.commands.some((c) => c.name() === argv[1])) return argv.slice(1);
  if (!argv[0]?.startsWith('-') || ['-h', '--help', '-V', '--version'].includes(argv[0])) return argv;
  const names = new Set(program.commands.map((c) => c.name()));
  const takesValue = new Set(program.commands.flatMap((c) => c.options.filter((o) => o.required || o.optional).flatMap((o) => [o.long, o.short]).filter((f): f is string => !!f)));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (names.has(a)) return [a, ...argv.slice(0, i), ...argv.slice(i + 1)];
    if (!a.startsWith('-')) return argv;
    if (takesValue.has(a)) i++;
  }
  // No command at all: a help request is answered with the overview (`dpsr --url URL --help`).
  return argv.some((a) => a === '-h' || a === '--help') ? ['--help'] : argv;
}

function printJsonError(e: unknown): void {
  process.stdout.write(JSON.stringify({ error: { kind: isDpsrError(e) ? e.kind : 'internal', message: e instanceof Error ? e.message : String(e), hint: isDpsrError(e) ? e.hint : undefined } }, null, 2) + '\n');
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const code = exitCodeFor(e);
    if (process.argv.includes('--json')) printJsonError(e);
    process.stderr.write(`dpsr: ${describeError(e)}\n`);
    if (!isDpsrError(e) && e instanceof Error && process.env.DPSR_DEBUG) process.stderr.write(`${e.stack}\n`);
    process.exit(code);
  },
);
