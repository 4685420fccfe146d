/**
 * The copy plan: one pure decision per copy. From what is recorded about the
 * drive pairs, what both drives are now (identity, geometry), the source's
 * layout, the request and the copy left pending, it returns either a refusal
 * (its error class, reason and hint) or the whole plan of the copy: the byte
 * ranges, the partition-table fix-ups, the tail cleanup, whether it is
 * journaled and whether it resumes the pending copy. The operations carry a
 * plan out and decide nothing themselves, so every refusal comes before
 * anything is opened for writing (docs/architecture.md, rule 7).
 *
 * A copy records its plan and the plan's digest before its first write; only
 * a request whose plan has the same digest resumes it. Anything else is
 * refused with the way out: the same command again, or `dpsr recover`.
 */
import { createHash } from 'node:crypto';
import { formatExactBytes, planGptRelocation, regionsToCopy, type DiskLayout, type GptRelocationPlan } from '../disk-layout/index.ts';
import { descendsFrom, knownDrive, pairHolding, pairIdFor, pairOfDrives, standbysOf, type PairRecord, type PendingCopy } from './pair-state.ts';
import { alignRangesOutward, formatBytes, intersectRanges, normalizeRanges, type ByteRange } from './ranges.ts';
import { journalRecordBytes } from './undo-journal.ts';

export type CopyKind = 'clone' | 'sync' | 'restore';
/** compare: read both drives; manifest: read the source, the standby where hashes differ; changed: only the changed blocks. */
export type SyncMode = 'compare' | 'manifest' | 'changed';

/**
 * What changed on the active drive since the standby's last completed sync,
 * from changed-block tracking (src/snapshot's dirty-bitmap epochs): byte
 * ranges, or why there is no set to trust.
 */
export type ChangedBlocks = { readonly ranges: readonly ByteRange[] } | { readonly untrusted: string };

/** A drive as it shows up now. */
export interface DriveFacts {
  readonly key: string;
  /** As the operator named it, for messages and hints. */
  readonly path: string;
  readonly sizeBytes: number;
  readonly logicalSectorSize: number;
  /** An image file: its geometry comes from its length and the --sector-size given, not from a drive or bridge. */
  readonly image?: boolean;
}

export interface PlanRequest {
  readonly kind: CopyKind;
  /** Validated partition numbers, sorted; empty for the whole drive. */
  readonly partitions: readonly number[];
  readonly mode: SyncMode;
  /** Changed mode: the changed blocks; absent means there is no tracking (the controller is not in inline mode). */
  readonly changed?: ChangedBlocks;
  readonly forceGeneration?: boolean;
  readonly forceClone?: boolean;
  /**
   * A clone onto a new drive from an active drive that already has a standby
   * (rotation): the operator confirmed that the target becomes one more
   * standby, each its own pair. Without it such a clone is refused, naming
   * the standbys the source has.
   */
  readonly addStandby?: boolean;
}

/** An end-of-disk signature found on the target (an old backup GPT, a RAID superblock…). */
export interface TailSignature {
  /** Byte offset and length on the target. */
  readonly start: number;
  readonly length: number;
  readonly what: string;
}

export interface PlanInput {
  readonly request: PlanRequest;
  readonly source: DriveFacts;
  readonly target: DriveFacts;
  /** The source's partition layout; undefined when it could not be read. */
  readonly sourceLayout?: DiskLayout;
  /** Every recorded pair. */
  readonly pairs: readonly PairRecord[];
  /** Valid records in the pair's undo journal. */
  readonly journalRecords?: number;
  /**
   * The undo journal's room: its budget in bytes (given, or the default share
   * of the state directory's free space) and the bytes its valid records hold
   * now (what a resume keeps). Absent: not checked.
   */
  readonly journal?: { readonly budgetBytes: number; readonly heldBytes: number; readonly budgetGiven: boolean };
  /** Another process holds the pair's lock: its copy is running now. */
  readonly copyRunning?: boolean;
  /** Signatures found in the target's tail, past the area the copy writes. */
  readonly targetTail?: readonly TailSignature[];
  /**
   * Why the standby may no longer hold its last sync (written since by
   * something else: its write stamp differs from the one its manifest was
   * sealed with, standbyWrittenSinceSeal), or undefined. Changed-block mode
   * copies only what the active drive changed, so it would leave such writes
   * in place: the sync is a full one instead.
   */
  readonly standbyWritten?: string;
}

