/**
 * The operations the CLI and the daemon run: clone, sync, verify, recover and
 * restore. Each checks the rules that protect data before it opens anything
 * for writing, records what it does in the pair state before the first write,
 * and leaves the standby either as the previous backup or the new one.
 */
import { join } from 'node:path';
import { statfsSync } from 'node:fs';
import {
  locateDrive,
  openLocated,
  sameStorage,
  usageOf,
  writeStampOf,
  identityOf,
  allocAligned,
  driveKeyOf,
  type BlockDevice,
  type DriveLocation,
  type OpenDriveOptions,
} from '../sata-bridge/index.ts';
import { readLayout, regionsToCopy, partitionAt, tableAreaAt, relocateGptBackup, formatExactBytes, planCopyTail, type CopyTail, type DiskLayout } from '../disk-layout/index.ts';
import { BadInputError, BusyError, CancelledError, RefusedError, isDpsrError } from '../errors.ts';
import { runEngine, DEFAULT_CHUNK, type EngineResult } from './engine.ts';
import { normalizeRanges, formatBytes, chunksOf, subtractRanges, alignRangesOutward, type ByteRange } from './ranges.ts';
import { relocatedExpectations, checkExpectations } from './verify-gpt.ts';
import { UndoJournal, rollBack, removeJournal, scanJournal, JournalFullError } from './undo-journal.ts';
import { SyncMap } from './sync-map.ts';
import { Manifest, standbyWrittenSinceSeal } from './manifest.ts';
import { JournaledDevice } from './journaled-device.ts';
import { acquirePairLock, acquireDriveLock, acquireDriveReadLock, pairLockHeld, takePairLockNow, type Lock } from './pair-lock.ts';
import { PairStore, pairIdFor, pairOfDrives, newPairRecord, recordCompletedCopy, recordBecameActive, knownDrive, moveStandbysToNewActive, type PairRecord, type StandbyState } from './pair-state.ts';
import { ensureSpaceReserve, requireWritableDir, NoSpaceError, ReadOnlyStateError } from '../durable-file.ts';
import { recoverMigration } from './migrate.ts';
import { defaultJournalBudget, refuseHeldElsewhere, refuseInUse } from './target-use.ts';
import { planCopy, commandFor, geometryChange, pendingCopyAdvice, type GeometryAction, type ChangedBlocks, type CopyDecision, type CopyKind, type CopyPlan, type DriveFacts, type Refusal, type SyncMode, type TailSignature } from './copy-plan.ts';
import type { ProgressListener } from './progress.ts';

export type { SyncMode, ChangedBlocks } from './copy-plan.ts';

export interface CommonRequest {
  readonly stateDir: string;
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
  /** Things the operator should know (a fallback, a resumed sync). */
  readonly onNote?: (note: string) => void;
  /** Bypass the page cache on both drives. */
  readonly direct?: boolean;
  readonly imageSectorSize?: number;
  readonly chunkSize?: number;
  readonly retries?: number;
  /** Opens drives; tests wrap the result to inject faults. */
  readonly openDevice?: (loc: DriveLocation, options: OpenDriveOptions) => Promise<BlockDevice>;
  /** Called after each chunk; tests use it to crash at chosen moments. */
  readonly onChunkDone?: () => void;
  /** How often an interrupted copy's progress is saved (default 2 s). */
  readonly checkpointMs?: number;
  /** Old and new data staged per fsync of the undo journal (default 16 MiB). */
  readonly batchBytes?: number;
  /** Chunks worked on at once (default 2). */
  readonly inFlight?: number;
}

export interface CopyRequest extends CommonRequest {
  readonly source: string;
  readonly target: string;
  /** Partition numbers for a partition-selective sync; empty means the whole drive. */
  readonly partitions?: readonly number[];
  readonly mode?: SyncMode;
  /** Changed mode: the changed blocks since the standby's last sync, or why there are none to trust (then manifest mode). */
  readonly changed?: ChangedBlocks;
  /** Allow copying over a target whose data is not an ancestor of the source's (split brain). */
  readonly forceGeneration?: boolean;
  /** Copy everything again, unjournaled, over a standby that holds a consistent backup; without it such a clone runs as a sync. */
  readonly forceClone?: boolean;
  /** Undo journal size limit in bytes. */
  readonly journalBudget?: number;
  /** A clone from an active drive that has a standby already: the target becomes one more standby (rotation), as confirmed by the operator. */
  readonly addStandby?: boolean;
}

export interface UnreadableReport {
  readonly start: number;
  readonly length: number;
  readonly firstLba: number;
  readonly sectors: number;
  /** The partition it lies in, `3` or undefined outside every partition. */
  readonly partition?: number;
  /** Outside every partition: the table structure there ("the backup GPT"), if any. */
  readonly area?: string;
}

export interface CopyReport {
  readonly kind: 'clone' | 'sync' | 'restore';
  readonly mode: string;
  readonly pairId: string;
  readonly source: string;
  readonly target: string;
  readonly bytesTotal: number;
  readonly bytesWritten: number;
  readonly bytesResumed: number;
  readonly seconds: number;
  readonly generation: number;
  readonly unreadable: UnreadableReport[];
  readonly gptRelocated: boolean;
  readonly notes: string[];
  readonly result: 'done' | 'done-with-errors';
}

export interface VerifyReport {
  readonly source: string;
  readonly target: string;
  /** The logical sector size: differing ranges are whole sectors. */
  readonly sectorSize: number;
  readonly bytesCompared: number;
  readonly identical: boolean;
  readonly differences: ByteRange[];
  readonly differenceCount: number;
  readonly differingBytes: number;
  readonly unreadable: UnreadableReport[];
  /** Source sectors that could not be read and so were not compared. */
  readonly unreadableSectors: number;
  /** Bytes left out of the comparison on request (`exclude`: in inline mode, what the host wrote since the last sync). */
  readonly excludedBytes: number;
  readonly seconds: number;
  readonly notes: string[];
}

const defaultOpen = (loc: DriveLocation, options: OpenDriveOptions) => openLocated(loc, options);


