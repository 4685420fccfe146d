/**
 * `dpsr`: the operator's command line. Every command takes --json; exit codes
 * are 0 done, 1 differences or a failed operation, 2 bad usage or input,
 * 3 refused to protect data.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { BadInputError, CancelledError, RefusedError, describeError, exitCodeFor, isDpsrError } from '../../../src/errors.ts';
import { discoverDrives, openDrive, locateDrive, usageOf } from '../../../src/sata-bridge/index.ts';
import { readLayout, formatLayout } from '../../../src/disk-layout/index.ts';
import {
  clone,
  sync,
  restore,
  verify,
  recover,
  PairStore,
  defaultStateDir,
  effectiveStandbyState,
  formatBytes,
  type CopyReport,
  type VerifyReport,
} from '../../../src/sync/index.ts';
import { confirm, isTerminal, printJson, progressReporter } from './terminal.ts';

const USAGE = `Usage: dpsr <command> [options]

Commands:
  drives                          list drives with identity, size, sector sizes, bridge, mounts
  inspect <drive>                 geometry, identity and partition table of a drive
  clone <source> <target>         first full sector copy; records the pair (source active, target standby)
  sync <source> <target>          make the standby byte-identical again, writing only what differs
        [--partition N]...          only these partitions (plus the partition tables)
        [--mode compare|manifest]   manifest: read only the source, using the standby's hash map
  verify <source> <target>        compare both drives and list every differing range (exit 1 if any)
  recover <target>                roll an interrupted sync back to the previous backup
  restore <standby> <active> --i-mean-restore
                                  copy the backup back over the active drive (journaled)
  status                          recorded pairs, roles, generations, standby state, last syncs
  forget <pair-id>                drop a recorded pair (the drives are not touched)
  status|sync|failover --url URL  through a running dpsrd (dpsr --url URL --help for its options)

Options:
  --json                 machine-readable output on stdout
  --yes                  do not ask before writing (needed when not on a terminal)
  --state-dir DIR        state directory (env DPSR_STATE_DIR; default /var/lib/dpsr as root, else ~/.local/state/dpsr)
  --direct               bypass the page cache (O_DIRECT)
  --sector-size N        logical sector size of image files (512 or 4096)
  --journal-budget SIZE  most space the undo journal may use (e.g. 2G; default half the free space)
  --force                clone over a standby that already holds a consistent backup
  --force-generation     sync over a standby whose data the source does not descend from (split brain)
  --quiet                no progress output

Exit codes: 0 done, 1 differences or failed, 2 bad usage or input, 3 refused to protect data.`;

const OPTIONS = {
  json: { type: 'boolean' },
  yes: { type: 'boolean', short: 'y' },
  'state-dir': { type: 'string' },
  direct: { type: 'boolean' },
  'sector-size': { type: 'string' },
  'journal-budget': { type: 'string' },
  partition: { type: 'string', short: 'p', multiple: true },
  mode: { type: 'string' },
  force: { type: 'boolean' },
  'force-generation': { type: 'boolean' },
  'i-mean-restore': { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
} satisfies ParseArgsConfig['options'];

type Values = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[] : (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

/** Which options each command accepts; anything else is bad usage. */
const ACCEPTS: Record<string, (keyof typeof OPTIONS)[]> = {
  drives: ['json'],
  inspect: ['json', 'sector-size'],
  clone: ['json', 'yes', 'state-dir', 'direct', 'sector-size', 'force', 'quiet'],
  sync: ['json', 'yes', 'state-dir', 'direct', 'sector-size', 'journal-budget', 'partition', 'mode', 'force-generation', 'quiet'],
  verify: ['json', 'direct', 'sector-size', 'partition', 'quiet'],
  recover: ['json', 'yes', 'state-dir', 'direct', 'sector-size', 'quiet'],
  restore: ['json', 'yes', 'state-dir', 'direct', 'sector-size', 'journal-budget', 'i-mean-restore', 'quiet'],
  status: ['json', 'state-dir'],
  forget: ['json', 'yes', 'state-dir'],
};

const ARITY: Record<string, number> = { drives: 0, inspect: 1, clone: 2, sync: 2, verify: 2, recover: 1, restore: 2, status: 0, forget: 1 };

export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?$/i.exec(text.trim());
  if (!m) throw new BadInputError(`${what} "${text}" is not a size`, { hint: 'write it like 512M, 2G or 1073741824' });
  const unit = (m[2] ?? 'b').toLowerCase()[0]!;
  const mult = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[unit] ?? 1;
  return Math.floor(Number(m[1]) * mult);
}