export interface Refusal {
  /** The error class it is raised as: refused (exit 3), bad-input (exit 2), busy. */
  readonly error: 'refused' | 'bad-input' | 'busy';
  readonly reason: string;
  readonly hint: string;
}

/** A drive as the plan saw it: identity, geometry and the generation its data has. */
export interface PlannedDrive {
  readonly key: string;
  readonly sizeBytes: number;
  readonly logicalSectorSize: number;
  readonly generation: number;
}

export interface CopyPlan {
  readonly version: 1;
  /** What runs: a clone onto the consistent standby of its own pair runs as a (journaled) sync. */
  readonly kind: CopyKind;
  /** `clone` for a clone, else the requested sync mode. */
  readonly mode: 'clone' | SyncMode;
  readonly pairId: string;
  readonly source: PlannedDrive;
  readonly target: PlannedDrive;
  /** Partitions of a partition-selective sync; empty for the whole drive. */
  readonly partitions: readonly number[];
  /** Byte ranges of the source copied to the same offsets of the target, sorted and merged. */
  readonly ranges: readonly ByteRange[];
  /** Old data goes to the undo journal before each overwrite (every copy but the first clone). */
  readonly journaled: boolean;
  /** The target is the pair's standby (false for a restore, which writes the active drive). */
  readonly writesStandby: boolean;
  /** Partition-table fix-ups after the ranges are copied. */
  readonly tableFixups: readonly GptRelocationPlan[];
  /** End-of-disk signatures of the target's previous life to zero after the copy. Not part of the digest: a rerun after a crash finds fewer. */
  readonly tailCleanup: readonly TailSignature[];
  /** sha256 of everything above but the tail cleanup. */
  readonly digest: string;
}

export type CopyDecision =
  | { readonly verdict: 'refuse'; readonly refusal: Refusal }
  | {
      readonly verdict: 'copy';
      readonly plan: CopyPlan;
      /** fresh: nothing pending; resume: the pending copy has this plan; restart: an interrupted clone is started over. */
      readonly start: 'fresh' | 'resume' | 'restart';
      /** The pair is recorded by this copy (a first clone). */
      readonly newPair: boolean;
      readonly notes: readonly string[];
    };

const refuse = (reason: string, hint: string, error: Refusal['error'] = 'refused'): CopyDecision => ({ verdict: 'refuse', refusal: { error, reason, hint } });

const exact = formatExactBytes;

/** "/dev/b (pair 1a2b…, generation 5, last synced 2026-…)" for each standby of an active drive, for refusals and prompts. */
export function describeStandbys(pairs: readonly PairRecord[], activeKey: string): string {
  return standbysOf(pairs, activeKey)
    .map((p) => `${p.drives[p.standbyKey]?.lastPath ?? p.standbyKey} (pair ${p.id}, generation ${p.drives[p.standbyKey]?.generation ?? '?'}, ${p.lastSuccess ? `last synced ${p.lastSuccess}` : 'never synced'})`)
    .join(', ');
}

/** The command that runs a plan, for "run the same command again". */
export function commandFor(plan: Pick<CopyPlan, 'kind' | 'mode' | 'partitions'>, source: string, target: string): string {
  if (plan.kind === 'restore') return `dpsr restore ${source} ${target} --i-mean-restore`;
  const parts = plan.partitions.map((n) => ` --partition ${n}`).join('');
  return `dpsr ${plan.kind} ${source} ${target}${parts}${plan.mode === 'manifest' || plan.mode === 'changed' ? ` --mode ${plan.mode}` : ''}`;
}

/** "sync of partition 2 in compare mode", "whole-drive clone". */
export function describePlan(plan: Pick<CopyPlan, 'kind' | 'mode' | 'partitions'>): string {
  const what = plan.partitions.length ? `${plan.kind} of partition${plan.partitions.length > 1 ? 's' : ''} ${plan.partitions.join(', ')}` : `whole-drive ${plan.kind}`;
  return plan.kind === 'clone' ? what : `${what} in ${plan.mode} mode`;
}

