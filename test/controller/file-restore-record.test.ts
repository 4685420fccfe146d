/** The durable record of a restore of files: written before mounting, kept as interrupted after a crash, and the sync refusal it makes. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { writeJsonTwoCopies } from '../../src/durable-file.ts';
import { join } from 'node:path';
import { FileRestoreRecord, restoreSettlesRecord, type FileRestoreEntry } from '../../firmware/controller/file-restore-record.ts';
import { RefusedError } from '../../src/errors.ts';
import { tempDir } from '../support/images.ts';
import { makeDaemon, idle, waitJob } from './support/harness.ts';

const entry = (pair: string): FileRestoreEntry => ({
  pair, jobId: '7', partition: 2, paths: ['/etc', '/home/a'], startedAt: '2026-12-07T10:00:00.000Z',
  drive: { path: '/dev/loop9', dev: 5, ino: 99, key: 'wwn-x' }, startByte: 1048576, sizeBytes: 8388608, filesystem: 'ext4',
});

test('running, then interrupted after the clean-up, then cleared: only the interrupted state holds syncs back, per pair', () => {
  const dir = tempDir('dpsr-frrec-');
  const r = new FileRestoreRecord(dir);
  assert.equal(r.all(), []);
  r.begin(entry('system'));
  assert.is(r.get('system')!.state, 'running');
  assert.equal(readdirSync(join(dir, 'file-restore')).sort(), ['system.json', 'system.json.bak'], 'two copies, written before the mount');
  r.syncBlocker('system', 'a sync'); // a running restore is the job's own business: the job runner keeps syncs out
  const cleaned = r.interrupted(r.get('system')!, { at: 'now', unmounted: ['/tmp/dpsr-restore-x'], detached: ['/dev/loop3'], failed: [], fsck: { tool: 'e2fsck', exitCode: 0, clean: true, output: '' } });
  assert.is(cleaned.state, 'interrupted');
  assert.equal(new FileRestoreRecord(dir).get('system'), cleaned, 'durable: a new process reads the same');
  try {
    r.syncBlocker('system', 'a sync of pair system');
    assert.unreachable('refused');
  } catch (e) {
    assert.instance(e, RefusedError);
    assert.match((e as Error).message, /a sync of pair system is held back: a restore of files .*partition 2, job 7.* interrupted/);
    assert.match((e as RefusedError).hint!, /POST \/api\/pairs\/system\/restore\/files with the same paths: \/etc, \/home\/a/);
    assert.match((e as RefusedError).hint!, /POST \/api\/pairs\/system\/restore\/files\/dismiss/);
  }
  r.syncBlocker('data', 'a sync of pair data');
  r.clear('system');
  assert.is(r.get('system'), null);
  r.syncBlocker('system', 'a sync');
  r.clear('system'); // nothing there: no error
});

test('each write of the record is newer than the copies on disk, whatever the clock says: a crash between the two copies after a restart with the clock behind keeps the newest state', () => {
  const dir = tempDir('dpsr-frrec-clock-');
  // Written by a run whose clock was ahead (a board without a battery clock corrected later, or the other way round).
  const ahead = Date.now() + 10 * 365 * 86_400_000;
  const written = { ...entry('system'), state: 'running', sequence: ahead };
  writeJsonTwoCopies(join(dir, 'file-restore', 'system.json'), written);
  const bak = join(dir, 'file-restore', 'system.json.bak');
  const before = readFileSync(bak);
  const restarted = new FileRestoreRecord(dir);
  const cleaned = restarted.interrupted(restarted.get('system')!, { at: 'now', unmounted: [], detached: ['/dev/loop3'], failed: [], fsck: null });
  // The power fails after the first copy: the second still holds the state before.
  writeFileSync(bak, before);
  assert.equal(new FileRestoreRecord(dir).get('system'), cleaned, 'the interrupted state, written last, is what the next start reads');
});

test('an interrupted restore of files holds back every copy onto the standby through the API: sync, re-protect and a forced clone alike', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    const pair = (await d.api('GET', '/api/status')).body.pairs[0].id as string;
    const rec = d.app.files.record;
    rec.begin(entry(pair));
    rec.interrupted(rec.get(pair)!, { at: 'now', unmounted: [], detached: [], failed: [], fsck: null });
    const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
    for (const [path, body] of [['/api/sync', {}], ['/api/reprotect', { confirm: 'reprotect' }], ['/api/clone', { force: true }], [`/api/pairs/${pair}/clone`, { force: true }]] as const) {
      const r = await d.api('POST', path, body);
      assert.is(r.status, 409, `${path}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /held back: a restore of files .* interrupted/, path);
    }
    assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'no job started');
  } finally {
    await d.stop();
  }
});

test('an interrupted restore of files is cleared only by a restore that covers it: another selection is refused, naming what is owed', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    const pair = (await d.api('GET', '/api/status')).body.pairs[0].id as string;
    const rec = d.app.files.record;
    const activeKey = d.app.pairs.boot.roles.keyOf(d.app.pairs.boot.roles.current().active);
    // Interrupted while writing into another drive (the roles changed since): finishing it from the standby is refused.
    rec.begin({ ...entry(pair), partition: 3, paths: ['/reports'] });
    rec.interrupted(rec.get(pair)!, { at: 'now', unmounted: [], detached: [], failed: [], fsck: null });
    const elsewhere = await d.api('POST', '/api/restore/files', { partition: 3, paths: ['/reports'] });
    assert.is(elsewhere.status, 409, JSON.stringify(elsewhere.body));
    assert.match(elsewhere.body.error.message, /another drive than the active one/);
    assert.match(elsewhere.body.error.hint, /dismiss/);
    rec.begin({ ...entry(pair), partition: 3, paths: ['/reports'], drive: { ...entry(pair).drive, key: activeKey } });
    rec.interrupted(rec.get(pair)!, { at: 'now', unmounted: [], detached: [], failed: [], fsck: null });
    // One other file: restoring it would say nothing of /reports, which only the standby holds whole.
    for (const body of [{ partition: 3, paths: ['/payload.bin'] }, { partition: 2, paths: ['/reports'] }]) {
      const other = await d.api('POST', '/api/restore/files', body);
      assert.is(other.status, 409, JSON.stringify(other.body));
      assert.match(other.body.error.message, /interrupted/);
      assert.match(other.body.error.hint, /\/reports/);
      assert.is(rec.get(pair)?.state, 'interrupted', 'still owed');
    }
    assert.is((await d.api('POST', '/api/sync', {})).status, 409, 'syncs stay held back');
    // Finishing it (with more besides) clears it.
    const r = await d.api('POST', '/api/restore/files', { partition: 3, paths: ['/payload.bin', '/reports'] });
    assert.is(r.status, 202, JSON.stringify(r.body));
    const job = await waitJob(d, r.body.id, 60_000);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.is(rec.get(pair), null);
    assert.is((await d.api('POST', '/api/sync', {})).status, 202);
  } finally {
    await d.stop();
  }
});

test('a restore from the standby settles an interrupted restore of files exactly when it completed over everything owed', () => {
  type Owed = Parameters<typeof restoreSettlesRecord>[0];
  const owed: Owed = { state: 'interrupted', partition: 2, drive: { key: 'wwn-x' } };
  const table: [record: Owed, restore: Parameters<typeof restoreSettlesRecord>[1], want: boolean][] = [
    [owed, { outcome: 'done', driveKey: 'wwn-x' }, true], // whole drive
    [owed, { outcome: 'done', partitions: [2], driveKey: 'wwn-x' }, true],
    [owed, { outcome: 'done', partitions: [1, 2], driveKey: 'wwn-x' }, true],
    [owed, { outcome: 'done', partitions: [3], driveKey: 'wwn-x' }, false], // another partition
    [owed, { outcome: 'failed', driveKey: 'wwn-x' }, false],
    [owed, { outcome: 'cancelled', driveKey: 'wwn-x' }, false],
    [owed, { outcome: 'failed', partitions: [2], driveKey: 'wwn-x' }, false],
    [owed, { outcome: 'done', driveKey: 'wwn-y' }, false], // another drive is active now
    [{ ...owed, drive: { key: null } }, { outcome: 'done', driveKey: 'wwn-y' }, true], // the record knew no key
    [{ ...owed, state: 'running' }, { outcome: 'done', driveKey: 'wwn-x' }, false], // its mounts are not cleaned up yet
  ];
  for (const [record, restore, want] of table) assert.is(restoreSettlesRecord(record, restore), want, `${JSON.stringify(record)} × ${JSON.stringify(restore)}`);
});

test('a whole-drive restore clears the record of an interrupted restore of files; a partition restore only when it is that partition', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    const pair = (await d.api('GET', '/api/status')).body.pairs[0].id as string;
    const rec = d.app.files.record;
    const activeKey = d.app.pairs.boot.roles.keyOf(d.app.pairs.boot.roles.current().active);
    const owe = (partition: number) => {
      rec.begin({ ...entry(pair), partition, drive: { ...entry(pair).drive, key: activeKey } });
      rec.interrupted(rec.get(pair)!, { at: 'now', unmounted: [], detached: [], failed: [], fsck: null });
    };
    // A partition restore of another partition leaves it owed.
    owe(3);
    const other = await d.api('POST', '/api/restore/partition', { partition: 1, confirm: 'restore partition 1' });
    assert.is(other.status, 202, JSON.stringify(other.body));
    assert.is((await waitJob(d, other.body.id, 60_000)).state, 'done');
    assert.is(rec.get(pair)?.state, 'interrupted', 'partition 3 is still owed');
    // A restore of that partition settles it.
    const same = await d.api('POST', '/api/restore/partition', { partition: 3, confirm: 'restore partition 3' });
    assert.is(same.status, 202, JSON.stringify(same.body));
    assert.is((await waitJob(d, same.body.id, 60_000)).state, 'done');
    assert.is(rec.get(pair), null, 'settled by the restore of its partition');
    // A whole-drive restore settles any partition.
    owe(3);
    const whole = await d.api('POST', '/api/restore', { confirm: 'restore' });
    assert.is(whole.status, 202, JSON.stringify(whole.body));
    assert.is((await waitJob(d, whole.body.id, 60_000)).state, 'done');
    assert.is(rec.get(pair), null, 'settled by the whole-drive restore');
    assert.is((await d.api('POST', '/api/sync', {})).status, 202, 'syncs run again');
  } finally {
    await d.stop();
  }
});

test('a restore of files onto an active drive whose size changed since pairing is refused before anything is mounted (rule 8)', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    const s = (await d.api('GET', '/api/status')).body;
    const active = s.drives[s.active].path as string;
    const size = statSync(active).size;
    truncateSync(active, size + 8 * 1024 * 1024);
    const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
    const r = await d.api('POST', '/api/restore/files', { partition: 3, paths: ['/reports'] });
    assert.is(r.status, 409, JSON.stringify(r.body));
    assert.match(r.body.error.message, /active drive .* now reports .* bytes.* when the pair was made/, r.body.error.message);
    assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'no job started');
    assert.is(statSync(active).size, size + 8 * 1024 * 1024, 'nothing written');
    assert.is(d.app.files.record.get(s.pairs[0].id), null, 'nothing recorded');
  } finally {
    await d.stop();
  }
});

test.run();
