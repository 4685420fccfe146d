/**
 * The copy plan as a table: records, drives, layout and request in, a refusal
 * or a plan out. No drive is touched; the operations that carry plans out are
 * tested against images elsewhere.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { planCopy, pendingCopyAdvice, type CopyDecision, type CopyPlan, type PlanInput } from '../../src/sync/copy-plan.ts';
import type { PairRecord } from '../../src/sync/pair-state.ts';
import { pair } from './support/pair-fixture.ts';
import type { DiskLayout, GptInfo } from '../../src/disk-layout/index.ts';

const MiB = 1024 * 1024;
const S = 512;

function gpt(sizeBytes: number, over: Partial<GptInfo> = {}, layoutOver: Partial<DiskLayout> = {}): DiskLayout {
  const total = sizeBytes / S;
  const info: GptInfo = {
    primaryValid: true,
    backupValid: true,
    backupAtEnd: true,
    alternateLba: total - 1,
    firstUsableLba: 34,
    lastUsableLba: total - 34,
    primaryEntriesLba: 2,
    backupLba: total - 1,
    backupEntriesLba: total - 33,
    entryCount: 128,
    entrySize: 128,
    usedCopy: 'primary',
    problems: [],
    ...over,
  };
  const part = (number: number, firstLba: number, lastLba: number) => ({ number, firstLba, lastLba, startByte: firstLba * S, sizeBytes: (lastLba - firstLba + 1) * S, type: 'x', typeName: 'Linux filesystem', bootable: false });
  return {
    scheme: 'gpt',
    sectorSize: S,
    diskSizeBytes: sizeBytes,
    diskId: 'disk',
    partitions: [part(1, 2048, 2048 + (16 * MiB) / S - 1), part(2, 2048 + (16 * MiB) / S, info.lastUsableLba)],
    gpt: info,
    problems: [],
    ...layoutOver,
  };
}

const mbr = (sizeBytes: number): DiskLayout => ({
  scheme: 'mbr',
  sectorSize: S,
  diskSizeBytes: sizeBytes,
  diskId: '0x1',
  partitions: [{ number: 1, firstLba: 2048, lastLba: sizeBytes / S - 1, startByte: 2048 * S, sizeBytes: sizeBytes - 2048 * S, type: '0x83', typeName: 'Linux', bootable: false }],
  mbr: { diskSignature: 1, ebrLbas: [], protective: false, hybrid: false },
  problems: [],
});


function input(over: Partial<PlanInput> & { kind?: PlanInput['request']['kind']; partitions?: number[]; mode?: 'compare' | 'manifest'; sizeA?: number; sizeB?: number } = {}): PlanInput {
  const sizeA = over.sizeA ?? 64 * MiB;
  const sizeB = over.sizeB ?? 64 * MiB;
  return {
    request: { kind: over.kind ?? 'sync', partitions: over.partitions ?? [], mode: over.mode ?? 'compare', ...over.request },
    source: { key: 'A', path: '/dev/a', sizeBytes: sizeA, logicalSectorSize: S },
    target: { key: 'B', path: '/dev/b', sizeBytes: sizeB, logicalSectorSize: S },
    sourceLayout: gpt(sizeA),
    pairs: [pair()],
    journalRecords: 0,
    ...over,
  };
}

/** The standby's layout after a clone from 64 onto 80 MiB: the backup GPT at its end, the partitions as on the active drive. */
const relocatedStandby = (): DiskLayout => ({ ...gpt(80 * MiB), partitions: gpt(64 * MiB).partitions });

/** A restore from an 80 MiB standby B onto its 64 MiB active drive A. */
const restoreFromLarger = (over: Partial<PlanInput> = {}): PlanInput =>
  input({
    kind: 'restore',
    source: { key: 'B', path: '/dev/b', sizeBytes: 80 * MiB, logicalSectorSize: S },
    target: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S },
    sourceLayout: relocatedStandby(),
    pairs: [pair({}, { B: 80 * MiB })],
    ...over,
  });

