/**
 * The man page dpsr(1) and the bash completion of `dpsr`, generated from the
 * same commander tree that parses the command line, so neither can drift
 * from it. `npm run docs:cli` writes man/dpsr.1 and completions/dpsr.bash;
 * a test fails when the committed files are stale.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command, Option } from 'commander';
import { buildProgram } from './program.ts';

export const MAN_PATH = fileURLToPath(new URL('../../../man/dpsr.1', import.meta.url));
export const COMPLETION_PATH = fileURLToPath(new URL('../../../completions/dpsr.bash', import.meta.url));

const program = () => buildProgram(async () => 0, { code: 0 });
const commandsOf = (p: Command) => p.commands.filter((c) => c.name() !== 'help');

/** Text for roff: backslashes and hyphens escaped, no line starting with a control character. */
function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

function optionItem(o: Option): string {
  return `.TP\n.B ${roff(o.flags)}\n${roff(o.description)}`;
}

/** dpsr(1) in man(7) roff. */
export function manPage(version: string): string {
  const p = program();
  const out: string[] = [
    `.\\" Generated from the dpsr command definitions (firmware/controller/cli/program.ts) by npm run docs:cli. Do not edit.`,
    `.TH DPSR 1 "" "dpsr ${roff(version)}" "dpsr manual"`,
    '.SH NAME',
    'dpsr \\- keep a bootable standby drive byte\\-identical to the system drive',
    '.SH SYNOPSIS',
    '.B dpsr',
    '.I command',
    '.RI [ options ]',
    '.RI [ arguments ]',
    '.br',
    '.B dpsr',
    '.I command',
    '.B \\-\\-url',
    '.I URL',
    '.RI [ options ]',
    '.SH DESCRIPTION',
    roff(p.description()),
    '.PP',
    roff('Drives are named by /dev/disk/by-id/…, a device path or an image file. Only the recorded standby of a pair is ever written; a target that is smaller, has another logical sector size, is the source by another path, is mounted or holds the controller\'s own system is refused before anything is opened for writing. Writing commands ask for confirmation on a terminal and need --yes elsewhere. A progress bar shows on a terminal; Ctrl-C stops a local copy within a second and says what state the standby is in.'),
    '.PP',
    roff('With --url a command runs through a running dpsrd instead of on the drives: the daemon knows its bays, so no drives are named. A started job is followed on the daemon\'s event stream with the same progress bar; Ctrl-C then asks whether to cancel the job on the daemon, detach from it or watch on.'),
    '.SH COMMANDS',
  ];
  for (const c of commandsOf(p)) {
    const usage = c.usage().split('\n').map((l) => l.trim().replace(/^dpsr \w+ /, ''));
    out.push(`.SS "${roff(`dpsr ${c.name()} ${usage[0]}`)}"`);
    for (const more of usage.slice(1)) out.push(`.B ${roff(`dpsr ${c.name()} ${more}`)}`, '.br');
    out.push(roff(c.description()));
    for (const o of c.options) out.push(optionItem(o));
  }
  out.push(
    '.SH EXIT STATUS',
    '.TP\n.B 0\ndone',
    '.TP\n.B 1\n' + roff('differences (verify), a failed operation, or for status: a pair needs attention (the standby is not consistent, a copy was interrupted or failed, a drive failed, the state files have problems)'),
    '.TP\n.B 2\n' + roff('bad usage or input (the usage of the command is printed), also a confirmation not given: --yes off a terminal, --i-mean-restore'),
    '.TP\n.B 3\nrefused to protect data',
    '.SH ENVIRONMENT',
    '.TP\n.B DPSR_STATE_DIR\n' + roff('the state directory (default /var/lib/dpsr as root, else ~/.local/state/dpsr)'),
    '.TP\n.B DPSR_TOKEN\n' + roff('with --url: the API token, when no --token-file is given'),
    '.TP\n.B DPSR_DEBUG\n' + roff('print the stack of unexpected errors'),
    '.TP\n.B DPSR_FROM_SOURCE\n' + roff('1: in a source checkout, run the TypeScript sources even when a current build exists'),
    '.SH FILES',
    '.TP\n.I /var/lib/dpsr/pairs.json\n' + roff('the recorded pairs (two checksummed copies); per pair the undo journal, the sync map and the standby\'s manifest'),
    '.TP\n.I /var/lib/dpsr/api\\-token\n' + roff('the daemon\'s API token, read by --url commands'),
    '.SH EXAMPLES',
    '.nf',
    roff('dpsr drives'),
    roff('dpsr clone /dev/disk/by-id/ata-ACTIVE /dev/disk/by-id/ata-STANDBY'),
    roff('dpsr sync /dev/dpsr/bay-a /dev/dpsr/bay-b --partition 3'),
    roff('dpsr status || echo "the standby needs attention"'),
    roff('dpsr sync --url http://127.0.0.1:8750'),
    '.fi',
    '.SH SEE ALSO',
    '.BR dpsrd (8)',
    '',
  );
  return out.join('\n');
}

/** A bash completion script for `dpsr` (commands, each command's options, values of some options, drives). */
export function bashCompletion(): string {
  const p = program();
  const cmds = commandsOf(p);
  const cases = cmds.map((c) => `    ${c.name()}) opts="${c.options.flatMap((o) => [o.short, o.long].filter(Boolean)).concat('--help').join(' ')}" ;;`).join('\n');
  const drives = cmds.filter((c) => c.registeredArguments.some((a) => /source|target|drive|standby|active/.test(a.name()))).map((c) => c.name());
  return `# bash completion for dpsr. Generated from its command definitions
# (firmware/controller/cli/program.ts) by npm run docs:cli. Do not edit.
_dpsr() {
  local cur prev cmd opts
  cur=\${COMP_WORDS[COMP_CWORD]}
  prev=\${COMP_WORDS[COMP_CWORD-1]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${cmds.map((c) => c.name()).join(' ')} help --help --version" -- "$cur"))
    return
  fi
  cmd=\${COMP_WORDS[1]}
  case "$prev" in
    --state-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    --token-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --mode) COMPREPLY=($(compgen -W "compare manifest" -- "$cur")); return ;;
    --sector-size) COMPREPLY=($(compgen -W "512 4096" -- "$cur")); return ;;
    --url) COMPREPLY=($(compgen -W "http://127.0.0.1:8750" -- "$cur")); return ;;
    --journal-budget|--partition|-p) return ;;
  esac
  case "$cmd" in
${cases}
    help) COMPREPLY=($(compgen -W "${cmds.map((c) => c.name()).join(' ')}" -- "$cur")); return ;;
    *) return ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    return
  fi
  case "$cmd" in
    ${drives.join('|')})
      # Drives: stable names first, then any path (device nodes, image files).
      if [ -z "$cur" ] && [ -d /dev/disk/by-id ]; then COMPREPLY=(/dev/disk/by-id/*); else COMPREPLY=($(compgen -f -- "$cur")); fi ;;
  esac
}
complete -o filenames -o bashdefault -F _dpsr dpsr
`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { packageVersion } = await import('./version.ts');
  for (const [path, text] of [[MAN_PATH, manPage(packageVersion())], [COMPLETION_PATH, bashCompletion()]] as const) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    console.log(`wrote ${path}`);
  }
}