function parsePartitions(partitions: readonly number[] | undefined): number[] {
  const list = [...(partitions ?? [])];
  for (const n of list) {
    if (!Number.isInteger(n) || n < 1) throw new BadInputError(`partition number ${String(n)} is not valid`, { hint: 'partitions are numbered from 1, as `dpsr inspect` lists them' });
  }
  return [...new Set(list)].sort((a, b) => a - b);
}

/** The checks of rule 1 that need no state: same storage, mounted, system disk. */
function refuseUnsafeTarget(source: DriveLocation, target: DriveLocation): void {
  if (sameStorage(source, target)) {
    throw new RefusedError(`the target ${target.requested} is the source ${source.requested} (the same ${target.kind === 'image' ? 'file' : 'disk'} by another path)`, {
      hint: 'name two different drives',
    });
  }
  refuseInUse(target);
}

interface OpenedPair {
  readonly sourceLoc: DriveLocation;
  readonly targetLoc: DriveLocation;
  readonly source: BlockDevice;
  readonly target: BlockDevice;
  close(): Promise<void>;
}

async function openBoth(req: CommonRequest & { source: string; target: string }, writeTarget: boolean): Promise<OpenedPair> {
  const sourceLoc = locateDrive(req.source);
  const targetLoc = locateDrive(req.target);
  if (writeTarget) refuseUnsafeTarget(sourceLoc, targetLoc);
  const sector = req.imageSectorSize;
  const refuseSectors = (s: number, t: number) => {
    if (s === t) return;
    throw new RefusedError(`the target ${targetLoc.requested} has ${t}-byte sectors, the source ${sourceLoc.requested} ${s}-byte sectors`, {
      hint: 'a sector copy between different logical sector sizes gives an unreadable partition table; use a standby with the same sector size',
    });
  };
  // An NBD export's sectors are known once connected; that check then comes after opening, still before any write.
  if (sourceLoc.kind !== 'nbd' && targetLoc.kind !== 'nbd') refuseSectors(identityOf(sourceLoc, sector).logicalSectorSize, identityOf(targetLoc, sector).logicalSectorSize);
  const open = req.openDevice ?? defaultOpen;
  const source = await open(sourceLoc, { write: false, direct: req.direct, imageSectorSize: sector });
  let target: BlockDevice;
  try {
    target = await open(targetLoc, { write: writeTarget, direct: req.direct, imageSectorSize: sector });
  } catch (e) {
    await source.close();
    throw e;
  }
  try {
    refuseSectors(source.logicalSectorSize, target.logicalSectorSize);
  } catch (e) {
    await Promise.allSettled([source.close(), target.close()]);
    throw e;
  }
  return {
    sourceLoc,
    targetLoc,
    source,
    target,
    async close() {
      await Promise.allSettled([source.close(), target.close()]);
    },
  };
}

interface Selection {
  readonly ranges: ByteRange[];
  readonly requiredBytes: number;
  readonly layout?: DiskLayout;
  readonly partitions: number[];
}

async function selectRanges(source: BlockDevice, partitions: number[]): Promise<Selection> {
  let layout: DiskLayout | undefined;
  try {
    layout = await readLayout(source, { sniff: false });
  } catch {
    layout = undefined;
  }
  if (partitions.length === 0) return { ranges: [{ start: 0, length: source.size }], requiredBytes: source.size, layout, partitions };
  if (!layout || layout.scheme === 'none') throw new BadInputError(`the source ${source.path} has no partition table, so --partition cannot be used`, { hint: 'sync the whole drive' });
  const ranges = normalizeRanges(regionsToCopy(layout, partitions, source.size).ranges);
  // The backup GPT at the source's end travels too, so the target needs the full size.
  const requiredBytes = Math.max(...ranges.map((r) => r.start + r.length));
  return { ranges, requiredBytes, layout, partitions };
}

function reportUnreadable(ranges: readonly ByteRange[], sector: number, layout: DiskLayout | undefined): UnreadableReport[] {
  return ranges.map((r) => ({
    start: r.start,
    length: r.length,
    firstLba: r.start / sector,
    sectors: r.length / sector,
    partition: layout ? partitionAt(layout, r.start)?.number : undefined,
    area: layout && !partitionAt(layout, r.start) ? tableAreaAt(layout, r.start) : undefined,
  }));
}

/**
 * What the standby of a pair is now, taking a crashed copy into account: a
 * record saying "syncing" with nobody holding the pair's lock is a copy that
 * died (the kernel released its lock), so the standby is inconsistent.
 */
export function effectiveStandbyState(store: PairStore, pair: PairRecord): StandbyState {
  if (pair.standbyState !== 'syncing') return pair.standbyState;
  return pairLockHeld(store.dir, pair.id) ? 'syncing' : 'inconsistent';
}

/** Whether a copy or recovery of the pair runs now, in this or another process. */
export function copyRunning(stateDir: string, pairId: string): boolean {
  return pairLockHeld(stateDir, pairId);
}

/** The state as seen by the holder of the pair's lock: a "syncing" record is a copy that died. */
function stateUnderLock(pair: PairRecord): StandbyState {
  return pair.standbyState === 'syncing' ? 'inconsistent' : pair.standbyState;
}

/**
 * The locks of a copy or recovery, taken before anything is opened for
 * writing: the pair's (one copy per pair), the target drive's (no second
 * writer on it from any state directory) and, for a copy, a read lock on the
 * source (nobody writes it while it is copied).
 */
async function lockForWriting(stateDir: string, pairId: string, targetLoc: DriveLocation, what: string, sourceLoc?: DriveLocation): Promise<Lock> {
  const held: Lock[] = [];
  try {
    held.push(await acquirePairLock(stateDir, pairId, what));
    held.push(await acquireDriveLock(targetLoc, what));
    if (sourceLoc) held.push(await acquireDriveReadLock(sourceLoc, what));
  } catch (e) {
    for (const l of held.reverse()) l.release();
    throw e;
  }
  return {
    name: held.map((l) => l.name).join(' '),
    owner: held[0]!.owner,
    release() {
      for (const l of [...held].reverse()) l.release();
    },
  };
}

