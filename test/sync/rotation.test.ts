/**
 * Standby rotation: one active drive, several standbys, each its own pair.
 * The decisions as tables (which pair a copy belongs to, a second standby,
 * the generation guards, when a returning standby's manifest is stale), then
 * the operations on three image files.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { planCopy, type PlanInput } from '../../src/sync/copy-plan.ts';
import { manifestStaleness, type ManifestHeader } from '../../src/sync/manifest.ts';
import { moveStandbysToNewActive, nextGeneration, pairHolding, pairIdFor, recordBecameActive, recordCompletedCopy, type PairRecord } from '../../src/sync/pair-state.ts';
import { clone, sync, restore, recover, verify, recordFailover, PairStore } from '../../src/sync/index.ts';
import { RefusedError } from '../../src/errors.ts';
import { randomImage, scatterWrites, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { rejection } from '../support/assert-async.ts';
import { pair } from './support/pair-fixture.ts';
import { dpsr } from '../support/cli.ts';

const MiB = 1024 * 1024;
const S = 512;
const drive = (key: string) => ({ key, path: `/dev/${key.toLowerCase()}`, sizeBytes: 64 * MiB, logicalSectorSize: S });

/** A → B (pair 1) and A → C (pair 2): B synced at generation 2, C at generation 3, A at 3. */
function rotation(over: { b?: Partial<PairRecord>; c?: Partial<PairRecord> } = {}): PairRecord[] {
  const a = { key: 'A', sizeBytes: 64 * MiB, logicalSectorSize: S, lastPath: '/dev/a', generation: 3, lineage: [1, 2, 3] };
  const p1 = pair({ id: 'p-b', counter: 2, lastSuccess: '2026-01-01T00:00:00Z', ...over.b, drives: { A: { ...a, lineage: [...a.lineage] }, B: { key: 'B', sizeBytes: 64 * MiB, logicalSectorSize: S, lastPath: '/dev/b', generation: 2, lineage: [1, 2] } } });
  const p2 = pair({ id: 'p-c', standbyKey: 'C', counter: 3, lastSuccess: '2026-02-01T00:00:00Z', ...over.c, drives: { A: { ...a, lineage: [...a.lineage] }, C: { key: 'C', sizeBytes: 64 * MiB, logicalSectorSize: S, lastPath: '/dev/c', generation: 3, lineage: [1, 2, 3] } } });
  return [p1, p2];
}

function plan(kind: PlanInput['request']['kind'], from: string, to: string, pairs: PairRecord[], request: Partial<PlanInput['request']> = {}) {
  return planCopy({ request: { kind, partitions: [], mode: 'compare', ...request }, source: drive(from), target: drive(to), pairs });
}

type Row = [name: string, got: () => ReturnType<typeof planCopy>, expect: { verdict: 'refuse'; reason: RegExp; hint?: RegExp } | { verdict: 'copy'; pairId: string; kind?: string; newPair?: boolean; note?: RegExp }];