/** What makes two plans different copies, in words. */
function planDifferences(was: CopyPlan, now: CopyPlan): string[] {
  const d: string[] = [];
  if (was.kind !== now.kind) d.push(`it is a ${was.kind}, this is a ${now.kind}`);
  if (JSON.stringify(was.partitions) !== JSON.stringify(now.partitions) || JSON.stringify(was.ranges) !== JSON.stringify(now.ranges)) {
    d.push(`it copies ${was.partitions.length ? `partition${was.partitions.length > 1 ? 's' : ''} ${was.partitions.join(', ')}` : 'the whole drive'}, this request ${now.partitions.length ? `partition${now.partitions.length > 1 ? 's' : ''} ${now.partitions.join(', ')}` : 'the whole drive'}`);
  }
  if (was.mode !== now.mode) d.push(`it runs in ${was.mode} mode, this request in ${now.mode} mode`);
  for (const role of ['source', 'target'] as const) {
    const a = was[role];
    const b = now[role];
    if (a.key !== b.key) d.push(`its ${role} was another drive`);
    else if (a.sizeBytes !== b.sizeBytes || a.logicalSectorSize !== b.logicalSectorSize) d.push(`its ${role} had ${exact(a.sizeBytes)} in ${a.logicalSectorSize}-byte sectors, now ${exact(b.sizeBytes)} in ${b.logicalSectorSize}-byte sectors`);
    else if (a.generation !== b.generation) d.push(`its ${role} held generation ${a.generation}, now ${b.generation}`);
  }
  if (JSON.stringify(was.tableFixups) !== JSON.stringify(now.tableFixups)) d.push('its partition-table fix-ups differ');
  return d.length ? d : ['its recorded plan differs'];
}

export function digestOf(plan: Omit<CopyPlan, 'digest' | 'tailCleanup'>): string {
  const { version, kind, mode, pairId, source, target, partitions, ranges, journaled, writesStandby, tableFixups } = plan;
  return createHash('sha256')
    .update(JSON.stringify({ version, kind, mode, pairId, source, target, partitions, ranges, journaled, writesStandby, tableFixups }))
    .digest('hex');
}

/** The sectors the source's partition table describes, when it says more than the drive has. */
function describedBeyond(layout: DiskLayout): number | undefined {
  const sector = layout.sectorSize;
  const total = Math.floor(layout.diskSizeBytes / sector);
  let last = -1;
  if (layout.scheme === 'gpt' && layout.gpt?.usedCopy) {
    const g = layout.gpt;
    last = Math.max(last, g.lastUsableLba);
    if (g.usedCopy === 'primary') last = Math.max(last, g.alternateLba);
  }
  if (layout.scheme !== 'none') for (const p of layout.partitions) last = Math.max(last, p.lastLba);
  return last >= total ? last + 1 : undefined;
}

/** What the refused operation is, for the refusal's words: what it would do now, what to run again. */
export type GeometryAction = 'copy' | 'verify' | 'recovery' | 'migration';

const WOULD: Record<GeometryAction, string> = {
  copy: 'a copy now would leave data out or describe another disk',
  verify: "a verify now would compare only part of the drive, or another disk, against the pair's records",
  recovery: "a recovery now would put the undo journal's blocks back on a disk of another geometry",
  migration: 'a migration now would write a partition table for another disk',
};

/**
 * Rule 8 for callers that do not copy (verify, recover, migrate): the refusal
 * for a drive of a recorded pair whose size or logical sector size differs
 * from what was recorded at pairing, or undefined. `action` words it.
 */
export function geometryChange(pairs: readonly PairRecord[], facts: DriveFacts, action: GeometryAction = 'copy'): Refusal | undefined {
  const d = geometryDecision(pairs, facts, action);
  return d?.verdict === 'refuse' ? d.refusal : undefined;
}

function geometryDecision(pairs: readonly PairRecord[], facts: DriveFacts, action: GeometryAction = 'copy'): CopyDecision | undefined {
  const pair = pairHolding(pairs, facts.key);
  const rec = pair?.drives[facts.key];
  if (!pair || !rec) return undefined;
  return geometryRefusal(facts.key === pair.activeKey ? 'active' : 'standby', facts, rec, pair.id, action);
}