/** The pair's files: journal, sync map, manifest. */
function pairFiles(store: PairStore, pair: PairRecord | string) {
  return pairFilesIn(store.pairDir(pair));
}

/** The names of a pair's files in its folder `dir` (not created here). */
function pairFilesIn(dir: string) {
  return { journal: join(dir, 'undo.journal'), syncMap: join(dir, 'sync-map.json'), manifest: join(dir, 'standby.manifest') };
}

function driveRecordFor(loc: DriveLocation, dev: BlockDevice) {
  return { key: dev.identity.key, sizeBytes: dev.size, logicalSectorSize: dev.logicalSectorSize, lastPath: loc.requested };
}

/**
 * The first full copy. Records the pair (source = active, target = standby).
 * A clone has no previous backup to return to, so it is not journaled; an
 * interrupted clone is finished by running it again (the sync map resumes it).
 */
export async function clone(req: CopyRequest): Promise<CopyReport> {
  return copy(req, 'clone');
}

/** Brings the standby to a byte-identical copy of the active drive, atomically. */
export async function sync(req: CopyRequest): Promise<CopyReport> {
  return copy(req, 'sync');
}

/** Copies the standby back over the active drive: the explicit, journaled reverse of a sync. */
export async function restore(req: CopyRequest): Promise<CopyReport> {
  return copy(req, 'restore');
}

