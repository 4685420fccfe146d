/**
 * Locks the kernel releases (rule 9) and state changes as transactions:
 * owners that die, stay zombies or whose pid is reused; races for a freed
 * lock; a second writer from the same or another state directory; two pairs
 * in one state directory (case r02).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clone, sync, verify, recover, recordFailover, effectiveStandbyState, PairStore, tryLock, isLockHeld, queryLockOwner, acquireDriveKeep, anchorHolders, DRIVE_LOCK_DIR } from '../../src/sync/index.ts';
import { BusyError, RefusedError } from '../../src/errors.ts';
import { driveKeyOf, locateDrive, majorMinorOf } from '../../src/sata-bridge/index.ts';
import { randomImage, scatterWrites, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const CHILD = fileURLToPath(new URL('../support/lock-child.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const dir = tempDir();
const MiB = 1024 * 1024;
let n = 0;
const children: ChildProcess[] = [];
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

const rejects = async (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);
const childArgs = (...args: string[]) => ['--import', 'tsx', CHILD, ...args];

/** Starts a child and resolves with it once a line matching `ready` shows on its stdout. */
function startChild(cmd: string, args: string[], ready: RegExp): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(cmd, args, { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => ready.test(l));
      if (line) resolve({ child, line });
    });
    child.stderr!.on('data', (d) => (err += d));
    child.on('close', (code) => reject(new Error(`child ${args.join(' ')} ended (${code}) before "${ready}": ${out}${err}`)));
  });
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('close', () => resolve())));
}

async function pairUp(stateDir: string, size = 4 * MiB) {
  const i = n++;
  const a = randomImage(join(dir, `a-${i}.img`), size, i + 7);
  const b = sparseImage(join(dir, `b-${i}.img`), size);
  await clone({ stateDir, source: a, target: b });
  scatterWrites(a, size, 64);
  return { a, b, backup: sha256File(b), pairId: new PairStore(stateDir).pairOf(driveKeyOf(locateDrive(b)))!.id };
}

function procState(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '')[0];
  } catch {
    return undefined;
  }
}

test('a lock is taken once; released, it is free at once; a peer can ask its owner who it is', async () => {
  const name = `test/${process.pid}/once`;
  const a = tryLock(name, 'first');
  assert.ok(a);
  assert.is(tryLock(name, 'second'), null);
  assert.ok(isLockHeld(name));
  assert.is((await queryLockOwner(name))!.what, 'first');
  a!.release();
  a!.release();
  assert.not.ok(isLockHeld(name));
  const b = tryLock(name, 'third');
  assert.ok(b);
  b!.release();
});

test("the kernel frees a killed owner's lock, also while the owner stays a zombie that kill(pid, 0) calls alive", async () => {
  const name = `test/${process.pid}/zombie`;
  // The holder's parent execs into sleep, which never reaps it: killed, the holder stays a zombie.
  const { child: parent, line } = await startChild('sh', ['-c', `"${process.execPath}" --import tsx "${CHILD}" hold ${name} & exec sleep 300`], /^held \d+/);
  const pid = Number(line.split(' ')[1]);
  assert.ok(isLockHeld(name));
  const other = await startChild(process.execPath, childArgs('hold', name), /^(held|lost)/);
  assert.is(other.line, 'lost', 'a second process cannot take a held lock');
  process.kill(pid, 'SIGKILL');
  // The leader shows as a zombie while its other threads still exit; the descriptors go with the last one.
  for (let i = 0; i < 500 && (procState(pid) !== 'Z' || isLockHeld(name)); i++) await new Promise((r) => setTimeout(r, 20));
  assert.is(procState(pid), 'Z');
  process.kill(pid, 0); // a zombie passes the old liveness test…
  assert.not.ok(isLockHeld(name)); // …but holds no socket
  const lock = tryLock(name, 'after the zombie');
  assert.ok(lock);
  lock!.release();
  parent.kill('SIGKILL');
  other.child.kill('SIGKILL');
});

