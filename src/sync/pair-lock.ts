/**
 * The locks of rule 9, named: one per state directory for the daemon, one
 * per state-directory transaction, one per pair for a copy (or a recovery),
 * and one on each drive being written. Built on lock.ts (abstract unix
 * sockets the kernel releases when the owner dies).
 *
 * A state directory is known by its device and inode numbers, a drive by the
 * storage it really touches (an image file's st_dev+st_ino, a block device's
 * disk, and both for a loop device over a file: see storageKeys), never by a
 * path string.
 */
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { storageKeys, type DriveLocation } from '../sata-bridge/index.ts';
import { BusyError, DeviceError } from '../errors.ts';
import { acquireLock, isLockHeld, tryLock, withLockSync, type Lock } from './lock.ts';

/** "dev:ino" of a state directory. */
export function stateDirKey(dir: string): string {
  try {
    const s = statSync(dir, { bigint: true });
    return `${s.dev}:${s.ino}`;
  } catch (e) {
    throw new DeviceError(`cannot stat the state directory ${dir}: ${(e as Error).message}`, { cause: e });
  }
}

const names = {
  daemon: (dirKey: string) => `state/${dirKey}/daemon`,
  transaction: (dirKey: string) => `state/${dirKey}/txn`,
  pair: (dirKey: string, pairId: string) => `state/${dirKey}/pair/${pairId}`,
  storage: (key: string) => `storage/${key}`,
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
 * file exclude each other. Released together by the returned lock.
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
    }
  } catch (e) {
    for (const l of held) l.release();
    throw e;
  }
  return {
    name: held.map((l) => l.name).join(' '),
    owner: held[0]!.owner,
    release() {
      for (const l of held) l.release();
    },
  };
}

export type { Lock } from './lock.ts';
