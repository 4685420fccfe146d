/**
 * Locks the kernel releases when their owner dies (rule 9), taken atomically.
 *
 * A lock is a name in Linux's abstract unix-socket namespace: the owner binds
 * a listening socket to `\0dpsr/…`. Why this and not flock(2): Node has no
 * flock in core, and a native package (fs-ext, os-lock) needs a compiler on
 * the board; the socket needs no file, so it works on a full or read-only
 * state directory; its namespace is machine-wide (per network namespace), so a
 * drive's lock reaches every writer whatever state directory it uses; bind(2)
 * either takes the name or fails with EADDRINUSE, so two processes racing for
 * a free name never both win; the kernel closes the socket when the owner
 * exits (a zombie holds no descriptors), so no pid is ever judged by
 * `kill(pid, 0)` and pid reuse after a reboot cannot fake an owner; and a peer
 * can connect and ask the owner who it is, for the operator's message.
 * Limits: Linux only (as dpsr), and the abstract namespace is per network
 * namespace: a process in another one (a container with its own network,
 * `unshare -n`) does not see the name. So a lock that belongs to a place in
 * the filesystem (a state directory) also takes the kernel's flock(2) on an
 * anchor there (a file or the folder itself), which every process on the
 * machine sees: Node has no flock, so `flock(1)` takes it on a descriptor
 * this process opened and keeps (the lock belongs to the open file, not to
 * the short-lived helper); the kernel drops it when the owner dies, and the
 * descriptor is close-on-exec, so no child of ours holds it. A shared anchor
 * (LOCK_SH) lets its holders share it and excludes only an exclusive one: a
 * drive's readers against its writer.
 *
 * Node binds a pipe synchronously inside `listen()` and reports a failure on
 * the next tick, so `server.listening` right after `listen()` says whether the
 * name was taken; `tryLock` checks that this still holds.
 */
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { BusyError, DeviceError } from '../errors.ts';

/** Who holds a lock, as its owner answers a peer. */
export interface LockOwner {
  readonly pid: number;
  /** What the owner does under the lock, for messages: "sync of /dev/sdb". */
  what: string;
  readonly since: string;
  /** Anything else worth telling a peer (the daemon's URL). */
  [extra: string]: unknown;
}

export interface Lock {
  readonly name: string;
  /** Answered to peers; fields may be updated while the lock is held. */
  readonly owner: LockOwner;
  /** Idempotent. */
  release(): void;
}

/**
 * A file whose flock(2) a lock takes besides its name, seen from every network
 * namespace: a path (taken exclusively, created with its folder when missing),
 * or these options.
 */
export type Anchor = string | {
  readonly path: string;
  /** LOCK_SH: holders of the shared anchor exclude only an exclusive holder, not each other. */
  readonly shared?: boolean;
  /** Never create it (an image file the lock is about): when it is gone, the lock goes without it. */
  readonly existing?: boolean;
  /** Seconds to wait for a holder that lets go at once (a writer's look, anchorTaken); default: none. */
  readonly waitSeconds?: number;
};

const anchorPath = (a: Anchor) => (typeof a === 'string' ? a : a.path);

const PREFIX = 'dpsr/';
// The abstract name lives in sun_path (108 bytes, the leading NUL included).
const MAX_NAME = 100;
const heldHere = new Map<string, Lock>();

function checkName(name: string): void {
  if (!/^[A-Za-z0-9._:/+-]+$/.test(name) || PREFIX.length + name.length > MAX_NAME) {
    throw new DeviceError(`internal: lock name ${JSON.stringify(name)} is not usable`);
  }
}

/**
 * Takes the lock `name` now, or returns null when another process (or this
 * one) holds it. Never waits. `anchor`: a file (created when missing) or a
 * folder whose flock(2) is taken too, so that processes in other network
 * namespaces are excluded as well (see above); an anchor that cannot be
 * opened (a read-only filesystem without it) leaves the name alone.
 */
export function tryLock(name: string, what: string, extra: Record<string, unknown> = {}, anchor?: Anchor): Lock | null {
  checkName(name);
  const owner: LockOwner = { ...extra, pid: process.pid, what, since: new Date().toISOString() };
  // A failed bind whose name nobody holds a moment later was either freed in between (try again) or
  // failed for another reason (which repeats).
  for (let attempt = 0; ; attempt++) {
    const server = bindName(name, owner);
    if (server) {
      // The name first: within a network namespace it excludes without starting a helper.
      let fd: number | null | undefined;
      try {
        fd = anchor === undefined ? undefined : flockAnchor(anchor);
      } catch (e) {
        server.close(() => undefined);
        throw e;
      }
      if (fd === null) {
        server.close(() => undefined);
        return null;
      }
      return held(name, owner, server, fd);
    }
    if (isLockHeld(name)) return null;
    if (attempt === 3) throw new DeviceError(`cannot take the lock ${name}`, { hint: 'dpsr needs Linux abstract unix sockets for its locks' });
  }
}