async function copy(req: CopyRequest, requestedKind: CopyKind): Promise<CopyReport> {
  const partitions = parsePartitions(req.partitions);
  const requestedMode = req.mode ?? 'compare';
  if (requestedMode !== 'compare' && requestedMode !== 'manifest' && requestedMode !== 'changed') throw new BadInputError(`sync mode "${String(requestedMode)}" is not known`, { hint: 'use compare, manifest or changed' });
  const notes: string[] = [];
  const note = (n: string) => {
    notes.push(n);
    req.onNote?.(n);
  };

  const sourceLoc = locateDrive(req.source);
  const targetLoc = locateDrive(req.target);
  refuseUnsafeTarget(sourceLoc, targetLoc);
  const open = req.openDevice ?? defaultOpen;
  const openOptions = { direct: req.direct, imageSectorSize: req.imageSectorSize };
  // Rule 7: both drives are looked at read-only while the copy is planned; the target is opened for writing only once it has a plan.
  const source = await open(sourceLoc, { write: false, ...openOptions });
  let target: BlockDevice | undefined;
  let release: (() => void) | undefined;
  // Closed in the end whatever happens: a failing state write after the copy (a full disk) must not leak them.
  const closing: (() => Promise<void>)[] = [];
  try {
    const look = await open(targetLoc, { write: false, ...openOptions });
    let decision: CopyDecision;
    let store: PairStore;
    let sourceLayout: DiskLayout | undefined;
    let tail: CopyTail | undefined;
    let journalBudget = 0;
    try {
      const sourceFacts = factsOf(sourceLoc, source);
      const targetFacts = factsOf(targetLoc, look);
      const known = new PairStore(req.stateDir).pairFor(sourceFacts.key, targetFacts.key);
      const pairId = known?.id ?? pairIdFor(sourceFacts.key, targetFacts.key);
      const locks = await lockForWriting(req.stateDir, pairId, targetLoc, `${requestedKind} onto ${targetLoc.requested}`, sourceLoc);
      release = () => locks.release();
      refuseHeldElsewhere(targetLoc);
      // Read under the pair's lock, so the decision rests on records no other copy is changing.
      store = new PairStore(req.stateDir);
      // Not created here: a refused copy leaves no empty pair folder behind (pairFiles makes it once the copy runs).
      const pairFolder = join(store.dir, 'pairs', pairId);
      const pending = store.pairFor(sourceFacts.key, targetFacts.key)?.pendingCopy;
      sourceLayout = await readLayout(source, { sniff: false }).catch(() => undefined);
      const scan = pending?.journaled ? await scanJournal(pairFilesIn(pairFolder).journal) : undefined;
      journalBudget = req.journalBudget ?? defaultJournalBudget(store.dir);
      // The copy never writes past the source's size, so the target's tail can be read now: what its previous life left there.
      tail = await planCopyTail(source, look, sourceLayout);
      decision = planCopy({
        request: { kind: requestedKind, partitions, mode: requestedMode, changed: req.changed, forceGeneration: req.forceGeneration, forceClone: req.forceClone, addStandby: req.addStandby },
        source: sourceFacts,
        target: targetFacts,
        sourceLayout,
        pairs: store.pairs(),
        journalRecords: scan?.records.length ?? 0,
        journal: { budgetBytes: journalBudget, heldBytes: scan?.validBytes ?? 0, budgetGiven: req.journalBudget !== undefined },
        targetTail: tail.cleanup.signatures,
        // Asked only of a changed-block sync, the one mode that trusts the standby outside what it copies.
        standbyWritten: requestedMode === 'changed' ? standbyWrittenSinceSeal(pairFilesIn(pairFolder).manifest, writeStampOf(targetLoc)) : undefined,
      });
    } finally {
      await look.close();
    }
    if (decision.verdict === 'refuse') throw refusalError(decision.refusal);
    // Every copy records its plan and state before its first write: a state directory that cannot take them refuses it now.
    requireWritableDir(req.stateDir);
    const { plan } = decision;
    const kind = plan.kind;
    for (const n of decision.notes) note(n);
    for (const m of tail?.endMetadata ?? []) {
      note(`the source carries ${m.what}, anchored to its end: on the larger standby it lies ${formatExactBytes(plan.target.sizeBytes - plan.source.sizeBytes)} short of the end, where mdadm, blkid and firmware will not find it`);
    }

    // Changed mode reads and writes scattered granules of the standby: through the page cache each read drags in readahead
    // it does not use, more bytes on the busiest drive, so its reads bypass the cache where the filesystem allows it (not
    // tmpfs). Its writes go through the cache: one flush before the copy's record sends them all, sorted by the kernel,
    // where O_DIRECT waited on each scattered write. The flush points (journal batch durable before its writes, the
    // standby flushed before a checkpoint and before the record of completion) are the same in every cache mode.
    const direct = req.direct ?? (plan.mode === 'changed' && kind === 'sync' ? 'reads' : false);
    try {
      target = await open(targetLoc, { write: true, ...openOptions, direct });
    } catch (e) {
      if (req.direct !== undefined || !direct || (e as { cause?: NodeJS.ErrnoException }).cause?.code !== 'EINVAL') throw e;
      target = await open(targetLoc, { write: true, ...openOptions });
    }
    if (target.identity.key !== plan.target.key || target.size !== plan.target.sizeBytes || target.logicalSectorSize !== plan.target.logicalSectorSize) {
      throw new RefusedError(`the target ${targetLoc.requested} changed between planning the copy and opening it for writing (now ${formatExactBytes(target.size)} in ${target.logicalSectorSize}-byte sectors)`, {
        hint: 'nothing was written; run the copy again',
      });
    }
    const sourceKey = plan.source.key;
    const targetKey = plan.target.key;
    // A new pair is recorded by the transaction before the first write, which checks that neither drive was paired meanwhile.
    const newRecord = decision.newPair ? newPairRecord(driveRecordFor(sourceLoc, source), driveRecordFor(targetLoc, target)) : undefined;
    let pair = store.byId(plan.pairId) ?? newRecord!;
    const files = pairFiles(store, plan.pairId);
    // A journal or sync map left behind by a completed or rolled-back copy is stale: the state says the target is whole.
    if (decision.start === 'fresh') removeJournal(files.journal);
    if (decision.start !== 'resume') SyncMap.discard(files.syncMap);

    // Manifest mode only when the manifest is known to describe the standby.
    const targetRecord = pair.drives[targetKey]!;
    // The manifest describes the standby; a restore writes the active drive and leaves it as it is.
    const writesStandby = plan.writesStandby;
    // Only manifest mode consults the table, so only it reads the whole table for its checksum; the other modes write what they copy.
    const manifestOpen = writesStandby ? await Manifest.open(files.manifest, { targetKey, targetSize: target.size, generation: targetRecord.generation, writeStamp: writeStampOf(targetLoc) }, { checkTable: plan.mode === 'manifest' }) : undefined;
    if (manifestOpen) closing.push(() => manifestOpen.manifest.close());
    let mode: 'clone' | 'compare' | 'manifest' | 'changed' = kind === 'clone' ? 'clone' : plan.mode === 'changed' ? 'changed' : 'compare';
    if (kind !== 'clone' && plan.mode === 'manifest') {
      if (manifestOpen?.usable && manifestOpen.manifest.covers(plan.ranges)) mode = 'manifest';
      else note(`manifest mode not possible (${manifestOpen?.reason ?? (manifestOpen ? 'the manifest does not cover these partitions yet' : 'a restore reads both drives')}): comparing both drives instead; the manifest is rebuilt as it goes`);
    }

    const chunkSize = req.chunkSize ?? DEFAULT_CHUNK;
    const mapKey = {
      sourceKey,
      targetKey,
      sourceSize: source.size,
      targetSize: target.size,
      chunkSize,
      ranges: JSON.stringify(plan.ranges),
      mode: kind,
      plan: plan.digest,
    };
    const chunkCount = chunksOf(plan.ranges, chunkSize).length;
    const loaded = SyncMap.load(files.syncMap, mapKey, chunkCount);
    if (loaded.note) note(loaded.note);
    // Compared again, not skipped: either drive may have been written since the interruption (engine.ts, chunkMode).
    if (loaded.resumed) note(`${loaded.map.done} finished chunks of the interrupted ${kind} are compared again, not copied again, unless a drive was written since`);

    // Before the first write: the state says the standby is being written, by this exact plan. A restore writes the
    // active drive instead and leaves the standby's state alone: the backup stays whole and can still be booted.
    pair = store.transact(`${kind} onto ${targetLoc.requested}: before the first write`, (tx) => {
      let p = tx.byId(plan.pairId);
      if (!p) {
        if (!newRecord) throw new RefusedError(`pair ${plan.pairId} was forgotten by another process`, { hint: 'run `dpsr status` to see the recorded pairs' });
        // The source may be the active drive of other pairs only when this clone adds a standby to it (rotation).
        const sourceTaken = tx.pairs().find((q) => q.standbyKey === sourceKey || (q.activeKey === sourceKey && !req.addStandby));
        const taken = sourceTaken ?? tx.pairOf(targetKey);
        if (taken) throw new RefusedError(`${sourceTaken ? sourceLoc.requested : targetLoc.requested} was paired by another process meanwhile (pair ${taken.id})`, { hint: 'run `dpsr status` to see the recorded pairs' });
        // A second standby's active drive keeps the generation and lineage its other pairs know it by.
        const known = knownDrive(tx.pairs(), sourceKey);
        if (known) Object.assign(newRecord.drives[sourceKey]!, { generation: known.generation, lineage: [...known.lineage] });
        p = tx.insert(newRecord);
      }
      if (writesStandby) p.standbyState = 'syncing';
      if (decision.start !== 'resume') p.pendingCopy = { kind, from: sourceKey, to: targetKey, startedAt: new Date().toISOString(), journaled: plan.journaled, plan };
      p.drives[targetKey]!.lastPath = targetLoc.requested;
      p.drives[sourceKey]!.lastPath = sourceLoc.requested;
      return p;
    });

    const journal = plan.journaled ? await UndoJournal.openForAppend(files.journal, journalBudget, writesStandby ? { copy: 'sync', drive: 'the standby' } : { copy: 'restore', drive: 'the active drive' }) : undefined;
    if (journal) closing.push(() => journal.close());
    let result: EngineResult;
    let gptRelocated = false;
    try {
      result = await runEngine({
        // Changed mode compares just the changed blocks: the old data is read for the undo journal anyway, and only what differs is written.
        mode: mode === 'changed' ? 'compare' : mode,
        source,
        target,
        ranges: plan.ranges,
        chunkSize,
        retries: req.retries,
        signal: req.signal,
        onProgress: req.onProgress,
        journal,
        syncMap: loaded.map,
        manifest: manifestOpen?.manifest,
        onChunkDone: req.onChunkDone,
        checkpointMs: req.checkpointMs,
        batchBytes: req.batchBytes,
        // Changed blocks are small scattered pieces: the round trips, not the drive, bound them, so more go at once.
        inFlight: req.inFlight ?? (mode === 'changed' ? 8 : undefined),
        // And they differ almost whole: read straight into the journal batch's memory, not copied there.
        stageInPlace: mode === 'changed',
      });
      const fixTarget = journal ? new JournaledDevice(target, journal) : target;
      for (const sig of plan.tailCleanup) await zeroRange(fixTarget, sig);
      if (plan.tailCleanup.length) note(`the target is larger: zeroed what its previous contents left past the copy (${plan.tailCleanup.map((t) => t.what).join('; ')})`);
      for (const fix of plan.tableFixups) {
        const done = await relocateGptBackup(fixTarget, fix.sourceSizeBytes, fix);
        gptRelocated ||= done.changed;
        if (done.changed) note(`the target is ${plan.target.sizeBytes > plan.source.sizeBytes ? 'larger' : 'smaller'}: ${done.summary}`);
      }
      if (plan.tailCleanup.length || plan.tableFixups.length) await target.flush();
    } catch (e) {
      await journal?.close().catch(() => undefined);
      await manifestOpen?.manifest.close().catch(() => undefined);
      const cancelled = e instanceof CancelledError;
      // The state already says a copy is pending; failing to add the details (a full disk) must not hide the cause.
      try {
        store.update(pair.id, `${kind} onto ${targetLoc.requested}: stopped`, (p) => {
          p.lastSync = {
            at: new Date().toISOString(),
            kind,
            mode,
            result: cancelled ? 'cancelled' : 'failed',
            from: sourceLoc.requested,
            to: targetLoc.requested,
            bytesWritten: 0,
            seconds: 0,
            message: isDpsrError(e) || e instanceof Error ? e.message : String(e),
            partitions,
          };
          if (writesStandby) p.standbyState = 'inconsistent';
        });
      } catch {
        /* the record written before the first overwrite stands */
      }
      throw explainInterrupted(stateDirFull(e), plan, sourceLoc.requested, targetLoc.requested);
    }

    if (result.resumedChunksChanged > 0) {
      const n = result.resumedChunksChanged;
      note(`${n} finished chunk${n === 1 ? '' : 's'} of the interrupted ${kind} had changed since the interruption (a drive was written meanwhile) and ${n === 1 ? 'was' : 'were'} copied again`);
    }
    // Done and flushed: record the new generation, then (only then) discard the journal.
    const unreadable = reportUnreadable(result.unreadable, source.logicalSectorSize, sourceLayout);
    let generation = 0;
    pair = store.transact(`${kind} onto ${targetLoc.requested}: done`, (tx) => {
      const p = tx.byId(pair.id);
      if (!p) throw new BusyError(`pair ${pair.id} was forgotten by another process while the ${kind} ran`, { hint: 'run `dpsr status` to see the recorded pairs' });
      generation = recordCompletedCopy(p, sourceKey, targetKey, tx.pairs());
      p.standbyState = 'consistent';
      p.pendingCopy = undefined;
      p.lastSync = {
        at: new Date().toISOString(),
        kind,
        mode,
        result: unreadable.length ? 'done-with-errors' : 'done',
        from: sourceLoc.requested,
        to: targetLoc.requested,
        bytesWritten: result.bytesWritten,
        seconds: result.seconds,
        partitions,
        message: unreadable.length ? `${unreadable.reduce((n, u) => n + u.sectors, 0)} unreadable sectors on the source were skipped` : undefined,
      };
      p.lastSuccess = p.lastSync.at;
      return p;
    });
    // Sealed after the record: a crash in between leaves an unsealed manifest, which the next manifest sync does not trust.
    if (result.unreadable.length > 0) {
      // The standby kept its old bytes where the source was unreadable: the manifest cannot vouch for them.
      await manifestOpen?.manifest.markDirty();
    } else {
      // The stamp after the copy's last flush: a write to the standby from now on changes it.
      await manifestOpen?.manifest.seal(generation, [...plan.ranges], writeStampOf(targetLoc));
    }
    await manifestOpen?.manifest.close();
    await journal?.close();
    removeJournal(files.journal);
    loaded.map.remove();
    return {
      kind,
      mode,
      pairId: pair.id,
      source: sourceLoc.requested,
      target: targetLoc.requested,
      bytesTotal: result.bytesTotal,
      bytesWritten: result.bytesWritten,
      bytesResumed: result.bytesResumed,
      seconds: result.seconds,
      generation,
      unreadable,
      gptRelocated,
      notes,
      result: unreadable.length ? 'done-with-errors' : 'done',
    };
  } finally {
    // The target is closed before its lock goes, so the next writer finds it quiet; closing twice is harmless, leaving one open is not.
    await Promise.allSettled([...closing.map((c) => c()), source.close(), target?.close()]);
    release?.();
  }
}

