// The Node-RED nodes against a controller with two pairs: the sync, status and
// failover nodes name their pair; syncs of both pairs asked for at once both
// complete (the daemon queues the second); a node without a pair is told which
// pairs there are; the two-pairs example flow loads and runs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { Rig } from './support/rig.ts';
import { helper, startServer, stopServer, load, Inbox } from './support/red.ts';

const rig = new Rig({ bridgeMiBps: 24, pairs: [{ id: 'system', bays: ['A', 'B'] }, { id: 'data', bays: ['C', 'D'] }] });

const controller = () => ({ id: 'n-ctl', type: 'dpsr-controller', name: 'rig', url: rig.url });
const creds = () => ({ 'n-ctl': { token: rig.token } });
const sinks = (...ids: string[]) => ids.map((id) => ({ id, type: 'helper' }));

test.before(async () => {
  await rig.start();
  await rig.waitIdle(60_000);
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

test('sync nodes of both pairs triggered together: both done, the data pair\'s after the system pair\'s', async () => {
  await load(
    [
      controller(),
      { id: 'n-sys', type: 'dpsr-sync', controller: 'n-ctl', pair: 'system', action: 'sync', poll: 0.2, wires: [[], ['h-done'], ['h-fail']] },
      { id: 'n-data', type: 'dpsr-sync', controller: 'n-ctl', pair: 'data', action: 'sync', poll: 0.2, wires: [[], ['h-done'], ['h-fail']] },
      ...sinks('h-done', 'h-fail'),
    ],
    creds(),
  );
  const done = new Inbox(helper.getNode('h-done'));
  const fail = new Inbox(helper.getNode('h-fail'));
  await rig.api('POST', '/api/sim/host/write', { mib: 1, pair: 'data' });
  helper.getNode('n-sys').receive({ payload: '' });
  helper.getNode('n-data').receive({ payload: '' });
  const a = await done.next((m) => m.payload.pair === 'system', 60_000, 'the system pair done');
  const b = await done.next((m) => m.payload.pair === 'data', 60_000, 'the data pair done');
  assert.is(fail.msgs.length, 0, JSON.stringify(fail.msgs.map((m) => m.payload)));
  assert.equal([a.payload.pair, b.payload.pair].sort(), ['data', 'system']);
  const jobs = await Promise.all([a, b].map(async (m) => (await rig.api('GET', `/api/jobs/${m.payload.id}`)).body));
  const sys = jobs.find((j) => j.pair === 'system');
  const data = jobs.find((j) => j.pair === 'data');
  assert.ok(data.log.some((l: { message: string }) => /queued/.test(l.message)) || Date.parse(data.startedAt) >= Date.parse(sys.finishedAt), 'one copy at a time');
  assert.equal([data.options.source, data.options.target], ['C', 'D']);
});

test('the status node reads one pair; a node without a pair hears which pairs there are', async () => {
  await load(
    [
      controller(),
      { id: 'n-st', type: 'dpsr-status', controller: 'n-ctl', pair: 'data', wires: [['h-st'], ['h-err']] },
      { id: 'n-any', type: 'dpsr-sync', controller: 'n-ctl', action: 'verify', poll: 0.2, wires: [[], [], ['h-fail']] },
      ...sinks('h-st', 'h-err', 'h-fail'),
    ],
    creds(),
  );
  const st = new Inbox(helper.getNode('h-st'));
  helper.getNode('n-st').receive({});
  const s = await st.next(undefined, 10_000, 'status');
  assert.is(s.topic, 'dpsr/status/data');
  assert.equal([s.payload.id, s.payload.active, s.payload.standby, s.payload.standbyState], ['data', 'C', 'D', 'consistent']);
  helper.getNode('n-st').receive({ pair: 'system' });
  const s2 = await st.next((m) => m.payload.id === 'system', 10_000, 'status of the system pair');
  assert.is(s2.payload.id, 'system');

  const fail = new Inbox(helper.getNode('h-fail'));
  helper.getNode('n-any').receive({ payload: '' });
  const f = await fail.next(undefined, 10_000, 'the ambiguous request');
  assert.is(f.payload.error.status, 400);
  assert.match(f.error.message, /2 pairs \(system, data\)/);
  helper.getNode('n-any').receive({ payload: '', pair: 'data' });
  const done = await until(() => fail.msgs.length === 1 && true, 60_000);
  assert.ok(done);
});

test('the two-pairs example flow loads: its sync nodes name the system and the data pair', async () => {
  const flow = JSON.parse(readFileSync(new URL('../../firmware/flows/examples/two-pairs.json', import.meta.url), 'utf8')) as Record<string, any>[];
  const syncs = flow.filter((n) => n.type === 'dpsr-sync');
  assert.equal(syncs.map((n) => [n.pair, flow.find((i) => i.wires?.[0]?.includes(n.id))?.crontab]), [['system', '00 03 * * 0'], ['data', '00 * * * *']]);
  const ctl = flow.find((n) => n.type === 'dpsr-controller')!;
  // The example's dpsr nodes with the settings it gives them, wired to the test's sinks (the runtime here has no inject or debug nodes).
  const pick = (n: Record<string, any>, keys: string[]) => Object.fromEntries(keys.filter((k) => n[k] !== undefined).map((k) => [k, n[k]]));
  const ours = flow
    .filter((n) => n.type === 'dpsr-sync' || n.type === 'dpsr-status')
    .map((n) => ({ ...pick(n, ['id', 'type', 'name', 'controller', 'pair', 'action', 'partitions', 'mode', 'whenBusy', 'waitTimeout']), poll: 0.2, wires: n.type === 'dpsr-sync' ? [[], ['h-done'], ['h-fail']] : [['h-st'], []] }));
  await load([{ id: ctl.id, type: 'dpsr-controller', name: ctl.name, url: rig.url }, ...ours, ...sinks('h-done', 'h-fail', 'h-st')], { [ctl.id]: { token: rig.token } });
  const done = new Inbox(helper.getNode('h-done'));
  helper.getNode('ex5-sync-data').receive({ payload: '' });
  const d = await done.next(undefined, 60_000, 'the hourly data sync');
  assert.is(d.payload.pair, 'data');
  const st = new Inbox(helper.getNode('h-st'));
  helper.getNode('ex5-status-system').receive({});
  assert.is((await st.next(undefined, 10_000, 'system pair status')).payload.id, 'system');
});

// Last: it leaves the data pair failed over.
test('the failover node with a data pair: the data port moves to its standby, the system pair untouched', async () => {
  await rig.waitIdle(60_000);
  const system = (await rig.api('GET', '/api/pairs/system/status')).body;
  await load([controller(), { id: 'n-fo', type: 'dpsr-failover', controller: 'n-ctl', wires: [['h-fo'], ['h-refused']] }, ...sinks('h-fo', 'h-refused')], creds());
  const started = new Inbox(helper.getNode('h-fo'));
  const refused = new Inbox(helper.getNode('h-refused'));
  helper.getNode('n-fo').receive({ confirm: 'failover', pair: 'data' });
  const r = await started.next(undefined, 60_000, 'the failover started');
  assert.is(r.topic, 'failover');
  assert.is(refused.msgs.length, 0);
  assert.ok(await untilAsync(async () => (await rig.api('GET', '/api/pairs/data/status')).body.active === 'D', 60_000), 'the data pair fails over to bay D');
  const after = (await rig.api('GET', '/api/pairs/system/status')).body;
  assert.equal([after.active, after.standby, after.standbyState], [system.active, system.standby, system.standbyState]);
});

async function untilAsync(fn: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

async function until(fn: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

test.run();