test("of several processes taking over a dead owner's lock at once, exactly one wins", async () => {
  for (let round = 0; round < 3; round++) {
    const name = `test/${process.pid}/race-${round}`;
    const holder = await startChild(process.execPath, childArgs('hold', name), /^held/);
    holder.child.kill('SIGKILL');
    await exited(holder.child);
    const contenders = await Promise.all(
      Array.from({ length: 5 }, async () => {
        const child = spawn(process.execPath, childArgs('contend', name), { cwd: REPO, stdio: ['pipe', 'pipe', 'inherit'] });
        children.push(child);
        // tsx takes a moment to load: wait until the child reads stdin (it has printed nothing yet).
        await new Promise((r) => setTimeout(r, 0));
        return child;
      }),
    );
    // Give every child time to load before the start signal; the outcome does not depend on it.
    await new Promise((r) => setTimeout(r, 1500));
    const answers = contenders.map(
      (c) =>
        new Promise<string>((resolve) => {
          let out = '';
          c.stdout!.on('data', (d) => {
            out += d;
            if (out.includes('\n')) resolve(out.trim());
          });
        }),
    );
    for (const c of contenders) c.stdin!.write('go\n');
    const results = await Promise.all(answers);
    assert.is(results.filter((r) => r === 'won').length, 1, results.join(','));
    for (const c of contenders) c.stdin!.end();
    await Promise.all(contenders.map(exited));
  }
});

test('a running copy holds its pair and its target: a second copy or a recovery from the same or another state directory is refused', async () => {
  const stateDir = join(dir, 'state-running');
  const other = join(dir, 'state-other');
  const { a, b, backup } = await pairUp(stateDir);
  const { child, line } = await startChild(process.execPath, childArgs('sync-hang', stateDir, a, b), /^writing/);
  const pid = Number(line.split(' ')[1]);
  const before = sha256File(b);
  const store = new PairStore(stateDir);
  assert.is(effectiveStandbyState(store, store.pairs()[0]!), 'syncing');

  const again = await rejects(sync({ stateDir, source: a, target: b }));
  assert.instance(again, BusyError);
  assert.match((again as Error).message, new RegExp(`process ${pid}`));
  const rec = await rejects(recover({ stateDir, target: b }));
  assert.instance(rec, BusyError);
  assert.instance(await rejects(Promise.resolve().then(() => recordFailover(stateDir))), RefusedError);
  // Another state directory knows nothing of the pair, but the drive's lock stops it all the same.
  const c = randomImage(join(dir, 'c-running.img'), 4 * MiB, 99);
  const foreign = await rejects(clone({ stateDir: other, source: c, target: b }));
  assert.instance(foreign, BusyError);
  assert.match((foreign as Error).message, new RegExp(`${b} is being written by process ${pid}`));
  assert.is(sha256File(b), before, 'the refused writers changed nothing');

  child.kill('SIGKILL');
  await exited(child);
  assert.is(effectiveStandbyState(new PairStore(stateDir), new PairStore(stateDir).pairs()[0]!), 'inconsistent');
  const r = await recover({ stateDir, target: b });
  assert.is(r.action, 'rolled-back');
  assert.is(sha256File(b), backup);
});

test('a copy running in another network namespace holds its pair: the state says syncing, a second copy and a recovery are refused, transactions wait for each other', async () => {
  if (!requireEnv('the network namespace test', { root: true, tools: ['unshare'] })) return;
  const stateDir = join(dir, 'state-netns');
  const { a, b, backup } = await pairUp(stateDir);
  // Abstract socket names are per network namespace: this child sees none of ours, nor we its.
  const { child } = await startChild('unshare', ['-n', process.execPath, ...childArgs('sync-hang', stateDir, a, b)], /^writing/);
  try {
    const store = new PairStore(stateDir);
    assert.is(effectiveStandbyState(store, store.pairs()[0]!), 'syncing', 'the copy in the other namespace is seen running');
    assert.instance(await rejects(sync({ stateDir, source: a, target: b })), BusyError);
    assert.instance(await rejects(recover({ stateDir, target: b })), BusyError);
  } finally {
    child.kill('SIGKILL');
    await exited(child);
  }
  assert.is(effectiveStandbyState(new PairStore(stateDir), new PairStore(stateDir).pairs()[0]!), 'inconsistent');
  const r = await recover({ stateDir, target: b });
  assert.is(r.action, 'rolled-back');
  assert.is(sha256File(b), backup);

  // Transactions from both namespaces at once lose no update.
  const pairId = new PairStore(stateDir).pairs()[0]!.id;
  const start = new PairStore(stateDir).byId(pairId)!.lastSync?.bytesWritten ?? 0;
  const bumps = [
    spawn('unshare', ['-n', process.execPath, ...childArgs('bump', stateDir, pairId, '40')], { cwd: REPO, stdio: 'inherit' }),
    spawn(process.execPath, childArgs('bump', stateDir, pairId, '40'), { cwd: REPO, stdio: 'inherit' }),
  ];
  children.push(...bumps);
  await Promise.all(bumps.map(exited));
  assert.is(new PairStore(stateDir).byId(pairId)!.lastSync?.bytesWritten, start + 80);
});