/** A drive as the plan sees it: identity and geometry of the opened device. */
function factsOf(loc: DriveLocation, dev: BlockDevice): DriveFacts {
  return { key: dev.identity.key, path: loc.requested, sizeBytes: dev.size, logicalSectorSize: dev.logicalSectorSize, image: dev.identity.kind === 'image' };
}

/** The error class a refusal of the plan is raised as. */
export function refusalError(r: Refusal): Error {
  const Class = r.error === 'bad-input' ? BadInputError : r.error === 'busy' ? BusyError : RefusedError;
  return new Class(r.reason, { hint: r.hint });
}

/**
 * Rule 8 for a writer that is not a copy of a pair (a migration, its
 * rollback): throws the refusal when a drive of a recorded pair shows
 * another size or logical sector size than at pairing.
 */
export function refuseGeometryChange(stateDir: string, loc: DriveLocation, dev: BlockDevice, action: GeometryAction = 'migration'): void {
  const changed = geometryChange(new PairStore(stateDir, { create: false }).pairs(), factsOf(loc, dev), action);
  if (changed) throw refusalError(changed);
}

/**
 * Rule 8 before a job acts on the world (a sync window shuts the host down
 * for it): opens the drive at `path` read-only and throws the refusal
 * (RefusedError) the job would meet later when the drive shows another
 * size or logical sector size than at pairing. A drive of no pair passes.
 */