/** A pending copy as the operation records it: the plan of the request that started it. */
function pendingFrom(request: PlanInput, startedAt = '2026-01-02T00:00:00Z'): PairRecord['pendingCopy'] {
  const d = planCopy(request);
  if (d.verdict !== 'copy') throw new Error(`no plan: ${d.refusal.reason}`);
  return { kind: d.plan.kind, from: d.plan.source.key, to: d.plan.target.key, startedAt, journaled: d.plan.journaled, plan: d.plan };
}

const interrupted = (request: PlanInput, over: Partial<PairRecord> = {}) => [pair({ standbyState: 'inconsistent', pendingCopy: pendingFrom(request), ...over })];

type Expect =
  | { verdict: 'refuse'; error: 'refused' | 'bad-input' | 'busy'; reason: RegExp; hint?: RegExp; notHint?: RegExp }
  | { verdict: 'copy'; start?: 'fresh' | 'resume' | 'restart'; plan?: Partial<CopyPlan> & { fixupFrom?: 'primary' | 'backup' | null } };

function check(name: string, d: CopyDecision, e: Expect) {
  if (e.verdict === 'refuse') {
    assert.is(d.verdict, 'refuse', `${name}: expected a refusal, got ${JSON.stringify(d)}`);
    if (d.verdict !== 'refuse') return;
    assert.is(d.refusal.error, e.error, `${name}: ${d.refusal.reason}`);
    assert.match(d.refusal.reason, e.reason, name);
    if (e.hint) assert.match(d.refusal.hint, e.hint, `${name}: hint ${d.refusal.hint}`);
    if (e.notHint) assert.not.match(d.refusal.hint, e.notHint, `${name}: hint ${d.refusal.hint}`);
    return;
  }
  assert.is(d.verdict, 'copy', `${name}: ${d.verdict === 'refuse' ? d.refusal.reason : ''}`);
  if (d.verdict !== 'copy') return;
  if (e.start) assert.is(d.start, e.start, name);
  const { fixupFrom, ...fields } = e.plan ?? {};
  for (const [k, v] of Object.entries(fields)) assert.equal((d.plan as unknown as Record<string, unknown>)[k], v, `${name}: ${k}`);
  if (fixupFrom !== undefined) assert.is(d.plan.tableFixups[0]?.from ?? null, fixupFrom, `${name}: fix-up`);
}

