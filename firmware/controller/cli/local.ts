/**
 * The `dpsr` commands that work on the drives directly (no --url): the copy
 * engine of src/sync with a progress bar, confirmation and text or JSON
 * reports.
 */
import { BadInputError, RefusedError } from '../../../src/errors.ts';
import { discoverDrives, openDrive, locateDrive, usageOf, driveKeyOf } from '../../../src/sata-bridge/index.ts';
import { readLayout, formatLayout, formatExactBytes } from '../../../src/disk-layout/index.ts';
import {
  clone,
  sync,
  geometryDrift,
  restore,
  verify,
  recover,
  migrate,
  PairStore,
  defaultStateDir,
  effectiveStandbyState,
  copyRunning,
  pendingCopyAdvice,
  describeStandbys,
  pairOfDrives,
  standbysOf,
  formatBytes,
  verifyHeadline,
  formatSectorRange,
  type CopyReport,
  type VerifyReport,
} from '../../../src/sync/index.ts';
import { confirmOrRequireYes, isTerminal, printJson, progressReporter, type ConfirmedCommand } from './terminal.ts';
import { describeDrive } from './drive-summary.ts';
import type { Invocation, Opts } from './program.ts';

/** Commands that exist only against a daemon. */
const REMOTE_ONLY = new Set(['jobs', 'cancel', 'reprotect', 'failover']);
/** Options that only mean something with --url. */
const REMOTE_OPTIONS: Record<string, string> = { tokenFile: '--token-file', wait: '--no-wait', rollback: '--rollback', hardOff: '--hard-off', window: '--window' };

const ARITY: Record<string, [number, string]> = {
  drives: [0, 'no arguments'],
  inspect: [1, 'one drive'],
  clone: [2, 'a source and a target'],
  sync: [2, 'a source and a target'],
  verify: [2, 'a source and a target'],
  recover: [1, 'one drive (the standby)'],
  restore: [2, 'the standby and the active drive'],
  status: [0, 'no arguments'],
  forget: [1, 'one pair id'],
  migrate: [2, 'a source and a target'],
};

export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?$/i.exec(text.trim());
  if (!m) throw new BadInputError(`${what} "${text}" is not a size`, { hint: 'write it like 512M, 2G or 1073741824' });
  const unit = (m[2] ?? 'b').toLowerCase()[0]!;
  const mult = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[unit] ?? 1;
  const bytes = Math.floor(Number(m[1]) * mult);
  // Past 2^53 bytes (8 PiB) a number no longer holds every byte offset: it would be rounded silently.
  if (!Number.isSafeInteger(bytes)) throw new BadInputError(`${what} "${text}" is too large`, { hint: 'sizes and offsets go up to 8 PiB (9007199254740991 bytes)' });
  return bytes;
}

function parseSectorSize(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (v !== '512' && v !== '4096') throw new BadInputError(`--sector-size ${String(v)} is not supported`, { hint: 'use 512 or 4096' });
  return Number(v);
}

export function parsePartitionArgs(values: string[] | undefined): number[] {
  return (values ?? []).map((v) => {
    if (!/^\d+$/.test(v) || Number(v) < 1 || !Number.isSafeInteger(Number(v))) throw new BadInputError(`--partition ${v} is not a partition number`, { hint: 'give the number `dpsr inspect` shows, e.g. --partition 2' });
    return Number(v);
  });
}

export function parseMode(v: unknown): 'compare' | 'manifest' | 'changed' | undefined {
  if (v === undefined || v === 'compare' || v === 'manifest' || v === 'changed') return v;
  throw new BadInputError(`--mode ${String(v)} is not known`, { hint: 'use --mode compare, manifest or changed' });
}

function printCopy(report: CopyReport): void {
  const rate = report.seconds > 0 ? `${formatBytes(Math.round((report.bytesTotal - report.bytesResumed) / report.seconds))}/s` : '';
  console.log(`${report.kind} ${report.result}: ${report.source} → ${report.target}`);
  // With sectors left unwritten, a rounded figure would hide them: the counts are exact then.
  const unreadableBytes = report.unreadable.reduce((n, u) => n + u.length, 0);
  const sector = report.unreadable[0] ? report.unreadable[0].length / report.unreadable[0].sectors : 512;
  const written = unreadableBytes
    ? `${formatExactBytes(report.bytesWritten)} written (${formatExactBytes(unreadableBytes, sector)} of the source unreadable, not written)`
    : `${formatBytes(report.bytesWritten)} written`;
  console.log(`  mode ${report.mode}, ${formatBytes(report.bytesTotal)} walked, ${written}, ${report.seconds.toFixed(1)} s ${rate}`);
  if (report.bytesResumed) console.log(`  resumed: ${formatBytes(report.bytesResumed)} were already done (compared again, unchanged)`);
  console.log(`  pair ${report.pairId}, generation ${report.generation}`);
  for (const n of report.notes) console.log(`  note: ${n}`);
  if (report.unreadable.length) {
    console.log(`  UNREADABLE on the source (the standby kept its old data there):`);
    for (const u of report.unreadable) console.log(`    ${formatSectorRange({ start: u.start, length: u.length }, u.length / u.sectors)}${unreadableWhere(u)}`);
  }
}

