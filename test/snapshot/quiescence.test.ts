/**
 * Quiescence: the decision as a table (policy and observation in, decision
 * out), the policy's checks, and the polling shell against a real
 * qemu-storage-daemon with a writer through the host export.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { StorageDaemon, TOP_NODE } from '../../src/export/index.ts';
import { decideQuiescence, checkQuiescencePolicy, waitForQuiescence, QUIET_BITMAPS, type QuiescencePolicy, type QuiescenceDecision } from '../../src/snapshot/index.ts';
import { NbdDrive } from '../../src/sata-bridge/index.ts';
import { BadInputError, CancelledError } from '../../src/errors.ts';
import { randomImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { rejection } from '../support/assert-async.ts';

const P: QuiescencePolicy = { quietMs: 5000, maxWaitMs: 60_000, fallback: 'crash-consistent', pollMs: 250 };
const SKIP: QuiescencePolicy = { ...P, fallback: 'skip' };

const table: [string, QuiescencePolicy, { startedAt: number; lastWriteAt: number | null; now: number }, QuiescenceDecision][] = [
  ['just started, nothing seen: poll again', P, { startedAt: 0, lastWriteAt: null, now: 0 }, { action: 'wait', delayMs: 250 }],
  ['no write since the start, quiet time reached', P, { startedAt: 0, lastWriteAt: null, now: 5000 }, { action: 'proceed', consistency: 'quiet', waitedMs: 5000 }],
  ['a write 4.9 s ago: wait only the 0.1 s left', P, { startedAt: 0, lastWriteAt: 10_100, now: 15_000 }, { action: 'wait', delayMs: 100 }],
  ['a write 1 s ago: the next poll', P, { startedAt: 0, lastWriteAt: 14_000, now: 15_000 }, { action: 'wait', delayMs: 250 }],
  ['the last write exactly quietMs ago', P, { startedAt: 0, lastWriteAt: 10_000, now: 15_000 }, { action: 'proceed', consistency: 'quiet', waitedMs: 15_000 }],
  ['quiet wins over the maximum when both are reached', P, { startedAt: 0, lastWriteAt: 55_000, now: 60_000 }, { action: 'proceed', consistency: 'quiet', waitedMs: 60_000 }],
  ['writes until the maximum: crash-consistent', P, { startedAt: 0, lastWriteAt: 59_900, now: 60_000 }, { action: 'proceed', consistency: 'crash-consistent', waitedMs: 60_000 }],
  ['writes until the maximum: skip', SKIP, { startedAt: 0, lastWriteAt: 59_900, now: 60_000 }, { action: 'skip', waitedMs: 60_000 }],
  ['past the maximum (a slow poll): still the fallback', SKIP, { startedAt: 1000, lastWriteAt: 64_000, now: 65_000 }, { action: 'skip', waitedMs: 64_000 }],
  ['the maximum comes before the next poll: wait only until it', P, { startedAt: 0, lastWriteAt: 59_850, now: 59_900 }, { action: 'wait', delayMs: 100 }],
  ['quiet time zero: proceed at once', { ...P, quietMs: 0 }, { startedAt: 0, lastWriteAt: null, now: 0 }, { action: 'proceed', consistency: 'quiet', waitedMs: 0 }],
  ['maximum equals quiet: a write at the start means the fallback at quietMs', { ...P, maxWaitMs: 5000 }, { startedAt: 0, lastWriteAt: 250, now: 5000 }, { action: 'proceed', consistency: 'crash-consistent', waitedMs: 5000 }],
  ['default poll when the policy names none', { quietMs: 5000, maxWaitMs: 60_000, fallback: 'skip' }, { startedAt: 0, lastWriteAt: null, now: 1000 }, { action: 'wait', delayMs: 250 }],
];

for (const [name, policy, obs, want] of table) {
  test(`decideQuiescence: ${name}`, () => {
    assert.equal(decideQuiescence(policy, obs), want);
  });
}

test('checkQuiescencePolicy names the wrong field', () => {
  const bad: [Partial<QuiescencePolicy>, RegExp][] = [
    [{ quietMs: -1 }, /quietMs -1 is not a duration/],
    [{ maxWaitMs: Number.NaN }, /maxWaitMs NaN/],
    [{ quietMs: 10_000, maxWaitMs: 5000 }, /maxWaitMs \(5000\) is shorter than quietMs \(10000\)/],
    [{ fallback: 'wait' as never }, /fallback "wait" is not crash-consistent or skip/],
    [{ pollMs: 0 }, /pollMs 0 must be more than 0/],
  ];
  for (const [change, msg] of bad) {
    try {
      checkQuiescencePolicy({ ...P, ...change });
      assert.unreachable(`accepted ${JSON.stringify(change)}`);
    } catch (e) {
      assert.instance(e, BadInputError);
      assert.match((e as Error).message, msg);
    }
  }
  assert.equal(checkQuiescencePolicy(P), P);
});

const dir = tempDir('dpsr-quiescence-');
const MiB = 1024 * 1024;
const haveQsd = requireEnv('quiescence on qemu-storage-daemon', { tools: ['qemu-storage-daemon'] });

async function withDaemon(name: string, body: (d: StorageDaemon) => Promise<void>): Promise<void> {
  const runDir = join(dir, name);
  mkdirSync(runDir, { recursive: true });
  const daemon = new StorageDaemon({ drive: randomImage(join(runDir, 'drive.img'), 16 * MiB, 5), runDir, listen: { unix: join(runDir, 'nbd.sock') } });
  await daemon.start();
  try {
    await body(daemon);
  } finally {
    await daemon.stop();
  }
}

/**
 * Writes 4 KiB through the host export every `everyMs` until stopped (or for `stopAfterMs`);
 * `first` resolves once a write has landed; `lastIssuedAt` is when the latest write was sent (performance.now()).
 * `stop` returns how many writes failed.
 */
