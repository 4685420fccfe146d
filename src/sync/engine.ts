/**
 * The copy engine: walks byte ranges of a source and a target in large
 * aligned chunks with a few requests in flight, and per chunk copies it
 * (clone), writes only the sub-blocks that differ (compare), writes what the
 * manifest says changed (manifest), or reports what differs (verify).
 *
 * Every overwrite of the target goes through the undo journal first when one
 * is given, and finished chunks go into the sync map when one is given.
 */
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';
import { CancelledError, DeviceError } from '../errors.ts';
import { appendRange, chunksOf, normalizeRanges, subtractRanges, totalBytes, type ByteRange, type Chunk } from './ranges.ts';
import { differingRuns } from './diff.ts';
import { readRescued } from './rescue.ts';
import { ProgressTracker, type Phase, type ProgressListener } from './progress.ts';
import type { UndoJournal } from './undo-journal.ts';
import type { SyncMap } from './sync-map.ts';
import { hashBlocks, type Manifest } from './manifest.ts';
import { BlockHasher } from './hash.ts';

export type CopyMode = 'clone' | 'compare' | 'manifest' | 'verify';

export const DEFAULT_CHUNK = 4 * 1024 * 1024;

/**
 * How a chunk is walked. A chunk that an interrupted run of the same copy
 * finished (the sync map has it) is compared again, whatever the mode: either
 * drive may have been written since (the host booted the active drive, a
 * tool wrote to the standby), and only reading both sides tells. A hash of
 * the chunk kept in the sync map would not spare that read: it says what the
 * chunk held, not whether either drive still holds it. Skipping such a chunk
 * would leave old and new source content side by side on a standby then
 * recorded as consistent.
 */
export function chunkMode(mode: CopyMode, finishedBefore: boolean): CopyMode {
  if (mode === 'verify' || !finishedBefore) return mode;
  return 'compare';
}

export interface EngineOptions {
  readonly mode: CopyMode;
  readonly source: BlockDevice;
  /** Opened for writing unless the mode is verify. */
  readonly target: BlockDevice;
  readonly ranges: readonly ByteRange[];
  readonly chunkSize?: number;
  /** Smallest piece compared and written (≥ the logical sector size). */
  readonly subBlock?: number;
  /** Chunks worked on at once; two keeps a drive busy without thrashing two cores. */
  readonly inFlight?: number;
  /** Extra tries of a single unreadable sector. */
  readonly retries?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
  readonly journal?: UndoJournal;
  readonly syncMap?: SyncMap;
  /** How often the sync map is checkpointed (target flushed, map written). */
  readonly checkpointMs?: number;
  /** Kept up to date by clone and compare; consulted in manifest mode. */
  readonly manifest?: Manifest;
  /** Journaled writes are batched up to this many bytes (old and new data) per fsync of the journal. */
  readonly batchBytes?: number;
  /**
   * Journaled compare: each chunk is read straight into the batch's memory
   * and its differing runs stay staged where they were read, instead of being
   * copied out of a reused slot. For changed blocks, which differ almost
   * whole: no copy of every byte twice, and no memory beyond the batch's.
   */
  readonly stageInPlace?: boolean;
  /** Verify lists at most this many differing ranges (they are all counted). */
  readonly maxListedDifferences?: number;
  /** Called after each chunk's writes, for tests that kill at chosen moments. */
  readonly onChunkDone?: (chunk: Chunk) => void;
}

export interface EngineResult {
  readonly mode: CopyMode;
  readonly bytesTotal: number;
  /** Bytes of chunks the sync map had done that were compared again and found as the interrupted run left them. */
  readonly bytesResumed: number;
  /** Chunks the sync map had done that differed when compared again (either drive was written since) and were copied again. */
  readonly resumedChunksChanged: number;
  readonly bytesWritten: number;
  /** Verify: differing ranges (merged, at most maxListedDifferences). */
  readonly differences: ByteRange[];
  readonly differenceCount: number;
  readonly differingBytes: number;
  /** Source ranges that could not be read; the target kept its data there. */
  readonly unreadable: ByteRange[];
  readonly seconds: number;
}

interface Slot {
  readonly src: Buffer;
  readonly tgt: Buffer;
  /** Staged in place: the batch whose memory the slot is (stageInPlace). */
  readonly batch?: Batch;
}

/** A batch's new data, page-aligned (O_DIRECT writes), and its old data (page-aligned too when read in place with O_DIRECT). */
type Arena = { data: Buffer; old: Buffer };
/**
 * Journaled writes waiting for one fsync of the journal. `holds`: chunks
 * being read into its arena (in place), which it waits for before it is
 * written; `released` wakes it.
 */