export async function precheckGeometry(req: Pick<CommonRequest, 'stateDir' | 'openDevice' | 'imageSectorSize'> & { path: string; action: GeometryAction }): Promise<void> {
  const loc = locateDrive(req.path);
  const dev = await (req.openDevice ?? defaultOpen)(loc, { write: false, direct: false, imageSectorSize: req.imageSectorSize });
  try {
    refuseGeometryChange(req.stateDir, loc, dev, req.action);
  } finally {
    await dev.close();
  }
}

/**
 * Rule 1 before a job acts on the world (a sync window shuts the host down
 * for it): throws the refusal (RefusedError) a copy onto the drive at `path`
 * would meet later because this machine uses it: mounted (in any mount
 * namespace), swap, held, its own system, open for writing by another
 * program, or held by the kernel for another user.
 */
export function precheckWriteTarget(path: string): void {
  const loc = locateDrive(path);
  refuseInUse(loc);
  refuseHeldElsewhere(loc);
}

/**
 * Rule 8 from the records, for status: each drive of `pair` still found at
 * its last path (the same drive: its identity key matches) shows its size now
 * against its size at pairing. The refusal reasons of those that changed; a
 * drive not at its last path (moved, unplugged, another drive there) says
 * nothing here, the next copy identifies it.
 */
export function geometryDrift(pairs: readonly PairRecord[], pair: PairRecord): string[] {
  const out: string[] = [];
  for (const [key, rec] of Object.entries(pair.drives)) {
    if (!rec?.lastPath) continue;
    let facts: DriveFacts;
    try {
      const id = identityOf(locateDrive(rec.lastPath), rec.logicalSectorSize);
      if (id.key !== key) continue;
      facts = { key, path: rec.lastPath, sizeBytes: id.sizeBytes, logicalSectorSize: id.logicalSectorSize, image: id.kind === 'image' };
    } catch {
      continue;
    }
    const changed = geometryChange(pairs, facts, 'copy');
    if (changed) out.push(changed.reason);
  }
  return out;
}

/** Zeroes an old signature in the target's tail, widened to whole sectors. */
async function zeroRange(target: BlockDevice, sig: TailSignature): Promise<void> {
  const s = target.logicalSectorSize;
  const start = Math.floor(sig.start / s) * s;
  const end = Math.min(target.size, Math.ceil((sig.start + sig.length) / s) * s);
  if (end > start) await target.write(allocAligned(end - start), start, end - start);
}

/** Any write to the state directory that hit a full disk means the same thing to the operator. */
function stateDirFull(e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  // A full journal says already which limit it met (its budget, or the disk).
  if (e instanceof JournalFullError || e instanceof ReadOnlyStateError) return e;
  if (code === 'EROFS') {
    return new ReadOnlyStateError('the state directory became read-only: the sync stopped before overwriting more of the standby', {
      hint: 'remount its filesystem read-write (mount -o remount,rw), then run the same sync again',
      cause: e,
    });
  }
  if (code !== 'ENOSPC' && code !== 'EDQUOT' && !(e instanceof NoSpaceError)) return e;
  return new JournalFullError('the state directory is full: the sync stopped before overwriting more of the standby', {
    hint: 'free space in the state directory, then run the same sync again',
    cause: e,
  });
}

function explainInterrupted(e: unknown, plan: CopyPlan, source: string, target: string): unknown {
  if (!isDpsrError(e) && !(e instanceof Error)) return e;
  const again = `\`${commandFor(plan, source, target)}\``;
  const how =
    plan.kind === 'clone'
      ? `the clone onto ${target} is incomplete: run the same clone again to finish it (${again})`
      : `${target} is marked inconsistent: run the same ${plan.kind} again to finish it (${again}), or \`dpsr recover ${target}\` to roll back to the previous ${plan.kind === 'restore' ? 'content' : 'backup'}`;
  if (isDpsrError(e)) {
    (e as { hint?: string }).hint = e.hint ? `${e.hint}; ${how}` : how;
    return e;
  }
  return Object.assign(e, { message: `${e.message} — ${how}` });
}

/** Compares two drives and lists every differing range. Opens both read-only. */
/**
 * Ranges a verify leaves out: bytes known to differ for a reason that is not
 * a fault (in inline mode, what the host wrote since the standby's last sync,
 * which the next sync copies). `why` goes into the report's notes.
 */
export interface VerifyExclusion {
  readonly ranges: readonly ByteRange[];
  readonly why: string;
}

export async function verify(req: CommonRequest & { source: string; target: string; partitions?: readonly number[]; exclude?: VerifyExclusion }): Promise<VerifyReport> {
  const partitions = parsePartitions(req.partitions);
  // Neither drive may be written while it is compared: the differences found would be of neither content.
  const what = `verify of ${req.source} against ${req.target}`;
  const sourceLock = await acquireDriveReadLock(locateDrive(req.source), what);
  let targetLock: Lock;
  try {
    targetLock = await acquireDriveReadLock(locateDrive(req.target), what);
  } catch (e) {
    sourceLock.release();
    throw e;
  }
  try {
    return await verifyLocked(req, partitions);
  } finally {
    targetLock.release();
    sourceLock.release();
  }
}