/** Where an unreadable range lies: a partition, a table structure, or neither. */
function unreadableWhere(u: { partition?: number; area?: string }): string {
  return u.partition ? ` in partition ${u.partition}` : u.area ? ` in ${u.area}, outside every partition` : ' outside every partition';
}

function printVerify(report: VerifyReport): void {
  console.log(verifyHeadline(report));
  if (!report.identical) {
    for (const d of report.differences) console.log(`  differs: ${formatSectorRange(d, report.sectorSize)}, byte offset ${d.start}`);
    if (report.differences.length < report.differenceCount) console.log(`  … ${report.differenceCount - report.differences.length} more`);
    for (const u of report.unreadable) console.log(`  unreadable on the source, not compared: ${formatSectorRange({ start: u.start, length: u.length }, report.sectorSize)}${unreadableWhere(u)}`);
  }
  for (const n of report.notes) console.log(`  note: ${n}`);
}

/** Checks what commander cannot: arity by mode, and options that need --url. */
function checkUsage(inv: Invocation): void {
  const { command, args, given } = inv;
  if (REMOTE_ONLY.has(command)) throw new BadInputError(`${command} works through the daemon and needs --url`, { hint: `dpsr ${command} --url http://127.0.0.1:8750 (run \`dpsr ${command} --help\`)` });
  for (const k of given) if (REMOTE_OPTIONS[k]) throw new BadInputError(`${REMOTE_OPTIONS[k]} goes only with --url`, { hint: `run \`dpsr ${command} --help\`` });
  const [arity, names] = ARITY[command]!;
  if (args.length !== arity) {
    throw new BadInputError(`${command} takes ${names}, got ${args.length}${args.length ? `: ${args.join(' ')}` : ''}`, { hint: `run \`dpsr ${command} --help\`` });
  }
}

/** Whether a recorded pair needs an operator: `dpsr status` exits 1 then. */
export function needsAttention(p: { standbyState: string; pendingCopy: unknown; lastSync: { result: string } | null }): string[] {
  const why: string[] = [];
  if (p.standbyState !== 'consistent') why.push(`the standby is ${p.standbyState}`);
  if (p.pendingCopy) why.push('a copy was interrupted');
  if (p.lastSync && p.lastSync.result !== 'done') why.push(`the last copy ${p.lastSync.result}`);
  return why;
}

/**
 * A clone that would add a standby to an active drive that has one already,
 * read from the pair records without touching a drive: the other standbys,
 * described for the question. Undefined for an ordinary clone.
 */
function rotationOf(stateDir: string, source: string, target: string, imageSectorSize: number | undefined): { count: number; described: string } | undefined {
  const pairs = new PairStore(stateDir, { create: false }).pairs();
  const sourceKey = driveKeyOf(locateDrive(source), imageSectorSize);
  const targetKey = driveKeyOf(locateDrive(target), imageSectorSize);
  const standbys = standbysOf(pairs, sourceKey);
  if (!standbys.length || pairOfDrives(pairs, sourceKey, targetKey) || pairs.some((p) => p.standbyKey === sourceKey || p.standbyKey === targetKey || p.activeKey === targetKey)) return undefined;
  return { count: standbys.length, described: describeStandbys(pairs, sourceKey) };
}

/** How old the backup on a pair's standby is: when its last copy completed. */
export function standbyAge(p: { lastSuccess?: string }, now: number): { lastSyncedAt: string | null; ageSeconds: number | null } {
  if (!p.lastSuccess) return { lastSyncedAt: null, ageSeconds: null };
  return { lastSyncedAt: p.lastSuccess, ageSeconds: Math.max(0, Math.round((now - Date.parse(p.lastSuccess)) / 1000)) };
}