const rows: Row[] = [
  ['a clone onto a third drive without confirmation is refused, naming both standbys', () => plan('clone', 'A', 'D', rotation()), { verdict: 'refuse', reason: /\/dev\/a already has 2 standbys: \/dev\/b \(pair p-b, generation 2, last synced 2026-01-01.*\/dev\/c \(pair p-c, generation 3/, hint: /--add-standby/ }],
  ['a confirmed clone onto a third drive makes a new pair', () => plan('clone', 'A', 'D', rotation(), { addStandby: true }), { verdict: 'copy', pairId: pairIdFor('A', 'D'), kind: 'clone', newPair: true, note: /another standby of \/dev\/a, besides \/dev\/b/ }],
  ['a clone from a drive that is a standby is refused even when confirmed', () => plan('clone', 'B', 'D', rotation(), { addStandby: true }), { verdict: 'refuse', reason: /already belongs to another pair \(p-b\)/ }],
  ['a clone onto a rotated standby of its own active drive runs as a sync of that pair', () => plan('clone', 'A', 'C', rotation()), { verdict: 'copy', pairId: 'p-c', kind: 'sync' }],
  ['a sync goes to the pair of the standby that is present: B', () => plan('sync', 'A', 'B', rotation()), { verdict: 'copy', pairId: 'p-b', kind: 'sync' }],
  ['a sync goes to the pair of the standby that is present: C', () => plan('sync', 'A', 'C', rotation()), { verdict: 'copy', pairId: 'p-c', kind: 'sync' }],
  ['a sync from a standby onto the active drive is refused (wrong direction)', () => plan('sync', 'C', 'A', rotation()), { verdict: 'refuse', reason: /copy the backup \/dev\/c over the ACTIVE drive/, hint: /restore/ }],
  ['a sync from one standby onto another is refused', () => plan('sync', 'B', 'C', rotation()), { verdict: 'refuse', reason: /are not the two drives of pair p-c/ }],
  ['a restore from a rotated standby uses its own pair', () => plan('restore', 'C', 'A', rotation()), { verdict: 'copy', pairId: 'p-c', kind: 'restore' }],
  ['a sync onto an unknown drive names every standby of the source', () => plan('sync', 'A', 'D', rotation()), { verdict: 'refuse', reason: /not the standby of any recorded pair/, hint: /standbys are \/dev\/b .*\/dev\/c/ }],
  [
    'after a failover to B the rotated standby C, synced after B, is not overwritten from B without --force-generation',
    () => {
      const pairs = rotation();
      failover(pairs, 'p-b');
      return plan('sync', 'B', 'C', pairs);
    },
    { verdict: 'refuse', reason: /holds generation 3, which the source \(generation \d+\) does not descend from/, hint: /--force-generation/ },
  ],
  [
    'after a failover to C (the newest standby) the older standby B is an ordinary sync from C',
    () => {
      const pairs = rotation();
      failover(pairs, 'p-c');
      return plan('sync', 'C', 'B', pairs);
    },
    { verdict: 'copy', pairId: 'p-b', kind: 'sync' },
  ],
  [
    'after a failover the old active drive is the standby of its pair only: a copy from it to another standby is refused',
    () => {
      const pairs = rotation();
      failover(pairs, 'p-c');
      return plan('sync', 'A', 'B', pairs);
    },
    { verdict: 'refuse', reason: /are not the two drives of pair p-b/ },
  ],
];

/** A failover in the books, as recordFailover does it in its transaction. */
function failover(pairs: PairRecord[], id: string) {
  const p = pairs.find((q) => q.id === id)!;
  const old = p.activeKey;
  p.activeKey = p.standbyKey;
  p.standbyKey = old;
  recordBecameActive(p, p.activeKey, pairs);
  moveStandbysToNewActive(p, old, pairs);
}

test('table: which pair a copy of a rotation belongs to, a second standby, the direction and generation guards', () => {
  for (const [name, got, e] of rows) {
    const d = got();
    if (e.verdict === 'refuse') {
      assert.is(d.verdict, 'refuse', `${name}: ${JSON.stringify(d)}`);
      if (d.verdict !== 'refuse') continue;
      assert.match(d.refusal.reason, e.reason, name);
      if (e.hint) assert.match(d.refusal.hint, e.hint, `${name}: ${d.refusal.hint}`);
      continue;
    }
    assert.is(d.verdict, 'copy', `${name}: ${d.verdict === 'refuse' ? d.refusal.reason : ''}`);
    if (d.verdict !== 'copy') continue;
    assert.is(d.plan.pairId, e.pairId, name);
    if (e.kind) assert.is(d.plan.kind, e.kind, name);
    if (e.newPair !== undefined) assert.is(d.newPair, e.newPair, name);
    if (e.note) assert.ok(d.notes.some((n) => e.note!.test(n)), `${name}: ${d.notes.join(' | ')}`);
  }
});

test('table: generations are new across the pairs of a rotation and a drive has one generation and lineage in every record', () => {
  // A pair of two other drives (another host's data pair, say) counts on its own.
  const other = pair({ id: 'p-xy', activeKey: 'X', standbyKey: 'Y', counter: 40, drives: { X: { ...pair().drives.A!, key: 'X', generation: 40, lineage: [40] }, Y: { ...pair().drives.B!, key: 'Y', generation: 40, lineage: [40] } } });
  const pairs = [...rotation(), other];
  assert.is(nextGeneration(pairs.slice(0, 2)), 4);
  const g = recordCompletedCopy(pairs[0]!, 'A', 'B', pairs);
  assert.is(g, 4, 'above pair 2 counter, though pair 1 counted only to 2, and not above the unrelated pair');
  assert.is(recordCompletedCopy(other, 'X', 'Y', pairs), 41);
  assert.equal(pairs[1]!.drives.A, { ...pairs[0]!.drives.A!, lastPath: '/dev/a' }, 'A is the same in both records');
  assert.equal(pairs[0]!.drives.B!.lineage, [1, 2, 3, 4]);
  assert.is(pairs[1]!.drives.C!.generation, 3, 'C is untouched: its manifest still describes it');
  // Which pair a drive key belongs to: a copy writing it, then the pair where it is the standby, then the first where it is active.
  assert.is(pairHolding(pairs, 'C')!.id, 'p-c');
  assert.is(pairHolding(pairs, 'A')!.id, 'p-b');
  const writing = rotation({ c: { pendingCopy: { kind: 'restore', from: 'C', to: 'A', startedAt: 'x', journaled: true } } });
  assert.is(pairHolding(writing, 'A')!.id, 'p-c');
});

test('table: after a failover the other standbys follow the host to the new active drive', () => {
  const pairs = rotation();
  failover(pairs, 'p-b');
  const [p1, p2] = pairs as [PairRecord, PairRecord];
  assert.is(p1.activeKey, 'B');
  assert.is(p1.standbyKey, 'A');
  assert.is(p2.activeKey, 'B', 'C is now a standby of B');
  assert.is(p2.drives.A, undefined);
  assert.equal(p2.drives.B, p1.drives.B);
  assert.is(p2.drives.C!.generation, 3);
});

const header = (over: Partial<ManifestHeader> = {}): ManifestHeader => ({ format: 'dpsr-manifest-2', state: 'valid', targetKey: 'C', targetSize: 64 * MiB, blockSize: 32768, generation: 3, coverage: [], bodyChecksum: '0', ...over });
const expectC = { targetKey: 'C', targetSize: 64 * MiB, generation: 3 };

test('table: a returning standby gets a manifest-mode sync unless its manifest is stale', () => {
  const table: [string, ManifestHeader, RegExp | undefined][] = [
    ['back from off-site, untouched since its last sync: trusted', header(), undefined],
    ['stale: it describes an older generation of the standby', header({ generation: 2 }), /stale: it describes generation 2 of the standby, which holds generation 3/],
    ['stale: it describes a newer generation (the records were restored from a backup)', header({ generation: 4 }), /stale/],
    ['its last sync was interrupted', header({ state: 'dirty' }), /interrupted/],
    ['another drive', header({ targetKey: 'B' }), /another drive/],
    ['another size', header({ targetSize: 80 * MiB }), /changed size/],
    ['another format', header({ format: 'x' as 'dpsr-manifest-2' }), /unknown format/],
  ];
  for (const [name, h, want] of table) {
    const got = manifestStaleness(h, expectC);
    if (want) assert.match(got ?? '', want, name);
    else assert.is(got, undefined, name);
  }
});

// On image files: A active, B and C its standbys, one at a time in the "bay".
const dir = tempDir('dpsr-rotation-');
let n = 0;
async function threeDrives() {
  const i = n++;
  const stateDir = join(dir, `state-${i}`);
  const a = randomImage(join(dir, `a-${i}.img`), 8 * MiB, 50 + i);
  const b = sparseImage(join(dir, `b-${i}.img`), 8 * MiB);
  const c = sparseImage(join(dir, `c-${i}.img`), 8 * MiB);
  await clone({ stateDir, source: a, target: b });
  return { stateDir, a, b, c };
}

test('a second standby: refused without confirmation (nothing written), then its own pair; syncs go to whichever is present', async () => {
  const { stateDir, a, b, c } = await threeDrives();
  const cBefore = sha256File(c);
  const err = await rejection(clone({ stateDir, source: a, target: c }));
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, new RegExp(`already has a standby: ${b}`));
  assert.is(sha256File(c), cBefore, 'nothing written');
  assert.is(new PairStore(stateDir).pairs().length, 1);

  const second = await clone({ stateDir, source: a, target: c, addStandby: true });
  assert.ok(second.notes.some((x) => x.includes(`another standby of ${a}`)));
  const pairs = new PairStore(stateDir).pairs();
  assert.is(pairs.length, 2);
  assert.is(pairs[0]!.activeKey, pairs[1]!.activeKey);
  assert.is.not(pairs[0]!.id, pairs[1]!.id);

  scatterWrites(a, 8 * MiB, 30);
  const toB = await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  assert.is(toB.pairId, pairs[0]!.id);
  assert.is(sha256File(b), sha256File(a));
  scatterWrites(a, 8 * MiB, 30);
  // C comes back: its manifest describes it still (nothing synced it since), so only the active drive is read.
  const toC = await sync({ stateDir, source: a, target: c, mode: 'manifest' });
  assert.is(toC.pairId, pairs[1]!.id);
  assert.is(toC.mode, 'manifest', toC.notes.join(' | '));
  assert.is(sha256File(c), sha256File(a));
  assert.ok(toC.generation > toB.generation, 'generations are new across both pairs of the rotation');
  // The one not synced is untouched and still consistent.
  const after = new PairStore(stateDir).pairs();
  assert.ok(after.every((p) => p.standbyState === 'consistent'));
  assert.is(after[0]!.drives[after[0]!.standbyKey]!.generation, toB.generation);
  assert.is((await verify({ stateDir, source: a, target: c })).identical, true);
});

test('a rotated standby whose manifest is stale gets a full compare, and never a copy in the wrong direction', async () => {
  const { stateDir, a, b, c } = await threeDrives();
  await clone({ stateDir, source: a, target: c, addStandby: true });
  // C's manifest is lost while it is off-site (a new state directory disk, say): stale or missing means compare.
  const pc = new PairStore(stateDir).pairs()[1]!;
  rmSync(join(stateDir, 'pairs', pc.id, 'standby.manifest'), { force: true });
  scatterWrites(a, 8 * MiB, 10);
  const r = await sync({ stateDir, source: a, target: c, mode: 'manifest' });
  assert.is(r.mode, 'compare');
  assert.ok(r.notes.some((x) => /manifest mode not possible/.test(x)));
  assert.is(sha256File(c), sha256File(a));
  const aBefore = sha256File(a);
  assert.instance(await rejection(sync({ stateDir, source: c, target: a })), RefusedError);
  assert.instance(await rejection(sync({ stateDir, source: b, target: c })), RefusedError);
  assert.is(sha256File(a), aBefore);
});

test('a failover to one standby takes the other standbys along; one synced after it (and the old active drive) are refused without --force-generation', async () => {
  const { stateDir, a, b, c } = await threeDrives();
  await clone({ stateDir, source: a, target: c, addStandby: true });
  const [p1] = new PairStore(stateDir).pairs();
  // C was synced after B: failing over to B and syncing B onto C would lose what only C (and A) hold.
  scatterWrites(a, 8 * MiB, 10);
  await sync({ stateDir, source: a, target: c });
  const swap = recordFailover(stateDir, p1!.id);
  assert.is(swap.active, b);
  const cBefore = sha256File(c);
  const err = await rejection(sync({ stateDir, source: b, target: c }));
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, /does not descend from/);
  assert.is(sha256File(c), cBefore);
  const forced = await sync({ stateDir, source: b, target: c, forceGeneration: true });
  assert.is(forced.result, 'done');
  assert.is(sha256File(c), sha256File(b));
  // A is now B's standby; it too holds the generation synced onto C, which B lacks: the same guard.
  scatterWrites(b, 8 * MiB, 10);
  assert.match(((await rejection(sync({ stateDir, source: b, target: a }))) as Error).message, /does not descend from/);
  await sync({ stateDir, source: b, target: a, forceGeneration: true });
  assert.is(sha256File(a), sha256File(b));
  // From here on both standbys descend from B: ordinary syncs.
  scatterWrites(b, 8 * MiB, 10);
  await sync({ stateDir, source: b, target: c });
  await sync({ stateDir, source: b, target: a });
  assert.is(sha256File(c), sha256File(b));
  assert.is(sha256File(a), sha256File(b));
});