test('a drive written, read or kept by a process in another network namespace is written by no other copy here, nor read while written (image files)', async () => {
  if (!requireEnv('the network namespace test', { root: true, tools: ['unshare', 'flock'] })) return;
  const stateDir = join(dir, 'state-netns-drive');
  const other = join(dir, 'state-netns-drive-other');
  const { a, b } = await pairUp(stateDir);
  const c = randomImage(join(dir, 'c-netns.img'), 4 * MiB, 97);
  const elsewhere = /a dpsr process in another network namespace/;
  // Abstract socket names are per network namespace: each child sees none of ours, nor we its; only the flock reaches across.
  const inOtherNetns = (...args: string[]) => startChild('unshare', ['-n', process.execPath, ...childArgs(...args)], /^(writing|kept)/);

  // It writes b (a clone from yet another state directory): no copy here writes b, none reads it, a keep names the writer.
  const writer = await inOtherNetns('clone-hang', join(dir, 'state-netns-writer'), c, b);
  try {
    const before = sha256File(b);
    const write = await rejects(clone({ stateDir: other, source: a, target: b }));
    assert.instance(write, BusyError);
    assert.match((write as Error).message, new RegExp(`${b} is being written by ${elsewhere.source}`));
    const read = await rejects(verify({ stateDir: other, source: b, target: c }));
    assert.instance(read, BusyError);
    assert.match((read as Error).message, new RegExp(`${b} is being written by ${elsewhere.source}`));
    const keep = await acquireDriveKeep(locateDrive(b), 'dpsrd of this test');
    assert.match(keep.writtenBy ?? '', elsewhere);
    keep.release();
    assert.is(sha256File(b), before, 'the refused writer changed nothing');
  } finally {
    writer.child.kill('SIGKILL');
    await exited(writer.child);
  }

  // It reads a (a sync of a onto b): no copy here writes a; reading a too is no conflict.
  await recover({ stateDir, target: b });
  const reader = await inOtherNetns('sync-hang', stateDir, a, b);
  try {
    const before = sha256File(a);
    const write = await rejects(clone({ stateDir: other, source: c, target: a }));
    assert.instance(write, BusyError);
    assert.match((write as Error).message, new RegExp(`${a} is being read by ${elsewhere.source}`));
    assert.is(sha256File(a), before);
    assert.is((await verify({ stateDir: other, source: a, target: c })).identical, false);
  } finally {
    reader.child.kill('SIGKILL');
    await exited(reader.child);
  }
  await recover({ stateDir, target: b });

  // It keeps b as a daemon keeps its bays' drives: no copy here writes b, a keep here is told; our own keep lets our copies write.
  const keeper = await inOtherNetns('keep', b);
  try {
    const before = sha256File(b);
    const write = await rejects(clone({ stateDir: other, source: c, target: b }));
    assert.instance(write, BusyError);
    assert.match((write as Error).message, new RegExp(`${b} is a drive in a bay of a daemon: ${elsewhere.source}`));
    const mine = await acquireDriveKeep(locateDrive(b), 'dpsrd of this test');
    try {
      assert.equal(mine.alsoKeptBy.length, 1);
      assert.match(mine.alsoKeptBy[0]!, elsewhere);
      const again = await rejects(clone({ stateDir: other, source: c, target: b }));
      assert.instance(again, BusyError, 'a keep of our own does not hide the other namespace\'s');
    } finally {
      mine.release();
    }
    assert.is(sha256File(b), before);
  } finally {
    keeper.child.kill('SIGKILL');
    await exited(keeper.child);
  }
  // All three gone with their processes: the drive is free.
  await clone({ stateDir: other, source: c, target: b });
  assert.is(sha256File(b), sha256File(c));
});