const rows: [string, PlanInput, Expect][] = [
  ['first clone of two new drives', input({ kind: 'clone', pairs: [] }), { verdict: 'copy', start: 'fresh', plan: { kind: 'clone', mode: 'clone', journaled: false, ranges: [{ start: 0, length: 64 * MiB }], fixupFrom: null } }],
  ['clone onto the consistent standby of its pair runs as a journaled sync', input({ kind: 'clone' }), { verdict: 'copy', start: 'fresh', plan: { kind: 'sync', journaled: true } }],
  ['clone --force onto the consistent standby copies everything', input({ kind: 'clone', request: { kind: 'clone', partitions: [], mode: 'compare', forceClone: true } }), { verdict: 'copy', plan: { kind: 'clone', journaled: false } }],
  ['a clone with partitions is bad input', input({ kind: 'clone', partitions: [2] }), { verdict: 'refuse', error: 'bad-input', reason: /clone copies the whole drive/ }],
  ['another logical sector size', input({ target: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: 4096 } }), { verdict: 'refuse', error: 'refused', reason: /4096-byte sectors, the source \/dev\/a 512-byte/ }],
  ['the source has a standby already: a second one only when confirmed', input({ kind: 'clone', pairs: [pair({ id: 'other', standbyKey: 'C', drives: { A: pair().drives.A!, C: { ...pair().drives.B!, key: 'C', lastPath: '/dev/c' } } })] }), { verdict: 'refuse', error: 'refused', reason: /already has a standby: \/dev\/c \(pair other/, hint: /--add-standby.*dpsr forget other/ }],
  ['the source is the standby of another pair', input({ kind: 'clone', pairs: [pair({ id: 'other', activeKey: 'C', standbyKey: 'A', drives: { A: pair().drives.A!, C: { ...pair().drives.B!, key: 'C', lastPath: '/dev/c' } } })] }), { verdict: 'refuse', error: 'refused', reason: /already belongs to another pair \(other\) with \/dev\/c/, hint: /dpsr forget other/ }],
  ['clone onto the active drive', input({ kind: 'clone', source: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: S }, target: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S } }), { verdict: 'refuse', error: 'refused', reason: /ACTIVE drive/, hint: /dpsr restore/ }],
  ['sync onto a drive of no pair', input({ pairs: [] }), { verdict: 'refuse', error: 'refused', reason: /not the standby of any recorded pair/, hint: /dpsr clone/ }],
  ['sync in the reverse direction', input({ source: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: S }, target: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S } }), { verdict: 'refuse', error: 'refused', reason: /copy the backup \/dev\/b over the ACTIVE drive/, hint: /restore/ }],
  // f12: the active drive shows up 8 MiB smaller than at pairing.
  ['the active drive shrank since pairing', input({ sizeA: 56 * MiB, sourceLayout: gpt(56 * MiB) }), { verdict: 'refuse', error: 'refused', reason: /active drive \/dev\/a now reports 58,720,256 bytes .* had 67,108,864 bytes .*8,388,608 bytes \(16,384 sectors\) less .*host protected area/, hint: /dpsr forget/ }],
  ['the standby grew since pairing', input({ sizeB: 80 * MiB }), { verdict: 'refuse', error: 'refused', reason: /standby drive \/dev\/b now reports 83,886,080 bytes.*more/ }],
  ['the standby changed its logical sector size', input({ pairs: [pair({}, { sectorB: 4096 })] }), { verdict: 'refuse', error: 'refused', reason: /512-byte logical sectors instead of 4096-byte .*translates sector sizes/, hint: /bridge or enclosure it was paired through/, notHint: /hdparm|HPA/ }],
  // An image file has no bridge and no HPA: its causes are the --sector-size given and its length.
  ['a standby image named with another --sector-size', input({ target: { key: 'B', path: '/img/b', sizeBytes: 64 * MiB, logicalSectorSize: S, image: true }, pairs: [pair({}, { sectorB: 4096 })] }), { verdict: 'refuse', error: 'refused', reason: /--sector-size 512 given for an image paired with 4096-byte sectors/, hint: /give --sector-size 4096/, notHint: /hdparm|bridge/ }],
  ['an active image file that was resized', input({ sizeA: 80 * MiB, source: { key: 'A', path: '/img/a', sizeBytes: 80 * MiB, logicalSectorSize: S, image: true } }), { verdict: 'refuse', error: 'refused', reason: /16,777,216 bytes \(32,768 sectors\) more \(likely causes: the image file was resized\)/, hint: /paired length of 67,108,864 bytes/, notHint: /hdparm|bridge/ }],
  // f11: a GPT made for 96 MiB on a drive that shows 64 MiB.
  ['the source table describes a larger disk', input({ kind: 'clone', pairs: [], sizeB: 80 * MiB, sourceLayout: gpt(64 * MiB, { alternateLba: 96 * 2048 - 1, lastUsableLba: 96 * 2048 - 34, backupValid: false, backupAtEnd: false }) }), { verdict: 'refuse', error: 'refused', reason: /describes a disk of 100,663,296 bytes \(196,608 sectors\), but the drive reports 67,108,864 bytes .*33,554,432 bytes .*missing/ }],
  ['an MBR partition past the end of the source', input({ kind: 'clone', pairs: [], sourceLayout: { ...mbr(64 * MiB), partitions: [{ ...mbr(64 * MiB).partitions[0]!, lastLba: 80 * 2048 }] } }), { verdict: 'refuse', error: 'refused', reason: /\(MBR\) describes a disk of/ }],
  // f06: 88 sectors short.
  ['a target smaller by 88 sectors', input({ kind: 'clone', pairs: [], sizeB: 64 * MiB - 88 * S }), { verdict: 'refuse', error: 'refused', reason: /smaller than the source \/dev\/a by 45,056 bytes \(88 sectors\): it has 67,063,808 bytes, the source \/dev\/a needs 67,108,864 bytes/ }],
  ['a larger target gets the backup GPT moved, planned from the primary', input({ kind: 'clone', pairs: [], sizeB: 96 * MiB }), { verdict: 'copy', plan: { fixupFrom: 'primary' } }],
  // f03: primary damaged, backup valid.
  ['a damaged primary GPT: the backup is built from the valid backup copy', input({ kind: 'clone', pairs: [], sizeB: 96 * MiB, sourceLayout: gpt(64 * MiB, { primaryValid: false, usedCopy: 'backup' }) }), { verdict: 'copy', plan: { fixupFrom: 'backup' } }],
  ['a 512-byte GPT seen through a 4K bridge cannot be relocated', input({ kind: 'clone', pairs: [], sizeB: 96 * MiB, sourceLayout: { ...gpt(64 * MiB, { usedCopy: undefined, primaryValid: false, backupValid: false }), foreignSectorSize: 512 } }), { verdict: 'refuse', error: 'refused', reason: /source's GPT was written for 512-byte sectors.*\(source \/dev\/a\)/, hint: /Nothing was written/, notHint: /gdisk|sgdisk/ }],
  ['both GPT copies damaged onto a larger target', input({ kind: 'clone', pairs: [], sizeB: 96 * MiB, sourceLayout: gpt(64 * MiB, { usedCopy: undefined, primaryValid: false, backupValid: false }) }), { verdict: 'refuse', error: 'refused', reason: /neither GPT copy on the source is valid/, notHint: /gdisk/ }],
  ['both GPT copies damaged onto a same-size target is a plain copy', input({ kind: 'clone', pairs: [], sourceLayout: gpt(64 * MiB, { usedCopy: undefined, primaryValid: false, backupValid: false }) }), { verdict: 'copy', plan: { fixupFrom: null } }],
  ['an MBR disk onto a larger target needs no fix-up', input({ kind: 'clone', pairs: [], sizeB: 96 * MiB, sourceLayout: mbr(64 * MiB) }), { verdict: 'copy', plan: { fixupFrom: null } }],
  ['a partition sync copies the tables and the partition', input({ partitions: [1] }), { verdict: 'copy', plan: { partitions: [1], ranges: [{ start: 0, length: 34 * S }, { start: 2048 * S, length: 16 * MiB }, { start: (128 * 1024 - 33) * S, length: 33 * S }] } }],
  ['an unknown partition is bad input', input({ partitions: [7] }), { verdict: 'refuse', error: 'bad-input', reason: /no partition 7/ }],
  ['partitions of a drive without a table', input({ partitions: [1], sourceLayout: { scheme: 'none', sectorSize: S, diskSizeBytes: 64 * MiB, diskId: '', partitions: [], problems: [] } }), { verdict: 'refuse', error: 'bad-input', reason: /no partition table/ }],
  ['split brain without --force-generation', input({ pairs: [pair({ drives: { A: { ...pair().drives.A!, generation: 4, lineage: [1, 2, 4] }, B: { ...pair().drives.B!, generation: 3, lineage: [1, 2, 3] } } })] }), { verdict: 'refuse', error: 'refused', reason: /generation 3, which the source \(generation 4\) does not descend from/, hint: /--force-generation/ }],
  ['split brain with --force-generation', input({ request: { kind: 'sync', partitions: [], mode: 'compare', forceGeneration: true }, pairs: [pair({ drives: { A: { ...pair().drives.A!, generation: 4, lineage: [1, 2, 4] }, B: { ...pair().drives.B!, generation: 3, lineage: [1, 2, 3] } } })] }), { verdict: 'copy', start: 'fresh' }],
  ['restore from an inconsistent standby', input({ kind: 'restore', source: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: S }, target: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S }, pairs: [pair({ standbyState: 'inconsistent' })] }), { verdict: 'refuse', error: 'refused', reason: /not consistent/, hint: /dpsr recover \/dev\/b/ }],
  ['a restore writes the active drive, not the standby', input({ kind: 'restore', source: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: S }, target: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S } }), { verdict: 'copy', plan: { kind: 'restore', journaled: true, writesStandby: false } }],
  // A standby larger than the active drive: the clone moved its backup GPT to its end; a restore puts it back.
  ['a restore from a larger standby copies the active drive\'s recorded size and puts the backup GPT back at its end', restoreFromLarger(), { verdict: 'copy', plan: { kind: 'restore', journaled: true, writesStandby: false, ranges: [{ start: 0, length: 64 * MiB }], fixupFrom: 'primary' } }],
  ['a restore from a larger MBR standby copies the active drive\'s recorded size, no fix-up', restoreFromLarger({ sourceLayout: mbr(64 * MiB) }), { verdict: 'copy', plan: { ranges: [{ start: 0, length: 64 * MiB }], fixupFrom: null } }],
  ['a partition restore from a larger standby leaves the standby\'s own backup GPT out and puts the active drive\'s back at its end', restoreFromLarger({ request: { kind: 'restore', partitions: [2], mode: 'compare' } }), { verdict: 'copy', plan: { kind: 'restore', partitions: [2], ranges: [{ start: 0, length: 34 * S }, { start: 2048 * S + 16 * MiB, length: 64 * MiB - 2048 * S - 16 * MiB - 33 * S }], fixupFrom: 'primary' } }],
  ['a partition restore whose standby partition was grown past the active drive', restoreFromLarger({ request: { kind: 'restore', partitions: [2], mode: 'compare' }, sourceLayout: gpt(80 * MiB) }), { verdict: 'refuse', error: 'refused', reason: /the target \/dev\/a is smaller than the end of the selected partitions/, hint: /partition table no longer fits the active drive.*Nothing was written/, notHint: /standby drive at least as large/ }],
  ['a restore onto an active drive smaller than recorded', restoreFromLarger({ target: { key: 'A', path: '/dev/a', sizeBytes: 60 * MiB, logicalSectorSize: S } }), { verdict: 'refuse', error: 'refused', reason: /active drive \/dev\/a now reports 62,914,560 bytes .* had 67,108,864 bytes/ }],
  ['a restore whose standby partition was grown past the active drive', restoreFromLarger({ sourceLayout: gpt(80 * MiB) }), { verdict: 'refuse', error: 'refused', reason: /partition 2 of the source ends at LBA 163806, past the end of the target, which has 67,108,864 bytes/, hint: /Nothing was written/ }],
  ['a restore from a larger standby whose primary GPT is damaged', restoreFromLarger({ sourceLayout: { ...relocatedStandby(), gpt: { ...relocatedStandby().gpt!, primaryValid: false, usedCopy: 'backup' } } }), { verdict: 'refuse', error: 'refused', reason: /primary GPT is not valid .*backup lies past the end/ }],
  ['a clone onto a smaller target', input({ kind: 'clone', pairs: [], sizeB: 48 * MiB }), { verdict: 'refuse', error: 'refused', reason: /smaller than the source \/dev\/a by 16,777,216 bytes/ }],
  ['a copy is running on the pair', input({ copyRunning: true, pairs: [pair({ standbyState: 'syncing', pendingCopy: pendingFrom(input()) })] }), { verdict: 'refuse', error: 'busy', reason: /is running right now \(a whole-drive sync in compare mode, started/, notHint: /interrupted|recover/ }],
  // r01: an interrupted whole-drive sync is not finished by a sync of partition 2.
  ['an interrupted whole-drive sync and a partition sync', input({ partitions: [2], journalRecords: 12, pairs: interrupted(input()) }), { verdict: 'refuse', error: 'refused', reason: /whole-drive sync in compare mode onto \/dev\/b, started .*was interrupted \(its undo journal holds 12 records.*this request is a sync of partition 2/, hint: /`dpsr sync \/dev\/a \/dev\/b`.*`dpsr recover \/dev\/b`/ }],
  ['an interrupted partition sync and a whole-drive re-protect', input({ pairs: interrupted(input({ partitions: [2] })) }), { verdict: 'refuse', error: 'refused', reason: /sync of partition 2 .*this request is a whole-drive sync/, hint: /--partition 2/ }],
  ['an interrupted sync resumes with the identical plan', input({ pairs: interrupted(input()) }), { verdict: 'copy', start: 'resume' }],
  ['an interrupted manifest sync is not resumed in compare mode', input({ pairs: interrupted(input({ mode: 'manifest' })) }), { verdict: 'refuse', error: 'refused', reason: /manifest mode, this request in compare mode/, hint: /--mode manifest/ }],
  ['an interrupted sync recorded without its plan', input({ pairs: [pair({ standbyState: 'inconsistent', pendingCopy: { kind: 'sync', from: 'A', to: 'B', startedAt: 't', journaled: true } })] }), { verdict: 'refuse', error: 'refused', reason: /recorded without its plan/, hint: /dpsr recover \/dev\/b/ }],
  ['an interrupted sync and a forced clone', input({ kind: 'clone', request: { kind: 'clone', partitions: [], mode: 'compare', forceClone: true }, pairs: interrupted(input()) }), { verdict: 'refuse', error: 'refused', reason: /it is a sync, this is a clone/, hint: /recover/ }],
  ['an interrupted restore and a sync', input({ pairs: [pair({ pendingCopy: pendingFrom(input({ kind: 'restore', source: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: S }, target: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S } })) })] }), { verdict: 'refuse', error: 'refused', reason: /whole-drive restore .* onto \/dev\/a/, hint: /dpsr restore \/dev\/b \/dev\/a --i-mean-restore.*dpsr recover \/dev\/a/ }],
  ['an interrupted first clone and a sync: no recover in the hint', input({ pairs: [pair({ standbyState: 'inconsistent', pendingCopy: { kind: 'clone', from: 'A', to: 'B', startedAt: 't', journaled: false } })] }), { verdict: 'refuse', error: 'refused', reason: /first clone onto \/dev\/b was interrupted/, hint: /dpsr clone \/dev\/a \/dev\/b/, notHint: /recover/ }],
  // The undo journal's room, known before the first write.
  ['a sync whose journal budget cannot hold one block', input({ journal: { budgetBytes: 4096, heldBytes: 0, budgetGiven: true } }), { verdict: 'refuse', error: 'refused', reason: /undo journal budget of 4\.00 KiB cannot hold the old data of one block of the standby/, hint: /raise --journal-budget and run the same sync again\. Nothing was written/, notHint: /recover/ }],
  ['a sync on a state directory with no free space', input({ journal: { budgetBytes: 0, heldBytes: 0, budgetGiven: false } }), { verdict: 'refuse', error: 'refused', reason: /state directory has no free space left for the undo journal/, hint: /free space in the state directory/ }],
  ['a resume whose journal holds its whole budget', input({ pairs: interrupted(input()), journal: { budgetBytes: 16 * MiB, heldBytes: 16 * MiB - 100, budgetGiven: true } }), { verdict: 'refuse', error: 'refused', reason: /undo journal holds 16\.0 MiB of the interrupted sync already: its budget of 16\.0 MiB leaves no room/, hint: /raise --journal-budget above 16\.0 MiB .*dpsr recover \/dev\/b/ }],
  ['a fresh sync starts with an empty journal, whatever an old one held', input({ journal: { budgetBytes: MiB, heldBytes: 16 * MiB, budgetGiven: true } }), { verdict: 'copy', start: 'fresh' }],
  ['a restore whose journal budget cannot hold one block names the active drive', input({ kind: 'restore', source: { key: 'B', path: '/dev/b', sizeBytes: 64 * MiB, logicalSectorSize: S }, target: { key: 'A', path: '/dev/a', sizeBytes: 64 * MiB, logicalSectorSize: S }, journal: { budgetBytes: 0, heldBytes: 0, budgetGiven: true } }), { verdict: 'refuse', error: 'refused', reason: /one block of the active drive/, hint: /the same restore again/ }],
  ['a first clone is not journaled: no budget applies', input({ kind: 'clone', pairs: [], journal: { budgetBytes: 0, heldBytes: 0, budgetGiven: true } }), { verdict: 'copy', start: 'fresh' }],
  ['an interrupted first clone, cloned again, is started over', input({ kind: 'clone', pairs: [pair({ standbyState: 'inconsistent', pendingCopy: { kind: 'clone', from: 'A', to: 'B', startedAt: 't', journaled: false } })] }), { verdict: 'copy', start: 'restart', plan: { kind: 'clone' } }],
];

