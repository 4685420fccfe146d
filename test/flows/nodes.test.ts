// The dpsr Node-RED nodes in the test helper's runtime against a real dpsrd
// on the simulated rig: syncs with progress, options, busy and bad requests,
// status, the event stream across a daemon restart, and failover refusals.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rig, until } from './support/rig.ts';
import { helper, startServer, stopServer, load, Inbox, badges, type Msg } from './support/red.ts';

// 16 MiB drives at 6 MiB/s: a whole-drive compare takes a few seconds, enough for several progress ticks.
const rig = new Rig({ bridgeMiBps: 6 });

const controller = () => ({ id: 'n-ctl', type: 'dpsr-controller', name: 'rig', url: rig.url });
const creds = () => ({ 'n-ctl': { token: rig.token } });
const sinks = (...ids: string[]) => ids.map((id) => ({ id, type: 'helper' }));

test.before(async () => {
  await rig.start();
  await startServer();
});

test.after.each(async () => {
  await helper.unload();
  await rig.waitIdle();
});

test.after(async () => {
  await stopServer();
  await rig.close();
});

test('sync from a node: start, progress with rising percent, done; the daemon ran it', async () => {
  await load([controller(), { id: 'n-sync', type: 'dpsr-sync', controller: 'n-ctl', action: 'sync', poll: 0.2, wires: [['h-prog'], ['h-done'], ['h-fail']] }, ...sinks('h-prog', 'h-done', 'h-fail')], creds());
  const node = helper.getNode('n-sync');
  const shown = badges(node);
  const prog = new Inbox(helper.getNode('h-prog'));
  const done = new Inbox(helper.getNode('h-done'));
  const fail = new Inbox(helper.getNode('h-fail'));
  node.receive({ payload: 1234, tag: 'nightly' });

  const end = await Promise.race([done.next(undefined, 60_000, 'done'), fail.next(undefined, 60_000, 'failed').then((m) => assert.unreachable(`failed: ${JSON.stringify(m.payload)}`))]);
  const m = end as Msg;
  assert.is(m.topic, 'done');
  assert.is(m.tag, 'nightly', 'the input message travels with the output');
  assert.is(m.payload.state, 'done');
  assert.is(m.payload.percent, 100);
  assert.ok(m.payload.result, 'the daemon result comes along');

  assert.is(prog.msgs[0]?.topic, 'start');
  assert.is(prog.msgs[0]?.payload.id, m.payload.id);
  const ticks = prog.msgs.filter((x) => x.topic === 'progress');
  assert.ok(ticks.length >= 3, `progress messages: ${ticks.length}`);
  const pct = ticks.map((x) => x.payload.percent as number);
  assert.ok(pct.some((p) => p > 0 && p < 100), `some progress in between: ${pct.join(', ')}`);
  for (let i = 1; i < pct.length; i++) assert.ok(pct[i]! >= pct[i - 1]!, `percent never falls: ${pct.join(', ')}`);
  assert.ok(ticks.every((x) => typeof x.payload.progress.bytesTotal === 'number'));

  assert.ok(shown.some((b) => /^syncing \d+ %$/.test(b.text ?? '') && b.text !== 'syncing 0 %'), `badges: ${shown.map((b) => b.text).join(' | ')}`);
  assert.match(shown.at(-1)?.text ?? '', /^sync done/);

  const job = (await rig.api('GET', `/api/jobs/${m.payload.id}`)).body;
  assert.is(job.kind, 'sync');
  assert.is(job.state, 'done');
  assert.is(job.trigger, 'api');
});

test('verify with options from msg: action and partitions reach the daemon', async () => {
  await load([controller(), { id: 'n-sync', type: 'dpsr-sync', controller: 'n-ctl', action: 'sync', mode: 'manifest', poll: 0.2, wires: [[], ['h-done'], ['h-fail']] }, ...sinks('h-done', 'h-fail')], creds());
  const done = new Inbox(helper.getNode('h-done'));
  helper.getNode('n-sync').receive({ action: 'verify', payload: { partitions: '3' } });
  const m = await done.next(undefined, 30_000, 'verify done');
  assert.is(m.payload.kind, 'verify');
  const job = (await rig.api('GET', `/api/jobs/${m.payload.id}`)).body;
  assert.is(job.kind, 'verify');
  assert.equal(job.options.partitions, [3]);
  assert.is(job.options.mode, undefined, 'the sync-only mode is not sent with a verify');
});

