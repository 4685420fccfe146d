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
 * path string. The drive locks also flock(2) a file per storage key
 * (DriveAnchors), so a writer, reader or keeper in another network namespace
 * (a container, `unshare -n`), which does not see the socket names, is
 * excluded all the same.
 */
import { createHash } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { majorMinorOf, storageObjects, type DriveLocation, type StorageObject } from '../sata-bridge/index.ts';
import { BusyError, DeviceError } from '../errors.ts';
import { acquireLock, anchorHolders, anchorTaken, describeOwner, heldByThisProcess, heldNamesUnder, isLockHeld, queryLockOwner, tryLock, withLockSync, type Anchor, type Lock, type LockOwner } from './lock.ts';

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

/**
 * Where every dpsr on the machine flocks the locks of block devices, one file
 * per whole disk named by its device numbers (st_rdev's major:minor): not the
 * device node itself, because udev flocks whole block devices too (`udevadm
 * lock`, systemd's block-device locking: a tool holds LOCK_EX while it
 * partitions, udevd takes LOCK_SH|LOCK_NB before probing and puts an event
 * off while that fails), so a sync holding the node for hours would hold off
 * udev's events for the drive, and udev's own short probes would make a
 * writer's LOCK_NB fail for nothing. Not the state directory: the lock must
 * reach writers whatever state directory they use. /run is the machine's
 * and empty after a reboot; the files are never removed (one that is
 * unlinked while held would let a second taker lock a new file of the same
 * name), a few bytes of inode per device number. A container that runs dpsr
 * must share this folder (a bind mount) as it shares the device nodes.
 */
export const DRIVE_LOCK_DIR = '/run/dpsr/locks';

/**
 * The flock(2) anchors of one storage key: `data`, which its writer takes
 * exclusive and its readers shared, and `keep`, which keeping daemons take
 * shared. An image file is its own `data` anchor (its inode is the lock, seen
 * by every process that reaches the file, in any mount namespace); the keep
 * of a file, and both of a disk, are files in DRIVE_LOCK_DIR. An NBD export,
 * or a file no path leads to now, has none: the socket names alone.
 */
interface DriveAnchors {
  readonly data: string;
  readonly dataIsStorage: boolean;
  readonly keep: string;
}

function anchorsOf(object: StorageObject | null): DriveAnchors | null {
  if (!object) return null;
  if ('file' in object) {
    const st = statSync(object.file, { throwIfNoEntry: false });
    if (!st) return null;
    return { data: object.file, dataIsStorage: true, keep: join(DRIVE_LOCK_DIR, `file-${majorMinorOf(st.dev)}-${st.ino}.keep`) };
  }
  const block = join(DRIVE_LOCK_DIR, `block-${object.device}`);
  return { data: block, dataIsStorage: false, keep: `${block}.keep` };
}

/** Each storage key of a location with its flock anchors, sorted by key (one order for every taker). */
function driveKeys(loc: DriveLocation): [string, DriveAnchors | null][] {
  return [...storageObjects(loc)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([key, object]) => [key, anchorsOf(object)]);
}

/** An image file that is its own anchor is never created by a lock: a gone image stays gone. */
const dataAnchor = (a: DriveAnchors, shared: boolean): Anchor => ({ path: a.data, shared, existing: a.dataIsStorage });

const elsewhere = 'a dpsr process in another network namespace (a container or `unshare -n`), which this one cannot ask who it is';

/** The keeps of a drive's storage key that other processes hold: their lock names, and whether one is in another network namespace. */
function othersKeeping(key: string, anchors: DriveAnchors | null): { names: string[]; elsewhere: boolean } {
  const all = heldNamesUnder(names.keepers(key));
  const others = all.filter((n) => !heldByThisProcess(n));
  let foreign = false;
  if (anchors) {
    const mine = all.length - others.length;
    // Without a keep of ours on the key, a moment's exclusive flock tells whether anybody keeps it, from any namespace; with
    // one, the kernel's list of flocks is counted against the keeps seen by name (anchorHolders says where it falls short).
    foreign = mine === 0 ? others.length === 0 && anchorTaken(anchors.keep) : anchorHolders(anchors.keep).shared > all.length;
  }
  return { names: others, elsewhere: foreign };
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
  const held: Lock[] = [];
  try {
    for (const [key, anchors] of driveKeys(loc)) {
      const lock = tryLock(names.storage(key), what, { drive: loc.requested }, anchors ? dataAnchor(anchors, false) : undefined);
      if (!lock) throw await driveInUse(loc, key, anchors);
      held.push(lock);
      // A drive in a bay of a running dpsrd is written by that daemon's jobs only (taken first, looked for keeps after:
      // a keeper takes its keep before it looks for a writer, so of the two racing at least one sees the other).
      const keeping = othersKeeping(key, anchors);
      if (keeping.names.length > 0 || keeping.elsewhere) {
        const owner = keeping.names.length > 0 ? await queryLockOwner(keeping.names[0]!) : null;
        throw new BusyError(`${loc.requested} is a drive in a bay of ${keeping.names.length > 0 ? keeperText(owner) : `a daemon: ${elsewhere}`}, so only that daemon's jobs write it`, {
          hint: `run the copy through that daemon (dpsr … --url ${typeof owner?.url === 'string' ? owner.url : 'URL'}), or stop it first; nothing was written`,
        });
      }
      // Readers hold the data anchor shared, so the flock above met any of them; the names cover a drive without an anchor
      // (an NBD export): a reader takes its name before it looks for the writer, so of the two racing at least one sees the other.
      const reading = heldNamesUnder(names.readers(key));
      if (reading.length > 0) {
        const owner = describeOwner(await queryLockOwner(reading[0]!));
        throw new BusyError(`${loc.requested} is being read by ${owner}`, { hint: readWhileWritten });
      }
    }
  } catch (e) {
    for (const l of held) l.release();
    throw e;
  }
  return combined(held);
}