async function verifyLocked(req: CommonRequest & { source: string; target: string; exclude?: VerifyExclusion }, partitions: number[]): Promise<VerifyReport> {
  const opened = await openBoth(req, false);
  const notes: string[] = [];
  try {
    const { source, target } = opened;
    // A drive of a pair that shows another geometry than at pairing would verify "identical" over the part it still shows.
    const pairs = new PairStore(req.stateDir).pairs();
    for (const [loc, dev] of [[opened.sourceLoc, source], [opened.targetLoc, target]] as const) {
      const changed = geometryChange(pairs, factsOf(loc, dev), 'verify');
      if (changed) throw refusalError(changed);
    }
    // Differences on a drive an interrupted copy was writing are that copy's unfinished part: say so, with the way out.
    const pair = pairOfDrives(pairs, source.identity.key, target.identity.key);
    const pending = pair?.pendingCopy;
    if (pair && pending && (pending.to === source.identity.key || pending.to === target.identity.key)) {
      const advice = pendingCopyAdvice(pair, false);
      const which = pending.to === pair.standbyKey ? 'the standby' : 'the active drive';
      if (advice) notes.push(`${which} ${pending.to === target.identity.key ? opened.targetLoc.requested : opened.sourceLoc.requested} is inconsistent: ${advice}`);
    }
    const selection = await selectRanges(source, partitions);
    if (target.size < selection.requiredBytes) {
      throw new RefusedError(`the target ${target.path} is smaller than the source's compared area by ${formatExactBytes(selection.requiredBytes - target.size, target.logicalSectorSize)}: it has ${formatExactBytes(target.size)}, the area ${formatExactBytes(selection.requiredBytes)}`, {
        hint: 'they cannot be copies of each other',
      });
    }
    let ranges = selection.ranges;
    const relocated = selection.layout?.scheme === 'gpt' ? await relocatedExpectations(source, target.size) : undefined;
    if (relocated) {
      ranges = subtractRanges(ranges, relocated.holes);
      notes.push('the target is larger: its GPT headers, protective MBR and backup table were compared with what moving the backup GPT to its end leaves there');
    }
    const s = source.logicalSectorSize;
    let excludedBytes = 0;
    if (req.exclude?.ranges.length) {
      const before = ranges.reduce((n, r) => n + r.length, 0);
      ranges = subtractRanges(ranges, alignRangesOutward(req.exclude.ranges, s));
      excludedBytes = before - ranges.reduce((n, r) => n + r.length, 0);
      if (excludedBytes > 0) notes.push(`${formatExactBytes(excludedBytes, s)} not compared: ${req.exclude.why}`);
    }
    const result = await runEngine({ mode: 'verify', source, target, ranges, subBlock: s, chunkSize: req.chunkSize, retries: req.retries, signal: req.signal, onProgress: req.onProgress });
    const wrong = relocated ? await checkExpectations(target, relocated.sectors) : [];
    for (const e of wrong) notes.push(`${e.what} is not what the copy leaves there`);
    const differences = wrong.length ? normalizeRanges([...result.differences, ...wrong.map((e) => ({ start: e.lba * s, length: s }))]) : result.differences;
    const differenceCount = wrong.length ? result.differenceCount - result.differences.length + differences.length : result.differenceCount;
    const unreadable = reportUnreadable(result.unreadable, s, selection.layout);
    return {
      source: opened.sourceLoc.requested,
      target: opened.targetLoc.requested,
      sectorSize: s,
      bytesCompared: result.bytesTotal + (relocated ? relocated.sectors.length * s : 0),
      identical: differenceCount === 0 && unreadable.length === 0,
      differences,
      differenceCount,
      differingBytes: result.differingBytes + wrong.length * s,
      unreadable,
      unreadableSectors: unreadable.reduce((n, u) => n + u.sectors, 0),
      excludedBytes,
      seconds: result.seconds,
      notes,
    };
  } finally {
    await opened.close();
  }
}

export interface RecoverReport {
  readonly pairId: string;
  readonly target: string;
  readonly action: 'rolled-back' | 'nothing-to-do';
  readonly records: number;
  readonly bytesRestored: number;
  readonly generation: number;
  readonly message: string;
}

/** Rolls an interrupted sync back: the standby becomes the previous backup again, byte for byte. */
export async function recover(req: CommonRequest & { target: string }): Promise<RecoverReport> {
  const loc = locateDrive(req.target);
  const key = driveKeyOf(loc, req.imageSectorSize);
  // An interrupted `dpsr migrate` onto the drive (any drive but a standby) is rolled back from its own journal.
  const migration = await recoverMigration(req, loc, key);
  if (migration) {
    const pairOf = new PairStore(req.stateDir).pairOf(key);
    return { pairId: pairOf?.id ?? '', target: req.target, action: 'rolled-back', records: migration.records, bytesRestored: migration.bytes, generation: pairOf?.drives[key]?.generation ?? 0, message: migration.message };
  }
  const seen = new PairStore(req.stateDir).pairOf(key);
  if (!seen) throw new RefusedError(`${req.target} is not a drive of any recorded pair`, { hint: 'run `dpsr status` to see the recorded pairs' });
  // The pair's lock tells a running copy from a dead one: the kernel freed a dead owner's lock, whatever became of its pid.
  const locks = await lockForWriting(req.stateDir, seen.id, loc, `recovery of ${req.target}`);
  try {
    return await recoverLocked(req, loc, key, seen.id);
  } finally {
    locks.release();
  }
}

