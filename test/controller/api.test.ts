import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDaemon, openEvents, waitJob, waitFor, idle, sha, type TestDaemon } from './support/harness.ts';

let d: TestDaemon;

test.before(async () => {
  // A slow simulated bridge (48 MiB/s) keeps a sync running long enough to be busy and to be cancelled.
  d = await makeDaemon({ sim: { bridgeMiBps: 48 } });
  await idle(d);
});
test.after(async () => {
  await d?.stop();
});

test('health needs no token; everything else answers 401 without or with a wrong token', async () => {
  const h = await d.api('GET', '/api/health', undefined, { token: null });
  assert.is(h.status, 200);
  assert.is(h.body.ok, true);
  // Monitors probe with HEAD: the health check answers it as its GET, without a body, and still needs no token.
  const head = await fetch(`${d.url}/api/health`, { method: 'HEAD' });
  assert.is(head.status, 200);
  assert.is((await head.text()), '');
  assert.is((await fetch(`${d.url}/api/status`, { method: 'HEAD' })).status, 401, 'HEAD of a private route is not let through');
  for (const [method, path] of [['GET', '/api/status'], ['POST', '/api/sync'], ['GET', '/api/jobs'], ['GET', '/metrics'], ['GET', '/api/openapi.json'], ['GET', '/api/events'], ['POST', '/api/sim/button']] as const) {
    const none = await d.api(method, path, method === 'POST' ? {} : undefined, { token: null });
    assert.is(none.status, 401, `${method} ${path} without token`);
    assert.match(String(none.headers['www-authenticate']), /Bearer/);
    const wrong = await d.api(method, path, method === 'POST' ? {} : undefined, { token: 'not-the-token' });
    assert.is(wrong.status, 401, `${method} ${path} with a wrong token`);
    assert.match(wrong.body.error.message, /wrong/);
  }
});

test('the token file is created 0600 in the state directory', () => {
  const st = statSync(join(d.dir, 'api-token'));
  assert.is(st.mode & 0o777, 0o600);
  assert.is(readFileSync(join(d.dir, 'api-token'), 'utf8').trim(), d.token);
});