test('an interrupted sync of one standby leaves the other pair alone; recover finds the right pair', async () => {
  const { stateDir, a, b, c } = await threeDrives();
  await clone({ stateDir, source: a, target: c, addStandby: true });
  const cBefore = sha256File(c);
  const bBefore = sha256File(b);
  scatterWrites(a, 8 * MiB, 40);
  let chunks = 0;
  await rejection(
    sync({
      stateDir,
      source: a,
      target: c,
      chunkSize: 1 * MiB,
      onChunkDone: () => {
        if (++chunks === 3) throw new Error('power lost');
      },
    }),
  );
  const [p1, p2] = new PairStore(stateDir).pairs();
  assert.is(p1!.standbyState, 'consistent');
  assert.is(p2!.standbyState, 'inconsistent');
  // B is still a whole backup and can be synced meanwhile.
  await sync({ stateDir, source: a, target: b });
  assert.is(sha256File(b), sha256File(a));
  assert.is.not(sha256File(b), bBefore);
  const r = await recover({ stateDir, target: c });
  assert.is(r.action, 'rolled-back');
  assert.is(sha256File(c), cBefore);
  // A restore from a rotated standby writes the active drive through that standby's pair.
  const rr = await restore({ stateDir, source: b, target: a });
  assert.is(rr.pairId, p1!.id);
});