async function recoverLocked(req: CommonRequest & { target: string }, loc: DriveLocation, key: string, pairId: string): Promise<RecoverReport> {
  const store = new PairStore(req.stateDir);
  const pair = store.byId(pairId);
  if (!pair) throw new RefusedError(`the pair of ${req.target} was forgotten by another process`, { hint: 'run `dpsr status` to see the recorded pairs' });
  const files = pairFiles(store, pair);
  const pending = pair.pendingCopy;
  if (!pending) {
    return { pairId: pair.id, target: req.target, action: 'nothing-to-do', records: 0, bytesRestored: 0, generation: pair.drives[key]!.generation, message: `${req.target} is consistent: nothing to recover` };
  }
  if (pending.to !== key) throw new RefusedError(`the interrupted copy of pair ${pair.id} wrote to the other drive, not ${req.target}`, { hint: `recover ${pair.drives[pending.to]?.lastPath}` });
  if (!pending.journaled) {
    throw new RefusedError(`the interrupted copy onto ${req.target} was the first clone: there is no previous backup to roll back to`, { hint: 'run the same `dpsr clone` again to finish it' });
  }
  refuseInUse(loc);
  refuseHeldElsewhere(loc);
  // The rollback ends by removing the journal and recording the pair consistent: refused now if that cannot be written.
  requireWritableDir(req.stateDir);
  {
    // The sync map describes the half-done sync: after a rollback it would make a later sync skip chunks.
    const open = req.openDevice ?? defaultOpen;
    const openOptions = { direct: req.direct, imageSectorSize: req.imageSectorSize };
    // Rule 8 holds for a rollback too: the journal's byte positions belong to the geometry the pair was made with.
    const look = await open(loc, { write: false, ...openOptions });
    const facts = factsOf(loc, look);
    await look.close();
    const changed = geometryChange(store.pairs(), facts, 'recovery');
    if (changed) throw refusalError(changed);
    SyncMap.discard(files.syncMap);
    const target = await open(loc, { write: true, ...openOptions });
    let rolled: { records: number; bytes: number };
    try {
      if (target.identity.key !== key || target.size !== facts.sizeBytes || target.logicalSectorSize !== facts.logicalSectorSize) {
        throw new RefusedError(`${req.target} changed between checking it and opening it for writing (now ${formatExactBytes(target.size)} in ${target.logicalSectorSize}-byte sectors)`, { hint: 'nothing was written; run the recovery again' });
      }
      rolled = await rollBack(files.journal, target, (done, total) =>
        req.onProgress?.({ phase: 'recovering', bytesDone: done, bytesTotal: total, bytesWritten: done, rate: 0, etaSeconds: null, percent: (done / total) * 100 }),
      );
    } finally {
      await target.close();
    }
    // Rolled back and flushed: the journal has done its work. Removing it before the state update also frees
    // the space a full state directory needs for that update; a crash in between rolls back nothing the next time.
    removeJournal(files.journal);
    const after = store.update(
      pair.id,
      `recovery of ${req.target}`,
      (p) => {
        p.standbyState = 'consistent';
        p.pendingCopy = undefined;
        p.lastSync = {
          at: new Date().toISOString(),
          kind: 'recover',
          mode: 'rollback',
          result: 'done',
          from: files.journal,
          to: req.target,
          bytesWritten: rolled.bytes,
          seconds: 0,
          message: `rolled back ${rolled.records} journal records`,
        };
      },
      // A recovery is what a full state directory needs most: it may use the space kept in reserve.
      { reserve: req.stateDir },
    );
    ensureSpaceReserve(req.stateDir);
    const generation = after.drives[key]!.generation;
    return {
      pairId: pair.id,
      target: req.target,
      action: 'rolled-back',
      records: rolled.records,
      bytesRestored: rolled.bytes,
      generation,
      // A restore wrote the active drive: what comes back is its own content from before, not a backup.
      message: pending.kind === 'restore' ? `${req.target} holds again what it held before the restore (generation ${generation})` : `${req.target} is the previous backup again (generation ${generation})`,
    };
  }
}

export interface RoleSwapReport {
  readonly pairId: string;
  readonly active: string;
  readonly standby: string;
  readonly generation: number;
}

/**
 * A failover in the books: the standby becomes the active drive (with a new
 * generation, since the host now writes to it) and the old active drive
 * becomes the standby, so re-protecting is an ordinary sync. Refused when the
 * standby is not consistent.
 */
export function recordFailover(stateDir: string, pairId?: string): RoleSwapReport {
  const seen = new PairStore(stateDir);
  const id = pairId ?? (seen.pairs().length === 1 ? seen.pairs()[0]!.id : undefined);
  if (!id || !seen.byId(id)) {
    throw new BadInputError(pairId ? `no pair ${pairId} is recorded` : `${seen.pairs().length} pairs are recorded: name the one to fail over`, { hint: 'run `dpsr status` for the pair ids' });
  }
  // No copy of the pair may run while its roles swap: its lock is taken for the swap (never waited for).
  let lock: Lock;
  try {
    lock = takePairLockNow(stateDir, id, `failover of pair ${id}`);
  } catch (e) {
    const pair = seen.byId(id)!;
    throw new RefusedError(`a copy on pair ${id} is running: failing over to ${pair.drives[pair.standbyKey]?.lastPath} now would boot a half-written copy`, {
      hint: 'wait for the copy to finish, or cancel it and then `dpsr recover`',
      cause: e,
    });
  }
  try {
    return seen.transact(`failover of pair ${id}`, (tx) => {
      const pair = tx.byId(id);
      if (!pair) throw new BadInputError(`no pair ${id} is recorded`, { hint: 'run `dpsr status` for the pair ids' });
      const state = stateUnderLock(pair);
      if (state !== 'consistent') {
        throw new RefusedError(`the standby ${pair.drives[pair.standbyKey]?.lastPath} is ${state}: failing over to it would boot a half-written copy`, {
          hint:
            pair.pendingCopy?.kind === 'clone'
              ? `its first clone was interrupted and there is no backup yet: run the same \`dpsr clone\` again to finish it`
              : `run \`dpsr recover ${pair.drives[pair.standbyKey]?.lastPath}\` first (or finish its sync by running it again)`,
        });
      }
      const oldActive = pair.activeKey;
      pair.activeKey = pair.standbyKey;
      pair.standbyKey = oldActive;
      // An interrupted restore was writing the old active drive: as the standby now it is half-written, not a backup.
      if (pair.pendingCopy?.to === pair.standbyKey) pair.standbyState = 'inconsistent';
      const generation = recordBecameActive(pair, pair.activeKey, tx.pairs());
      // Rotation: the old active drive's other standbys now protect the new one.
      moveStandbysToNewActive(pair, oldActive, [...tx.pairs()]);
      return { pairId: pair.id, active: pair.drives[pair.activeKey]!.lastPath, standby: pair.drives[pair.standbyKey]!.lastPath, generation };
    });
  } finally {
    lock.release();
  }
}