test('a block device written from another network namespace: refused here through the device and through its backing file; the lock is a file named by the device numbers, not a flock on the device node (udev takes those)', async () => {
  if (!requireEnv('the network namespace loop device test', { root: true, tools: ['unshare', 'flock', 'losetup'] })) return;
  const other = join(dir, 'state-netns-loop');
  const img = sparseImage(join(dir, 'loop-netns.img'), 4 * MiB);
  const c = randomImage(join(dir, 'c-netns-loop.img'), 4 * MiB, 96);
  const loop = execFileSync('losetup', ['--find', '--show', img]).toString().trim();
  try {
    const rdev = statSync(loop).rdev;
    const lockFile = join(DRIVE_LOCK_DIR, `block-${majorMinorOf(rdev)}`);
    const writer = await startChild('unshare', ['-n', process.execPath, ...childArgs('clone-hang', join(dir, 'state-netns-loop-writer'), c, loop)], /^writing/);
    try {
      assert.equal(anchorHolders(lockFile), { exclusive: 1, shared: 0 });
      assert.equal(anchorHolders(loop), { exclusive: 0, shared: 0 }, 'the device node itself is not flocked');
      const before = sha256File(img);
      for (const target of [loop, img]) {
        const e = await rejects(clone({ stateDir: other, source: c, target }));
        assert.instance(e, BusyError, target);
        assert.match((e as Error).message, /being written by a dpsr process in another network namespace/);
      }
      assert.is(sha256File(img), before, 'the refused writers changed nothing');
    } finally {
      writer.child.kill('SIGKILL');
      await exited(writer.child);
    }
    assert.equal(anchorHolders(lockFile), { exclusive: 0, shared: 0 }, 'the kernel let go of the dead writer\'s lock');
    await clone({ stateDir: other, source: c, target: loop });
    assert.is(sha256File(img), sha256File(c));
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
});

test('a drive a daemon keeps is written by no other process, from any state directory, while the keeper\'s own copies write it; a writer found at keep time is reported', async () => {
  const stateDir = join(dir, 'state-keep');
  const other = join(dir, 'state-keep-other');
  const { a, b } = await pairUp(stateDir);
  const { child } = await startChild(process.execPath, childArgs('keep', b), /^kept/);
  const before = sha256File(b);
  const c = randomImage(join(dir, 'c-keep.img'), 4 * MiB, 98);
  for (const attempt of [() => sync({ stateDir, source: a, target: b }), () => clone({ stateDir: other, source: c, target: b }), () => recover({ stateDir, target: b })]) {
    const e = await rejects(attempt());
    assert.instance(e, BusyError);
    assert.match((e as Error).message, /is a drive in a bay of dpsrd of a test \(bay B\) at http:\/\/127\.0\.0\.1:1, so only that daemon's jobs write it/);
    assert.match((e as BusyError).hint ?? '', /--url http:\/\/127\.0\.0\.1:1/);
  }
  assert.is(sha256File(b), before, 'the refused writers changed nothing');
  // A second keeper (two daemons' bays naming one drive) is told who else keeps it.
  const second = await acquireDriveKeep(locateDrive(b), 'dpsrd of this test');
  assert.equal(second.alsoKeptBy, ['dpsrd of a test (bay B) at http://127.0.0.1:1']);
  second.release();
  child.kill('SIGKILL');
  await exited(child);
  // This process keeps b now, as a daemon does: its own copies write it; a drive written by another process at keep time is named.
  const mine = await acquireDriveKeep(locateDrive(b), 'dpsrd of this test');
  try {
    assert.is(mine.writtenBy, null);
    await sync({ stateDir, source: a, target: b });
    assert.is(sha256File(b), sha256File(a));
  } finally {
    mine.release();
  }
  const { child: writer, line } = await startChild(process.execPath, childArgs('clone-hang', other, c, b), /^writing/);
  const late = await acquireDriveKeep(locateDrive(b), 'dpsrd of this test');
  assert.match(late.writtenBy ?? '', new RegExp(`process ${line.split(' ')[1]}`));
  late.release();
  writer.kill('SIGKILL');
  await exited(writer);
});

test('a drive a running copy reads is not written by another copy meanwhile, from any state directory, nor read while another copy writes it', async () => {
  const stateDir = join(dir, 'state-reading');
  const other = join(dir, 'state-reading-other');
  const { a, b } = await pairUp(stateDir);
  const c = randomImage(join(dir, 'c-reading.img'), 4 * MiB, 98);
  // A sync reads a (and writes b); a clone from another state directory wants to write a.
  const reader = await startChild(process.execPath, childArgs('sync-hang', stateDir, a, b), /^writing/);
  try {
    const readerPid = Number(reader.line.split(' ')[1]);
    const aBefore = sha256File(a);
    const writeSource = await rejects(clone({ stateDir: other, source: c, target: a }));
    assert.instance(writeSource, BusyError);
    assert.match((writeSource as Error).message, new RegExp(`${a} is being read by process ${readerPid}`));
    assert.is(sha256File(a), aBefore, 'the source the sync reads is unchanged');
    // Reading it too is no conflict: a verify of the same drives runs.
    assert.is((await verify({ stateDir, source: a, target: c })).identical, false);
  } finally {
    reader.child.kill('SIGKILL');
    await exited(reader.child);
  }
  await recover({ stateDir, target: b });

  // The other way round: a clone from another state directory writes a; a sync that would read it is refused, and so is a verify.
  const writer = await startChild(process.execPath, childArgs('clone-hang', other, c, a), /^writing/);
  try {
    const writerPid = Number(writer.line.split(' ')[1]);
    const bBefore = sha256File(b);
    const readSource = await rejects(sync({ stateDir, source: a, target: b }));
    assert.instance(readSource, BusyError);
    assert.match((readSource as Error).message, new RegExp(`${a} is being written by process ${writerPid}`));
    assert.is(sha256File(b), bBefore, 'the refused sync wrote nothing');
    assert.instance(await rejects(verify({ stateDir, source: a, target: b })), BusyError);
  } finally {
    writer.child.kill('SIGKILL');
    await exited(writer.child);
  }
});

test('case r02: two syncs of two pairs in one state directory keep both records; the crashed one recovers byte-exact', async () => {
  const stateDir = join(dir, 'state-r02');
  const one = await pairUp(stateDir, 6 * MiB);
  const two = await pairUp(stateDir, 3 * MiB);
  // Pair 1's sync is writing its standby (and stays there) while pair 2's sync runs from start to end.
  const { child } = await startChild(process.execPath, childArgs('sync-hang', stateDir, one.a, one.b), /^writing/);
  const done = await sync({ stateDir, source: two.a, target: two.b });
  assert.is(done.result, 'done');
  assert.is(sha256File(two.b), sha256File(two.a));
  let store = new PairStore(stateDir);
  assert.is(effectiveStandbyState(store, store.byId(one.pairId)!), 'syncing', "pair 2's sync kept pair 1's mark");
  child.kill('SIGKILL');
  await exited(child);
  store = new PairStore(stateDir);
  assert.is(effectiveStandbyState(store, store.byId(one.pairId)!), 'inconsistent');
  assert.is(store.byId(two.pairId)!.standbyState, 'consistent');
  const r = await recover({ stateDir, target: one.b });
  assert.is(r.action, 'rolled-back');
  assert.is(sha256File(one.b), one.backup);
});

test('transactions from several processes on one state directory lose no update', async () => {
  const stateDir = join(dir, 'state-bump');
  const one = await pairUp(stateDir, MiB);
  const two = await pairUp(stateDir, MiB);
  const written = (id: string) => new PairStore(stateDir).byId(id)!.lastSync!.bytesWritten;
  const before = { one: written(one.pairId), two: written(two.pairId) };
  await Promise.all([one.pairId, two.pairId, one.pairId].map((id) => startChild(process.execPath, childArgs('bump', stateDir, id, '40'), /^bumped/)));
  assert.is(written(one.pairId), before.one + 80);
  assert.is(written(two.pairId), before.two + 40);
});

test("recover after a crash works although the dead copy's pid now belongs to an unrelated process (pid namespaces)", async () => {
  if (!requireEnv('the pid-reuse test', { tools: ['unshare'], root: true })) return;
  const stateDir = join(dir, 'state-pid');
  const { a, b, backup, pairId } = await pairUp(stateDir);
  // The copy runs as pid 1 of a fresh pid namespace and dies there (--kill-child).
  const ns = await startChild('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, ...childArgs('sync-hang', stateDir, a, b)], /^writing 1$/);
  ns.child.kill('SIGKILL');
  await exited(ns.child);
  // What the earlier pid-file lock would have left: pid 1.
  mkdirSync(join(stateDir, 'pairs', pairId), { recursive: true });
  writeFileSync(join(stateDir, 'pairs', pairId, 'lock'), '1\n');
  // In the next namespace pid 1 is an unrelated, living shell.
  const out = await new Promise<string>((resolve) => {
    const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', 'sh', '-c', `sleep 30 & "${process.execPath}" --import tsx "${CHILD}" recover "${stateDir}" "${b}"; kill $!`], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    let text = '';
    child.stdout.on('data', (d) => (text += d));
    child.on('close', () => resolve(text));
  });
  assert.match(out, /^recovered: /);
  assert.is(sha256File(b), backup);
});

test.run();
