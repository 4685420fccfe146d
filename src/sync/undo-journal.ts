/**
 * The undo journal: before a sync overwrites a standby block, the block's old
 * content is appended here and made durable (write-ahead). Rolling back
 * applies the records newest first, so the oldest copy of a block, the one
 * the previous backup held, is what stays.
 *
 * Record: magic u32 | length u32 | position u64 | checksum u64 | data.
 * The checksum (xxh3 over position, length and data) finds a torn tail,
 * which was never made durable, so its overwrite never happened.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { statSync, unlinkSync } from 'node:fs';
import { DeviceError, NoSpaceError } from '../errors.ts';
import { allocAligned, type BlockDevice } from '../sata-bridge/index.ts';
import { BlockHasher } from './hash.ts';
import { formatBytes } from './ranges.ts';
import { fsyncDirectory } from '../durable-file.ts';
import { dirname } from 'node:path';

const MAGIC = 0x4c4e524a; // "JRNL"
const HEADER_BYTES = 24;

/** The journal's room for one more record of `dataBytes` of old data: its header and the data. */
export function journalRecordBytes(dataBytes: number): number {
  return HEADER_BYTES + dataBytes;
}

/**
 * The journal reached its budget, or its filesystem is full, while a copy
 * ran: the copy stopped before overwriting more. Not a refusal (exit 3 says
 * nothing was written; blocks were): a failed operation with the way out in
 * its hint. A budget known too small before the first write is refused by
 * the copy plan instead.
 */
export class JournalFullError extends NoSpaceError {}

export interface JournalRecordRef {
  readonly position: number;
  readonly length: number;
  /** Where the data starts in the journal file. */
  readonly dataOffset: number;
}

/** The copy a journal serves and the drive it writes, as messages name them: `{ copy: 'restore', drive: 'the active drive' }`. */
export interface JournalSubject {
  readonly copy: 'sync' | 'restore' | 'migration';
  readonly drive: 'the standby' | 'the active drive' | 'the target';
}

export class UndoJournal {
  private size: number;
  private readonly hasher = new BlockHasher();
  private syncing: Promise<void> | null = null;
  private dirty = false;
  private appending: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    initialSize: number,
    readonly budgetBytes: number,
    private readonly subject: JournalSubject,
  ) {
    this.size = initialSize;
  }

  /**
   * Opens (or creates) the journal for appending; existing valid records are kept.
   * `subject` names the copy and the drive it writes, for the messages of a full journal.
   */
  static async openForAppend(path: string, budgetBytes: number, subject: JournalSubject = { copy: 'sync', drive: 'the standby' }): Promise<UndoJournal> {
    const existing = await scanJournal(path);
    const handle = await open(path, existing.exists ? 'r+' : 'w+', 0o600);
    // A torn tail is cut off so new records follow the last whole one.
    if (existing.exists && existing.validBytes !== existing.fileBytes) await handle.truncate(existing.validBytes);
    if (!existing.exists) fsyncDirectory(dirname(path));
    return new UndoJournal(path, handle, existing.validBytes, budgetBytes, subject);
  }

  get bytes(): number {
    return this.size;
  }

  /**
   * Appends old content of `position..+data.length`. Not durable until `commit()`.
   * Appends run one at a time, so a failed one can be cut off without taking
   * a later, already committed record with it.
   */
  append(position: number, data: Uint8Array): Promise<void> {
    return this.appendMany([{ position, data }]);
  }

  /** Appends many records with as few system calls as the kernel allows (one writev per 512 buffers). */
  appendMany(records: readonly { position: number; data: Uint8Array }[]): Promise<void> {
    const run = this.appending.then(() => this.appendNow(records));
    this.appending = run.catch(() => undefined);
    return run;
  }

  private async appendNow(records: readonly { position: number; data: Uint8Array }[]): Promise<void> {
    const need = records.reduce((n, r) => n + HEADER_BYTES + r.data.byteLength, 0);
    const { copy, drive } = this.subject;
    if (this.size + need > this.budgetBytes) {
      throw new JournalFullError(
        `the undo journal would grow past its budget of ${formatBytes(this.budgetBytes)}: the ${copy} stopped before overwriting more of ${drive}`,
        { hint: `${drive} can be rolled back with \`dpsr recover\`; raise --journal-budget (or free space in the state directory) and run the same ${copy} again to continue` },
      );
    }
    const headers = Buffer.alloc(HEADER_BYTES * records.length);
    const buffers: Uint8Array[] = [];
    records.forEach((r, i) => {
      const header = headers.subarray(i * HEADER_BYTES, (i + 1) * HEADER_BYTES);
      header.writeUInt32LE(MAGIC, 0);
      header.writeUInt32LE(r.data.byteLength, 4);
      header.writeBigUInt64LE(BigInt(r.position), 8);
      header.writeBigUInt64LE(this.hasher.hash(header.subarray(4, 16), r.data), 16);
      buffers.push(header, r.data);
    });
    const at = this.size;
    this.size += need;
    try {
      let offset = at;
      for (let i = 0; i < buffers.length; i += 512) {
        const group = buffers.slice(i, i + 512);
        const { bytesWritten } = await this.handle.writev(group, offset);
        const expected = group.reduce((n, b) => n + b.byteLength, 0);
        if (bytesWritten !== expected) throw Object.assign(new Error(`short write to the journal (${bytesWritten} of ${expected} bytes)`), { code: 'ENOSPC' });
        offset += expected;
      }
    } catch (e) {
      this.size = at;
      // A partial record would hold the space a full disk needs for the state update that follows.
      await this.handle.truncate(at).catch(() => undefined);
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        throw new JournalFullError(`the state directory is full: the undo journal cannot hold the old data of ${drive}, so the ${copy} stopped before overwriting it`, {
          hint: `free space in the state directory, then run the same ${copy} again (or \`dpsr recover\` to roll back)`,
          cause: e,
        });
      }
      throw new DeviceError(`cannot write the undo journal ${this.path}: ${(e as Error).message}`, { cause: e });
    }
    this.dirty = true;
  }

  /** Makes every appended record durable; concurrent callers share one fsync. */
  async commit(): Promise<void> {
    while (this.dirty || this.syncing) {
      if (this.syncing) {
        await this.syncing;
        continue;
      }
      this.dirty = false;
      this.syncing = this.handle.datasync().finally(() => {
        this.syncing = null;
      });
      await this.syncing;
    }
  }

  async close(): Promise<void> {
    await this.commit();
    await this.handle.close();
  }
}

