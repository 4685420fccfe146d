/**
 * The locks of rule 9, named: one per state directory for the daemon, one
 * per state-directory transaction, one per pair for a copy (or a recovery),
 * one on each drive being written, a shared one on each drive a copy or a
 * verify reads, and a daemon's keep on each drive of its bays for its
 * lifetime: no other process writes those drives, from any state directory,
 * while the daemon's own jobs do. Built on lock.ts (abstract unix
 * sockets the kernel releases when the owner dies).
 *
 * A state directory is known by its device and inode numbers (and its locks
 * also flock files there, seen from every network namespace), a drive by the
 * storage it really touches (an image file's st_dev+st_ino, a block device's
 * disk, and both for a loop device over a file: see storageKeys), never by a
 * path string.
 */
import { createHash } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { storageKeys, type DriveLocation } from '../sata-bridge/index.ts';
import { BusyError, DeviceError } from '../errors.ts';
import { acquireLock, describeOwner, heldByThisProcess, heldNamesUnder, isLockHeld, queryLockOwner, tryLock, withLockSync, type Lock, type LockOwner } from './lock.ts';

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
  /** Each daemon keeping a drive has its own name under this prefix. */
  keepers: (key: string) => `${storageName(key)}/k/`,
  keeper: (key: string) => `${storageName(key)}/k/${process.pid}.${readers++}`,
};

/**
 * What the state directory's locks flock as well, so processes in other
 * network namespaces see them (lock.ts): the directory itself for the
 * daemon, files under locks/ for the transaction and each pair.
 */
const anchors = {
  daemon: (dir: string) => dir,
  transaction: (dir: string) => join(dir, 'locks', 'transaction'),
  pair: (dir: string, pairId: string) => join(dir, 'locks', `pair-${pairId}`),
};

/** The keeps of a drive's storage key that other processes hold. */
function othersKeeping(key: string): string[] {
  return heldNamesUnder(names.keepers(key)).filter((n) => !heldByThisProcess(n));
}

const keeperText = (owner: LockOwner | null) => `${typeof owner?.what === 'string' && owner.what.startsWith('dpsrd') ? owner.what : `the daemon ${describeOwner(owner)}`}${typeof owner?.url === 'string' ? ` at ${owner.url}` : ''}`;

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
    anchors.daemon(dir),
  );
}

/** Runs `fn` (re-read, apply, write) holding the state directory's transaction lock. */
export function withStateTransaction<R>(dir: string, what: string, fn: () => R): R {
  return withLockSync(names.transaction(stateDirKey(dir)), what, fn, undefined, anchors.transaction(dir));
}

const pairBusy = (owner: string, info: { what: string; pid: number; since: string } | null) =>
  info ? `a ${info.what} is running on this drive pair right now (process ${info.pid}, since ${info.since})` : `a copy on this drive pair is running right now (${owner})`;

/** One copy (or recovery) per pair at a time, held while it runs. */
export async function acquirePairLock(stateDir: string, pairId: string, what: string): Promise<Lock> {
  const lock = await acquireLock(names.pair(stateDirKey(stateDir), pairId), what, pairBusy, 'wait for it to finish, or stop it, and try again', {}, anchors.pair(stateDir, pairId));
  // The pid file of earlier versions means nothing now; drop it so nobody reads it.
  rmSync(join(stateDir, 'pairs', pairId, 'lock'), { force: true });
  return lock;
}

/** The pair lock for a short synchronous change (a role swap); throws BusyError while a copy holds it. */
export function takePairLockNow(stateDir: string, pairId: string, what: string): Lock {
  const lock = tryLock(names.pair(stateDirKey(stateDir), pairId), what, {}, anchors.pair(stateDir, pairId));
  if (!lock) throw new BusyError(pairBusy('another process', null), { hint: 'wait for it to finish, or stop it, and try again' });
  return lock;
}

/** Whether a copy or recovery of the pair runs now (in any process). */
export function pairLockHeld(stateDir: string, pairId: string): boolean {
  return isLockHeld(names.pair(stateDirKey(stateDir), pairId), anchors.pair(stateDir, pairId));
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
      // A drive in a bay of a running dpsrd is written by that daemon's jobs only (taken first, looked for keeps after:
      // a keeper binds its name before it looks for a writer, so of the two racing at least one sees the other).
      const keeping = othersKeeping(key);
      if (keeping.length > 0) {
        const owner = await queryLockOwner(keeping[0]!);
        throw new BusyError(`${loc.requested} is a drive in a bay of ${keeperText(owner)}, so only that daemon's jobs write it`, {
          hint: `run the copy through that daemon (dpsr … --url ${typeof owner?.url === 'string' ? owner.url : 'URL'}), or stop it first; nothing was written`,
        });
      }
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

/** A daemon's keep on one drive (acquireDriveKeep). */
export interface DriveKeep extends Lock {
  /** Another process was writing the drive when the keep was taken (it went on meanwhile): who, for an alert; null otherwise. */
  readonly writtenBy: string | null;
  /** Other daemons keeping the same drive (two daemons' bays naming one drive): who; empty otherwise. */
  readonly alsoKeptBy: string[];
}

/**
 * A daemon's keep on a drive of its bays, held for as long as the drive is
 * there: every other process's acquireDriveLock on it is refused
 * (BusyError naming the daemon), whatever state directory it uses, while
 * the daemon's own writers (this process) take it as before. Readers are not
 * excluded. Never refused: a writer or another daemon found at the time is
 * reported in `writtenBy` / `alsoKeptBy`.
 */
export async function acquireDriveKeep(loc: DriveLocation, what: string, extra: Record<string, unknown> = {}): Promise<DriveKeep> {
  const keys = [...storageKeys(loc)].sort();
  const held: Lock[] = [];
  let writtenBy: string | null = null;
  const alsoKeptBy: string[] = [];
  for (const key of keys) {
    const lock = tryLock(names.keeper(key), what, { drive: loc.requested, ...extra });
    if (!lock) {
      for (const l of held) l.release();
      throw new DeviceError(`internal: a keeper's own lock name of ${loc.requested} was taken`);
    }
    held.push(lock);
    const writer = names.storage(key);
    if (!writtenBy && isLockHeld(writer) && !heldByThisProcess(writer)) writtenBy = describeOwner(await queryLockOwner(writer));
    for (const other of othersKeeping(key)) alsoKeptBy.push(keeperText(await queryLockOwner(other)));
  }
  return Object.assign(combined(held), { writtenBy, alsoKeptBy: [...new Set(alsoKeptBy)] });
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