const readWhileWritten = 'wait for that copy or verify to finish: writing a drive while it is read gives a copy of neither its old nor its new content';
const writtenTwice = 'wait for that copy to finish: two writers on one drive would mix their data';

/** The BusyError for a storage key whose write lock was not had: who writes or reads it, by name when in this network namespace. */
async function driveInUse(loc: DriveLocation, key: string, anchors: DriveAnchors | null): Promise<BusyError> {
  if (isLockHeld(names.storage(key))) {
    return new BusyError(`${loc.requested} is being written by ${describeOwner(await queryLockOwner(names.storage(key)))}`, { hint: writtenTwice });
  }
  const reading = heldNamesUnder(names.readers(key));
  if (reading.length > 0) return new BusyError(`${loc.requested} is being read by ${describeOwner(await queryLockOwner(reading[0]!))}`, { hint: readWhileWritten });
  const holders = anchors ? anchorHolders(anchors.data) : { exclusive: 0, shared: 0 };
  if (holders.shared > 0 && holders.exclusive === 0) return new BusyError(`${loc.requested} is being read by ${elsewhere}`, { hint: readWhileWritten });
  return new BusyError(`${loc.requested} is being written by ${holders.exclusive > 0 ? elsewhere : 'another process'}`, { hint: writtenTwice });
}

/**
 * The read lock of a drive that a copy or a verify reads from start to end:
 * readers share it, a writer excludes it (acquireDriveLock). Throws BusyError
 * while a copy writes the drive, naming it.
 */
export async function acquireDriveReadLock(loc: DriveLocation, what: string): Promise<Lock> {
  const held: Lock[] = [];
  const written = (owner: string) => new BusyError(`${loc.requested} is being written by ${owner}`, { hint: 'wait for that copy to finish: reading a drive while it is written gives a copy of neither its old nor its new content' });
  try {
    for (const [key, anchors] of driveKeys(loc)) {
      const lock = tryLock(names.reader(key), what, { drive: loc.requested }, anchors ? dataAnchor(anchors, true) : undefined);
      // The name is this reader's own: what was not had is the shared flock, which only a writer's excludes.
      if (!lock) throw written(isLockHeld(names.storage(key)) ? describeOwner(await queryLockOwner(names.storage(key))) : elsewhere);
      held.push(lock);
      if (isLockHeld(names.storage(key))) throw written(describeOwner(await queryLockOwner(names.storage(key))));
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
  const held: Lock[] = [];
  let writtenBy: string | null = null;
  const alsoKeptBy: string[] = [];
  for (const [key, anchors] of driveKeys(loc)) {
    // Shared with other keepers; the wait outlasts a writer's moment of looking for keeps (othersKeeping).
    const lock = tryLock(names.keeper(key), what, { drive: loc.requested, ...extra }, anchors ? { path: anchors.keep, shared: true, waitSeconds: 5 } : undefined);
    if (!lock) {
      for (const l of held) l.release();
      throw new DeviceError(`internal: the keep of ${loc.requested} was not had (its own lock name, or its flock within 5 s)`);
    }
    held.push(lock);
    const writer = names.storage(key);
    if (!writtenBy && isLockHeld(writer) && !heldByThisProcess(writer)) writtenBy = describeOwner(await queryLockOwner(writer));
    else if (!writtenBy && anchors && !isLockHeld(writer) && anchorHolders(anchors.data).exclusive > 0) writtenBy = elsewhere;
    const keeping = othersKeeping(key, anchors);
    for (const other of keeping.names) alsoKeptBy.push(keeperText(await queryLockOwner(other)));
    if (keeping.elsewhere) alsoKeptBy.push(`a daemon: ${elsewhere}`);
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