/**
 * flock(2) on `anchor` (LOCK_EX, or LOCK_SH when shared; LOCK_NB unless it
 * waits), through flock(1) on a descriptor opened here and kept: the
 * descriptor when taken, null when another open file holds it, undefined
 * when the anchor cannot be opened or made.
 */
function flockAnchor(anchor: Anchor): number | null | undefined {
  const a = typeof anchor === 'string' ? { path: anchor } : anchor;
  let fd: number;
  try {
    fd = openSync(a.path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || a.existing) return undefined;
    try {
      mkdirSync(dirname(a.path), { recursive: true, mode: 0o700 });
      closeSync(openSync(a.path, 'a', 0o600));
      fd = openSync(a.path, 'r');
    } catch {
      return undefined;
    }
  }
  const args = [a.shared ? '--shared' : '--exclusive', ...(a.waitSeconds ? ['--wait', String(a.waitSeconds)] : ['--nonblock']), '3'];
  const r = spawnSync('flock', args, { stdio: ['ignore', 'ignore', 'pipe', fd], encoding: 'utf8' });
  if (r.status === 0) return fd;
  closeSync(fd);
  if (r.status === 1) return null;
  throw new DeviceError(`cannot take the kernel lock on ${a.path}: ${r.error ? r.error.message : (r.stderr || `flock exited with ${r.status}`).trim()}`, {
    hint: 'dpsr needs flock(1) from util-linux for its locks',
  });
}

/**
 * Whether an open file (of any process, this one included) holds a flock(2)
 * on the existing file `path` now that an exclusive one would meet: tried for
 * a moment with LOCK_EX|LOCK_NB and let go. Unlike /proc/locks this sees
 * holders in other pid namespaces too (the kernel lists a flock there only
 * while the process that took it, here flock(1), lives). False when the file
 * is missing or cannot be opened.
 */
export function anchorTaken(path: string): boolean {
  const fd = flockAnchor({ path, existing: true });
  if (fd === null) return true;
  if (fd !== undefined) closeSync(fd);
  return false;
}

/**
 * The flocks held on `path` now, by kind, from the kernel's list
 * (/proc/locks), without touching it. In a pid namespace other than the
 * machine's first, the kernel leaves out flocks whose taker has exited (all
 * of ours: flock(1) takes them), so there this counts none.
 */
export function anchorHolders(path: string): { exclusive: number; shared: number } {
  const out = { exclusive: 0, shared: 0 };
  let st;
  try {
    st = statSync(path, { bigint: true });
  } catch {
    return out;
  }
  // /proc/locks names the file as major:minor:inode, the numbers of the device in hexadecimal.
  const dev = st.dev;
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  let table: string;
  try {
    table = readFileSync('/proc/locks', 'latin1');
  } catch (e) {
    throw new DeviceError(`cannot read /proc/locks to see who holds ${path}: ${(e as Error).message}`, { cause: e });
  }
  for (const line of table.split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (READ for a shared one); waiting requests are marked "->".
    const m = /^\d+:\s+FLOCK\s+\S+\s+(\S+)\s+\S+\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (m && BigInt(`0x${m[2]}`) === major && BigInt(`0x${m[3]}`) === minor && BigInt(m[4]!) === st.ino) {
      if (m[1] === 'WRITE') out.exclusive++;
      else out.shared++;
    }
  }
  return out;
}

function bindName(name: string, owner: LockOwner): net.Server | null {
  const server = net.createServer((peer) => {
    peer.on('error', () => undefined);
    peer.end(JSON.stringify(owner) + '\n');
  });
  // A failed bind is reported on the next tick: keep it from becoming an uncaught error.
  server.on('error', () => undefined);
  server.listen({ path: `\0${PREFIX}${name}`, exclusive: true });
  if (server.listening) return server;
  server.close(() => undefined);
  return null;
}

function held(name: string, owner: LockOwner, server: net.Server, anchorFd?: number): Lock {
  server.unref();
  let released = false;
  const lock: Lock = {
    name,
    owner,
    release() {
      if (released) return;
      released = true;
      heldHere.delete(name);
      // Closing the only descriptor of the anchor's open file drops its flock.
      if (anchorFd !== undefined) closeSync(anchorFd);
      // Closing the listening socket frees the name at once; the callback only reports completion.
      server.close(() => undefined);
    },
  };
  heldHere.set(name, lock);
  return lock;
}

