/**
 * The durable record of a restore of files, per pair: written before the
 * active partition gets its loop device and mount, removed once they are
 * gone. A daemon that dies in between (crash, SIGKILL, power cut) leaves it
 * behind, so the next start knows what may still be mounted or attached and
 * which drive was being written, even though loop devices and mounts carry
 * no owner. After the clean-up it stays, as "interrupted", until a restore
 * of files on that pair completes or the operator dismisses it: the active
 * drive is then half-restored, and the standby holds the only copy of what
 * was not written back yet, so a sync onto it waits (see `syncBlocker`).
 */
import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { readJsonTwoCopies, writeJsonTwoCopies, fsyncDirectory } from '../../src/durable-file.ts';
import { RefusedError } from '../../src/errors.ts';

/** A restore of files as recorded before its first mount. */
export interface FileRestoreEntry {
  readonly pair: string;
  readonly jobId: string;
  readonly partition: number;
  readonly paths: string[];
  readonly startedAt: string;
  /** The active drive: its path then, and its storage by device and inode numbers (what the loop devices are matched by). */
  readonly drive: { path: string; dev: number; ino: number; key: string | null };
  /** The partition's place on the drive, bytes. */
  readonly startByte: number;
  readonly sizeBytes: number;
  readonly filesystem: string;
}

/** What the start-up clean-up found and did. */
export interface FileRestoreCleanup {
  readonly at: string;
  readonly unmounted: string[];
  readonly detached: string[];
  readonly failed: string[];
  /** The read-only check afterwards; null when it could not run (the drive gone, or changed). */
  readonly fsck: { tool: string; exitCode: number; clean: boolean; output: string } | null;
  readonly fsckSkipped?: string;
  /** The temporary files (`.dpsr-restore-*`) the restore left beside its targets: those removed, and why others were not. */
  readonly temporary?: { removed: string[]; failed?: string };
}

export interface FileRestoreState extends FileRestoreEntry {
  readonly state: 'running' | 'interrupted';
  readonly cleanup?: FileRestoreCleanup;
}

/**
 * Whether a restore copied from the standby settles what an interrupted
 * restore of files owes: only one that completed (`outcome` done; a failed
 * or cancelled one may have written part of it, or been rolled back), onto
 * the drive the record names (by key, when it knew one), and covering its
 * partition: a whole-drive restore (`partitions` undefined) covers every
 * partition, a partition restore only those it names. A record still
 * `running` (its mounts not cleaned up yet) is never settled here.
 */
export function restoreSettlesRecord(
  record: Pick<FileRestoreState, 'state' | 'partition'> & { drive: Pick<FileRestoreEntry['drive'], 'key'> },
  restore: { outcome: 'done' | 'failed' | 'cancelled'; partitions?: readonly number[]; driveKey: string | null },
): boolean {
  if (record.state !== 'interrupted' || restore.outcome !== 'done') return false;
  if (record.drive.key !== null && record.drive.key !== restore.driveKey) return false;
  return restore.partitions === undefined || restore.partitions.includes(record.partition);
}

export class FileRestoreRecord {
  readonly dir: string;
  readonly #seq = new Map<string, number>();

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'file-restore');
  }

  #file(pair: string): string {
    return join(this.dir, `${pair}.json`);
  }

  get(pair: string): FileRestoreState | null {
    const read = readJsonTwoCopies<FileRestoreState & { sequence: number }>(this.#file(pair));
    if (!read.value) return null;
    const { sequence: _s, ...rest } = read.value;
    return rest;
  }

  /** Every pair's record, running ones first (those the start-up clean-up handles). */
  all(): FileRestoreState[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((f) => /^[a-z0-9][a-z0-9-]*\.json$/.test(f));
    } catch {
      return [];
    }
    return names.map((f) => this.get(f.slice(0, -5))).filter((r): r is FileRestoreState => r !== null);
  }

  /** Made durable before the partition is attached or mounted. */
  begin(entry: FileRestoreEntry): void {
    this.#save({ ...entry, state: 'running' });
  }

  #save(state: FileRestoreState): void {
    // Each save is newer than the last of this pair and than either copy on disk (another run's, whose clock may
    // have been ahead), whatever the clock did: a crash between the two copies must leave the newer one winning.
    const onDisk = readJsonTwoCopies<{ sequence: number }>(this.#file(state.pair)).value?.sequence ?? 0;
    const sequence = Math.max(Date.now(), (this.#seq.get(state.pair) ?? 0) + 1, onDisk + 1);
    this.#seq.set(state.pair, sequence);
    const body = { ...state, sequence };
    writeJsonTwoCopies(this.#file(state.pair), body);
  }

  /** The start-up clean-up ran: the record stays, as interrupted, with what was done. */
  interrupted(entry: FileRestoreState, cleanup: FileRestoreCleanup): FileRestoreState {
    const next: FileRestoreState = { ...entry, state: 'interrupted', cleanup };
    this.#save(next);
    return next;
  }

  /** The restore finished (or the operator dismissed the interrupted one): nothing is mounted and nothing is owed. */
  clear(pair: string): void {
    for (const f of [this.#file(pair), `${this.#file(pair)}.bak`]) {
      try {
        unlinkSync(f);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    try {
      fsyncDirectory(this.dir);
    } catch {
      /* the folder is not there: nothing was recorded */
    }
  }

  /**
   * A restore from the standby ended (`restore`, see restoreSettlesRecord):
   * clears the pair's record when that restore wrote back everything it
   * owed. Returns the record cleared, or null.
   */
  settleByRestore(pair: string, restore: Parameters<typeof restoreSettlesRecord>[1]): FileRestoreState | null {
    const r = this.get(pair);
    if (!r || !restoreSettlesRecord(r, restore)) return null;
    this.clear(pair);
    return r;
  }

  /**
   * Refuses (409) a copy onto the pair's standby while a restore of files is
   * recorded as interrupted: the files not yet written back exist only on the
   * standby, and a sync would replace them with the active drive's.
   */
  syncBlocker(pair: string, what: string): void {
    const r = this.get(pair);
    if (r?.state !== 'interrupted') return;
    throw new RefusedError(`${what} is held back: a restore of files onto the active drive (partition ${r.partition}, job ${r.jobId}, started ${r.startedAt}) was interrupted, so the standby holds the only copy of what was not restored yet and a sync would overwrite it with the active drive's`, {
      hint: `finish the restore (POST /api/pairs/${pair}/restore/files with the same paths: ${r.paths.slice(0, 5).join(', ')}${r.paths.length > 5 ? ', …' : ''}), or, when the active drive is as wanted, dismiss it (POST /api/pairs/${pair}/restore/files/dismiss) and sync`,
    });
  }
}