test('table: refusals and plans', () => {
  for (const [name, i, e] of rows) check(name, planCopy(i), e);
});

test('the restore fix-up puts the backup GPT where the active drive had it', () => {
  const d = planCopy(restoreFromLarger());
  assert.is(d.verdict, 'copy');
  if (d.verdict !== 'copy') return;
  const total = (64 * MiB) / S;
  assert.equal(d.plan.tableFixups, [{ type: 'gpt-backup-relocation', from: 'primary', fromLba: 1, sourceSizeBytes: 80 * MiB, newBackupLba: total - 1, newEntriesLba: total - 33, newLastUsableLba: total - 34 }]);
});

test('a first clone recorded as pending is resumed by the same clone once the pair exists', () => {
  const first = input({ kind: 'clone', pairs: [] });
  const d1 = planCopy(first);
  assert.is(d1.verdict, 'copy');
  if (d1.verdict !== 'copy') return;
  assert.ok(d1.newPair);
  // What the store records for a new pair: the source at generation 1, the target at 0.
  const recorded = pair({
    standbyState: 'syncing',
    counter: 1,
    drives: { A: { ...pair().drives.A!, generation: 1, lineage: [1] }, B: { ...pair().drives.B!, generation: 0, lineage: [0] } },
    pendingCopy: { kind: 'clone', from: 'A', to: 'B', startedAt: 't', journaled: false, plan: d1.plan },
  });
  const d2 = planCopy({ ...first, pairs: [recorded] });
  assert.is(d2.verdict, 'copy');
  if (d2.verdict !== 'copy') return;
  assert.is(d2.start, 'resume');
  assert.not.ok(d2.newPair);
  assert.is(d2.plan.digest, d1.plan.digest);
});