test('busy controller: refused at once with 409, or waited for', async () => {
  const running = await rig.api('POST', '/api/sync', {});
  assert.is(running.status, 202);
  await load(
    [
      controller(),
      { id: 'n-now', type: 'dpsr-sync', controller: 'n-ctl', whenBusy: 'fail', poll: 0.2, wires: [[], ['h-done'], ['h-fail']] },
      { id: 'n-later', type: 'dpsr-sync', controller: 'n-ctl', whenBusy: 'wait', poll: 0.2, wires: [['h-prog'], ['h-done'], ['h-fail']] },
      ...sinks('h-prog', 'h-done', 'h-fail'),
    ],
    creds(),
  );
  const done = new Inbox(helper.getNode('h-done'));
  const fail = new Inbox(helper.getNode('h-fail'));
  const prog = new Inbox(helper.getNode('h-prog'));
  helper.getNode('n-now').receive({ payload: '' });
  const f = await fail.next(undefined, 10_000, 'the refusal');
  assert.is(f.topic, 'failed');
  assert.is(f.payload.error.status, 409);
  assert.match(f.error.message, new RegExp(`job \\(id ${running.body.id}\\) is running`));

  helper.getNode('n-later').receive({ payload: '' });
  const m = await done.next(undefined, 60_000, 'the waiting sync to finish');
  assert.ok(Number(m.payload.id) > Number(running.body.id), 'started after the running one');
  assert.is((await rig.api('GET', `/api/jobs/${running.body.id}`)).body.state, 'done');
  assert.ok(prog.msgs.some((x) => x.topic === 'start'));
  assert.is(fail.msgs.length, 1);
});

test('bad options: the daemon says why (400), nothing starts', async () => {
  const before = (await rig.api('GET', '/api/jobs')).body.jobs.length;
  await load([controller(), { id: 'n-sync', type: 'dpsr-sync', controller: 'n-ctl', wires: [[], [], ['h-fail']] }, ...sinks('h-fail')], creds());
  const fail = new Inbox(helper.getNode('h-fail'));
  helper.getNode('n-sync').receive({ payload: { partitions: [0] } });
  const f = await fail.next(undefined, 10_000, 'the failure');
  assert.is(f.payload.error.status, 400);
  assert.match(f.error.message, /partitions/);
  helper.getNode('n-sync').receive({ action: 'clone' });
  assert.match((await fail.next((x) => x !== f, 10_000, 'second failure')).error.message, /action "clone" is not one of sync, verify/);
  assert.is((await rig.api('GET', '/api/jobs')).body.jobs.length, before);
});

test('status on input; token from a file; a wrong token is an error with 401', async () => {
  await load(
    [
      { id: 'n-ctl', type: 'dpsr-controller', url: rig.url, tokenFile: rig.daemon.tokenFile },
      { id: 'n-bad', type: 'dpsr-controller', url: rig.url },
      { id: 'n-st', type: 'dpsr-status', controller: 'n-ctl', wires: [['h-ok'], ['h-err']] },
      { id: 'n-st2', type: 'dpsr-status', controller: 'n-bad', wires: [['h-ok'], ['h-err']] },
      ...sinks('h-ok', 'h-err'),
    ],
    { 'n-bad': { token: 'not-the-token-at-all' } },
  );
  const ok = new Inbox(helper.getNode('h-ok'));
  const err = new Inbox(helper.getNode('h-err'));
  const shown = badges(helper.getNode('n-st'));
  const shown2 = badges(helper.getNode('n-st2'));
  helper.getNode('n-st').receive({ topic: 'ask' });
  const s = await ok.next(undefined, 10_000, 'status');
  assert.is(s.topic, 'ask');
  assert.is(s.payload.active, 'A');
  assert.is(s.payload.standbyState, 'consistent');
  assert.is(s.payload.job, null);
  assert.is(shown.at(-1)?.text, 'idle · A active');

  helper.getNode('n-st2').receive({});
  const e = await err.next(undefined, 10_000, 'the 401');
  assert.is(e.payload.error.status, 401);
  assert.is(shown2.at(-1)?.fill, 'red');
  assert.match(shown2.at(-1)?.text ?? '', /^error 401: the bearer token is/);
});

test('status on an interval shows "syncing N %" while a sync runs', async () => {
  await load([controller(), { id: 'n-st', type: 'dpsr-status', controller: 'n-ctl', interval: 0.3, onlyChanges: true, wires: [['h-ok'], []] }, ...sinks('h-ok')], creds());
  const shown = badges(helper.getNode('n-st'));
  const ok = new Inbox(helper.getNode('h-ok'));
  await ok.next(undefined, 5000, 'first poll');
  const started = await rig.api('POST', '/api/sync', {});
  assert.is(started.status, 202);
  await until(() => shown.some((b) => /^syncing \d+ %$/.test(b.text ?? '')), 20_000, 'a syncing badge');
  await ok.next((m) => m.payload.job?.kind === 'sync', 5000, 'a status with the job');
  await rig.waitIdle();
  await until(() => shown.at(-1)?.text === 'idle · A active', 5000, 'the idle badge');
});