test('bad bodies are 400 with the key, the value and what is allowed; nothing starts', async () => {
  const broken = await d.api('POST', '/api/sync', undefined, { raw: '{"mode": ' });
  assert.is(broken.status, 400);
  assert.match(broken.body.error.message, /not valid JSON/);
  const wrongType = await d.api('POST', '/api/sync', { partitions: 'all' });
  assert.is(wrongType.status, 400);
  assert.match(wrongType.body.error.message, /partitions is "all"; allowed: a list/);
  const badMode = await d.api('POST', '/api/sync', { mode: 'fast' });
  assert.match(badMode.body.error.message, /mode is "fast"; allowed: "compare", "manifest"/);
  const unknown = await d.api('POST', '/api/sync', { partition: [1] });
  assert.is(unknown.status, 400);
  assert.match(unknown.body.error.message, /partition is \[1\]; allowed: no such key; known keys: partitions, mode, forceGeneration/);
  const notObject = await d.api('POST', '/api/bootselect', [1]);
  assert.match(notObject.body.error.message, /\(root\) is \[1\]; allowed: an object/);
  const missing = await d.api('POST', '/api/bootselect', {});
  assert.match(missing.body.error.message, /bay is missing; allowed: "A", "B"/);
  const badItem = await d.api('POST', '/api/sync', { partitions: [1, 0] });
  assert.match(badItem.body.error.message, /partitions\[1\] is 0; allowed: an integer from 1 to 128/);
  const tooBig = await d.api('POST', '/api/sync', undefined, { raw: JSON.stringify({ partitions: Array(40000).fill(1) }) });
  assert.is(tooBig.status, 413);
  const form = await d.api('POST', '/api/sync', undefined, { raw: 'mode=compare', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  assert.is(form.status, 415);
  const jobs = await d.api('GET', '/api/jobs');
  assert.is(jobs.body.jobs.length, 1, 'only the first-start clone ran');
  const notFound = await d.api('GET', '/api/nothing');
  assert.is(notFound.status, 404);
  const method = await d.api('GET', '/api/sync');
  assert.is(method.status, 405);
  const noJob = await d.api('GET', '/api/jobs/999');
  assert.is(noJob.status, 404);
  const badBay = await d.api('POST', '/api/sim/drive/C/pull', {});
  assert.is(badBay.status, 400);
  const badLimit = await d.api('GET', '/api/events/log?limit=lots');
  assert.is(badLimit.status, 400);
  assert.match(badLimit.body.error.message, /limit is "lots"/);
});

test('status has roles, standby state, generations, job, relays, host, health, last sync', async () => {
  const s = (await d.api('GET', '/api/status')).body;
  assert.is(s.active, 'A');
  assert.is(s.standby, 'B');
  assert.is(s.standbyState, 'consistent');
  assert.is(s.job, null);
  assert.is(typeof s.generations.A, 'number');
  assert.is(s.generations.A, s.generations.B);
  assert.equal(Object.keys(s.relays).sort(), ['atxPower', 'atxReset', 'fault', 'moving', 'muxA', 'muxB', 'pending', 'pwrA', 'pwrB', 'state', 'unknown']);
  assert.is(s.relays.state, 'known');
  assert.is(s.relays.unknown, null);
  assert.ok(['on', 'off'].includes(s.host.power));
  assert.is(s.health.A, 'ok');
  assert.is(s.lastSync.kind, 'clone');
  assert.is(s.bootBay, 'A');
});

test('a sync end to end: 202, events with progress, the standby identical afterwards', async () => {
  const es = openEvents(d.url, d.token, '?types=job.,status.changed');
  await es.ready;
  const w = await d.api('POST', '/api/sim/host/write', { mib: 4 });
  assert.is(w.status, 200);
  const r = await d.api('POST', '/api/sync', { mode: 'compare' });
  assert.is(r.status, 202);
  assert.type(r.body.id, 'string');
  const done = await es.wait((e) => e.event === 'job.done' && e.data.data.job.id === r.body.id);
  assert.ok(es.events.some((e) => e.event === 'job.started'));
  assert.ok(es.events.some((e) => e.event === 'job.progress'));
  assert.not.ok(es.events.some((e) => e.event === 'alert'), 'filtered out');
  assert.is(done.data.data.job.state, 'done');
  const job = await waitJob(d, r.body.id);
  assert.ok(job.result.bytesWritten >= 4 * 1024 * 1024 * 0.9);
  assert.ok(job.log.length >= 2);
  assert.is(job.options.mode, 'compare');
  const s = (await d.api('GET', '/api/status')).body;
  assert.is(s.standbyState, 'consistent');
  assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  es.close();
});

test('failover, re-protect and restore need their typed confirmation in the body: 400 naming the exact phrase, nothing started', async () => {
  await d.app.jobs.idle();
  const s0 = (await d.api('GET', '/api/status')).body;
  const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
  const pair = s0.pairs[0].id as string;
  const table: [string, string, Record<string, unknown>][] = [];
  for (const [route, phrase, extra] of [['failover', 'failover', { hardOff: true }], ['reprotect', 'reprotect', {}], ['restore', 'restore', { window: true }]] as const) {
    for (const path of [`/api/${route}`, `/api/pairs/${pair}/${route}`]) {
      table.push([path, phrase, { ...extra }], [path, phrase, { ...extra, confirm: phrase.toUpperCase() }], [path, phrase, { ...extra, confirm: `${phrase} ` }], [path, phrase, { ...extra, confirm: true }]);
    }
  }
  table.push(['/api/restore/partition', 'restore partition 2', { partition: 2, confirm: 'restore partition 3' }], ['/api/restore/partition', 'restore partition 2', { partition: 2, confirm: 'restore' }]);
  for (const [path, phrase, body] of table) {
    const r = await d.api('POST', path, body);
    assert.is(r.status, 400, `${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
    assert.ok(r.body.error.message.includes(`"${phrase}"`), `${path} ${JSON.stringify(body)} names the phrase: ${r.body.error.message}`);
  }
  assert.is((await d.api('POST', '/api/restore', { confirm: 'restore', iMeanRestore: false })).status, 400, 'a body that says it does not mean it');
  const s1 = (await d.api('GET', '/api/status')).body;
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'no job started');
  assert.is(s1.failover.failovers, s0.failover.failovers, 'no failover');
  assert.is(s1.active, s0.active);
  const doc = (await d.api('GET', '/api/openapi.json')).body;
  for (const [path, phrase] of [['/api/failover', 'failover'], ['/api/reprotect', 'reprotect'], ['/api/restore', 'restore']]) {
    const schema = doc.paths[path].post.requestBody.content['application/json'].schema;
    assert.equal(schema.properties.confirm.enum, [phrase], `${path} documents the phrase`);
    assert.ok(schema.required.includes('confirm'), `${path} requires it`);
  }
});

test('a second job gets 409 naming what runs; cancel rolls the standby back', async () => {
  await d.app.jobs.idle();
  const s0 = (await d.api('GET', '/api/status')).body;
  const before = sha(s0.drives.B.path);
  await d.api('POST', '/api/sim/host/write', { mib: 16 });
  const r = await d.api('POST', '/api/sync', {});
  assert.is(r.status, 202);
  const busy = await d.api('POST', '/api/verify', {});
  assert.is(busy.status, 409);
  assert.is(busy.body.error.kind, 'busy');
  assert.match(busy.body.error.message, new RegExp(`sync job \\(id ${r.body.id}\\) is running`));
  const failover = await d.api('POST', '/api/failover', { confirm: 'failover' });
  assert.is(failover.status, 409);
  // Cancelled once it copies: a job cancelled before it starts leaves nothing to roll back or refuse
  await waitFor(async () => ((await d.api('GET', `/api/jobs/${r.body.id}`)).body.progress?.bytesDone > 0 ? true : undefined), 20_000, 'the sync under way');
  const c = await d.api('POST', `/api/jobs/${r.body.id}/cancel`, {});
  assert.is(c.status, 202);
  const job = await waitJob(d, r.body.id);
  assert.is(job.state, 'cancelled');
  assert.is(job.result.rolledBack, true);
  assert.is(sha(s0.drives.B.path), before, 'the standby is the previous backup again');
  const s = (await d.api('GET', '/api/status')).body;
  assert.is(s.standbyState, 'consistent');
  const again = await d.api('POST', `/api/jobs/${r.body.id}/cancel`, {});
  assert.is(again.status, 409);
});

test('verify reports identical drives', async () => {
  await d.app.jobs.idle();
  await d.api('POST', '/api/sync', {});
  await d.app.jobs.idle();
  const r = await d.api('POST', '/api/verify', {});
  const job = await waitJob(d, r.body.id);
  assert.is(job.state, 'done');
  assert.is(job.result.identical, true);
});

test('metrics: dpsr_ prefixed, standard process_* and nodejs_* names, dpsr_build_info', async () => {
  const m = await d.api('GET', '/metrics');
  assert.is(m.status, 200);
  assert.match(String(m.headers['content-type']), /text\/plain/);
  const text = m.body as string;
  for (const name of ['dpsr_sync_bytes_written_total', 'dpsr_job_duration_seconds_bucket', 'dpsr_last_sync_success_timestamp_seconds', 'dpsr_standby_state{state="consistent",pair="system"} 1', 'dpsr_job_state', 'dpsr_jobs_total{kind="sync",state="done",pair="system"}', 'dpsr_drive_health_ok{bay="A"} 1']) {
    assert.ok(text.includes(name), `metrics lack ${name}`);
  }
  // Default process metrics keep their standard names; everything else is dpsr's own.
  const foreign = text.split('\n').filter((l) => l && !l.startsWith('#') && !/^(dpsr|process|nodejs)_/.test(l));
  assert.equal(foreign, []);
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) assert.ok(text.includes(`\n${name} `) || text.includes(`\n${name}{`), `metrics lack ${name}`);
  assert.not.ok(text.includes('dpsr_process_') || text.includes('dpsr_nodejs_'), 'default metrics are not prefixed');
  assert.match(text, /\ndpsr_build_info\{version="\d+\.\d+\.\d+",nodeversion="v\d+[^"]*"\} 1\n/);
});

test('the OpenAPI document describes every route', async () => {
  const doc = (await d.api('GET', '/api/openapi.json')).body;
  assert.is(doc.openapi, '3.1.0');
  const expect = [
    ['get', '/api/health'], ['get', '/api/status'], ['post', '/api/sync'], ['post', '/api/verify'], ['get', '/api/jobs'], ['get', '/api/jobs/{id}'],
    ['post', '/api/jobs/{id}/cancel'], ['post', '/api/failover'], ['post', '/api/bootselect'], ['post', '/api/host/heartbeat'], ['get', '/api/events'],
    ['get', '/api/events/log'], ['get', '/metrics'], ['get', '/api/openapi.json'], ['post', '/api/sim/button'], ['post', '/api/sim/host/power'],
    ['post', '/api/sim/host/crash'], ['post', '/api/sim/drive/{bay}/pull'], ['post', '/api/sim/drive/{bay}/insert'], ['post', '/api/sim/drive/{bay}/read-errors'],
  ];
  for (const [m, p] of expect) assert.ok(doc.paths[p!]?.[m!], `${m} ${p} missing`);
  assert.equal(doc.paths['/api/sync'].post.requestBody.content['application/json'].schema.properties.mode.enum, ['compare', 'manifest', 'changed']);
  assert.is(doc.paths['/api/sync'].post.requestBody.content['application/json'].schema.additionalProperties, false);
  assert.equal(doc.paths['/api/health'].get.security, []);
  assert.ok(doc['x-event-types']['job.progress']);
});

test('SSE replays after Last-Event-ID; the event log keeps operator events only', async () => {
  const first = openEvents(d.url, d.token);
  await first.ready;
  await d.api('POST', '/api/host/heartbeat', { bay: 'A' });
  const hb = await first.wait((e) => e.event === 'host.heartbeat' && e.data.data.source === 'api');
  first.close();
  await d.api('POST', '/api/sim/drive/B/smart', { temperatureC: 70 });
  const again = openEvents(d.url, d.token, '', { 'last-event-id': hb.id });
  await again.ready;
  const alert = await again.wait((e) => e.event === 'alert' && e.data.data.code === 'drive-health');
  assert.match(alert.data.data.message, /bay B: temperature 70 °C/);
  assert.ok(again.events.every((e) => Number(e.id.split(':')[1]) > Number(hb.id.split(':')[1])));
  again.close();
  await d.api('POST', '/api/sim/drive/B/smart', { temperatureC: 35 });
  const log = (await d.api('GET', '/api/events/log?limit=500')).body.events as { type: string }[];
  const types = new Set(log.map((e) => e.type));
  for (const t of ['daemon.started', 'job.started', 'job.done', 'alert', 'health']) assert.ok(types.has(t), `log lacks ${t}`);
  for (const t of ['job.progress', 'relay', 'host.heartbeat']) assert.not.ok(types.has(t), `log has ${t}`);
  const alerts = (await d.api('GET', '/api/events/log?types=alert')).body.events as { type: string }[];
  assert.ok(alerts.length > 0 && alerts.every((e) => e.type === 'alert'));
});

test.run();