function parseSectorSize(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (v !== '512' && v !== '4096') throw new BadInputError(`--sector-size ${v} is not supported`, { hint: 'use 512 or 4096' });
  return Number(v);
}

function parsePartitionArgs(values: string[] | undefined): number[] {
  return (values ?? []).map((v) => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new BadInputError(`--partition ${v} is not a partition number`, { hint: 'give the number `dpsr inspect` shows, e.g. --partition 2' });
    return Number(v);
  });
}

interface Run {
  readonly command: string;
  readonly args: string[];
  readonly values: Values;
}

function parse(argv: string[]): Run {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new BadInputError((e as Error).message.replace(/\. To specify.*$/s, ''), { hint: 'run `dpsr --help` for the commands and options' });
  }
  const values = parsed.values as Values;
  const [command, ...args] = parsed.positionals;
  if (values.help || command === 'help') return { command: 'help', args: [], values };
  if (!command) throw new BadInputError('no command given', { hint: 'run `dpsr --help` for the commands' });
  if (!(command in ACCEPTS)) throw new BadInputError(`unknown command "${command}"`, { hint: 'run `dpsr --help` for the commands' });
  for (const key of Object.keys(values) as (keyof typeof OPTIONS)[]) {
    if (key !== 'help' && !ACCEPTS[command]!.includes(key)) throw new BadInputError(`--${key} does not go with ${command}`, { hint: `run \`dpsr --help\` for what ${command} takes` });
  }
  const arity = ARITY[command]!;
  if (args.length !== arity) {
    const names = { 0: 'no arguments', 1: 'one drive', 2: 'a source and a target' }[arity];
    throw new BadInputError(`${command} takes ${names}, got ${args.length}${args.length ? `: ${args.join(' ')}` : ''}`, { hint: 'run `dpsr --help`' });
  }
  return { command, args, values };
}

async function askOrRequireYes(values: Values, question: string): Promise<void> {
  if (values.yes) return;
  if (!isTerminal()) throw new BadInputError('this command writes to a drive and needs confirmation', { hint: 'pass --yes when running it from a script' });
  if (!(await confirm(question))) throw new CancelledError('not confirmed: nothing was changed');
}

function describeTarget(path: string): string {
  try {
    const loc = locateDrive(path);
    const size = loc.kind === 'image' ? loc.stats.size : (loc.node?.sizeBytes ?? 0);
    const model = loc.node?.model ? ` ${loc.node.model}` : '';
    const serial = loc.node?.serial ? ` serial ${loc.node.serial}` : '';
    return `${path} (${formatBytes(size)}${model}${serial})`;
  } catch {
    return path;
  }
}

function printCopy(report: CopyReport): void {
  const rate = report.seconds > 0 ? `${formatBytes((report.bytesTotal - report.bytesResumed) / report.seconds)}/s` : '';
  console.log(`${report.kind} ${report.result}: ${report.source} → ${report.target}`);
  console.log(`  mode ${report.mode}, ${formatBytes(report.bytesTotal)} walked, ${formatBytes(report.bytesWritten)} written, ${report.seconds.toFixed(1)} s ${rate}`);
  if (report.bytesResumed) console.log(`  resumed: ${formatBytes(report.bytesResumed)} were already done`);
  console.log(`  pair ${report.pairId}, generation ${report.generation}`);
  for (const n of report.notes) console.log(`  note: ${n}`);
  if (report.unreadable.length) {
    console.log(`  UNREADABLE on the source (the standby kept its old data there):`);
    for (const u of report.unreadable) console.log(`    LBA ${u.firstLba} (+${u.sectors} sectors)${u.partition ? ` in partition ${u.partition}` : ' outside every partition'}`);
  }
}

function printVerify(report: VerifyReport): void {
  if (report.identical) console.log(`identical: ${report.source} and ${report.target} (${formatBytes(report.bytesCompared)} compared in ${report.seconds.toFixed(1)} s)`);
  else {
    console.log(`DIFFERENT: ${report.differenceCount} ranges, ${formatBytes(report.differingBytes)} differ`);
    for (const d of report.differences) console.log(`  offset ${d.start} length ${d.length}`);
    if (report.differences.length < report.differenceCount) console.log(`  … ${report.differenceCount - report.differences.length} more`);
    for (const u of report.unreadable) console.log(`  unreadable on the source: LBA ${u.firstLba} (+${u.sectors})${u.partition ? ` in partition ${u.partition}` : ''}`);
  }
  for (const n of report.notes) console.log(`  note: ${n}`);
}