function writer(daemon: StorageDaemon, everyMs: number, stopAfterMs = Infinity): { first: Promise<void>; readonly lastIssuedAt: number; stop: () => Promise<number> } {
  let running = true;
  let lastIssuedAt = Number.NaN;
  let landed!: () => void;
  const first = new Promise<void>((r) => (landed = r));
  const done = (async () => {
    const host = await NbdDrive.open(daemon.hostUri, { write: true });
    const t0 = performance.now();
    let failures = 0;
    for (let i = 0; running && performance.now() - t0 < stopAfterMs; i++) {
      lastIssuedAt = performance.now();
      await host.write(Buffer.alloc(4096, i & 0xff), (i % 64) * 4096).catch(() => failures++);
      landed();
      await new Promise((r) => setTimeout(r, everyMs));
    }
    await host.close();
    landed();
    return failures;
  })();
  return {
    first,
    get lastIssuedAt() {
      return lastIssuedAt;
    },
    stop: async () => {
      running = false;
      return done;
    },
  };
}

async function quietBitmapsLeft(daemon: StorageDaemon): Promise<string[]> {
  const nodes = await daemon.qmp.execute<{ 'node-name'?: string; 'dirty-bitmaps'?: { name: string }[] }[]>('query-named-block-nodes', { flat: true });
  return nodes.flatMap((n) => (n['dirty-bitmaps'] ?? []).map((b) => b.name)).filter((b) => (QUIET_BITMAPS as readonly string[]).includes(b));
}

test('an idle drive is found quiet; no detector bitmap is left', async () => {
  if (!haveQsd) return;
  await withDaemon('idle', async (daemon) => {
    const r = await waitForQuiescence(daemon, { quietMs: 300, maxWaitMs: 5000, fallback: 'skip', pollMs: 50 });
    assert.is(r.outcome, 'quiet');
    assert.match(r.message, /quiet for 0.3 s/);
    assert.equal(await quietBitmapsLeft(daemon), []);
  });
});

test('a drive written all the time: past the maximum, crash-consistent or skip as configured', async () => {
  if (!haveQsd) return;
  await withDaemon('busy', async (daemon) => {
    const w = writer(daemon, 20);
    // Waited for once the writer is writing: a connect slower than the window must not leave the drive quiet in it.
    await w.first;
    try {
      // quietMs = maxWaitMs: a write anywhere in the window means the fallback, however the machine schedules the poll.
      const cc = await waitForQuiescence(daemon, { quietMs: 1000, maxWaitMs: 1000, fallback: 'crash-consistent', pollMs: 50 });
      assert.is(cc.outcome, 'crash-consistent');
      assert.match(cc.message, /still being written after .* crash-consistent/);
      const skip = await waitForQuiescence(daemon, { quietMs: 1000, maxWaitMs: 1000, fallback: 'skip', pollMs: 50 });
      assert.is(skip.outcome, 'skip');
      assert.match(skip.message, /this run is skipped/);
    } finally {
      assert.is(await w.stop(), 0, 'the host writes went on without error');
    }
    assert.equal(await quietBitmapsLeft(daemon), []);
  });
});

test('rewrites of one block count as writes (the detector is not a growing dirty count)', async () => {
  if (!haveQsd) return;
  await withDaemon('rewrites', async (daemon) => {
    const host = await NbdDrive.open(daemon.hostUri, { write: true });
    let running = true;
    const loop = (async () => {
      for (let i = 0; running; i++) {
        await host.write(Buffer.alloc(4096, i & 0xff), 0);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      const r = await waitForQuiescence(daemon, { quietMs: 1000, maxWaitMs: 1000, fallback: 'skip', pollMs: 50 });
      assert.is(r.outcome, 'skip');
    } finally {
      running = false;
      await loop;
      await host.close();
    }
  });
});

test('a writer that stops: the wait ends quiet, after the writes', async () => {
  if (!haveQsd) return;
  await withDaemon('stops', async (daemon) => {
    const w = writer(daemon, 20, 800);
    // Started once the writer is writing: a slow connect must not leave a quiet drive at the start of the wait.
    await w.first;
    const r = await waitForQuiescence(daemon, { quietMs: 1000, maxWaitMs: 20_000, fallback: 'skip', pollMs: 50 });
    const endedAt = performance.now();
    const lastWrite = w.lastIssuedAt;
    assert.is(await w.stop(), 0);
    assert.is(r.outcome, 'quiet');
    // Causal, not a speed: the last write landed after it was sent, so quiet counted from it ends no sooner than quietMs later.
    assert.ok(endedAt >= lastWrite + 1000, `the wait ended ${(endedAt - lastWrite).toFixed(0)} ms after the last write was sent`);
  });
});

test('a cancelled wait throws CancelledError and leaves no bitmap', async () => {
  if (!haveQsd) return;
  await withDaemon('cancel', async (daemon) => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const e = await rejection(waitForQuiescence(daemon, { quietMs: 10_000, maxWaitMs: 20_000, fallback: 'skip', pollMs: 50 }, { signal: ac.signal }));
    assert.instance(e, CancelledError);
    assert.equal(await quietBitmapsLeft(daemon), []);
    assert.ok((await daemon.qmp.execute<{ 'node-name'?: string }[]>('query-named-block-nodes', { flat: true })).some((n) => n['node-name'] === TOP_NODE));
  });
});

test.run();