test('the digest names the copy: ranges, mode, geometry and generations change it; the tail cleanup does not', () => {
  const base = planCopy(input());
  const digest = (i: PlanInput) => {
    const d = planCopy(i);
    if (d.verdict !== 'copy') throw new Error(d.refusal.reason);
    return d.plan.digest;
  };
  if (base.verdict !== 'copy') throw new Error('no plan');
  assert.is(digest(input()), base.plan.digest, 'deterministic');
  assert.is.not(digest(input({ partitions: [2] })), base.plan.digest);
  assert.is.not(digest(input({ mode: 'manifest' })), base.plan.digest);
  assert.is.not(digest(input({ pairs: [pair({ drives: { A: { ...pair().drives.A!, generation: 3, lineage: [1, 2, 3] }, B: pair().drives.B! } })] })), base.plan.digest);
  assert.is.not(digest(input({ kind: 'clone', pairs: [], sizeB: 96 * MiB })), digest(input({ kind: 'clone', pairs: [] })));
  assert.is(digest(input({ targetTail: [{ start: 70 * MiB, length: S, what: 'x' }] })), base.plan.digest);
});

test('tail cleanup keeps only signatures past the copied area', () => {
  const d = planCopy(input({ kind: 'clone', pairs: [], sizeB: 96 * MiB, targetTail: [{ start: 10 * MiB, length: 4096, what: 'inside the copy' }, { start: 96 * MiB - S, length: S, what: 'old backup GPT header' }] }));
  assert.is(d.verdict, 'copy');
  if (d.verdict !== 'copy') return;
  assert.equal(d.plan.tailCleanup.map((s) => s.what), ['old backup GPT header']);
});