/**
 * Whether some process holds `name` now, without touching it: the kernel's
 * list of unix sockets (/proc/net/unix) shows bound abstract names with a
 * leading '@' (Node pads the name with NULs, shown as '@' too); with an
 * `anchor`, also a holder in another network namespace (its flock).
 */
export function isLockHeld(name: string, anchor?: Anchor): boolean {
  if (heldHere.has(name)) return true;
  if (anchor !== undefined) {
    const h = anchorHolders(anchorPath(anchor));
    if (h.exclusive + h.shared > 0) return true;
  }
  let table: string;
  try {
    table = readFileSync('/proc/net/unix', 'latin1');
  } catch (e) {
    throw new DeviceError(`cannot read /proc/net/unix to see who holds ${name}: ${(e as Error).message}`, { cause: e });
  }
  const wanted = ` @${PREFIX}${name}`;
  for (const line of table.split('\n')) {
    const at = line.indexOf(wanted);
    if (at < 0) continue;
    const rest = line.slice(at + wanted.length);
    if (/^@*$/.test(rest)) return true;
  }
  return false;
}

/** Whether this process holds `name` (a lock taken here and not released). */
export function heldByThisProcess(name: string): boolean {
  return heldHere.has(name);
}

/** The held names that start with `prefix` (e.g. every reader of a drive), from the same kernel list as isLockHeld. */
export function heldNamesUnder(prefix: string): string[] {
  checkName(prefix);
  let table: string;
  try {
    table = readFileSync('/proc/net/unix', 'latin1');
  } catch (e) {
    throw new DeviceError(`cannot read /proc/net/unix to see who holds ${prefix}…: ${(e as Error).message}`, { cause: e });
  }
  const wanted = ` @${PREFIX}${prefix}`;
  const names = new Set<string>();
  for (const name of heldHere.keys()) if (name.startsWith(prefix)) names.add(name);
  for (const line of table.split('\n')) {
    const at = line.indexOf(wanted);
    if (at < 0) continue;
    // The name runs to the end of the line, padded with '@' (NULs); a name never holds '@'.
    names.add(line.slice(at + 2 + PREFIX.length).replace(/@+$/, ''));
  }
  return [...names];
}

/** Asks the holder of `name` who it is; null when nobody answers within `timeoutMs`. */
export function queryLockOwner(name: string, timeoutMs = 1000): Promise<LockOwner | null> {
  checkName(name);
  const mine = heldHere.get(name);
  if (mine) return Promise.resolve(mine.owner);
  return new Promise((resolve) => {
    let text = '';
    const sock = net.connect({ path: `\0${PREFIX}${name}` });
    const done = (v: LockOwner | null) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (text += d));
    sock.on('error', () => done(null));
    sock.on('end', () => {
      try {
        const v = JSON.parse(text) as LockOwner;
        done(Number.isInteger(v.pid) && typeof v.what === 'string' ? v : null);
      } catch {
        done(null);
      }
    });
  });
}

/** "process 1234 (sync of /dev/sdb, since 2026-…)", or "another process" when it did not answer. */
export function describeOwner(owner: LockOwner | null): string {
  return owner ? `process ${owner.pid} (${owner.what}, since ${owner.since})` : 'another process';
}

/**
 * Takes the lock `name` or throws BusyError naming its owner: `busy(owner)`
 * words the message, `hint` says what to do.
 */
export async function acquireLock(name: string, what: string, busy: (ownerText: string, owner: LockOwner | null) => string, hint: string, extra?: Record<string, unknown>, anchor?: Anchor): Promise<Lock> {
  const lock = tryLock(name, what, extra, anchor);
  if (lock) return lock;
  const owner = await queryLockOwner(name);
  throw new BusyError(busy(describeOwner(owner), owner), { hint });
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Runs `fn` holding `name`, waiting (synchronously, in short sleeps) up to
 * `timeoutMs` for a holder to let go. For short critical sections only:
 * re-read, apply, write a state file. Not reentrant: taking a lock this
 * process already holds is a programming error.
 */
export function withLockSync<R>(name: string, what: string, fn: () => R, timeoutMs = 10_000, anchor?: Anchor): R {
  if (heldHere.has(name)) throw new DeviceError(`internal: the lock ${name} is already held by this process (${heldHere.get(name)!.owner.what})`);
  const deadline = Date.now() + timeoutMs;
  let pause = 1;
  for (;;) {
    const lock = tryLock(name, what, {}, anchor);
    if (lock) {
      try {
        return fn();
      } finally {
        lock.release();
      }
    }
    if (Date.now() >= deadline) throw new BusyError(`the lock ${name} stayed taken for ${timeoutMs / 1000} s (${what})`, { hint: 'another dpsr process is stuck while writing the state; stop it and try again' });
    Atomics.wait(sleeper, 0, 0, pause);
    pause = Math.min(pause * 2, 20);
  }
}