test('dpsr clone onto a second standby: refused under --yes naming the first (exit 3), done with --add-standby; dpsr status shows each standby\'s age', async () => {
  const { stateDir, a, b, c } = await threeDrives();
  const cBefore = sha256File(c);
  const refused = dpsr(['clone', a, c, '--yes', '--state-dir', stateDir]);
  assert.is(refused.code, 3, refused.stderr);
  assert.match(refused.stderr, new RegExp(`already has a standby: ${b} \\(pair [0-9a-f]+, generation 2, last synced`));
  assert.match(refused.stderr, /--add-standby/);
  assert.is(sha256File(c), cBefore);
  const added = dpsr(['clone', a, c, '--yes', '--add-standby', '--state-dir', stateDir]);
  assert.is(added.code, 0, added.stderr);
  assert.match(added.stdout, new RegExp(`note: ${c} becomes another standby of ${a}, besides ${b}`));
  const status = dpsr(['status', '--json', '--state-dir', stateDir]);
  assert.is(status.code, 0, status.stderr);
  const pairs = status.json().pairs as { id: string; standby: { lastPath: string; lastSyncedAt: string; ageSeconds: number }; otherStandbys: string[] }[];
  assert.equal(pairs.map((p) => p.standby.lastPath), [b, c]);
  for (const p of pairs) {
    assert.ok(p.standby.ageSeconds >= 0 && p.standby.ageSeconds < 600, `age ${p.standby.ageSeconds}`);
    assert.ok(Date.parse(p.standby.lastSyncedAt) > 0);
  }
  assert.equal(pairs[0]!.otherStandbys, [pairs[1]!.id]);
  const text = dpsr(['status', '--state-dir', stateDir]).stdout;
  assert.match(text, /standby age: \d+ s \(last synced /);
  assert.match(text, /rotation: 2 standbys of this active drive/);
});

test.run();