export async function main(argv: string[]): Promise<number> {
  // With --url the command runs through a daemon instead of on the drives.
  if (argv.some((a) => a === '--url' || a.startsWith('--url='))) return (await import('./client.ts')).runClient(argv);
  const run = parse(argv);
  const { command, args, values } = run;
  if (command === 'help') {
    console.log(USAGE);
    return 0;
  }
  const json = !!values.json;
  const stateDir = values['state-dir'] ?? defaultStateDir();
  const imageSectorSize = parseSectorSize(values['sector-size']);
  const controller = new AbortController();
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write('\nstopping… (the current chunk finishes, then the state of the target is reported)\n');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  const progress = progressReporter({ json, quiet: values.quiet });
  const common = {
    stateDir,
    signal: controller.signal,
    onProgress: progress.update,
    onNote: json ? undefined : (n: string) => process.stderr.write(`note: ${n}\n`),
    direct: values.direct,
    imageSectorSize,
  };
  try {
    switch (command) {
      case 'drives': {
        const drives = discoverDrives();
        if (json) printJson(drives);
        else if (drives.length === 0) console.log('no drives found');
        else {
          for (const d of drives) {
            const id = d.identity;
            const flags = [d.isSystemDisk ? 'SYSTEM DISK (never a target)' : '', d.mountPoints.length ? `mounted at ${d.mountPoints.join(', ')}` : '', d.readOnly ? 'read-only' : ''].filter(Boolean).join(', ');
            console.log(`${d.devicePath}  ${formatBytes(id.sizeBytes)}  ${id.logicalSectorSize}/${id.physicalSectorSize}-byte sectors  ${id.model ?? ''} ${id.serial ? `serial ${id.serial}` : ''}`.replace(/\s+$/, ''));
            console.log(`    identity ${id.key}${id.bridge ? `  bridge ${id.bridge.vendorId}:${id.bridge.productId} ${id.bridge.driver ?? ''}` : ''}${d.backingFile ? `  file ${d.backingFile}` : ''}`);
            if (d.bridgeQuirks) console.log(`    bridge ${d.bridgeQuirks.chip}${d.bridgeQuirks.uasUnreliable && id.bridge?.driver === 'uas' ? ' — UAS UNRELIABLE on this chip: force usb-storage (deploy/dpsr-usb-quirks.conf)' : ''}${d.bridgeQuirks.note ? ` (${d.bridgeQuirks.note})` : ''}`);
            if (d.byId[0]) console.log(`    ${d.byId[0]}`);
            if (flags) console.log(`    ${flags}`);
          }
        }
        return 0;
      }
      case 'inspect': {
        const dev = await openDrive(args[0]!, { imageSectorSize });
        try {
          const layout = await readLayout(dev);
          const usage = usageOf(locateDrive(args[0]!));
          if (json) printJson({ path: args[0], identity: dev.identity, size: dev.size, logicalSectorSize: dev.logicalSectorSize, physicalSectorSize: dev.physicalSectorSize, usage, layout });
          else {
            console.log(`${args[0]}: ${formatBytes(dev.size)} (${dev.size} bytes), ${dev.logicalSectorSize}-byte logical / ${dev.physicalSectorSize}-byte physical sectors`);
            console.log(`identity ${dev.identity.key}${dev.identity.model ? `, ${dev.identity.model}` : ''}${dev.identity.serial ? `, serial ${dev.identity.serial}` : ''}`);
            if (usage.isSystemDisk) console.log("this is the controller's SYSTEM DISK: it can never be a target");
            if (usage.mountPoints.length) console.log(`mounted at ${usage.mountPoints.join(', ')}`);
            console.log(formatLayout(layout));
          }
        } finally {
          await dev.close();
        }
        return 0;
      }
      case 'clone':
      case 'sync':
      case 'restore': {
        const [source, target] = args as [string, string];
        const partitions = parsePartitionArgs(values.partition);
        const mode = values.mode as 'compare' | 'manifest' | undefined;
        if (mode !== undefined && mode !== 'compare' && mode !== 'manifest') throw new BadInputError(`--mode ${mode} is not known`, { hint: 'use --mode compare or --mode manifest' });
        if (command === 'restore' && !values['i-mean-restore']) {
          throw new RefusedError('restore overwrites the ACTIVE drive with the backup and needs --i-mean-restore', { hint: `dpsr restore ${source} ${target} --i-mean-restore` });
        }
        const journalBudget = values['journal-budget'] ? parseSize(values['journal-budget'], '--journal-budget') : undefined;
        // Nothing is asked before the cheap checks pass: a refused command must not ask first.
        locateDrive(source);
        locateDrive(target);
        const verb = command === 'restore' ? 'OVERWRITE THE ACTIVE DRIVE' : 'overwrite';
        await askOrRequireYes(values, `This will ${verb} ${describeTarget(target)} with ${describeTarget(source)}.`);
        const fn = command === 'clone' ? clone : command === 'sync' ? sync : restore;
        const report = await fn({ ...common, source, target, partitions, mode, forceClone: values.force, forceGeneration: values['force-generation'], journalBudget });
        progress.stop();
        if (json) printJson(report);
        else printCopy(report);
        return report.result === 'done' ? 0 : 1;
      }
      case 'verify': {
        const report = await verify({ ...common, source: args[0]!, target: args[1]!, partitions: parsePartitionArgs(values.partition) });
        progress.stop();
        if (json) printJson(report);
        else printVerify(report);
        return report.identical ? 0 : 1;
      }
      case 'recover': {
        await askOrRequireYes(values, `This rolls ${describeTarget(args[0]!)} back to its previous backup.`);
        const report = await recover({ ...common, target: args[0]! });
        progress.stop();
        if (json) printJson(report);
        else console.log(report.message);
        return 0;
      }
      case 'status': {
        const store = new PairStore(stateDir);
        const pairs = store.pairs().map((p) => ({
          id: p.id,
          active: { ...p.drives[p.activeKey]! },
          standby: { ...p.drives[p.standbyKey]! },
          standbyState: effectiveStandbyState(store, p),
          pendingCopy: p.pendingCopy ?? null,
          lastSync: p.lastSync ?? null,
          lastSuccess: p.lastSuccess ?? null,
        }));
        if (json) printJson({ stateDir, pairs, problems: store.problems });
        else {
          if (store.problems.length) console.log(`state problems: ${store.problems.join('; ')}`);
          if (pairs.length === 0) console.log(`no pairs recorded in ${stateDir}: pair two drives with \`dpsr clone <active> <standby>\``);
          for (const p of pairs) {
            console.log(`pair ${p.id}`);
            console.log(`  active   ${p.active.lastPath}  generation ${p.active.generation}  (${p.active.key})`);
            console.log(`  standby  ${p.standby.lastPath}  generation ${p.standby.generation}  ${p.standbyState.toUpperCase()}  (${p.standby.key})`);
            if (p.pendingCopy) console.log(`  interrupted ${p.pendingCopy.kind} since ${p.pendingCopy.startedAt}: run it again, or \`dpsr recover\``);
            if (p.lastSync) console.log(`  last ${p.lastSync.kind}: ${p.lastSync.result} at ${p.lastSync.at}${p.lastSync.message ? ` (${p.lastSync.message})` : ''}`);
          }
        }
        return 0;
      }
      case 'forget': {
        const store = new PairStore(stateDir);
        const pair = store.byId(args[0]!);
        if (!pair) throw new BadInputError(`no pair ${args[0]} is recorded`, { hint: 'run `dpsr status` for the pair ids' });
        await askOrRequireYes(values, `This forgets pair ${pair.id} (roles, generations, journal). The drives are not touched.`);
        store.remove(pair.id);
        store.save();
        if (json) printJson({ forgotten: pair.id });
        else console.log(`forgot pair ${pair.id}`);
        return 0;
      }
    }
    throw new BadInputError(`unknown command "${command}"`);
  } finally {
    progress.stop();
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const code = exitCodeFor(e);
    if (process.argv.includes('--json')) printJson({ error: { kind: isDpsrError(e) ? e.kind : 'internal', message: e instanceof Error ? e.message : String(e), hint: isDpsrError(e) ? e.hint : undefined } });
    process.stderr.write(`dpsr: ${describeError(e)}\n`);
    if (!isDpsrError(e) && e instanceof Error && process.env.DPSR_DEBUG) process.stderr.write(`${e.stack}\n`);
    process.exit(code);
  },
);