test('a plan is decided from its input alone: the same input, the same decision', () => {
  for (const [, i] of rows) assert.equal(planCopy(i), planCopy(i));
});

test('table: what a status line says of a pending copy fits its state', () => {
  const rows: [string, PairRecord, boolean, RegExp, RegExp | undefined][] = [
    ['a running sync', pair({ standbyState: 'syncing', pendingCopy: pendingFrom(input({ partitions: [2] })) }), true, /^running: a sync of partition 2 in compare mode onto \/dev\/b/, /interrupted|recover/],
    ['an interrupted sync', pair({ standbyState: 'syncing', pendingCopy: pendingFrom(input({ partitions: [2] })) }), false, /^interrupted: .*`dpsr sync \/dev\/a \/dev\/b --partition 2` again .*`dpsr recover \/dev\/b`/, undefined],
    ['an interrupted first clone', pair({ standbyState: 'inconsistent', pendingCopy: pendingFrom(input({ kind: 'clone', pairs: [] })) }), false, /^interrupted: the first clone onto \/dev\/b.*`dpsr clone \/dev\/a \/dev\/b` again/, /recover/],
  ];
  for (const [name, p, running, want, never] of rows) {
    const said = pendingCopyAdvice(p, running) ?? '';
    assert.match(said, want, name);
    if (never) assert.not.match(said, never, name);
  }
  assert.is(pendingCopyAdvice(pair(), false), undefined);
});

test.run();