function geometryRefusal(role: 'active' | 'standby', facts: DriveFacts, recorded: { sizeBytes: number; logicalSectorSize: number }, pairId: string, action: GeometryAction = 'copy'): CopyDecision | undefined {
  const sizeChanged = facts.sizeBytes !== recorded.sizeBytes;
  const sectorChanged = facts.logicalSectorSize !== recorded.logicalSectorSize;
  if (!sizeChanged && !sectorChanged) return undefined;
  // The causes and the way back differ for an image file (its length, the --sector-size given) and a drive (HPA, bridge).
  let change: string;
  let causes: string[];
  let back: string;
  if (sectorChanged) {
    change = `${facts.logicalSectorSize}-byte logical sectors instead of ${recorded.logicalSectorSize}-byte ones`;
    causes = facts.image ? [`--sector-size ${facts.logicalSectorSize} given for an image paired with ${recorded.logicalSectorSize}-byte sectors`] : ['a USB bridge that translates sector sizes (another bridge or enclosure than at pairing)'];
    back = facts.image ? `give --sector-size ${recorded.logicalSectorSize} (the size it was paired with)` : 'connect it through the bridge or enclosure it was paired through';
  } else {
    const less = facts.sizeBytes < recorded.sizeBytes;
    change = `${exact(Math.abs(recorded.sizeBytes - facts.sizeBytes), facts.logicalSectorSize)} ${less ? 'less' : 'more'}`;
    if (facts.image) {
      causes = [less ? 'the image file was truncated' : 'the image file was resized'];
      back = `give the image its paired length of ${exact(recorded.sizeBytes)} again if the change was a mistake`;
    } else {
      causes = less ? ['a host protected area (HPA) or device configuration overlay (DCO) set on the drive', 'a USB bridge that caps the capacity'] : ['a host protected area that was removed', 'another bridge showing more of the drive'];
      back = `make the drive show the geometry it was paired with (${less ? 'remove the HPA, e.g. `hdparm -N`; ' : ''}connect it through the bridge it was paired through)`;
    }
  }
  return refuse(
    `the ${role} drive ${facts.path} now reports ${exact(facts.sizeBytes)} in ${facts.logicalSectorSize}-byte sectors, but had ${exact(recorded.sizeBytes)} in ${recorded.logicalSectorSize}-byte sectors when the pair was made: ${change} (likely causes: ${causes.join('; ')}); ${WOULD[action]}`,
    `${back} and run the ${action} again; if the change is meant, \`dpsr forget ${pairId}\` and pair the drives anew with \`dpsr clone\`. Nothing was ${action === 'verify' ? 'compared' : 'written'}`,
  );
}

/**
 * Decides one copy. Pure: no I/O, no clock; the same input gives the same
 * decision. The checks run in the order an operator would want to hear of
 * them: what is running, the drives' sector sizes, which pair they belong to,
 * whether either drive changed since pairing, the source's own table, the
 * target's size, the table fix-ups, the pending copy, the generations.
 */
