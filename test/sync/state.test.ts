/** Roles, generations, the pair state files, the journal budget and manifest mode. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync, readFileSync, copyFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { clone, sync, recover, verify, recordFailover, PairStore, JournalFullError, recordBecameActive } from '../../src/sync/index.ts';
import { RefusedError, DeviceError, ReadOnlyStateError } from '../../src/errors.ts';
import { openLocated, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { randomImage, scatterWrites, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { dpsr } from '../support/cli.ts';

const dir = tempDir();
const MiB = 1024 * 1024;
let n = 0;

async function pairUp(size = 8 * MiB) {
  const i = n++;
  const stateDir = join(dir, `state-${i}`);
  const a = randomImage(join(dir, `a-${i}.img`), size, i + 100);
  const b = sparseImage(join(dir, `b-${i}.img`), size);
  await clone({ stateDir, source: a, target: b });
  return { stateDir, a, b };
}

const rejects = async (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

test('the first clone records the pair: source active, target standby, both at the same generation', async () => {
  const { stateDir, a, b } = await pairUp();
  const [pair] = new PairStore(stateDir).pairs();
  assert.ok(pair);
  assert.is(pair.drives[pair.activeKey]!.lastPath, a);
  assert.is(pair.drives[pair.standbyKey]!.lastPath, b);
  assert.is(pair.standbyState, 'consistent');
  assert.is(pair.drives[pair.activeKey]!.generation, pair.drives[pair.standbyKey]!.generation);
  const status = dpsr(['status', '--json', '--state-dir', stateDir]).json();
  assert.is(status.pairs[0].standbyState, 'consistent');
});

test('after a failover the roles swap and re-protecting the other way is an ordinary sync', async () => {
  const { stateDir, a, b } = await pairUp();
  const swap = recordFailover(stateDir);
  assert.is(swap.active, b);
  scatterWrites(b, 8 * MiB, 20);
  const refused = await rejects(sync({ stateDir, source: a, target: b }));
  assert.instance(refused, RefusedError, 'the old direction is now refused');
  const report = await sync({ stateDir, source: b, target: a });
  assert.is(report.result, 'done');
  assert.is(sha256File(a), sha256File(b));
});

test('split brain: when both drives moved on, a sync is refused without --force-generation', async () => {
  const { stateDir, a, b } = await pairUp();
  recordFailover(stateDir); // B active, host writes to B
  scatterWrites(b, 8 * MiB, 5);
  recordFailover(stateDir); // back to A without a sync: A moves on too
  scatterWrites(a, 8 * MiB, 5);
  const bBefore = sha256File(b);
  const err = await rejects(sync({ stateDir, source: a, target: b }));
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, /both drives changed/);
  assert.is(sha256File(b), bBefore);
  const cli = dpsr(['sync', a, b, '--yes', '--state-dir', stateDir]);
  assert.is(cli.code, 3);
  const forced = await sync({ stateDir, source: a, target: b, forceGeneration: true });
  assert.is(forced.result, 'done');
  assert.is(sha256File(a), sha256File(b));
});

test('failover to a standby that is not consistent is refused', async () => {
  const { stateDir, a, b } = await pairUp();
  scatterWrites(a, 8 * MiB, 50);
  const store = new PairStore(stateDir);
  store.update(store.pairs()[0]!.id, 'test', (p) => {
    p.standbyState = 'inconsistent';
  });
  const err = await rejects(Promise.resolve().then(() => recordFailover(stateDir)));
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, /half-written/);
  assert.ok(b);
});

test('restore from a standby that is not consistent is refused', async () => {
  const { stateDir, a, b } = await pairUp();
  const store = new PairStore(stateDir);
  store.update(store.pairs()[0]!.id, 'test', (p) => {
    p.standbyState = 'inconsistent';
    p.pendingCopy = { kind: 'sync', from: 'x', to: 'y', startedAt: '', journaled: true };
  });
  const before = sha256File(a);
  const err = await rejects(sync({ stateDir, source: b, target: a }));
  assert.instance(err, RefusedError);
  const { restore } = await import('../../src/sync/index.ts');
  const err2 = await rejects(restore({ stateDir, source: b, target: a }));
  assert.instance(err2, RefusedError);
  assert.match((err2 as Error).message, /not consistent/);
  assert.is(sha256File(a), before);
});

test('restore copies the backup back over the active drive, journaled, and only when asked', async () => {
  const { stateDir, a, b } = await pairUp();
  const backup = sha256File(b);
  scatterWrites(a, 8 * MiB, 30);
  const cli = dpsr(['restore', b, a, '--yes', '--i-mean-restore', '--state-dir', stateDir, '--quiet']);
  assert.is(cli.code, 0, cli.stderr);
  assert.is(sha256File(a), backup);
});

test('an interrupted restore leaves the backup consistent (failover still possible) and the active drive recoverable', async () => {
  const { stateDir, a, b } = await pairUp(16 * MiB);
  const backup = sha256File(b);
  scatterWrites(a, 16 * MiB, 400);
  const activeBefore = sha256File(a);
  const { restore } = await import('../../src/sync/index.ts');
  const err = await rejects(restore({ stateDir, source: b, target: a, journalBudget: 128 * 1024 }));
  assert.instance(err, JournalFullError);
  assert.is(sha256File(b), backup, 'the backup was only read');
  const pair = new PairStore(stateDir).pairs()[0]!;
  assert.is(pair.standbyState, 'consistent', 'the standby is still a whole backup');
  assert.is(pair.pendingCopy?.kind, 'restore');
  // A sync over the half-restored active drive's standby is refused until the restore is dealt with.
  assert.instance(await rejects(sync({ stateDir, source: a, target: b })), RefusedError);
  await recover({ stateDir, target: a });
  assert.is(sha256File(a), activeBefore, 'the active drive rolled back byte-exact');
  assert.is(sha256File(b), backup);
  // And failing over to the untouched backup is allowed.
  const swap = recordFailover(stateDir);
  assert.is(swap.active, b);
});

test('a torn or edited state file is detected; the other copy is used and the problem reported', async () => {
  const { stateDir } = await pairUp();
  const file = join(stateDir, 'pairs.json');
  const text = readFileSync(file, 'utf8');
  writeFileSync(file, text.slice(0, text.length / 2));
  const store = new PairStore(stateDir);
  assert.is(store.pairs().length, 1, 'the .bak copy was used');
  assert.ok(store.problems.some((p) => /checksum|torn/.test(p)));
  writeFileSync(`${file}.bak`, text.replace('"consistent"', '"inconsistent"'));
  const err = await rejects(Promise.resolve().then(() => new PairStore(stateDir)));
  assert.instance(err, DeviceError);
  assert.match((err as Error).message, /both copies/);
  assert.is(dpsr(['status', '--state-dir', stateDir]).code, 1);
});

test('the journal budget stops a sync before it overwrites more; the standby rolls back byte-exact', async () => {
  const { stateDir, a, b } = await pairUp(16 * MiB);
  const backup = sha256File(b);
  scatterWrites(a, 16 * MiB, 400);
  const err = await rejects(sync({ stateDir, source: a, target: b, journalBudget: 256 * 1024 }));
  assert.instance(err, JournalFullError);
  assert.match((err as Error).message, /budget/);
  const cli = dpsr(['status', '--json', '--state-dir', stateDir]).json();
  assert.is(cli.pairs[0].standbyState, 'inconsistent');
  await recover({ stateDir, target: b });
  assert.is(sha256File(b), backup);
  const again = await sync({ stateDir, source: a, target: b });
  assert.is(again.result, 'done');
  assert.is(sha256File(b), sha256File(a));
});

test('a full state directory stops the sync before the overwrite; recover still works', async () => {
  if (!requireEnv('state directory full test', { root: true, tools: ['mount'] })) return;
  const mnt = join(dir, 'small-state');
  execFileSync('mkdir', ['-p', mnt]);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', mnt]);
  try {
    const a = randomImage(join(dir, 'full-a.img'), 16 * MiB, 5);
    const b = sparseImage(join(dir, 'full-b.img'), 16 * MiB);
    await clone({ stateDir: mnt, source: a, target: b });
    const backup = sha256File(b);
    scatterWrites(a, 16 * MiB, 600);
    const err = await rejects(sync({ stateDir: mnt, source: a, target: b, journalBudget: 1024 ** 3 }));
    assert.instance(err, JournalFullError);
    assert.match((err as Error).message, /state directory is full/);
    await recover({ stateDir: mnt, target: b });
    assert.is(sha256File(b), backup);
  } finally {
    execFileSync('umount', [mnt]);
  }
});

test('a read-only state directory: a sync, a first clone and recover say so and what to do before the target is opened for writing', async () => {
  if (!requireEnv('the read-only state directory test', { root: true, tools: ['mount', 'umount'] })) return;
  const mnt = join(dir, 'ro-state');
  execFileSync('mkdir', ['-p', mnt]);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
  try {
    const a = randomImage(join(dir, 'ro-a.img'), 16 * MiB, 7);
    const b = sparseImage(join(dir, 'ro-b.img'), 16 * MiB);
    await clone({ stateDir: mnt, source: a, target: b });
    const backup = sha256File(b);
    scatterWrites(a, 16 * MiB, 600);
    // An interrupted sync, so recover has a journal to roll back.
    assert.instance(await rejects(sync({ stateDir: mnt, source: a, target: b, chunkSize: MiB, journalBudget: 256 * 1024 })), JournalFullError);
    const half = sha256File(b);
    const c = randomImage(join(dir, 'ro-c.img'), 16 * MiB, 8);
    const writeOpens: string[] = [];
    const openDevice = (loc: DriveLocation, options: OpenDriveOptions) => {
      if (options.write) writeOpens.push(loc.requested);
      return openLocated(loc, options);
    };
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    for (const [what, run] of [
      ['sync', () => sync({ stateDir: mnt, source: a, target: b, chunkSize: MiB, openDevice })],
      ['a first clone', () => clone({ stateDir: mnt, source: c, target: sparseImage(join(dir, 'ro-d.img'), 16 * MiB), openDevice })],
      ['recover', () => recover({ stateDir: mnt, target: b, openDevice })],
    ] as const) {
      const err = await rejects(run());
      assert.instance(err, ReadOnlyStateError, `${what}: ${String(err)}`);
      assert.match((err as Error).message, /read-only/, what);
      assert.match((err as ReadOnlyStateError).hint ?? '', /remount|writable/, what);
      assert.equal(writeOpens, [], `${what} opened no drive for writing`);
    }
    assert.is(sha256File(b), half, 'the standby was not touched');
    execFileSync('mount', ['-o', 'remount,rw', mnt]);
    await recover({ stateDir: mnt, target: b });
    assert.is(sha256File(b), backup, 'writable again, recover brings the previous backup back');
  } finally {
    execFileSync('umount', [mnt]);
  }
});

test('manifest mode reads only the source, and falls back to compare whenever the manifest cannot be trusted', async () => {
  const { stateDir, a, b } = await pairUp(16 * MiB);
  scatterWrites(a, 16 * MiB, 30);
  const first = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(first.mode, 'manifest', first.notes.join('; '));
  assert.is(sha256File(a), sha256File(b));
  // An interrupted sync leaves the manifest dirty.
  scatterWrites(a, 16 * MiB, 300);
  const err = await rejects(sync({ stateDir, source: a, target: b, chunkSize: MiB, journalBudget: 64 * 1024 }));
  assert.instance(err, JournalFullError);
  await recover({ stateDir, target: b });
  const fallback = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(fallback.mode, 'compare');
  assert.match(fallback.notes.join(' '), /interrupted/);
  assert.is(sha256File(a), sha256File(b));
  // A role change gives the drives new generations: the manifest no longer describes the standby.
  const again = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(again.mode, 'manifest');
  recordFailover(stateDir);
  const afterSwap = await sync({ stateDir, source: b, target: a, mode: 'manifest' });
  assert.is(afterSwap.mode, 'compare');
  // A corrupted manifest fails its checksum.
  const manifestPath = join(stateDir, 'pairs', new PairStore(stateDir).pairs()[0]!.id, 'standby.manifest');
  assert.ok(existsSync(manifestPath));
  const bytes = readFileSync(manifestPath);
  bytes[4096 + 80] ^= 0xff;
  writeFileSync(manifestPath, bytes);
  const corrupt = await sync({ stateDir, source: b, target: a, mode: 'manifest' });
  assert.is(corrupt.mode, 'compare');
  assert.match(corrupt.notes.join(' '), /checksum/);
  const v = await verify({ stateDir, source: b, target: a });
  assert.ok(v.identical);
});

test('an interrupted first clone cannot be "recovered" (there is no previous backup) but finishes when run again', async () => {
  const stateDir = join(dir, 'state-clone');
  const a = randomImage(join(dir, 'ic-a.img'), 8 * MiB, 77);
  const b = sparseImage(join(dir, 'ic-b.img'), 8 * MiB);
  const controller = new AbortController();
  let chunks = 0;
  await rejects(clone({ stateDir, source: a, target: b, chunkSize: MiB, signal: controller.signal, onChunkDone: () => ++chunks === 2 && controller.abort() }));
  const err = await rejects(recover({ stateDir, target: b }));
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, /first clone/);
  const syncErr = await rejects(sync({ stateDir, source: a, target: b }));
  assert.instance(syncErr, RefusedError);
  const done = await clone({ stateDir, source: a, target: b, chunkSize: MiB });
  assert.ok(done.bytesResumed > 0, 'resumed from the sync map');
  assert.is(sha256File(a), sha256File(b));
  copyFileSync(a, join(dir, 'unused.img'));
  void recordBecameActive;
});

test.run();
