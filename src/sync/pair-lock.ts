/**
 * The locks of rule 9, named: one per state directory for the daemon, one
 * per state-directory transaction, one per pair for a copy (or a recovery),
 * one on each drive being written, and a shared one on each drive a copy or a
 * verify reads. Built on lock.ts (abstract unix
 * sockets the kernel releases when the owner dies).
 *
 * A state directory is known by its device and inode numbers, a drive by the
 * storage it really touches (an image file's st_dev+st_ino, a block device's
 * disk, and both for a loop device over a file: see storageKeys), never by a
 * path string.
 */
import { createHash } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { storageKeys, type DriveLocation } from '../sata-bridge/index.ts';
import { BusyError, DeviceError } from '../errors.ts';
import { acquireLock, describeOwner, heldNamesUnder, isLockHeld, queryLockOwner, tryLock, withLockSync, type Lock } from './lock.ts';

/** "dev:ino" of a state directory. */
export function stateDirKey(dir: string): string {
  try {
    const s = statSync(dir, { bigint: true });
    return `${s.dev}:${s.ino}`;
  } catch (e) {
    throw new DeviceError(`cannot stat the state directory ${dir}: ${(e as Error).message}`, { cause: e });
  }
}

/** A storage key as a lock name: hashed, since an NBD address or a file path may hold characters or a length a name cannot. */
const storageName = (key: string) => `storage/${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;
let readers = 0;

const names = {
  daemon: (dirKey: string) => `state/${dirKey}/daemon`,
  transaction: (dirKey: string) => `state/${dirKey}/txn`,
  pair: (dirKey: string, pairId: string) => `state/${dirKey}/pair/${pairId}`,
  /** The one writer of a drive. */
  storage: storageName,
  /** Each reader of a drive has its own name under this prefix, so readers do not exclude each other. */
  readers: (key: string) => `${storageName(key)}/r/`,
  reader: (key: string) => `${storageName(key)}/r/${process.pid}.${readers++}`,
};

/**
 * The daemon's claim on its state directory, for its lifetime: a second
 * dpsrd on the same directory is refused (BusyError) naming the first.
 */
export function acquireStateDirLock(dir: string, extra: Record<string, unknown> = {}): Promise<Lock> {
  return acquireLock(
    names.daemon(stateDirKey(dir)),
    'dpsrd',
    (owner, info) => `another dpsrd, ${owner}${typeof info?.url === 'string' ? ` at ${info.url}` : ''}, already uses the state directory ${dir}`,
    'stop that daemon first, or give this one its own --state-dir',
    { stateDir: dir, ...extra },
  );
}

/** Runs `fn` (re-read, apply, write) holding the state directory's transaction lock. */
export function withStateTransaction<R>(dir: string, what: string, fn: () => R): R {
  return withLockSync(names.transaction(stateDirKey(dir)), what, fn);
}

const pairBusy = (owner: string, info: { what: string; pid: number; since: string } | null) =>
  info ? `a ${info.what} is running on this drive pair right now (process ${info.pid}, since ${info.since})` : `a copy on this drive pair is running right now (${owner})`;

/** One copy (or recovery) per pair at a time, held while it runs. */
export async function acquirePairLock(stateDir: string, pairId: string, what: string): Promise<Lock> {
  const lock = await acquireLock(names.pair(stateDirKey(stateDir), pairId), what, pairBusy, 'wait for it to finish, or stop it, and try again');
  // The pid file of earlier versions means nothing now; drop it so nobody reads it.
  rmSync(join(stateDir, 'pairs', pairId, 'lock'), { force: true });
  return lock;
}

/** The pair lock for a short synchronous change (a role swap); throws BusyError while a copy holds it. */
export function takePairLockNow(stateDir: string, pairId: string, what: string): Lock {
  const lock = tryLock(names.pair(stateDirKey(stateDir), pairId), what);
  if (!lock) throw new BusyError(pairBusy('another process', null), { hint: 'wait for it to finish, or stop it, and try again' });
  return lock;
}

/** Whether a copy or recovery of the pair runs now (in any process). */
export function pairLockHeld(stateDir: string, pairId: string): boolean {
  return isLockHeld(names.pair(stateDirKey(stateDir), pairId));
}

/**
 * The write lock of a drive, whatever state directory its writer uses: every
 * storage key of the location is taken, so a loop device and its backing
 * file exclude each other. A drive that a copy or a verify reads now is
 * refused too (BusyError): what it reads would be neither the old content nor
 * the new. Released together by the returned lock.
 */
export async function acquireDriveLock(loc: DriveLocation, what: string): Promise<Lock> {
  const keys = [...storageKeys(loc)].sort();
  const held: Lock[] = [];
  try {
    for (const key of keys) {
      held.push(
        await acquireLock(
          names.storage(key),
          what,
          (owner) => `${loc.requested} is being written by ${owner}`,
          'wait for that copy to finish: two writers on one drive would mix their data',
          { drive: loc.requested },
        ),
      );
      // Taken first, looked for readers after: a reader binds its name before it looks for the writer, so of a
      // reader and a writer racing, at least one sees the other.
      const reading = heldNamesUnder(names.readers(key));
      if (reading.length > 0) {
        const owner = describeOwner(await queryLockOwner(reading[0]!));
        throw new BusyError(`${loc.requested} is being read by ${owner}`, { hint: 'wait for that copy or verify to finish: writing a drive while it is read gives a copy of neither its old nor its new content' });
      }
    }
  } catch (e) {
    for (const l of held) l.release();
    throw e;
  }
  return combined(held);
}

/**
 * The read lock of a drive that a copy or a verify reads from start to end:
 * readers share it, a writer excludes it (acquireDriveLock). Throws BusyError
 * while a copy writes the drive, naming it.
 */
export async function acquireDriveReadLock(loc: DriveLocation, what: string): Promise<Lock> {
  const keys = [...storageKeys(loc)].sort();
  const held: Lock[] = [];
  try {
    for (const key of keys) {
      const lock = tryLock(names.reader(key), what, { drive: loc.requested });
      if (!lock) throw new DeviceError(`internal: a reader's own lock name of ${loc.requested} was taken`);
      held.push(lock);
      if (isLockHeld(names.storage(key))) {
        const owner = describeOwner(await queryLockOwner(names.storage(key)));
        throw new BusyError(`${loc.requested} is being written by ${owner}`, { hint: 'wait for that copy to finish: reading a drive while it is written gives a copy of neither its old nor its new content' });
      }
    }
  } catch (e) {
    for (const l of held) l.release();
    throw e;
  }
  return combined(held);
}

function combined(held: Lock[]): Lock {
  return {
    name: held.map((l) => l.name).join(' '),
    owner: held[0]!.owner,
    release() {
      for (const l of held) l.release();
    },
  };
}

export type { Lock } from './lock.ts';