export function planCopy(input: PlanInput): CopyDecision {
  const { request: req, source, target } = input;
  const notes: string[] = [];
  if (req.kind === 'clone' && req.partitions.length > 0) {
    return refuse('a clone copies the whole drive; --partition goes with sync', 'run `dpsr clone` first, then `dpsr sync --partition N`', 'bad-input');
  }
  // The pair of both drives first: an active drive with several standbys is in several pairs.
  let pair = pairOfDrives(input.pairs, source.key, target.key) ?? pairHolding(input.pairs, target.key);
  const sourcePair = pair && (pair.activeKey === source.key || pair.standbyKey === source.key) ? pair : pairHolding(input.pairs, source.key);
  if (input.copyRunning && pair) {
    const running = pair.pendingCopy ? `a ${pair.pendingCopy.plan ? describePlan(pair.pendingCopy.plan) : pair.pendingCopy.kind}, started ${pair.pendingCopy.startedAt}` : 'a copy';
    return refuse(`a copy onto ${target.path} is running right now (${running})`, 'wait for it to finish, or cancel it (Ctrl-C, or cancel the job in dpsrd)', 'busy');
  }
  if (source.logicalSectorSize !== target.logicalSectorSize) {
    return refuse(
      `the target ${target.path} has ${target.logicalSectorSize}-byte sectors, the source ${source.path} ${source.logicalSectorSize}-byte sectors`,
      'a sector copy between different logical sector sizes gives an unreadable partition table; use a standby with the same sector size',
    );
  }

  // Rules 1 and 3: positively the standby of this pair, in the right direction.
  let kind = req.kind;
  if (kind === 'clone') {
    const sourceIsStandby = input.pairs.some((p) => p.standbyKey === source.key);
    const sourceHalfWritten = input.pairs.find((p) => p.pendingCopy?.to === source.key);
    if (sourcePair && !pair && sourceHalfWritten) {
      return refuse(`the source ${source.path} is half-written by an interrupted ${sourceHalfWritten.pendingCopy!.kind} (pair ${sourceHalfWritten.id})`, `finish it by running it again, or \`dpsr recover ${source.path}\`, then clone`);
    }
    if (sourcePair && !pair && !sourceIsStandby) {
      // Rotation: the source is the active drive of its pairs; the target becomes one more standby, after a confirmation.
      if (!req.addStandby) {
        const count = standbysOf(input.pairs, source.key).length;
        return refuse(
          `the source ${source.path} already has ${count === 1 ? 'a standby' : `${count} standbys`}: ${describeStandbys(input.pairs, source.key)}; cloning onto ${target.path} would make it one more standby (a rotation), each its own pair`,
          `to add ${target.path} as another standby confirm the clone on a terminal or pass --add-standby (in the API, "addStandby": true); to replace the standby instead, \`dpsr forget ${sourcePair.id}\` first. Nothing was written`,
        );
      }
      notes.push(`${target.path} becomes another standby of ${source.path}, besides ${describeStandbys(input.pairs, source.key)}`);
    } else if (sourcePair && sourcePair !== pair) {
      const other = sourcePair.drives[sourcePair.activeKey === source.key ? sourcePair.standbyKey : sourcePair.activeKey]?.lastPath;
      return refuse(`the source ${source.path} already belongs to another pair (${sourcePair.id}) with ${other}`, `forget that pair first: dpsr forget ${sourcePair.id}`);
    }
    if (pair && !(pair.activeKey === source.key && pair.standbyKey === target.key)) {
      return pair.activeKey === target.key
        ? refuse(`the target ${target.path} is the ACTIVE drive of pair ${pair.id}: cloning onto it would overwrite the live system with the backup`, 'to copy the backup back on purpose use `dpsr restore`')
        : refuse(`the target ${target.path} belongs to another pair (${pair.id})`, `forget that pair first: dpsr forget ${pair.id}`);
    }
  } else {
    if (!pair) {
      const samePath = standbysOf(input.pairs, source.key).find((p) => p.drives[p.standbyKey]?.lastPath === target.path);
      if (samePath && kind === 'sync') {
        return refuse(
          `the drive at ${target.path} is not the standby recorded for pair ${samePath.id}, though the standby was reached by that path: it was replaced since (another disk in the bay, or another file at that path), and what it holds is not the backup the records describe`,
          `if it is to be the new standby: \`dpsr forget ${samePath.id}\`, then \`dpsr clone ${source.path} ${target.path}\`; otherwise put the paired standby back`,
        );
      }
      const standbys = standbysOf(input.pairs, source.key);
      return refuse(
        `the target ${target.path} is not ${kind === 'restore' ? 'a drive' : 'the standby'} of any recorded pair`,
        standbys.length > 1
          ? `the source's standbys are ${describeStandbys(input.pairs, source.key)}`
          : sourcePair
            ? `the source's standby is ${sourcePair.drives[sourcePair.standbyKey]?.lastPath}`
            : 'pair the drives with `dpsr clone <active> <standby>` first',
      );
    }
    const wantTarget = kind === 'restore' ? pair.activeKey : pair.standbyKey;
    const wantSource = kind === 'restore' ? pair.standbyKey : pair.activeKey;
    if (target.key !== wantTarget || source.key !== wantSource) {
      if (kind === 'sync' && target.key === pair.activeKey && source.key === pair.standbyKey) {
        return refuse(`this would copy the backup ${source.path} over the ACTIVE drive ${target.path}`, 'to restore the backup on purpose run `dpsr restore <standby> <active> --i-mean-restore`; to protect the active drive swap the arguments');
      }
      if (kind === 'restore' && target.key === pair.standbyKey) {
        return refuse(`restore copies the standby onto the active drive, but ${target.path} is the standby`, 'for an ordinary backup use `dpsr sync <active> <standby>`');
      }
      return refuse(`${source.path} and ${target.path} are not the two drives of pair ${pair.id}`, 'run `dpsr status` to see the recorded pairs');
    }
  }

  // Rule 8: the geometry recorded at pairing, checked at every copy; a drive this copy's pair does not hold (a new
  // standby's active drive in rotation, a drive of another pair) against the pair that holds it.
  for (const facts of [source, target]) {
    const rec = pair?.drives[facts.key];
    const wrong = pair && rec ? geometryRefusal(facts.key === pair.activeKey ? 'active' : 'standby', facts, rec, pair.id) : geometryDecision(input.pairs, facts);
    if (wrong) return wrong;
  }

  // The source's own table must fit the source: otherwise the drive hides part of what it was partitioned for.
  const layout = input.sourceLayout;
  const described = layout ? describedBeyond(layout) : undefined;
  if (layout && described !== undefined) {
    const describedBytes = described * layout.sectorSize;
    return refuse(
      `the source ${source.path}'s partition table (${layout.scheme.toUpperCase()}) describes a disk of ${exact(describedBytes, layout.sectorSize)}, but the drive reports ${exact(source.sizeBytes, source.logicalSectorSize)}: ${exact(describedBytes - source.sizeBytes, source.logicalSectorSize)} at its end are missing (likely causes: a host protected area (HPA), a USB bridge that caps the capacity, or a truncated image)`,
      'a copy now would cut off the end of its partitions: make the source show its full size and copy again. Nothing was written',
    );
  }

  const pending = pair?.pendingCopy;
  if (kind === 'clone' && pair && !pending && pair.standbyState === 'consistent' && !req.forceClone) {
    // A clone would throw the way back away while it runs; a sync writes only what differs and keeps it.
    kind = 'sync';
    notes.push(`${target.path} already holds a consistent backup of ${source.path}: syncing instead of cloning, so the previous backup stays recoverable until the copy is done (--force copies everything again)`);
  }
  if (kind === 'sync' && pending?.kind === 'clone') {
    return refuse(`the first clone onto ${target.path} was interrupted, so there is no backup to sync onto`, `run the same clone again to finish it: \`dpsr clone ${source.path} ${target.path}\``);
  }
  if (kind === 'restore' && pair!.standbyState !== 'consistent') {
    return refuse(`the standby ${source.path} is not consistent (${pair!.standbyState}): restoring from it would spread a half-written copy`, `run \`dpsr recover ${source.path}\` on it first, or finish its sync`);
  }

  // The ranges.
  let ranges: ByteRange[];
  // A restore copies the active drive's recorded size (its geometry was checked above): a standby larger than the
  // active drive holds only the relocated backup GPT and unused space past it, which the table fix-up puts back.
  const restoreShrinks = kind === 'restore' && target.sizeBytes < source.sizeBytes;
  if (req.partitions.length === 0) ranges = [{ start: 0, length: restoreShrinks ? pair!.drives[target.key]!.sizeBytes : source.sizeBytes }];
  else {
    if (!layout || layout.scheme === 'none') return refuse(`the source ${source.path} has no partition table, so --partition cannot be used`, 'sync the whole drive', 'bad-input');
    try {
      ranges = normalizeRanges(regionsToCopy(layout, [...req.partitions], source.sizeBytes).ranges);
      if (restoreShrinks && layout.gpt) {
        // The standby's own backup GPT sits at its end, past the active drive: the table fix-up below writes the
        // active drive's backup GPT at its end instead. Anything else past the active drive's end is still refused.
        const backupStart = Math.min(layout.gpt.backupEntriesLba, layout.gpt.alternateLba) * layout.sectorSize;
        if (backupStart >= pair!.drives[target.key]!.sizeBytes) ranges = intersectRanges(ranges, [{ start: 0, length: backupStart }]);
      }
    } catch (e) {
      const err = e as Error & { hint?: string };
      return refuse(err.message, err.hint ?? 'run `dpsr inspect` on the source', 'bad-input');
    }
  }
  // Changed mode: only the changed blocks of the selection; without a trustworthy set, a full sync in manifest mode.
  let mode: SyncMode = req.mode;
  if (mode === 'changed' && kind !== 'sync') {
    return refuse(`changed-block mode is for syncs onto the standby, not for a ${kind}`, kind === 'clone' ? 'run `dpsr clone` without --mode' : 'run the restore without --mode changed', 'bad-input');
  }
  const requiredBytes = Math.max(...ranges.map((r) => r.start + r.length));
  if (mode === 'changed') {
    // A resumed changed sync keeps its plan (rule 7); its interruption wrote the standby, so its stamp differs anyway.
    const why = !req.changed ? 'there is no changed-block tracking: the controller is not in inline mode' : 'untrusted' in req.changed ? req.changed.untrusted : !pending ? input.standbyWritten : undefined;
    if (why !== undefined || !req.changed || !('ranges' in req.changed)) {
      mode = 'manifest';
      notes.push(`changed-block mode not possible (${why}): a full sync in manifest mode instead`);
    } else {
      ranges = intersectRanges(alignRangesOutward(req.changed.ranges, source.logicalSectorSize), ranges);
    }
  }
  if (target.sizeBytes < requiredBytes) {
    const what = req.partitions.length ? `the end of the selected partitions` : `the source ${source.path}`;
    return refuse(
      `the target ${target.path} is smaller than ${what} by ${exact(requiredBytes - target.sizeBytes, target.logicalSectorSize)}: it has ${exact(target.sizeBytes)}, ${what} needs ${exact(requiredBytes)}`,
      kind === 'restore'
        ? `the standby's partition table no longer fits the active drive (it was changed after the last copy): check both with \`dpsr inspect\`. Nothing was written`
        : 'use a standby drive at least as large as the source (drives of the same nominal size often differ by a few sectors)',
    );
  }

  // Table fix-ups, decided from the source's layout before anything is written.
  const tableFixups: GptRelocationPlan[] = [];
  if (layout && (target.sizeBytes > source.sizeBytes || restoreShrinks)) {
    const relocation = planGptRelocation(layout, target.sizeBytes);
    if (relocation.refusal) return refuse(`${relocation.refusal.reason} (source ${source.path})`, `${relocation.refusal.hint}. Nothing was written`);
    if (relocation.plan) {
      tableFixups.push(relocation.plan);
      if (relocation.plan.from === 'backup') notes.push(`the source's primary GPT is damaged: the backup GPT at the end of ${target.path} is built from the source's valid backup copy`);
    }
  }
  // Signatures past everything the copy writes; the relocated backup GPT overwrites its own place anyway.
  const copiedEnd = requiredBytes;
  const tailCleanup = (input.targetTail ?? []).filter((s) => s.start >= copiedEnd && s.start + s.length <= target.sizeBytes);

  const pairId = pair?.id ?? pairIdFor(source.key, target.key);
  const body = {
    version: 1 as const,
    kind,
    mode: kind === 'clone' ? ('clone' as const) : mode,
    pairId,
    source: { key: source.key, sizeBytes: source.sizeBytes, logicalSectorSize: source.logicalSectorSize, generation: pair?.drives[source.key]?.generation ?? knownDrive(input.pairs, source.key)?.generation ?? 1 },
    target: { key: target.key, sizeBytes: target.sizeBytes, logicalSectorSize: target.logicalSectorSize, generation: pair?.drives[target.key]?.generation ?? 0 },
    partitions: [...req.partitions],
    ranges,
    journaled: kind !== 'clone',
    writesStandby: pair ? target.key === pair.standbyKey : true,
    tableFixups,
  };
  const plan: CopyPlan = { ...body, tailCleanup, digest: digestOf(body) };
  const newPair = !pair;

  // Rule 7: only the identical plan resumes a pending copy.
  if (pending) {
    if (pending.plan && pending.plan.digest === plan.digest) {
      const full = journalRoomRefusal(plan, input, true);
      if (full) return full;
      notes.push(`resuming the interrupted ${plan.kind}: the same ${describePlan(plan)}, started ${pending.startedAt}`);
      return { verdict: 'copy', plan, start: 'resume', newPair, notes };
    }
    if (pending.kind === 'clone' && kind === 'clone') {
      // A half-done first clone protects nothing: starting it over loses nothing.
      notes.push(`the interrupted clone started ${pending.startedAt} is started over${pending.plan ? ` (${planDifferences(pending.plan, plan).join('; ')})` : ''}`);
      return { verdict: 'copy', plan, start: 'restart', newPair, notes };
    }
    return refuse(...pendingMismatch(pending, plan, pair!, input));
  }

  // Rule 3: no older generation over a newer one.
  if (kind === 'sync' && pair) {
    const from = pair.drives[source.key]!;
    const to = pair.drives[target.key]!;
    if (!descendsFrom(from, to) && !req.forceGeneration) {
      return refuse(
        `the target ${target.path} holds generation ${to.generation}, which the source (generation ${from.generation}) does not descend from: both drives changed since their last common sync`,
        'copying would discard changes only the target has; save what you need from it, then pass --force-generation',
      );
    }
  }
  const full = journalRoomRefusal(plan, input, false);
  if (full) return full;
  return { verdict: 'copy', plan, start: 'fresh', newPair, notes };
}