test('event stream: one message per event, reconnects with backoff after the daemon restarts', async () => {
  await load([controller(), { id: 'n-ev', type: 'dpsr-events', controller: 'n-ctl', minDelay: 0.1, maxDelay: 0.8, wires: [['h-evs'], ['h-conn']] }, ...sinks('h-evs', 'h-conn')], creds());
  const shown = badges(helper.getNode('n-ev'));
  const evs = new Inbox(helper.getNode('h-evs'));
  const conn = new Inbox(helper.getNode('h-conn'));
  await conn.next((m) => m.payload.state === 'connected', 10_000, 'connected');

  const first = await rig.api('POST', '/api/verify', { partitions: [3] });
  const done1 = await evs.next((m) => m.topic === 'job.done' && m.payload.job.id === first.body.id, 20_000, 'job.done of the verify');
  assert.ok(evs.msgs.some((m) => m.topic === 'job.started' && m.payload.job.id === first.body.id));
  assert.match(done1.event.id, /^[0-9a-f]+:\d+$/);
  const bootBefore = done1.event.id.split(':')[0];

  const n = conn.msgs.length;
  // Down for a while: several reconnect attempts fail, each waiting longer (capped at 0.8 s).
  await rig.restart(2500);
  const after = conn.msgs.slice(n);
  const waits = after.filter((m) => m.payload.state === 'waiting');
  assert.ok(waits.length >= 3, `reconnect attempts while down: ${waits.length}`);
  assert.ok(waits.at(-1)!.payload.delayMs > waits[0]!.payload.delayMs, `backoff grows: ${waits.map((w) => w.payload.delayMs).join(', ')}`);
  assert.ok(waits.every((w) => w.payload.delayMs <= 0.8 * 1000 * 1.2 + 1));
  assert.ok(shown.some((b) => /^disconnected, retry in \d+ s$/.test(b.text ?? '') && b.fill === 'red'), `badges: ${shown.map((b) => b.text).join(' | ')}`);

  await conn.next((m) => conn.msgs.indexOf(m) >= n && m.payload.state === 'connected', 10_000, 'connected again');
  const started = await evs.next((m) => m.topic === 'daemon.started' && m.event.id.split(':')[0] !== bootBefore, 10_000, 'daemon.started of the new boot');
  assert.is(started.payload.url, rig.url);
  assert.is(shown.at(-1)?.text?.startsWith('connected'), true);

  const second = await rig.api('POST', '/api/verify', { partitions: [3] });
  await evs.next((m) => m.topic === 'job.done' && m.payload.job.id === second.body.id, 20_000, 'events after the reconnect');
});

test('events node: a type filter passes only those events', async () => {
  await load([controller(), { id: 'n-ev', type: 'dpsr-events', controller: 'n-ctl', types: 'job.done,alert', wires: [['h-evs'], ['h-conn']] }, ...sinks('h-evs', 'h-conn')], creds());
  const evs = new Inbox(helper.getNode('h-evs'));
  await new Inbox(helper.getNode('h-conn')).next((m) => m.payload.state === 'connected', 10_000, 'connected');
  const v = await rig.api('POST', '/api/verify', { partitions: [3] });
  await evs.next((m) => m.topic === 'job.done' && m.payload.job.id === v.body.id, 20_000, 'job.done');
  assert.ok(evs.msgs.every((m) => m.topic === 'job.done' || m.topic === 'alert'), evs.msgs.map((m) => m.topic).join());
});

test('failover refuses without an explicit confirmation; the daemon is not asked', async () => {
  await load([controller(), { id: 'n-fo', type: 'dpsr-failover', controller: 'n-ctl', wires: [['h-ok'], ['h-no']] }, ...sinks('h-ok', 'h-no')], creds());
  const node = helper.getNode('n-fo');
  const shown = badges(node);
  const ok = new Inbox(helper.getNode('h-ok'));
  const no = new Inbox(helper.getNode('h-no'));
  const logBefore = (await rig.api('GET', '/api/events/log?types=failover')).body.events.length;

  const attempts = [{ payload: 'go' }, { confirm: true }, { confirm: 'yes' }, { payload: { confirm: 'failover' } }];
  for (const [i, msg] of attempts.entries()) {
    node.receive(msg);
    const r = await no.next((m) => no.msgs.indexOf(m) === i, 5000, `refusal ${i}`);
    assert.is(r.topic, 'refused');
    assert.match(r.payload.reason, /msg\.confirm must be the string "failover"/);
  }
  assert.is(no.msgs.length, 4);
  assert.is(ok.msgs.length, 0);
  assert.match(shown.at(-1)?.text ?? '', /^refused: /);
  const st = (await rig.api('GET', '/api/status')).body;
  assert.is(st.active, 'A');
  assert.is(st.failover.failovers, 0);
  assert.is((await rig.api('GET', '/api/events/log?types=failover')).body.events.length, logBefore);

  // The same node with the confirmation fails over for real.
  node.receive({ confirm: 'failover', tag: 'operator' });
  const m = await ok.next(undefined, 30_000, 'the failover answer');
  assert.equal({ from: m.payload.from, to: m.payload.to, accepted: m.payload.accepted }, { from: 'A', to: 'B', accepted: true });
  assert.is(m.tag, 'operator');
  await until(async () => (await rig.api('GET', '/api/status')).body.active === 'B' || undefined, 30_000, 'bay B active');
});

test.run();
