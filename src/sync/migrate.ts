/**
 * `dpsr migrate`: one partition copied to another drive at a chosen place,
 * with an entry for it created in the target's table. The white paper's RAID
 * case: the boot partition moved off a large disk onto a small system drive,
 * which then becomes the active drive of a new pair.
 *
 * Like every copy it decides before writing (the place, the entry and every
 * refusal come from both layouts read read-only), holds a lock on the target
 * drive, and journals every overwrite: the migration is recorded in the
 * state directory before its first write, and after a crash `dpsr recover
 * <target>` rolls the target back byte-exact (running the same migration
 * again starts it over).
 */
import { join } from 'node:path';
import { mkdirSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { locateDrive, openLocated, sameStorage, DeviceWrapper, driveKeyOf, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../sata-bridge/index.ts';
import { readLayout, planPartitionMove, writePartitionEntry, formatExactBytes, type PartitionMovePlan } from '../disk-layout/index.ts';
import { BadInputError, BusyError, DeviceError, RefusedError, isDpsrError } from '../errors.ts';
import { readJsonChecked, writeJsonDurably } from '../durable-file.ts';
import { runEngine, DEFAULT_CHUNK } from './engine.ts';
import { UndoJournal, rollBack, removeJournal } from './undo-journal.ts';
import { JournaledDevice } from './journaled-device.ts';
import { acquireDriveLock, acquireDriveReadLock, pairLockHeld } from './pair-lock.ts';
import { defaultJournalBudget, refuseHeldElsewhere, refuseInUse } from './target-use.ts';
import { PairStore } from './pair-state.ts';
import { refuseGeometryChange, type CommonRequest } from './operations.ts';

export interface MigrateRequest extends CommonRequest {
  readonly source: string;
  /** The partition's number on the source. */
  readonly partition: number;
  readonly target: string;
  /** Byte offset on the target (a multiple of 1 MiB); undefined for the first free aligned gap that fits. */
  readonly at?: number;
  /** Undo journal size limit in bytes (default half the free space of the state directory). */
  readonly journalBudget?: number;
}

export interface MigrateReport {
  readonly source: string;
  readonly target: string;
  readonly partition: number;
  /** Its number on the target. */
  readonly newPartition: number;
  readonly scheme: 'gpt' | 'mbr';
  /** Bytes: where it starts on the target, and its length. */
  readonly targetStart: number;
  readonly length: number;
  /** GPT: the new unique partition GUID. */
  readonly uniqueGuid?: string;
  readonly bytesWritten: number;
  readonly seconds: number;
  readonly notes: string[];
}

/** What the state directory keeps of a migration until it is done or rolled back. */
interface MigrationRecord {
  readonly targetKey: string;
  readonly target: string;
  readonly source: string;
  readonly partition: number;
  readonly plan: PartitionMovePlan;
  readonly startedAt: string;
  /** The target's geometry when the journal was written (absent in records of earlier versions): its byte positions hold for it only. */
  readonly targetSize?: number;
  readonly sectorSize?: number;
}

/** The folder of the migrations onto one drive: its journal and record. */
function migrationDir(stateDir: string, targetKey: string): string {
  return join(stateDir, 'migrations', createHash('sha256').update(targetKey).digest('hex').slice(0, 12));
}

/** A source view shifted so that target offset `targetStart` reads source offset `sourceStart`: the engine copies ranges to the same offsets. */
class ShiftedSource extends DeviceWrapper {
  constructor(
    inner: BlockDevice,
    private readonly delta: number,
    private readonly viewSize: number,
  ) {
    super(inner);
  }
  override get size(): number {
    return this.viewSize;
  }
  override read(buf: Uint8Array, position: number, length?: number): Promise<void> {
    return this.inner.read(buf, position - this.delta, length);
  }
  override write(): Promise<void> {
    return Promise.reject(new RefusedError('the source of a migration is read only'));
  }
}

/**
 * Copies partition `partition` of `source` onto `target` and adds its entry
 * to the target's table. Throws BadInputError (exit 2) for a partition that
 * is not there or an offset that is not aligned, RefusedError (exit 3) for
 * the same drive, a target that is in use, the standby of a pair, has an
 * interrupted migration, or where the partition does not fit or would
 * overlap; all of them before anything is opened for writing.
 */
export async function migrate(req: MigrateRequest): Promise<MigrateReport> {
  if (!Number.isInteger(req.partition) || req.partition < 1) throw new BadInputError(`partition number ${String(req.partition)} is not valid`, { hint: 'partitions are numbered from 1, as `dpsr inspect` lists them' });
  const sourceLoc = locateDrive(req.source);
  const targetLoc = locateDrive(req.target);
  if (sameStorage(sourceLoc, targetLoc)) throw new RefusedError(`the target ${req.target} is the source ${req.source}`, { hint: 'migrate moves a partition to another drive; name two different drives' });
  refuseInUse(targetLoc);
  const targetKey = driveKeyOf(targetLoc, req.imageSectorSize);
  const dir = migrationDir(req.stateDir, targetKey);
  const files = { journal: join(dir, 'undo.journal'), record: join(dir, 'migration.json') };
  // What the state directory says of the target: looked at now, and again once the target's lock is held, since
  // another migration or copy may have started (and died, leaving its way back) in between.
  const refuseTargetState = () => {
    const pairs = new PairStore(req.stateDir, { create: false }).pairs();
    const halfWritten = pairs.find((p) => p.pendingCopy?.to === targetKey);
    if (halfWritten) throw new RefusedError(`${req.target} is half-written by an interrupted ${halfWritten.pendingCopy!.kind} of pair ${halfWritten.id}`, { hint: `finish it by running it again, or \`dpsr recover ${req.target}\`, then migrate` });
    const paired = pairs.find((p) => p.standbyKey === targetKey);
    // A copy reading the target as its active drive would see it change under it.
    const reading = pairs.find((p) => p.activeKey === targetKey && pairLockHeld(req.stateDir, p.id));
    if (reading) throw new BusyError(`a copy of pair ${reading.id} is reading ${req.target} (its active drive) right now`, { hint: 'wait for it to finish, then migrate' });
    if (paired) {
      throw new RefusedError(`the target ${req.target} is the standby of pair ${paired.id}: a standby is written only by syncs of its active drive`, { hint: `migrate onto the active drive ${paired.drives[paired.activeKey]?.lastPath} (the next sync carries the partition to the standby), or \`dpsr forget ${paired.id}\` first` });
    }
    const pending = readJsonChecked<MigrationRecord>(files.record);
    if (pending) {
      throw new RefusedError(`a migration of partition ${pending.partition} of ${pending.source} onto ${req.target}, started ${pending.startedAt}, was interrupted`, { hint: `\`dpsr recover ${req.target}\` rolls ${req.target} back to what it held before; then migrate again` });
    }
  };
  refuseTargetState();

  const open = req.openDevice ?? ((loc: DriveLocation, o: OpenDriveOptions) => openLocated(loc, o));
  const openOptions = { direct: req.direct, imageSectorSize: req.imageSectorSize };
  const notes: string[] = [];
  const source = await open(sourceLoc, { write: false, ...openOptions });
  let target: BlockDevice | undefined;
  let lock: { release(): void } | undefined;
  try {
    let plan: PartitionMovePlan;
    {
      const look = await open(targetLoc, { write: false, ...openOptions });
      try {
        // Rule 8: a pair's drive (the active drive as a target, or a source) whose geometry changed since pairing is refused.
        refuseGeometryChange(req.stateDir, targetLoc, look);
        refuseGeometryChange(req.stateDir, sourceLoc, source);
        const [sourceLayout, targetLayout] = await Promise.all([readLayout(source, { sniff: false }), readLayout(look, { sniff: false })]);
        const decided = planPartitionMove({ source: sourceLayout, partition: req.partition, target: targetLayout, at: req.at, sourcePath: req.source, targetPath: req.target });
        if (decided.refusal) {
          const Class = decided.refusal.error === 'bad-input' ? BadInputError : RefusedError;
          throw new Class(decided.refusal.reason, { hint: `${decided.refusal.hint}. Nothing was written` });
        }
        plan = decided.plan!;
      } finally {
        await look.close();
      }
    }
    const what = `migration onto ${req.target}`;
    const writeLock = await acquireDriveLock(targetLoc, what);
    // The partition is read from start to end: nobody may write the source meanwhile.
    const readLock = await acquireDriveReadLock(sourceLoc, what).catch((e: unknown) => {
      writeLock.release();
      throw e;
    });
    lock = {
      release() {
        readLock.release();
        writeLock.release();
      },
    };
    refuseTargetState();
    refuseHeldElsewhere(targetLoc);
    target = await open(targetLoc, { write: true, ...openOptions });
    if (target.identity.key !== targetKey) throw new RefusedError(`the target ${req.target} changed while the migration was planned`, { hint: 'nothing was written; run it again' });

    // Recorded before the first write: a crash from here on is rolled back by `dpsr recover`.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    removeJournal(files.journal);
    writeJsonDurably(files.record, { targetKey, target: req.target, source: req.source, partition: req.partition, plan, startedAt: new Date().toISOString(), targetSize: target.size, sectorSize: target.logicalSectorSize } satisfies MigrationRecord);
    const budget = req.journalBudget ?? defaultJournalBudget(req.stateDir);
    const journal = await UndoJournal.openForAppend(files.journal, budget, { copy: 'migration', drive: 'the target' });
    let result;
    try {
      result = await runEngine({
        mode: 'compare',
        source: new ShiftedSource(source, plan.targetStart - plan.sourceStart, target.size),
        target,
        ranges: [{ start: plan.targetStart, length: plan.length }],
        chunkSize: req.chunkSize ?? DEFAULT_CHUNK,
        retries: req.retries,
        signal: req.signal,
        onProgress: req.onProgress,
        journal,
        onChunkDone: req.onChunkDone,
        batchBytes: req.batchBytes,
      });
      // Not a refusal: the rest of the partition is written already (the hint below adds the way back).
      if (result.unreadable.length) throw new DeviceError(`${result.unreadable.length} range(s) of partition ${req.partition} on ${req.source} could not be read`, { fault: 'media', hint: 'the partition is not entered into the target\'s table; copy its files off the failing source instead' });
      await writePartitionEntry(new JournaledDevice(target, journal), plan.entry);
      await target.flush();
      await journal.close();
    } catch (e) {
      await journal.close().catch(() => undefined);
      const how = `${req.target} may be half-written: \`dpsr recover ${req.target}\` rolls it back to what it held before the migration`;
      if (isDpsrError(e)) (e as { hint?: string }).hint = e.hint ? `${e.hint}; ${how}` : how;
      throw e;
    }
    // Done and flushed: the journal has no more work.
    removeJournal(files.journal);
    rmSync(files.record, { force: true });
    rmSync(`${files.record}.bak`, { force: true });
    const entry = plan.entry;
    if (entry.scheme === 'gpt') notes.push(`partition ${entry.slot} on ${req.target} has the new unique GUID ${entry.uniqueGuid}: an fstab or boot entry naming the old PARTUUID must be updated`);
    return {
      source: req.source,
      target: req.target,
      partition: req.partition,
      newPartition: entry.slot,
      scheme: entry.scheme,
      targetStart: plan.targetStart,
      length: plan.length,
      ...(entry.scheme === 'gpt' ? { uniqueGuid: entry.uniqueGuid } : {}),
      bytesWritten: result.bytesWritten,
      seconds: result.seconds,
      notes,
    };
  } finally {
    await Promise.allSettled([source.close(), target?.close()]);
    lock?.release();
  }
}

/** What recover does with a drive that has an interrupted migration: rolled back, or undefined when it has none. */
export async function recoverMigration(req: CommonRequest & { target: string }, loc: DriveLocation, key: string): Promise<{ records: number; bytes: number; message: string } | undefined> {
  const dir = migrationDir(req.stateDir, key);
  const files = { journal: join(dir, 'undo.journal'), record: join(dir, 'migration.json') };
  const pending = readJsonChecked<MigrationRecord>(files.record);
  if (!pending) return undefined;
  refuseInUse(loc);
  const lock = await acquireDriveLock(loc, `recovery of ${req.target}`);
  try {
    refuseHeldElsewhere(loc);
    const open = req.openDevice ?? ((l: DriveLocation, o: OpenDriveOptions) => openLocated(l, o));
    // Rule 8 for the rollback, checked before the drive is opened for writing: the journal's byte positions belong to the geometry the migration wrote.
    const look = await open(loc, { write: false, direct: req.direct, imageSectorSize: req.imageSectorSize });
    const [size, sector] = [look.size, look.logicalSectorSize];
    await look.close();
    if ((pending.targetSize !== undefined && size !== pending.targetSize) || (pending.sectorSize !== undefined && sector !== pending.sectorSize)) {
      throw new RefusedError(`${req.target} shows ${formatExactBytes(size)} in ${sector}-byte sectors, but the interrupted migration wrote it as ${formatExactBytes(pending.targetSize ?? size)} in ${pending.sectorSize ?? sector}-byte sectors: its undo journal does not fit the drive as it is now`, {
        hint: 'make the drive show the geometry it had (the same bridge or enclosure, the image at its old length), then recover again; nothing was written',
      });
    }
    const target = await open(loc, { write: true, direct: req.direct, imageSectorSize: req.imageSectorSize });
    let rolled;
    try {
      if (target.identity.key !== key || target.size !== size || target.logicalSectorSize !== sector) throw new RefusedError(`${req.target} changed while opening`, { hint: 'nothing was written; recover again' });
      rolled = await rollBack(files.journal, target);
    } finally {
      await target.close();
    }
    removeJournal(files.journal);
    rmSync(files.record, { force: true });
    rmSync(`${files.record}.bak`, { force: true });
    return { ...rolled, message: `${req.target} holds again what it held before the migration of partition ${pending.partition} of ${pending.source} (${formatExactBytes(rolled.bytes)} rolled back)` };
  } finally {
    lock.release();
  }
}