type Batch = { chunks: Chunk[]; runs: { position: number; old: Buffer; data: Buffer }[]; bytes: number; arena?: Arena; arenaUsed: number; holds: number; released?: () => void };
const newBatch = (): Batch => ({ chunks: [], runs: [], bytes: 0, arenaUsed: 0, holds: 0 });

export async function runEngine(options: EngineOptions): Promise<EngineResult> {
  const { mode, source, target } = options;
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
  const sector = source.logicalSectorSize;
  const subBlock = Math.max(options.subBlock ?? 4096, sector);
  if (chunkSize % subBlock !== 0) throw new RangeError(`chunk size ${chunkSize} is not a multiple of the sub-block ${subBlock}`);
  const inFlight = Math.max(1, options.inFlight ?? 2);
  const retries = options.retries ?? 2;
  const ranges = normalizeRanges(options.ranges);
  for (const r of ranges) {
    if (r.start % sector !== 0 || r.length % sector !== 0) throw new RangeError(`range ${r.start}+${r.length} is not sector-aligned`);
  }
  const chunks = chunksOf(ranges, chunkSize);
  const bytesTotal = totalBytes(ranges);
  /*
   * Page-aligned memory is taken once per walk and sized to what the walk
   * needs: a WebAssembly.Memory per buffer costs an address-space reservation
   * and, being external memory, garbage collections; on a changed-block sync
   * of many 64 KiB chunks, fresh 4 MiB buffers were most of its CPU time.
   */
  const slotSize = Math.max(PAGE, roundUp(chunks.reduce((m, c) => Math.max(m, c.length), 0), PAGE));
  const phase: Phase = mode === 'clone' ? 'copying' : mode === 'verify' ? 'verifying' : mode === 'manifest' ? 'hashing' : 'comparing';
  const progress = new ProgressTracker(phase, bytesTotal, options.onProgress);
  const started = performance.now();
  const manifest = options.manifest;
  const hasher = new BlockHasher();

  let bytesResumed = 0;
  let resumedChunksChanged = 0;
  let bytesWritten = 0;
  let differenceCount = 0;
  let differingBytes = 0;
  const maxListed = options.maxListedDifferences ?? 10_000;
  const differences: { start: number; length: number }[] = [];
  const unreadable: { start: number; length: number }[] = [];
  let nextChunk = 0;
  let failure: unknown;
  let lastCheckpoint = performance.now();
  let checkpointing: Promise<void> | null = null;
  const checkpointMs = options.checkpointMs ?? 2000;

  const noteDifference = (start: number, length: number) => {
    differingBytes += length;
    const last = differences[differences.length - 1];
    if (last && last.start + last.length === start) {
      last.length += length;
      return;
    }
    differenceCount++;
    if (differences.length < maxListed) differences.push({ start, length });
  };

  const checkpoint = async () => {
    const map = options.syncMap;
    if (!map) return;
    // Staged chunks count only once written: write them now, or a slow sync would checkpoint nothing.
    // A batch another worker is writing counts too: without waiting for it, the map would hold later
    // unchanged chunks but not the earlier ones in that batch, and a resume would copy those again.
    if (options.journal) await Promise.all([flushBatch(), ...flushing]);
    const bits = map.snapshot();
    await target.flush();
    map.save(bits);
  };

  const writeFailed = (position: number, e: unknown) =>
    new DeviceError(`writing the standby ${target.path} failed at byte ${position}: ${(e as Error).message}`, {
      hint: options.journal ? 'the standby is marked inconsistent; `dpsr recover` rolls it back to the previous backup' : 'the standby is incomplete; replace or check the drive and run the copy again',
      cause: e,
    });

  const writeNow = async (position: number, data: Uint8Array) => {
    try {
      await target.write(data, position, data.byteLength);
    } catch (e) {
      throw writeFailed(position, e);
    }
  };

  /*
   * Journaled writes go through a batch: the old data of many chunks is
   * appended and made durable with one fsync, then their new data is written.
   * An fsync per chunk would cost more than the reads on a routine sync.
   */
  let batch = newBatch();
  const inPlace = !!options.stageInPlace && !!options.journal;
  const batchLimit = options.batchBytes ?? 16 * 1024 * 1024;
  /*
   * A batch's new data is staged in one page-aligned arena, each run at a
   * sector boundary of it (with O_DIRECT the drive refuses a write from an
   * ordinary Buffer: EINVAL), and its old data in a plain one beside it.
   * Never more than the walk stages at all; the arenas of a written batch are
   * used again. A fresh buffer per run would be external memory the garbage
   * collector chases: on a changed-block sync of scattered 64 KiB granules
   * that was a third of the CPU time.
   */
  const arenaSize = roundUp(Math.min(batchLimit / 2, bytesTotal), PAGE) + 2 * slotSize;
  const spareArenas: Arena[] = [];
  const arenaOf = (b: Batch): Arena => (b.arena ??= spareArenas.pop() ?? { data: allocAligned(arenaSize), old: inPlace ? allocAligned(arenaSize) : Buffer.allocUnsafeSlow(arenaSize) });
  const stage = (data: Uint8Array, old: Uint8Array): { data: Buffer; old: Buffer } => {
    const aligned = Math.ceil(data.byteLength / target.logicalSectorSize) * target.logicalSectorSize;
    arenaOf(batch);
    // Workers staging side by side may overrun it: such a run gets buffers of its own.
    if (batch.arenaUsed + aligned > arenaSize) {
      const own = allocAligned(aligned).subarray(0, data.byteLength);
      own.set(data);
      return { data: own, old: Buffer.from(old) };
    }
    const at = batch.arenaUsed;
    batch.arenaUsed += aligned;
    const staged = { data: batch.arena!.data.subarray(at, at + data.byteLength), old: batch.arena!.old.subarray(at, at + old.byteLength) };
    staged.data.set(data);
    staged.old.set(old);
    return staged;
  };

  const flushing = new Set<Promise<void>>();
  const flushBatch = (): Promise<void> => {
    const p = writeBatch();
    flushing.add(p);
    const forget = () => void flushing.delete(p);
    p.then(forget, forget);
    return p;
  };
  const writeBatch = async () => {
    const mine = batch;
    batch = newBatch();
    // Chunks still being read into its memory belong to it: their runs join it before it is written.
    if (mine.holds > 0) await new Promise<void>((resolve) => (mine.released = resolve));
    if (mine.chunks.length === 0) {
      if (mine.arena) spareArenas.push(mine.arena);
      return;
    }
    const journal = options.journal!;
    await journal.appendMany(mine.runs.map((r) => ({ position: r.position, data: r.old })));
    await journal.commit();
    // Disjoint ranges, so the writes may run side by side; a few at a time keep the queue full.
    let next = 0;
    let written = 0;
    const writer = async () => {
      for (let run = mine.runs[next++]; run; run = mine.runs[next++]) {
        await writeNow(run.position, run.data);
        written += run.data.byteLength;
      }
    };
    await Promise.all(Array.from({ length: 4 }, writer));
    if (mine.arena) spareArenas.push(mine.arena);
    bytesWritten += written;
    for (const c of mine.chunks) options.syncMap?.markDone(c.index);
    progress.advance(0, written);
  };

  /**
   * In place: room for a chunk of `length` bytes in the current batch's
   * arena (a full batch is written first), held until `release`. Page-aligned
   * offsets, so O_DIRECT reads go straight there.
   */
  const reserve = async (length: number): Promise<Slot> => {
    const need = roundUp(length, PAGE);
    while (batch.arenaUsed + need > arenaSize) await flushBatch();
    const into = batch;
    const arena = arenaOf(into);
    const at = into.arenaUsed;
    into.arenaUsed += need;
    into.holds++;
    return { src: arena.data.subarray(at, at + length), tgt: arena.old.subarray(at, at + length), batch: into };
  };
  const release = (slot: Slot) => {
    const b = slot.batch!;
    if (--b.holds === 0) b.released?.();
  };

  /** Writes (or, with a journal, stages) the runs of a chunk. Returns bytes written now, or null when staged. */
  const writeRuns = async (chunk: Chunk, slot: Slot, runs: ByteRange[], haveOld: boolean): Promise<number | null> => {
    if (!options.journal) {
      let written = 0;
      for (const run of runs) {
        await writeNow(chunk.start + run.start, slot.src.subarray(run.start, run.start + run.length));
        written += run.length;
      }
      return written;
    }
    if (runs.length === 0) return 0;
    const into = slot.batch;
    if (into) {
      // Read in place: the runs are staged where they lie. Its batch waits for the chunk, so no write of it starts here.
      for (const run of runs) {
        if (!haveOld) await readTarget(target, slot.tgt.subarray(run.start, run.start + run.length), chunk.start + run.start, run.length);
        into.runs.push({ position: chunk.start + run.start, data: slot.src.subarray(run.start, run.start + run.length), old: slot.tgt.subarray(run.start, run.start + run.length) });
        into.bytes += run.length * 2;
      }
      into.chunks.push(chunk);
      return null;
    }
    // A chunk's runs fit in what the arena keeps beyond the batch limit (two chunks); a fuller batch is written first.
    if (batch.arenaUsed + slotSize > arenaSize) await flushBatch();
    for (const run of runs) {
      if (!haveOld) await readTarget(target, slot.tgt.subarray(run.start, run.start + run.length), chunk.start + run.start, run.length);
      // Copies: the slot's buffers are reused for the next chunk before the batch is written.
      batch.runs.push({ position: chunk.start + run.start, ...stage(slot.src.subarray(run.start, run.start + run.length), slot.tgt.subarray(run.start, run.start + run.length)) });
      batch.bytes += run.length * 2;
    }
    batch.chunks.push(chunk);
    if (batch.bytes >= batchLimit) await flushBatch();
    return null;
  };

  /** Manifest blocks that lie wholly inside the chunk: their index range. */
  const blockSpan = (chunk: Chunk) => {
    const bs = manifest!.blockSize;
    const first = Math.ceil(chunk.start / bs);
    const end = Math.floor((chunk.start + chunk.length) / bs);
    return { first, count: Math.max(0, end - first), offset: first * bs - chunk.start };
  };

  const recordHashes = async (chunk: Chunk, slot: Slot, bad: ByteRange[], known?: BigUint64Array) => {
    if (!manifest || mode === 'verify') return;
    const span = blockSpan(chunk);
    const bs = manifest.blockSize;
    // A block the chunk covers only in part was written in part: what it holds now is unknown to the table.
    const head = Math.floor(chunk.start / bs);
    const tail = Math.floor((chunk.start + chunk.length - 1) / bs);
    if (span.offset > 0) await manifest.writeHashes(head, new BigUint64Array(1));
    if ((chunk.start + chunk.length) % bs !== 0 && (tail !== head || span.offset === 0)) await manifest.writeHashes(tail, new BigUint64Array(1));
    if (span.count === 0) return;
    const hashes = known ?? hashBlocks(hasher, slot.src.subarray(span.offset), span.count * bs, bs);
    // Where the source was unreadable the standby kept other bytes: their hash is unknown.
    for (const b of bad) {
      const lo = Math.floor((b.start - chunk.start - span.offset) / bs);
      const hi = Math.floor((b.start + b.length - 1 - chunk.start - span.offset) / bs);
      for (let i = Math.max(0, lo); i <= Math.min(span.count - 1, hi); i++) hashes[i] = 0n;
    }
    await manifest.writeHashes(span.first, hashes);
  };

  const processChunk = async (chunk: Chunk, slot: Slot, mode: CopyMode) => {
    const len = chunk.length;
    const needTarget = mode === 'compare' || mode === 'verify';
    const [rescue] = await Promise.all([
      readRescued(source, slot.src, chunk.start, len, retries),
      needTarget ? readTarget(target, slot.tgt, chunk.start, len) : Promise.resolve(),
    ]);
    const bad = rescue.unreadable.map((r) => ({ start: r.start - chunk.start, length: r.length }));
    unreadable.push(...rescue.unreadable);
    let written: number | null = 0;
    let sourceHashes: BigUint64Array | undefined;
    switch (mode) {
      case 'clone':
        written = await writeRuns(chunk, slot, subtractRanges([{ start: 0, length: len }], bad), false);
        break;
      case 'compare':
        written = await writeRuns(chunk, slot, subtractRanges(differingRuns(slot.src, slot.tgt, len, subBlock), bad), true);
        break;
      case 'verify':
        for (const run of subtractRanges(differingRuns(slot.src, slot.tgt, len, subBlock), bad)) noteDifference(chunk.start + run.start, run.length);
        break;
      case 'manifest': {
        // Only blocks whose hash changed are read from the standby, then compared exactly.
        const span = blockSpan(chunk);
        const bs = manifest!.blockSize;
        const fresh = hashBlocks(hasher, slot.src.subarray(span.offset), span.count * bs, bs);
        sourceHashes = fresh;
        const stored = await manifest!.readHashes(span.first, span.count);
        const suspects: { start: number; length: number }[] = [];
        const pushSuspect = (start: number, length: number) => appendRange(suspects, start, length);
        if (span.offset > 0) pushSuspect(0, span.offset);
        for (let i = 0; i < span.count; i++) if (fresh[i] !== stored[i]) pushSuspect(span.offset + i * bs, bs);
        const tail = span.offset + span.count * bs;
        if (tail < len) pushSuspect(tail, len - tail);
        // The suspects are read all at once: a routine sync has many small ones and waiting on each in turn costs more than reading.
        await Promise.all(suspects.map((s) => readTarget(target, slot.tgt.subarray(s.start, s.start + s.length), chunk.start + s.start, s.length)));
        const runs: ByteRange[] = [];
        for (const s of suspects) {
          for (const r of differingRuns(slot.src.subarray(s.start), slot.tgt.subarray(s.start), s.length, subBlock)) runs.push({ start: s.start + r.start, length: r.length });
        }
        written = await writeRuns(chunk, slot, subtractRanges(runs, bad), true);
        break;
      }
    }
    await recordHashes(chunk, slot, bad, sourceHashes);
    return written;
  };

  const walkChunk = async (chunk: Chunk, slot: Slot) => {
    const len = chunk.length;
    const finishedBefore = options.syncMap?.isDone(chunk.index) ?? false;
    const written = await processChunk(chunk, slot, chunkMode(mode, finishedBefore));
    if (finishedBefore) {
      // Nothing to write (and nothing staged): the chunk was still as the interrupted run left it.
      if (written === 0) bytesResumed += len;
      else resumedChunksChanged++;
    }
    if (written === null) {
      // Staged in the batch: done once the batch is written.
      progress.advance(len, 0);
    } else {
      bytesWritten += written;
      options.syncMap?.markDone(chunk.index);
      progress.advance(len, written);
    }
    options.onChunkDone?.(chunk);
  };

  // In place, chunks are read into the batches' memory: no slots.
  const slotMemory = inPlace ? undefined : allocAligned(2 * inFlight * slotSize);
  let slotsTaken = 0;
  const worker = async () => {
    const k = 2 * slotsTaken++;
    const own: Slot | undefined = slotMemory && { src: slotMemory.subarray(k * slotSize, (k + 1) * slotSize), tgt: slotMemory.subarray((k + 1) * slotSize, (k + 2) * slotSize) };
    while (failure === undefined) {
      if (options.signal?.aborted) {
        failure ??= new CancelledError('cancelled');
        return;
      }
      const chunk = chunks[nextChunk++];
      if (!chunk) return;
      let slot = own;
      try {
        slot ??= await reserve(chunk.length);
        await walkChunk(chunk, slot);
      } catch (e) {
        failure ??= e;
        return;
      } finally {
        // Held to the chunk's end: its manifest hashes are read from the slot too.
        if (slot?.batch) release(slot);
      }
      if (options.syncMap && !checkpointing && performance.now() - lastCheckpoint > checkpointMs) {
        lastCheckpoint = performance.now();
        // A failing flush (the standby was pulled) stops the walk like any other error.
        checkpointing = checkpoint()
          .catch((e: unknown) => {
            failure ??= e;
          })
          .finally(() => {
            checkpointing = null;
          });
      }
    }
  };

  if (manifest && mode !== 'verify') await manifest.markDirty();
  await Promise.all(Array.from({ length: inFlight }, worker));
  // The manifest's table goes to disk while the last batch and the target's flush do (the copy's seal waits for it).
  if (manifest && mode !== 'verify' && failure === undefined) manifest.flushTable().catch(() => undefined);
  // What is staged was compared in full; on failure or cancel it is written too, so no compared work is lost.
  if (options.journal) {
    try {
      await flushBatch();
    } catch (e) {
      failure ??= e;
    }
  }
  if (checkpointing) await checkpointing;
  if (failure !== undefined) {
    // Save what is finished so the same sync resumes from here; a failing flush must not hide the first error.
    if (options.syncMap && mode !== 'verify') await checkpoint().catch(() => undefined);
    throw failure;
  }
  if (mode !== 'verify') {
    progress.setPhase('flushing');
    await target.flush();
  }
  progress.setPhase('done');
  // Two workers finish chunks out of order: sort, and join runs that meet at a chunk boundary.
  const merged = normalizeRanges(differences);
  if (differences.length < maxListed) differenceCount = merged.length;
  return {
    mode,
    bytesTotal,
    bytesResumed,
    resumedChunksChanged,
    bytesWritten,
    differences: merged,
    differenceCount,
    differingBytes,
    unreadable: normalizeRanges(unreadable),
    seconds: (performance.now() - started) / 1000,
  };
}

/** Page size: O_DIRECT buffers and their slices start on one. */
const PAGE = 4096;
const roundUp = (n: number, to: number) => Math.ceil(n / to) * to;

async function readTarget(target: BlockDevice, buf: Buffer, position: number, length: number): Promise<void> {
  try {
    await target.read(buf, position, length);
  } catch (e) {
    throw new DeviceError(`reading the standby ${target.path} failed at byte ${position}: ${(e as Error).message}`, {
      hint: 'the standby drive may be failing: check its health (`dpsr drives`, SMART) before trusting it',
      cause: e,
    });
  }
}