/**
 * A journaled copy whose undo journal has no room for the old data of even
 * one block would stop at its first overwrite: known before writing, so
 * refused (rule 7). A fresh copy starts with an empty journal; a resume keeps
 * what the journal holds.
 */
function journalRoomRefusal(plan: CopyPlan, input: PlanInput, resume: boolean): CopyDecision | undefined {
  const room = input.journal;
  if (!plan.journaled || !room) return undefined;
  const held = resume ? room.heldBytes : 0;
  // The engine journals whole sub-blocks (4 KiB, or a larger logical sector).
  const oneBlock = journalRecordBytes(Math.max(4096, plan.target.logicalSectorSize));
  if (room.budgetBytes - held >= oneBlock) return undefined;
  const drive = plan.writesStandby ? 'the standby' : 'the active drive';
  const target = input.target.path;
  const reason = held > 0
    ? `the undo journal holds ${formatBytes(held)} of the interrupted ${plan.kind} already: its budget of ${formatBytes(room.budgetBytes)} leaves no room for the old data of one more block of ${drive}`
    : room.budgetGiven
      ? `the undo journal budget of ${formatBytes(room.budgetBytes)} cannot hold the old data of one block of ${drive}`
      : `the state directory has no free space left for the undo journal (${formatBytes(room.budgetBytes)} usable), which must hold the old data of ${drive} before it is overwritten`;
  const more = room.budgetGiven ? `raise --journal-budget${held > 0 ? ` above ${formatBytes(held)}` : ''}` : 'free space in the state directory';
  const back = held > 0 ? `, or \`dpsr recover ${target}\` to roll back` : '';
  return refuse(reason, `${more} and run the same ${plan.kind} again${back}. Nothing was written`);
}