export interface JournalScan {
  readonly exists: boolean;
  readonly records: JournalRecordRef[];
  readonly validBytes: number;
  readonly fileBytes: number;
}

/** Reads the record index of a journal; stops at the first torn or invalid record. */
export async function scanJournal(path: string): Promise<JournalScan> {
  let fileBytes: number;
  try {
    fileBytes = statSync(path).size;
  } catch {
    return { exists: false, records: [], validBytes: 0, fileBytes: 0 };
  }
  const handle = await open(path, 'r');
  const hasher = new BlockHasher();
  const records: JournalRecordRef[] = [];
  let offset = 0;
  try {
    const header = Buffer.alloc(HEADER_BYTES);
    let data = Buffer.alloc(1 << 20);
    while (offset + HEADER_BYTES <= fileBytes) {
      await handle.read(header, 0, HEADER_BYTES, offset);
      if (header.readUInt32LE(0) !== MAGIC) break;
      const length = header.readUInt32LE(4);
      if (offset + HEADER_BYTES + length > fileBytes) break;
      if (data.byteLength < length) data = Buffer.alloc(length);
      await handle.read(data, 0, length, offset + HEADER_BYTES);
      if (hasher.hash(header.subarray(4, 16), data.subarray(0, length)) !== header.readBigUInt64LE(16)) break;
      records.push({ position: Number(header.readBigUInt64LE(8)), length, dataOffset: offset + HEADER_BYTES });
      offset += HEADER_BYTES + length;
    }
  } finally {
    await handle.close();
  }
  return { exists: true, records, validBytes: offset, fileBytes };
}

/**
 * Puts the standby back as the journal found it: records applied newest
 * first, then the target flushed. Idempotent: running it twice gives the same
 * bytes, so a crash during a rollback is fixed by rolling back again.
 * `onProgress` gets the bytes put back so far and the journal's bytes in all.
 */
export async function rollBack(path: string, target: BlockDevice, onProgress?: (bytesDone: number, bytesTotal: number) => void): Promise<{ records: number; bytes: number }> {
  const scan = await scanJournal(path);
  if (!scan.exists) return { records: 0, bytes: 0 };
  const handle = await open(path, 'r');
  const total = scan.records.reduce((sum, r) => sum + r.length, 0);
  let bytes = 0;
  try {
    // Aligned, so a target opened with O_DIRECT takes it too.
    let buf = allocAligned(1 << 20);
    for (let i = scan.records.length - 1; i >= 0; i--) {
      const r = scan.records[i]!;
      if (buf.byteLength < r.length) buf = allocAligned(r.length);
      await handle.read(buf, 0, r.length, r.dataOffset);
      await target.write(buf, r.position, r.length);
      bytes += r.length;
      onProgress?.(bytes, total);
    }
  } finally {
    await handle.close();
  }
  await target.flush();
  return { records: scan.records.length, bytes };
}

export function removeJournal(path: string): void {
  try {
    unlinkSync(path);
    fsyncDirectory(dirname(path));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
