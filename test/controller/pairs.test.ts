/**
 * Several drive pairs on one controller: the config names them, the
 * simulated rig builds their bays, each pair keeps its own roles and pair
 * state, and the status lists them.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventBus } from '../../firmware/controller/events.ts';
import { JobRunner } from '../../firmware/controller/jobs.ts';
import { validateDaemonConfig } from '../../firmware/controller/config.ts';
import { BadInputError } from '../../src/errors.ts';
import { makeDaemon, openEvents, sha, waitFor, waitJob, type TestDaemon } from './support/harness.ts';

const TWO_PAIRS = [
  { id: 'system', label: 'system drive', bays: ['A', 'B'], schedule: { sync: 'weekly' } },
  { id: 'data', label: 'data drive', bays: ['C', 'D'], schedule: { sync: 'hourly' } },
];

const refused = (raw: unknown): string => {
  try {
    validateDaemonConfig(raw);
  } catch (e) {
    assert.instance(e, BadInputError);
    return (e as Error).message;
  }
  throw new Error('accepted');
};

test('no pairs key: one boot pair "system" on bays A and B', () => {
  const c = validateDaemonConfig({});
  assert.equal(c.pairs, [{ id: 'system', label: 'system drive', bays: ['A', 'B'], role: 'boot', mode: 'switched', bridge: 'usb', schedule: {} }]);
});

test('pairs: roles default from the bays, labels from the ids', () => {
  const c = validateDaemonConfig({ pairs: TWO_PAIRS });
  assert.equal(c.pairs.map((p) => [p.id, p.role, p.bays, p.label, p.schedule.sync]), [
    ['system', 'boot', ['A', 'B'], 'system drive', 'weekly'],
    ['data', 'data', ['C', 'D'], 'data drive', 'hourly'],
  ]);
});

test('bad pairs are refused naming the key and what is allowed', () => {
  const table: [unknown, RegExp][] = [
    [[], /pairs is \[\]; allowed: at least one pair/],
    [[{ id: 'Data', bays: ['C', 'D'] }], /pairs\[0\]\.id is "Data"; allowed: a short name of lower-case letters/],
    [[{ id: 'system', bays: ['A'] }], /pairs\[0\]\.bays is \["A"\]; allowed: two different bays/],
    [[{ id: 'system', bays: ['A', 'A'] }], /pairs\[0\]\.bays\[1\] is "A"; allowed: each value at most once/],
    [[{ id: 'system', bays: ['A', 'Z'] }], /pairs\[0\]\.bays\[1\] is "Z"; allowed: "A", "B"/],
    [[{ id: 'system', bays: ['A', 'B'] }, { id: 'system', bays: ['C', 'D'] }], /pairs\[1\]\.id is "system"; allowed: an id no other pair has/],
    [[{ id: 'system', bays: ['A', 'B'] }, { id: 'data', bays: ['B', 'C'] }], /pairs\[1\]\.bays is \["B","C"\]; allowed: bays no other pair uses \(bay B belongs to pair system\)/],
    [[{ id: 'system', bays: ['B', 'A'] }], /pairs\[0\]\.bays is \["B","A"\]; allowed: bays C to H for a data pair/],
    [[{ id: 'system', bays: ['C', 'D'], role: 'boot' }], /pairs\[0\]\.bays is \["C","D"\]; allowed: \["A", "B"\] for the boot pair/],
    [[{ id: 'data', bays: ['C', 'D'] }], /pairs is \["data"\]; allowed: exactly one pair with role "boot"/],
    [[{ id: 'system', bays: ['A', 'B'], role: 'data' }], /pairs\[0\]\.bays is \["A","B"\]; allowed: bays C to H for a data pair/],
  ];
  for (const [pairs, re] of table) assert.match(refused({ pairs }), re, JSON.stringify(pairs));
});

test('the hardware rig needs a drive for every bay the pairs use, and none other', () => {
  const bootswitch = {
    boards: { io: { driver: 'sim' } },
    channels: Object.fromEntries(['muxA', 'muxB', 'pwrA', 'pwrB', 'atxPower', 'atxReset', 'powerLed', 'button', 'muxC', 'muxD', 'pwrC', 'pwrD'].map((n, i) => [n, { board: 'io', pin: i + 1 }])),
  };
  const hw = (drives: object) => ({ rig: 'hardware', pairs: TWO_PAIRS, drives, bootswitch });
  assert.match(refused(hw({ A: '/dev/a', B: '/dev/b', C: '/dev/c' })), /drives\.D is missing; allowed: the drive in bay D \(pair data uses it\)/);
  assert.match(refused(hw({ A: '/dev/a', B: '/dev/b', C: '/dev/c', D: '/dev/d', E: '/dev/e' })), /drives\.E is "\/dev\/e"; allowed: only the bays the pairs use \(A, B, C, D\)/);
  const c = validateDaemonConfig(hw({ A: '/dev/a', B: '/dev/b', C: '/dev/c', D: '/dev/d' }));
  assert.is((c.drives as Record<string, string>).D, '/dev/d');
});

test("a data pair needs its data port's relays, all four; its bays are the two of one port", () => {
  const channels = (names: string[]) => Object.fromEntries(['muxA', 'muxB', 'pwrA', 'pwrB', 'atxPower', 'atxReset', 'powerLed', 'button', ...names].map((n, i) => [n, { board: 'io', pin: i + 1 }]));
  const hw = (names: string[], pairs = TWO_PAIRS) => ({ rig: 'hardware', pairs, drives: { A: '/dev/a', B: '/dev/b', C: '/dev/c', D: '/dev/d' }, bootswitch: { boards: { io: { driver: 'sim' } }, channels: channels(names) } });
  assert.match(refused(hw([])), /bootswitch\.channels\.muxC is missing; allowed: the relays of pair data's data port \(pairs\[1\], bays C and D\): give muxC, muxD, pwrC, pwrD/);
  assert.match(refused(hw(['muxC', 'muxD', 'pwrC'])), /channels\.pwrD is undefined; allowed: a \{ board, pin \} entry: bays C and D share a host data port/);
  assert.match(refused(hw(['senseMuxC'])), /channels\.senseMuxC is .*nothing until muxC, muxD, pwrC, pwrD are given/);
  assert.match(refused({ pairs: [TWO_PAIRS[0], { id: 'data', bays: ['D', 'C'] }] }), /pairs\[1\]\.bays is \["D","C"\]; allowed: the two bays of one host data port, first bay first: \["C", "D"\], \["E", "F"\], \["G", "H"\]/);
  assert.match(refused({ pairs: [TWO_PAIRS[0], { id: 'data', bays: ['C', 'E'] }] }), /pairs\[1\]\.bays is \["C","E"\]; allowed: the two bays of one host data port/);
  validateDaemonConfig(hw(['muxC', 'muxD', 'pwrC', 'pwrD', 'senseMuxC', 'senseMuxD', 'ledBayC']));
});

let d: TestDaemon;

test('two pairs on the simulated rig: bays C and D built, both pairs cloned and listed', async () => {
  // A slow simulated bridge keeps a copy running long enough for the next to queue behind it.
  d = await makeDaemon({ pairs: TWO_PAIRS, sim: { bridgeMiBps: 96 } });
  for (const bay of ['A', 'B', 'C', 'D']) assert.ok(existsSync(join(d.dir, 'sim', `bay-${bay}.img`)), `bay ${bay} has a drive`);
  const s = await waitFor(async () => {
    const b = (await d.api('GET', '/api/status')).body;
    return b.pairs.every((p: { standbyState: string }) => p.standbyState === 'consistent') && b.job === null ? b : undefined;
  }, 60_000, 'both pairs cloned');
  assert.equal(s.pairs.map((p: any) => [p.id, p.role, p.active, p.standby, p.paired, p.schedule.sync]), [
    ['system', 'boot', 'A', 'B', true, 'weekly'],
    ['data', 'data', 'C', 'D', true, 'hourly'],
  ]);
  assert.ok(s.pairs[1].generations.C >= 1 && s.pairs[1].generations.C === s.pairs[1].generations.D, JSON.stringify(s.pairs[1].generations));
  assert.is.not(s.pairs[0].pairId, s.pairs[1].pairId);
  assert.is(s.active, 'A', 'the top-level roles stay the boot pair\'s');
  assert.is(sha(join(d.dir, 'sim', 'bay-C.img')), sha(join(d.dir, 'sim', 'bay-D.img')));
  assert.is.not(sha(join(d.dir, 'sim', 'bay-A.img')), sha(join(d.dir, 'sim', 'bay-C.img')));
  const jobs = (await d.api('GET', '/api/jobs')).body.jobs;
  assert.equal(jobs.map((j: any) => [j.kind, j.pair, j.options.source, j.options.target]).reverse(), [
    ['clone', 'system', 'A', 'B'],
    ['clone', 'data', 'C', 'D'],
  ]);
});

test('the simulated host writes to a pair\'s active drive; the sim controls take the configured bays', async () => {
  const w = await d.api('POST', '/api/sim/host/write', { mib: 1, pair: 'data' });
  assert.is(w.status, 200);
  assert.is(w.body.bay, 'C');
  assert.is.not(sha(join(d.dir, 'sim', 'bay-C.img')), sha(join(d.dir, 'sim', 'bay-D.img')));
  assert.is((await d.api('POST', '/api/sim/host/write', { mib: 1, pair: 'nope' })).status, 404);
  const hot = await d.api('POST', '/api/sim/drive/D/smart', { temperatureC: 70 });
  assert.is(hot.status, 200);
  assert.is(hot.body.health.status, 'critical', 'the data pair\'s drives are watched too');
  assert.is((await d.api('GET', '/api/pairs/data/status')).body.drives.D.health, 'critical');
  await d.api('POST', '/api/sim/drive/D/smart', { temperatureC: 35 });
  const bad = await d.api('POST', '/api/sim/drive/E/pull', {});
  assert.is(bad.status, 400);
  assert.match(bad.body.error.message, /allowed: "A", "B", "C", "D"/);
});

test('syncs of both pairs: the second queued behind the first (one copy at a time), both completed', async () => {
  await d.app.jobs.idle();
  await d.api('POST', '/api/sim/host/write', { mib: 2 });
  const es = openEvents(d.url, d.token, '?types=job.');
  await es.ready;
  const sys = d.app.pairs.get('system').copies.start('sync', {});
  const data = d.app.pairs.get('data').copies.start('sync', {});
  assert.is(sys.state, 'running');
  assert.is(data.state, 'queued');
  assert.is(data.pair, 'data');
  const s = (await d.api('GET', '/api/status')).body;
  assert.equal(s.queued.map((j: any) => [j.id, j.kind, j.pair]), [[data.id, 'sync', 'data']]);
  assert.equal(s.pairs.map((p: any) => p.job?.state ?? null), ['running', 'queued']);
  // A second job of a pair that has one (running or queued) is refused, naming it.
  const again = (() => {
    try {
      d.app.pairs.get('data').copies.start('verify', {});
    } catch (e) {
      return e as Error;
    }
  })();
  assert.match(String(again?.message), new RegExp(`sync job \\(id ${data.id}\\) is queued on pair data`));
  const done = await waitJob(d, data.id, 60_000);
  assert.is(done.state, 'done');
  assert.is((await waitJob(d, sys.id)).state, 'done');
  assert.ok(Date.parse(done.startedAt) >= Date.parse((await waitJob(d, sys.id)).finishedAt), 'the data sync started once the system sync had finished');
  assert.equal(done.options.source, 'C');
  assert.equal(done.options.target, 'D');
  const order = es.events.filter((e) => e.event !== 'job.progress').map((e) => `${e.event} ${e.data.data.job.id}`);
  assert.equal(order, [`job.started ${sys.id}`, `job.queued ${data.id}`, `job.done ${sys.id}`, `job.started ${data.id}`, `job.done ${data.id}`]);
  es.close();
  const st = (await d.api('GET', '/api/status')).body;
  assert.equal(st.pairs.map((p: any) => p.standbyState), ['consistent', 'consistent']);
  assert.is(sha(join(d.dir, 'sim', 'bay-C.img')), sha(join(d.dir, 'sim', 'bay-D.img')));
});

test('a queued job is cancelled out of the queue: it never starts', async () => {
  await d.app.jobs.idle();
  const sys = d.app.pairs.get('system').copies.start('verify', {});
  const data = d.app.pairs.get('data').copies.start('verify', {});
  assert.is(data.state, 'queued');
  const c = await d.api('POST', `/api/jobs/${data.id}/cancel`, {});
  assert.is(c.status, 202);
  assert.is(c.body.job.state, 'cancelled');
  assert.is(c.body.job.startedAt, null);
  await d.app.jobs.idle();
  assert.is((await d.api('GET', `/api/jobs/${sys.id}`)).body.state, 'done');
  assert.is((await d.api('GET', `/api/jobs/${data.id}`)).body.state, 'cancelled');
});

test('routes: /api/pairs/{id}/… for each pair; the old routes name the pairs when ambiguous', async () => {
  await d.app.jobs.idle();
  const list = (await d.api('GET', '/api/pairs')).body.pairs;
  assert.equal(list.map((p: any) => p.id), ['system', 'data']);
  const one = await d.api('GET', '/api/pairs/data/status');
  assert.is(one.status, 200);
  assert.equal([one.body.active, one.body.standby, Object.keys(one.body.drives)], ['C', 'D', ['C', 'D']]);
  const none = await d.api('POST', '/api/pairs/nope/sync', {});
  assert.is(none.status, 404);
  assert.match(none.body.error.message, /no pair "nope"; the pairs are system, data/);
  for (const name of ['sync', 'verify', 'clone', 'recover', 'reprotect', 'failover']) {
    const r = await d.api('POST', `/api/${name}`, name === 'failover' || name === 'reprotect' ? { confirm: name } : {});
    assert.is(r.status, 400, name);
    assert.match(r.body.error.message, new RegExp(`2 pairs \\(system, data\\): /api/${name} does not say which`));
    assert.match(r.body.error.hint, new RegExp(`/api/pairs/\\{id\\}/${name}`));
  }
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.filter((j: any) => j.state === 'running' || j.state === 'queued').length, 0, 'nothing started');
  const v = await d.api('POST', '/api/pairs/data/verify', {});
  assert.is(v.status, 202);
  assert.is(v.body.job.pair, 'data');
  const job = await waitJob(d, v.body.id);
  assert.is(job.result.identical, true);
  const m = (await d.api('GET', '/metrics')).body as string;
  for (const line of ['dpsr_standby_state{state="consistent",pair="data"} 1', 'dpsr_standby_state{state="consistent",pair="system"} 1', 'dpsr_jobs_total{kind="verify",state="done",pair="data"} 1', 'dpsr_generation{bay="D",role="standby",pair="data"}']) assert.ok(m.includes(line), `metrics lack ${line}`);
  assert.match(m, /\ndpsr_last_sync_success_timestamp_seconds\{pair="data"\} [1-9]/);
  const doc = (await d.api('GET', '/api/openapi.json')).body;
  for (const p of ['/api/pairs', '/api/pairs/{id}/status', '/api/pairs/{id}/sync', '/api/pairs/{id}/verify', '/api/pairs/{id}/failover', '/api/sync']) assert.ok(doc.paths[p], `${p} described`);
});

test("one pair's failure and the boot pair's failover leave the other pair untouched", async () => {
  await d.app.jobs.idle();
  // The data pair's active drive is pulled: its sync fails, the system pair's sync is not held up by it.
  await d.api('POST', '/api/sim/host/write', { mib: 1, pair: 'data' });
  const beforeD = sha(join(d.dir, 'sim', 'bay-D.img'));
  assert.is((await d.api('POST', '/api/sim/drive/C/pull', {})).status, 200);
  const dataSync = await d.api('POST', '/api/pairs/data/sync', {});
  assert.is(dataSync.status, 409, 'refused up front: the active drive of pair data is missing');
  assert.match(dataSync.body.error.message, /bay C \(the active drive\) holds no drive/);
  const sysSync = await d.api('POST', '/api/pairs/system/sync', {});
  assert.is(sysSync.status, 202);
  assert.is((await waitJob(d, sysSync.body.id)).state, 'done');
  assert.is((await d.api('POST', '/api/sim/drive/C/insert', {})).status, 200);
  assert.is(sha(join(d.dir, 'sim', 'bay-D.img')), beforeD, 'the data standby was not written');
  // The boot pair fails over; the data pair keeps its roles, its drives and its state.
  await waitFor(async () => (await d.api('GET', '/api/status')).body.host.lastHeartbeat?.bay === 'A', 10_000, 'host running on A');
  const dataBefore = (await d.api('GET', '/api/pairs/data/status')).body;
  const shaC = sha(join(d.dir, 'sim', 'bay-C.img'));
  const es = openEvents(d.url, d.token, '?types=failover,boot');
  await es.ready;
  const fo = await d.api('POST', '/api/pairs/system/failover', { confirm: 'failover' });
  assert.is(fo.status, 202);
  assert.equal(fo.body, { from: 'A', to: 'B', accepted: true });
  await es.wait((e) => e.event === 'boot' && e.data.data.bay === 'B' && e.data.data.status === 'confirmed');
  es.close();
  const after = (await d.api('GET', '/api/status')).body;
  assert.equal(after.pairs.map((p: any) => [p.id, p.active, p.standby]), [['system', 'B', 'A'], ['data', 'C', 'D']]);
  const dataAfter = (await d.api('GET', '/api/pairs/data/status')).body;
  assert.equal([dataAfter.generations, dataAfter.standbyState, dataAfter.lastSuccess], [dataBefore.generations, dataBefore.standbyState, dataBefore.lastSuccess]);
  assert.is(sha(join(d.dir, 'sim', 'bay-C.img')), shaC);
  assert.is(sha(join(d.dir, 'sim', 'bay-D.img')), beforeD);
  // And the data pair still syncs, C onto D, after the boot pair's failover.
  const again = await d.api('POST', '/api/pairs/data/sync', {});
  const j = await waitJob(d, again.body.id);
  assert.is(j.state, 'done');
  assert.equal([j.options.source, j.options.target], ['C', 'D']);
  assert.is(sha(join(d.dir, 'sim', 'bay-C.img')), sha(join(d.dir, 'sim', 'bay-D.img')));
});

test('dpsr --url --pair: the pair-specific commands take the pair; without it several pairs are a usage error', async () => {
  await d.app.jobs.idle();
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, ['bin/dpsr.js', ...args, '--url', d.url], { cwd: new URL('../../', import.meta.url).pathname, env: { ...process.env, DPSR_STATE_DIR: d.dir }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (x) => (stdout += x));
      c.stderr.on('data', (x) => (stderr += x));
      c.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  const v = await run(['verify', '--pair', 'data', '--json']);
  assert.is(v.code, 0, v.stderr);
  const job = JSON.parse(v.stdout);
  assert.is(job.job?.pair ?? job.pair, 'data');
  const amb = await run(['verify']);
  assert.is(amb.code, 2, 'ambiguous: bad usage');
  assert.match(amb.stderr, /2 pairs \(system, data\)/);
  const st = await run(['status', '--pair', 'data']);
  assert.is(st.code, 0, st.stdout + st.stderr);
  assert.match(st.stdout, /pair data \(data drive, data\)/);
  assert.match(st.stdout, /active +bay C/);
  const all = await run(['status']);
  assert.match(all.stdout, /pair data \(data drive\): active bay C, standby bay D CONSISTENT/);
  const bad = await run(['sync', '--pair', 'Data!', '--yes']);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--pair is "Data!"/);
});

test('jobs.parallel: copies of pairs on different bridge budgets run at once', async () => {
  const p = await makeDaemon({ pairs: [TWO_PAIRS[0], { ...TWO_PAIRS[1], bridge: 'usb2' }], jobs: { parallel: true }, sim: { bridgeMiBps: 96 } });
  try {
    const created = (await p.api('GET', '/api/jobs')).body.jobs;
    assert.equal(created.map((j: any) => [j.pair, j.state]).reverse(), [['system', 'running'], ['data', 'running']], 'both first clones run at once');
    await p.app.jobs.idle();
    assert.equal((await p.api('GET', '/api/status')).body.pairs.map((x: any) => x.standbyState), ['consistent', 'consistent']);
  } finally {
    await p.stop();
  }
});

test('a restart finds a queued job never started: failed as interrupted, not resumed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-jobs-'));
  try {
    const bus = new EventBus(null, { replay: 0, logMaxBytes: 1 << 20 });
    const r1 = new JobRunner(dir, { history: 50, logLines: 50 }, bus);
    let release!: () => void;
    r1.enqueue('sync', 'api', { pair: 'system', bays: ['A', 'B'], bridge: 'usb' }, () => ({ options: {}, run: () => new Promise<void>((res) => (release = res)) }));
    const q = r1.enqueue('sync', 'api', { pair: 'data', bays: ['C', 'D'], bridge: 'usb' }, () => ({ options: {}, run: async () => {} }));
    assert.is(q.state, 'queued');
    const r2 = new JobRunner(dir, { history: 50, logLines: 50 }, bus);
    assert.equal(r2.interrupted.map((j) => j.pair), ['system'], 'only the running one is for the restart to resume');
    const j = r2.get(q.id);
    assert.is(j.state, 'failed');
    assert.match(j.error!.message, /waited in the queue; it never started/);
    release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.after(async () => {
  await d?.stop();
});

test.run();