/**
 * What a status line says of a pair's pending copy: running (another process
 * holds the pair's lock) or interrupted, and the way out that fits it: for an
 * interrupted first clone only running it again, for a sync or a restore the
 * same command again or `dpsr recover` on the drive it was writing.
 */
export function pendingCopyAdvice(pair: Pick<PairRecord, 'pendingCopy' | 'drives'>, running: boolean): string | undefined {
  const pending = pair.pendingCopy;
  if (!pending) return undefined;
  const what = pending.plan ? `${describePlan(pending.plan)}` : pending.kind;
  const to = pair.drives[pending.to]?.lastPath ?? 'its target';
  const from = pair.drives[pending.from]?.lastPath ?? 'its source';
  if (running) return `running: a ${what} onto ${to}, started ${pending.startedAt}`;
  const again = pending.plan ? `\`${commandFor(pending.plan, from, to)}\`` : `the same ${pending.kind}`;
  if (pending.kind === 'clone') return `interrupted: the first clone onto ${to}, started ${pending.startedAt}; run ${again} again to finish it`;
  return `interrupted: a ${what} onto ${to}, started ${pending.startedAt}; run ${again} again to finish it, or \`dpsr recover ${to}\` to roll ${to} back`;
}

function pendingMismatch(pending: PendingCopy, plan: CopyPlan, pair: PairRecord, input: PlanInput): [string, string] {
  const pendingTarget = pending.to === input.target.key ? input.target.path : (pair.drives[pending.to]?.lastPath ?? 'its target');
  const pendingSource = pending.from === input.source.key ? input.source.path : (pair.drives[pending.from]?.lastPath ?? 'its source');
  const what = pending.plan ? `a ${describePlan(pending.plan)}` : `a ${pending.kind}`;
  const why = pending.plan
    ? `this request is a ${describePlan(plan)}, another copy (${planDifferences(pending.plan, plan).join('; ')}); finishing it instead would mark ${pendingTarget} consistent with the rest of the interrupted copy half-written`
    : 'it was recorded without its plan, so no request can be known to be the same copy';
  const again = pending.plan ? `run the same command again to finish it: \`${commandFor(pending.plan, pendingSource, pendingTarget)}\`` : '';
  const hint =
    pending.kind === 'clone'
      ? again || `run the clone again: \`dpsr clone ${pendingSource} ${pendingTarget}\``
      : [again, `\`dpsr recover ${pendingTarget}\` to roll back to the previous backup first`].filter(Boolean).join('; or ');
  const journal = input.journalRecords ? ` (its undo journal holds ${input.journalRecords} record${input.journalRecords === 1 ? '' : 's'} of the previous backup)` : '';
  return [`${what} onto ${pendingTarget}, started ${pending.startedAt}, was interrupted${journal}: ${why}`, hint];
}
