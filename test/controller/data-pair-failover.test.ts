/**
 * A data pair's failover on the simulated rig: the host's data port moves
 * from the pair's active drive to its standby with the interlocks of the
 * boot switch (host off first, break before make, read back, roll back on a
 * relay fault), the roles swap in the pair state, and the boot pair is left
 * untouched. Also the data pair's sync window and a restart half-way
 * through a failover.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { SimBoard } from '../../src/bootswitch/index.ts';
import { makeDaemon, openEvents, sha, waitFor, waitJob, type TestDaemon } from './support/harness.ts';

const TWO_PAIRS = [
  { id: 'system', label: 'system drive', bays: ['A', 'B'] },
  { id: 'data', label: 'data drive', bays: ['C', 'D'] },
];
const PORT = ['C', 'D'] as const;

const board = (d: TestDaemon) => d.app.rig.board as SimBoard;
const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;
const pairStatus = async (d: TestDaemon, id: string) => (await d.api('GET', `/api/pairs/${id}/status`)).body;

async function ready(d: TestDaemon): Promise<void> {
  await waitFor(async () => {
    const s = await status(d);
    return s.pairs.every((p: { standbyState: string }) => p.standbyState === 'consistent') && s.job === null && s.queued.length === 0;
  }, 60_000, 'both pairs cloned');
  await waitFor(async () => (await status(d)).host.lastHeartbeat?.bay === 'A', 10_000, 'host running on A');
}

let d: TestDaemon;

test('data pair failover: host shut down, data port moved C → D with break before make, roles swapped, host on again; the boot pair untouched', async () => {
  d = await makeDaemon({ pairs: TWO_PAIRS });
  await ready(d);
  assert.equal(board(d).drivesOnDataPort(PORT), ['C']);
  const shaA = sha(join(d.dir, 'sim', 'bay-A.img'));
  const shaB = sha(join(d.dir, 'sim', 'bay-B.img'));
  const sysBefore = await pairStatus(d, 'system');
  const dataBefore = await pairStatus(d, 'data');
  const contacts: string[] = [];
  board(d).on('contact', (relay, on) => contacts.push(`${relay}=${on ? 1 : 0}`));
  const es = openEvents(d.url, d.token, '?types=failover,switch.step,switched,host.power,alert');
  await es.ready;

  const r = await d.api('POST', '/api/pairs/data/failover', { confirm: 'failover' });
  assert.is(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body, { pair: 'data', from: 'C', to: 'D', accepted: true });
  const again = await d.api('POST', '/api/pairs/data/failover', { confirm: 'failover' });
  assert.is(again.status, 409, 'a running failover refuses a second one');
  const sys = await d.api('POST', '/api/pairs/system/failover', { confirm: 'failover' });
  assert.is(sys.status, 409, "the boot pair's failover waits for the data port's move");

  const fo = await es.wait((e) => e.event === 'failover', 20_000);
  assert.equal([fo.data.data.pair, fo.data.data.from, fo.data.data.to], ['data', 'C', 'D']);
  assert.is(fo.data.data.generation, dataBefore.generations.D + 1);
  const steps = es.events.filter((e) => e.event === 'switch.step' && e.data.data.pair === 'data').map((e) => e.data.data.step);
  assert.equal(steps.slice(0, 1), ['host off (acpi)'], 'the host is shut down before anything moves');
  assert.ok(steps.indexOf('old connection broken') < steps.indexOf('new connection made'), 'break before make');
  assert.ok(steps.includes('read back'));
  const off = es.events.findIndex((e) => e.event === 'host.power' && e.data.data.power === 'off');
  assert.ok(off >= 0 && off < es.events.findIndex((e) => e.event === 'switched'), 'the host was off before the switch finished');
  // Only the data port's relays moved, drives powered down first, the old drive taken off before the new one.
  assert.equal(contacts.filter((c) => !c.startsWith('K_ATX')), ['K_PWR_C=1', 'K_PWR_D=1', 'K_MUX_C=1', 'K_MUX_D=1', 'K_PWR_C=0', 'K_PWR_D=0']);
  assert.equal(board(d).drivesOnDataPort(PORT), ['D']);
  assert.equal(board(d).poweredDrivesOnDataPort(PORT), ['D']);
  assert.equal(board(d).drivesOnHost(), ['A'], 'the boot port still has bay A');
  assert.equal(board(d).violations, []);

  await waitFor(async () => (await status(d)).host.power === 'on' && (await status(d)).host.simState === 'running', 10_000, 'host powered on again, booted from A');
  const dataAfter = await pairStatus(d, 'data');
  assert.equal([dataAfter.active, dataAfter.standby, dataAfter.standbyState], ['D', 'C', 'consistent']);
  const sysAfter = await pairStatus(d, 'system');
  assert.equal([sysAfter.active, sysAfter.standby, sysAfter.generations, sysAfter.standbyState], [sysBefore.active, sysBefore.standby, sysBefore.generations, sysBefore.standbyState]);
  const s = await status(d);
  assert.equal([s.bootBay, s.failover.failovers, s.failover.active], ['A', 0, 'A'], "the boot pair's failover machine saw nothing of it");
  assert.is(sha(join(d.dir, 'sim', 'bay-A.img')), shaA);
  assert.is(sha(join(d.dir, 'sim', 'bay-B.img')), shaB);
  assert.is(d.app.pairLedger.failovers('data'), 1);
  assert.is(d.app.pairLedger.pending('data'), null);
  es.close();
  // Counted for its pair; the boot pair's series is there at 0.
  const metrics = (await d.api('GET', '/metrics')).body as string;
  assert.match(metrics, /^dpsr_failovers_total\{pair="data"\} 1$/m);
  assert.match(metrics, /^dpsr_failovers_total\{pair="system"\} 0$/m);
  // The data port's log lines name its bays (C, D), never the positions A and B.
  const lines = d.logs.flatMap((l) => l.split('\n')).filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const portSteps = lines.filter((l) => l.switch === 'data port C/D' && typeof l.msg === 'string' && l.msg.startsWith('switch: '));
  assert.ok(portSteps.length > 0, 'the data port logs its steps');
  assert.equal([...new Set(portSteps.map((l) => l.to))], ['D']);
  assert.ok(lines.some((l) => l.msg === 'roles swapped in the pair state' && l.pair === 'data' && l.active === 'D'), JSON.stringify(lines.filter((l) => l.msg === 'roles swapped in the pair state')));

  // The host writes its new data disk; the next sync goes the other way, D onto C.
  await d.api('POST', '/api/sim/host/write', { mib: 1, pair: 'data' });
  const sync = await d.api('POST', '/api/pairs/data/sync', {});
  const job = await waitJob(d, sync.body.id);
  assert.is(job.state, 'done', JSON.stringify(job.error));
  assert.equal([job.options.source, job.options.target], ['D', 'C']);
  assert.is(sha(join(d.dir, 'sim', 'bay-C.img')), sha(join(d.dir, 'sim', 'bay-D.img')));
});

test('data pair failover with a welded relay: the read-back catches it, the relays roll back, roles and host as before', async () => {
  await d.app.jobs.idle();
  await waitFor(async () => (await status(d)).host.power === 'on', 10_000, 'host on');
  const before = await pairStatus(d, 'data');
  assert.equal([before.active, before.standby], ['D', 'C']);
  // K_MUX_D welded energised: bay D cannot leave the host's data port.
  board(d).stick('K_MUX_D', true);
  const es = openEvents(d.url, d.token, '?types=failover,alert');
  await es.ready;
  const r = await d.api('POST', '/api/pairs/data/failover', { confirm: 'failover' });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const alert = await es.wait((e) => e.event === 'alert' && e.data.data.code === 'failover-failed', 20_000);
  assert.is(alert.data.data.pair, 'data');
  assert.match(alert.data.data.message, /failover of pair data from bay D to bay C failed: relay muxD: contact sense/);
  assert.match(alert.data.data.message, /the relays give the host bay D; host powered on again with its old data disk/);
  assert.ok(es.events.some((e) => e.event === 'alert' && e.data.data.code === 'switch-failed' && e.data.data.pair === 'data'), 'the roll-back is reported');
  assert.not.ok(es.events.some((e) => e.event === 'failover'), 'no failover happened');
  assert.equal(board(d).drivesOnDataPort(PORT), ['D']);
  assert.equal(board(d).violations, [], 'never both drives on the data port, never a move under the powered host');
  const after = await pairStatus(d, 'data');
  assert.equal([after.active, after.standby, after.generations], [before.active, before.standby, before.generations]);
  assert.is(d.app.pairLedger.pending('data'), null);
  assert.is(d.app.pairLedger.failovers('data'), 1);
  await waitFor(async () => (await status(d)).host.power === 'on', 10_000, 'host powered on again');
  board(d).unstick('K_MUX_D');
  es.close();
});

test('refusals come before anything moves: a job on the pair, an unpaired pair', async () => {
  await d.app.jobs.idle();
  const v = d.app.pairs.get('data').copies.start('verify', {});
  const snap = board(d).snapshot();
  const r = await d.api('POST', '/api/pairs/data/failover', { confirm: 'failover' });
  assert.is(r.status, 409);
  assert.match(r.body.error.message, new RegExp(`verify job \\(id ${v.id}\\) is (running|queued) on pair data`));
  assert.equal(board(d).snapshot(), snap);
  await waitJob(d, v.id);
});

test("a data pair's sync window: the host off, both data drives on the controller, the active one back and the host on again", async () => {
  await d.app.jobs.idle();
  await waitFor(async () => (await status(d)).host.lastHeartbeat?.bay === 'A', 10_000, 'host running');
  await d.api('POST', '/api/sim/host/write', { mib: 1, pair: 'data' });
  const seen: string[][] = [];
  const watch = () => seen.push([...board(d).drivesOnDataPort(PORT)]);
  board(d).on('contact', watch);
  const sync = await d.api('POST', '/api/pairs/data/sync', { window: true });
  assert.is(sync.status, 202, JSON.stringify(sync.body));
  const job = await waitJob(d, sync.body.id);
  board(d).off('contact', watch);
  assert.is(job.state, 'done', JSON.stringify(job.error));
  assert.ok(seen.some((x) => x.length === 0), 'both data drives were off the host during the copy');
  assert.equal(board(d).drivesOnDataPort(PORT), ['D'], 'the active data drive is back on the host');
  assert.equal(board(d).drivesOnHost(), ['A']);
  assert.ok(job.log.some((l: { message: string }) => /sync window closed: bay D back on the host, host powered on/.test(l.message)), JSON.stringify(job.log));
  assert.equal(board(d).violations, []);
  await waitFor(async () => (await status(d)).host.power === 'on', 10_000, 'host on again');
  assert.equal(d.app.holds.pairs, []);
});

test.after(async () => {
  await d?.stop();
});

test('parallel copies in sync windows of both pairs: they open and close in turn, the host stays off until the last closes, then is powered on once', async () => {
  const p = await makeDaemon({ pairs: [TWO_PAIRS[0], { ...TWO_PAIRS[1], bridge: 'usb2' }], jobs: { parallel: true }, sim: { bridgeMiBps: 64 } });
  try {
    await ready(p);
    await p.api('POST', '/api/sim/host/write', { mib: 4 });
    await p.api('POST', '/api/sim/host/write', { mib: 4, pair: 'data' });
    const es = openEvents(p.url, p.token, '?types=host.power');
    await es.ready;
    const sys = await p.api('POST', '/api/pairs/system/sync', { window: true });
    const data = await p.api('POST', '/api/pairs/data/sync', { window: true });
    assert.equal([sys.status, data.status], [202, 202]);
    assert.equal([sys.body.job.state, data.body.job.state], ['running', 'running'], 'both copies run at once');
    const [a, b] = [await waitJob(p, sys.body.id, 60_000), await waitJob(p, data.body.id, 60_000)];
    assert.is(a.state, 'done', JSON.stringify(a.error));
    assert.is(b.state, 'done', JSON.stringify(b.error));
    await waitFor(async () => (await status(p)).host.power === 'on', 10_000, 'host on again');
    await new Promise((r) => setTimeout(r, 300));
    const power = es.events.map((e) => e.data.data.power);
    assert.equal(power, ['off', 'on'], 'one shutdown, one power-on after both windows closed');
    assert.equal(board(p).drivesOnHost(), ['A']);
    assert.equal(board(p).drivesOnDataPort(PORT), ['C']);
    assert.equal(board(p).violations, []);
    assert.equal(p.app.holds.pairs, []);
    es.close();
  } finally {
    await p.stop();
  }
});

test('a restart after the relays moved but before the roles were recorded: the swap is recorded then', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-datafo-'));
  try {
    let p = await makeDaemon({ pairs: TWO_PAIRS }, dir);
    await ready(p);
    const gen = (await pairStatus(p, 'data')).generations.D;
    // What a crash between the move and the pair state's record leaves: the ledger's entry and the relays on D.
    p.app.pairLedger.begin('data', 'A', 'B');
    await p.app.pairs.get('data').failover!.port.sw.moveTo('B', { powerOn: true });
    await p.close();
    p = await makeDaemon({ pairs: TWO_PAIRS }, dir);
    try {
      const s = await pairStatus(p, 'data');
      assert.equal([s.active, s.standby], ['D', 'C']);
      assert.is(s.generations.D, gen + 1);
      assert.is(p.app.pairLedger.pending('data'), null);
      assert.is(p.app.pairLedger.failovers('data'), 1);
      const log = (await p.api('GET', '/api/events/log?types=alert,failover')).body.events;
      assert.ok(log.some((e: any) => e.type === 'alert' && e.data.code === 'failover-finished-before-restart'), JSON.stringify(log));
      assert.equal(board(p).drivesOnDataPort(PORT), ['D'], 'the restart kept the relays where they were');
    } finally {
      await p.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