/** 45 s, 12 min, 5 h, 3 days: an age for an operator. */
export function formatAge(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 2 * 86400) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} days`;
}

export async function runLocal(inv: Invocation): Promise<number> {
  checkUsage(inv);
  const { command, args, opts } = inv;
  const json = !!opts.json;
  const stateDir = opts.stateDir ?? defaultStateDir();
  const imageSectorSize = parseSectorSize(opts.sectorSize);
  const progress = progressReporter({ json, quiet: opts.quiet });
  const controller = new AbortController();
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    progress.note('stopping after the current chunk… (Ctrl-C again quits at once)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  const common = {
    stateDir,
    signal: controller.signal,
    onProgress: progress.update,
    onNote: json ? undefined : (n: string) => progress.note(`note: ${n}`),
    direct: opts.direct as boolean | undefined,
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
        const partitions = parsePartitionArgs(opts.partition);
        const mode = parseMode(opts.mode);
        if (command === 'restore' && !opts.iMeanRestore) {
          throw new BadInputError('restore overwrites the ACTIVE drive with the backup and needs --i-mean-restore', { hint: `dpsr restore ${source} ${target} --i-mean-restore; nothing was changed` });
        }
        const journalBudget = opts.journalBudget ? parseSize(String(opts.journalBudget), '--journal-budget') : undefined;
        // Nothing is asked before the cheap checks pass: a refused command must not ask first.
        locateDrive(source);
        locateDrive(target);
        if (!opts.yes && isTerminal()) {
          const role = command === 'restore' ? 'ACTIVE DRIVE, WILL BE OVERWRITTEN' : 'TARGET, WILL BE OVERWRITTEN';
          process.stderr.write([...(await describeDrive(target, role, imageSectorSize)), ...(await describeDrive(source, 'source, read only', imageSectorSize)), ''].join('\n'));
        }
        const verb = command === 'restore' ? 'OVERWRITE THE ACTIVE DRIVE' : 'overwrite';
        // Rotation: a clone from an active drive that has a standby makes the target one more standby; the question names the others.
        let addStandby = opts.addStandby === true;
        const others = command === 'clone' ? rotationOf(stateDir, source, target, imageSectorSize) : undefined;
        if (others && !addStandby && !opts.yes && isTerminal()) {
          await confirmOrRequireYes(command as ConfirmedCommand, opts.yes, `${source} already has ${others.count === 1 ? 'a standby' : `${others.count} standbys`}: ${others.described}.\nThis makes ${target} one more standby of ${source} (its own pair, its own generation); the other standbys stay as they are.\nThis will ${verb} ${target} with ${source}.`);
          addStandby = true;
        } else {
          await confirmOrRequireYes(command as ConfirmedCommand, opts.yes, `This will ${verb} ${target} with ${source}.`);
        }
        const fn = command === 'clone' ? clone : command === 'sync' ? sync : restore;
        const report = await fn({ ...common, source, target, partitions, mode, forceClone: opts.force as boolean | undefined, forceGeneration: opts.forceGeneration as boolean | undefined, journalBudget, addStandby });
        progress.stop();
        if (json) printJson(report);
        else printCopy(report);
        return report.result === 'done' ? 0 : 1;
      }
      case 'verify': {
        const report = await verify({ ...common, source: args[0]!, target: args[1]!, partitions: parsePartitionArgs(opts.partition) });
        progress.stop();
        if (json) printJson(report);
        else printVerify(report);
        return report.identical ? 0 : 1;
      }
      case 'recover': {
        if (!opts.yes && isTerminal()) process.stderr.write([...(await describeDrive(args[0]!, 'STANDBY, WILL BE ROLLED BACK', imageSectorSize)), ''].join('\n'));
        await confirmOrRequireYes('recover', opts.yes, `This rolls ${args[0]} back to its previous backup.`);
        const report = await recover({ ...common, target: args[0]! });
        progress.stop();
        if (json) printJson(report);
        else console.log(report.message);
        return 0;
      }
      case 'status': {
        const store = new PairStore(stateDir, { create: false });
        const now = Date.now();
        const pairs = store.pairs().map((p) => ({
          id: p.id,
          active: { ...p.drives[p.activeKey]! },
          standby: { ...p.drives[p.standbyKey]!, ...standbyAge(p, now) },
          /** Rotation: the other standbys of this pair's active drive, by pair id. */
          otherStandbys: standbysOf(store.pairs(), p.activeKey).filter((q) => q.id !== p.id).map((q) => q.id),
          standbyState: effectiveStandbyState(store, p),
          pendingCopy: p.pendingCopy ?? null,
          lastSync: p.lastSync ?? null,
          lastSuccess: p.lastSuccess ?? null,
          /** Rule 8: drives found at their last path with another size or sector size than at pairing. */
          geometryChanged: geometryDrift(store.pairs(), p),
        }));
        const attention = pairs.map((p) => [...needsAttention(p), ...p.geometryChanged]);
        if (json) printJson({ stateDir, pairs, problems: store.problems });
        else {
          if (store.problems.length) console.log(`state problems: ${store.problems.join('; ')}`);
          if (pairs.length === 0) console.log(`no pairs recorded in ${stateDir}: pair two drives with \`dpsr clone <active> <standby>\``);
          pairs.forEach((p, i) => {
            console.log(`pair ${p.id}`);
            console.log(`  active   ${p.active.lastPath}  generation ${p.active.generation}  (${p.active.key})`);
            console.log(`  standby  ${p.standby.lastPath}  generation ${p.standby.generation}  ${p.standbyState.toUpperCase()}  (${p.standby.key})`);
            console.log(`  standby age: ${p.standby.lastSyncedAt ? `${formatAge(p.standby.ageSeconds!)} (last synced ${p.standby.lastSyncedAt})` : 'never synced'}`);
            if (p.otherStandbys.length) console.log(`  rotation: ${p.otherStandbys.length + 1} standbys of this active drive; the others are pair${p.otherStandbys.length > 1 ? 's' : ''} ${p.otherStandbys.join(', ')}`);
            const record = store.byId(p.id)!;
            const pending = pendingCopyAdvice(record, copyRunning(stateDir, record.id));
            if (pending) console.log(`  ${pending}`);
            if (p.lastSync) console.log(`  last ${p.lastSync.kind}: ${p.lastSync.result} at ${p.lastSync.at}${p.lastSync.message ? ` (${p.lastSync.message})` : ''}`);
            if (attention[i]!.length) console.log(`  NEEDS ATTENTION: ${attention[i]!.join('; ')}`);
          });
        }
        return store.problems.length || attention.some((a) => a.length) ? 1 : 0;
      }
      case 'migrate': {
        const [source, target] = args as [string, string];
        if (opts.partition === undefined) throw new BadInputError('migrate needs the partition to copy: --partition N', { hint: `\`dpsr inspect ${source}\` lists its partitions` });
        const [partition] = parsePartitionArgs([String(opts.partition)]);
        const at = opts.at === undefined ? undefined : parseSize(String(opts.at), '--at');
        const journalBudget = opts.journalBudget ? parseSize(String(opts.journalBudget), '--journal-budget') : undefined;
        locateDrive(source);
        locateDrive(target);
        if (!opts.yes && isTerminal()) {
          process.stderr.write([...(await describeDrive(target, 'TARGET, A PARTITION WILL BE ADDED', imageSectorSize)), ...(await describeDrive(source, 'source, read only', imageSectorSize)), ''].join('\n'));
        }
        await confirmOrRequireYes('migrate', opts.yes, `This copies partition ${partition} of ${source} onto ${target}${at === undefined ? '' : ` at byte ${at}`} and adds it to ${target}'s partition table.`);
        const report = await migrate({ ...common, source, target, partition: partition!, at, journalBudget });
        progress.stop();
        if (json) printJson(report);
        else {
          console.log(`migrate done: partition ${report.partition} of ${report.source} → partition ${report.newPartition} of ${report.target}`);
          console.log(`  ${report.scheme.toUpperCase()} entry from byte ${report.targetStart} (${formatBytes(report.targetStart)} in), ${formatBytes(report.length)} long; ${formatBytes(report.bytesWritten)} written in ${report.seconds.toFixed(1)} s`);
          for (const n of report.notes) console.log(`  note: ${n}`);
        }
        return 0;
      }
      case 'forget': {
        const store = new PairStore(stateDir, { create: false });
        const pair = store.byId(args[0]!);
        if (!pair) throw new BadInputError(`no pair ${args[0]} is recorded`, { hint: 'run `dpsr status` for the pair ids' });
        await confirmOrRequireYes('forget', opts.yes, `This forgets pair ${pair.id} (its roles and generations). The drives are not touched; the pair's undo journal, sync map and manifest stay in ${store.pairDir(pair)}.`);
        store.forget(pair.id);
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
