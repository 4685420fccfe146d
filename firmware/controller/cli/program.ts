/**
 * The commands, arguments and options of `dpsr` as one commander tree: the
 * parser, `--help` of every command, the man page and the shell completion
 * all come from here.
 */
import { Command, Option } from 'commander';
import { packageVersion } from './version.ts';

/** Options as commander hands them over (camelCase keys). */
export type Opts = Record<string, unknown> & {
  json?: boolean;
  yes?: boolean;
  quiet?: boolean;
  stateDir?: string;
  url?: string;
  tokenFile?: string;
  partition?: string[];
  mode?: string;
};

export interface Invocation {
  readonly command: string;
  readonly args: string[];
  readonly opts: Opts;
  /** Options the operator typed (not defaults), by commander key. */
  readonly given: string[];
  /** The command's usage, for errors. */
  readonly usage: string;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

const EXIT_CODES = 'Exit codes: 0 done, 1 differences or failed (status: a pair needs attention),\n2 bad usage or input (also a confirmation not given: --yes off a terminal,\n--i-mean-restore), 3 refused to protect data.';

/** Options shared by several commands, defined once. */
const opt = {
  json: () => new Option('--json', 'machine-readable output on stdout'),
  yes: () => new Option('-y, --yes', 'do not ask before writing (needed when not on a terminal)'),
  stateDir: () => new Option('--state-dir <dir>', 'state directory (env DPSR_STATE_DIR; default /var/lib/dpsr as root, else ~/.local/state/dpsr)'),
  direct: () => new Option('--direct', 'bypass the page cache (O_DIRECT)'),
  sectorSize: () => new Option('--sector-size <n>', 'logical sector size of image files (512 or 4096)'),
  journalBudget: () => new Option('--journal-budget <size>', 'most space the undo journal may use (e.g. 2G; default half the free space)'),
  partition: () => new Option('-p, --partition <n>', 'only this partition (repeatable; the partition tables always)').argParser(collect),
  quiet: () => new Option('-q, --quiet', 'no progress output'),
  pair: () => new Option('--pair <id>', 'with --url: the drive pair to act on (`dpsr status --url URL` lists them; needed when the daemon has several)'),
  url: () => new Option('--url <url>', 'run through the dpsrd at URL (e.g. http://127.0.0.1:8750) instead of on the drives'),
  tokenFile: () => new Option('--token-file <file>', 'with --url: the API token (default: env DPSR_TOKEN, else <state-dir>/api-token)'),
  noWait: () => new Option('--no-wait', 'with --url: print the job id and return instead of following the job'),
  window: () => new Option('--window', 'with --url: run the job in a sync window (the host is shut down, both drives go to the controller, the host boots again afterwards; default: the daemon\'s sync.window)'),
  noWindow: () => new Option('--no-window', 'with --url: run the job without a sync window, whatever sync.window says'),
};

/** Builds the command tree; `run` receives every parsed invocation. */
export function buildProgram(run: (inv: Invocation) => Promise<number>, result: { code: number }): Command {
  const program = new Command('dpsr')
    .description('Keep a bootable standby drive byte-identical to the system drive; verify, recover, restore and fail over.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show the usage of dpsr or of a command')
    .addHelpCommand('help [command]', 'show the usage of a command')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, 'dpsr: ')) })
    .addHelpText('after', `\nDrives are named by /dev/disk/by-id/…, a device path or an image file.\n${EXIT_CODES}\nRun \`dpsr <command> --help\` for a command's options; \`man dpsr\` for the whole manual.`);

  const add = (name: string, description: string, args: string[], options: Option[], help?: string, usage?: string) => {
    const cmd = program.command(name).description(description);
    if (usage) cmd.usage(usage);
    for (const a of args) cmd.argument(a);
    // A flag and its negation (--window --no-window) set one value: given both, which was meant cannot be told.
    const flagOf = new Map<string, string>();
    for (const o of options) {
      cmd.addOption(o);
      cmd.on(`option:${o.name()}`, () => {
        const other = flagOf.get(o.attributeName());
        if (other !== undefined && other !== o.long) cmd.error(`error: options '${other}' and '${o.long}' contradict each other; give one`, { exitCode: 2, code: 'dpsr.contradictingOptions' });
        flagOf.set(o.attributeName(), o.long!);
      });
      // A value given twice: which one was meant cannot be told (a repeatable option collects its values instead).
      if ((o.required || o.optional) && o.parseArg !== collect) {
        let seen = false;
        cmd.on(`option:${o.name()}`, () => {
          if (seen) cmd.error(`error: option '${o.long}' is given twice; which value was meant cannot be told`, { exitCode: 2, code: 'dpsr.repeatedOption' });
          seen = true;
        });
      }
    }
    if (help) cmd.addHelpText('after', `\n${help}`);
    cmd.addHelpText('after', `\n${EXIT_CODES}`);
    cmd.action(async (...params: unknown[]) => {
      const self = params[params.length - 1] as Command;
      const positional = (params.slice(0, args.length) as (string | undefined)[]).filter((v): v is string => v !== undefined);
      const opts = self.opts() as Opts;
      const given = Object.keys(opts).filter((k) => self.getOptionValueSource(k) === 'cli');
      result.code = await run({ command: name, args: positional, opts, given, usage: self.helpInformation() });
    });
    return cmd;
  };

  add('drives', 'list drives with identity, size, sector sizes, bridge, mounts', [], [opt.json()]);
  add('inspect', 'geometry, identity and partition table of a drive', ['<drive>'], [opt.json(), opt.sectorSize()]);
  add('clone', 'first full sector copy; records the pair (source active, target standby)', ['[source]', '[target]'],
    [opt.json(), opt.yes(), opt.stateDir(), opt.direct(), opt.sectorSize(), new Option('--force', 'copy everything again, unjournaled, over a standby that holds a consistent backup (without it such a clone runs as a sync)'), new Option('--add-standby', 'the source has a standby already: make the target one more standby (rotation) without asking'), opt.quiet(), opt.url(), opt.tokenFile(), opt.pair(), opt.window(), opt.noWindow(), opt.noWait()],
    'Locally: dpsr clone <source> <target>. With --url: no arguments (the daemon knows its bays).',
    '[options] <source> <target>\n       dpsr clone --url URL [options]');
  add('sync', 'make the standby byte-identical again, writing only what differs', ['[source]', '[target]'],
    [opt.json(), opt.yes(), opt.stateDir(), opt.direct(), opt.sectorSize(), opt.journalBudget(), opt.partition(),
      new Option('--mode <mode>', 'compare (read both drives), manifest (read only the source, using the standby\'s hash map) or changed (only the blocks the host wrote since the last sync: a daemon in inline mode; elsewhere manifest, saying why)'),
      new Option('--force-generation', 'sync over a standby whose data the source does not descend from (split brain)'), opt.quiet(), opt.url(), opt.tokenFile(), opt.pair(), opt.window(), opt.noWindow(), opt.noWait()],
    'Locally: dpsr sync <source> <target>. With --url: no arguments.',
    '[options] <source> <target>\n       dpsr sync --url URL [options]');
  add('verify', 'compare both drives and list every differing range (exit 1 if any)', ['[source]', '[target]'],
    [opt.json(), opt.direct(), opt.sectorSize(), opt.partition(), opt.quiet(), opt.url(), opt.tokenFile(), opt.pair(), opt.stateDir(), opt.window(), opt.noWindow(), opt.noWait()],
    'Locally: dpsr verify <source> <target>. With --url: no arguments.',
    '[options] <source> <target>\n       dpsr verify --url URL [options]');
  add('recover', 'roll an interrupted sync back to the previous backup', ['[target]'],
    [opt.json(), opt.yes(), opt.stateDir(), opt.direct(), opt.sectorSize(), opt.quiet(), opt.url(), opt.tokenFile(), opt.pair(), opt.noWait()],
    'Locally: dpsr recover <target>. With --url: no arguments.',
    '[options] <target>\n       dpsr recover --url URL [options]');
  add('restore', 'copy the backup back over the active drive, or one partition of it (journaled)', ['[standby]', '[active]'],
    [opt.json(), opt.yes(), opt.stateDir(), opt.direct(), opt.sectorSize(), opt.journalBudget(), opt.partition(), new Option('--i-mean-restore', 'required: restore overwrites the ACTIVE drive'), opt.quiet(), opt.url(), opt.tokenFile(), opt.pair(), opt.window(), opt.noWindow(), opt.noWait()],
    'Locally: dpsr restore <standby> <active> --i-mean-restore [-p N ...]. With --url: no arguments, and at most one --partition.',
    '[options] <standby> <active> --i-mean-restore\n       dpsr restore --url URL [options]');
  add('migrate', 'copy one partition to another drive, at a chosen place, and enter it in that drive\'s table (journaled)', ['<source>', '<target>'],
    [new Option('-p, --partition <n>', 'the partition of the source to copy (required)'), new Option('--at <offset>', 'where it starts on the target, a multiple of 1 MiB (e.g. 1M, 64M); default: the first free aligned gap that fits'),
      opt.json(), opt.yes(), opt.stateDir(), opt.direct(), opt.sectorSize(), opt.journalBudget(), opt.quiet()],
    'The new entry keeps the type, attributes and name and gets a new unique GUID\n(GPT). Refused, with nothing written, when the partition does not fit or would\noverlap. `dpsr recover <target>` rolls an interrupted migration back.',
    '[options] <source> --partition N <target> [--at OFFSET]');
  add('status', 'recorded pairs, roles, generations, standby state, last syncs (exit 1 when a pair needs attention)', [],
    [opt.json(), opt.stateDir(), opt.url(), opt.tokenFile(), opt.pair()],
    'Exits 1 when a pair needs attention: the standby is not consistent, a copy was interrupted or failed, a drive failed or the state files have problems.');
  add('forget', 'drop a recorded pair (the drives are not touched)', ['<pair-id>'], [opt.json(), opt.yes(), opt.stateDir()]);
  add('jobs', 'the daemon\'s job history, newest first (needs --url)', ['[job-id]'], [opt.json(), opt.url(), opt.tokenFile(), opt.stateDir()]);
  add('cancel', 'cancel the daemon\'s running job (needs --url)', ['[job-id]'],
    [opt.json(), new Option('--rollback', 'roll the standby back to the previous backup after stopping'), new Option('--no-rollback', 'leave the standby to be resumed'), opt.url(), opt.tokenFile(), opt.stateDir()]);
  add('reprotect', 'make the drive in the standby bay a backup again (needs --url)', [],
    [opt.json(), opt.yes(), opt.quiet(), opt.url(), opt.tokenFile(), opt.pair(), opt.stateDir(), opt.window(), opt.noWindow(), opt.noWait()]);
  add('failover', 'boot the standby: the host is shut down and powered on again (needs --url)', [],
    [opt.json(), opt.yes(), new Option('--hard-off', 'force the host off when it ignores the shutdown request'), opt.quiet(), opt.url(), opt.tokenFile(), opt.pair(), opt.stateDir(), opt.noWait()]);
  return program;
}

