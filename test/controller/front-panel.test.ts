/** The front panel: the OLED shows the status, the rail monitors catch dead and stuck drives. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FrontPanel, SimPanelChips, panelParts } from '../../firmware/controller/front-panel.ts';
import { renderStatus, OPTIONAL_OUTPUTS, DEFAULT_TIMING, type StatusScreen, type Bay } from '../../src/bootswitch/index.ts';
import { readFileSync } from 'node:fs';
import { makeDaemon, idle, waitJob, waitFor } from './support/harness.ts';

function rig(screen: StatusScreen) {
  const chips = new SimPanelChips();
  const parts = panelParts(chips.bus, SimPanelChips.OLED, [
    { bay: 'A', address: SimPanelChips.RAIL.A, shuntOhms: 0.1 },
    { bay: 'B', address: SimPanelChips.RAIL.B, shuntOhms: 0.1 },
  ]);
  const alerts: { code: string }[] = [];
  const rails: { bay: Bay; state: string }[] = [];
  const power: Record<Bay, boolean> = { A: true, B: true };
  const present: Record<Bay, boolean> = { A: true, B: true };
  let now = 0;
  const panel = new FrontPanel({
    ...parts,
    screen: () => screen,
    drivePowered: (bay) => {
      chips.setRail(bay, power[bay], present[bay]);
      return power[bay];
    },
    events: { rail: (e) => rails.push({ bay: e.bay, state: e.state }), alert: (a) => alerts.push(a) },
    railIntervalMs: 60_000,
    stuckAfterMs: 10_000,
    now: () => now,
  });
  return { chips, panel, alerts, rails, power, present, tick: (ms: number) => (now += ms) };
}

test('the OLED shows what renderStatus draws: active bay, last sync, job progress, alert', async () => {
  const screen: StatusScreen = { activeBay: 'B', lastSync: '24.11 02:00', progress: 42, job: 'sync', alert: 'drive-dead' };
  const r = rig(screen);
  await r.panel.start();
  await r.panel.stop();
  assert.ok(r.chips.oled.on, 'display switched on');
  assert.equal([...r.chips.oled.ram], [...renderStatus(screen).bytes]);
  assert.ok(r.chips.oled.ascii().some((row) => row.includes('#')));
});

test('rails: running drives are quiet; a powered drive that draws nothing is dead; a cut rail is just off', async () => {
  const r = rig({ activeBay: 'A', lastSync: null, progress: null });
  await r.panel.start();
  assert.equal(r.rails, [
    { bay: 'A', state: 'running' },
    { bay: 'B', state: 'running' },
  ]);
  assert.equal(r.alerts, []);
  r.present.B = false;
  await r.panel.pollRails();
  assert.is(r.panel.railState('B'), 'dead');
  assert.equal(r.alerts.map((a) => a.code), ['drive-dead']);
  r.power.A = false;
  await r.panel.pollRails();
  assert.is(r.panel.railState('A'), 'off');
  assert.equal(r.alerts.map((a) => a.code), ['drive-dead'], 'no alert for a rail its relay cut');
  await r.panel.stop();
});

test('a drive that stays at spin-up current is reported stuck, once', async () => {
  const r = rig({ activeBay: 'A', lastSync: null, progress: null });
  await r.panel.start();
  r.chips.rails.A.shuntMv = 150; // 1.5 A through 0.1 Ω
  const original = r.chips.setRail.bind(r.chips);
  r.chips.setRail = (bay, powered, present) => (bay === 'A' ? undefined : original(bay, powered, present));
  await r.panel.pollRails();
  assert.is(r.panel.railState('A'), 'spinning-up');
  r.tick(5_000);
  await r.panel.pollRails();
  assert.equal(r.alerts, []);
  r.tick(6_000);
  await r.panel.pollRails();
  r.tick(6_000);
  await r.panel.pollRails();
  assert.equal(r.alerts.map((a) => a.code), ['drive-stuck']);
  await r.panel.stop();
});

test('a display that stops answering raises one panel-fault alert, not one per frame', async () => {
  const r = rig({ activeBay: 'A', lastSync: null, progress: null });
  await r.panel.start();
  r.chips.bus.drop();
  for (let i = 0; i < 5; i++) {
    r.panel.refresh();
    await new Promise((res) => setTimeout(res, 5));
  }
  await r.panel.stop();
  const faults = r.alerts.filter((a) => a.code === 'panel-fault');
  assert.ok(faults.length >= 1 && faults.length <= 2, `${faults.length} panel-fault alerts`);
});

test('on the simulated rig the daemon reports rail states and a pulled drive as dead', async () => {
  const d = await makeDaemon({ sim: { initialClone: false } });
  try {
    const log = await d.api('GET', '/api/events/log?types=rail');
    const states = (log.body.events ?? log.body).map((e: { data: { bay: string; state: string } }) => `${e.data.bay}:${e.data.state}`);
    assert.ok(states.includes('A:running') && states.includes('B:running'), JSON.stringify(states));
    assert.is((await d.api('POST', '/api/sim/drive/B/pull')).status < 300, true);
    d.app.status.status();
    const deadline = Date.now() + 5000;
    let alerts: string[] = [];
    while (Date.now() < deadline) {
      const a = await d.api('GET', '/api/events/log?types=alert');
      alerts = (a.body.events ?? a.body).map((e: { data: { code: string } }) => e.data.code);
      if (alerts.includes('drive-dead')) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.ok(alerts.includes('drive-dead'), JSON.stringify(alerts));
  } finally {
    await d.stop();
  }
});

test('the fault LED lights while the standby is inconsistent and goes out once it is recovered', async () => {
  // A slow simulated bridge keeps the sync running long enough to cut it short.
  const d = await makeDaemon({ sim: { bridgeMiBps: 24 } });
  try {
    await idle(d);
    const led = async () => (await d.api('GET', '/api/status')).body.leds.fault;
    assert.is(await led(), false, 'a consistent standby');
    await d.api('POST', '/api/sim/host/write', { mib: 16 });
    const sync = await d.api('POST', '/api/sync', {});
    await new Promise((r) => setTimeout(r, 300));
    await d.api('POST', `/api/jobs/${sync.body.id}/cancel`, { rollback: false });
    assert.is((await waitJob(d, sync.body.id)).state, 'cancelled');
    assert.is((await d.api('GET', '/api/status')).body.standbyState, 'inconsistent');
    assert.is(await led(), true, 'an inconsistent standby lights the fault LED');
    const recover = await d.api('POST', '/api/recover', {});
    assert.is((await waitJob(d, recover.body.id)).state, 'done');
    await waitFor(async () => (await led()) === false, 5000, 'the fault LED going out');
  } finally {
    await d.stop();
  }
});

test('with data pairs the screen has a line per data pair under the boot pair\'s, and names a data pair\'s job', () => {
  const fb = renderStatus({ activeBay: 'A', lastSync: null, progress: 42, job: 'sync data', alert: null, pairs: [{ id: 'data', active: 'D', state: 'OK' }, { id: 'archive', active: 'E', state: 'inconsistent' }] });
  const row = (page: number) => Array.from(fb.bytes.slice(page * 128, page * 128 + 128));
  const text = (s: string) => {
    const f = new (fb.constructor as new () => typeof fb)();
    f.text(0, 0, s);
    return Array.from(f.bytes.slice(0, 128));
  };
  assert.equal(row(1), text('data D OK'));
  assert.equal(row(3), text('archive E inconsistent'.slice(0, 21)));
  assert.equal(row(4), text('sync data 42%'));
  assert.equal(row(6), text(''), 'no third data pair');
});

test('on the simulated rig with two pairs: the data pair on the screen, the bay LEDs of its port follow its failover', async () => {
  const d = await makeDaemon({ pairs: [{ id: 'system', bays: ['A', 'B'] }, { id: 'data', bays: ['C', 'D'] }] });
  try {
    await waitFor(async () => (await d.api('GET', '/api/status')).body.pairs.every((p: any) => p.standbyState === 'consistent') && (await d.api('GET', '/api/status')).body.job === null, 60_000, 'both pairs cloned');
    await idle(d);
    d.app.panel.panel!.refresh();
    await waitFor(() => d.app.panel.panel!.lastScreen?.pairs?.[0]?.state === 'OK', 5000, 'the data pair on the screen');
    assert.equal(d.app.panel.panel!.lastScreen!.pairs, [{ id: 'data', active: 'C', state: 'OK' }]);
    const leds = () => ({ C: d.app.bs.board.outputs.ledBayC?.commanded, D: d.app.bs.board.outputs.ledBayD?.commanded });
    assert.equal(leds(), { C: true, D: false });
    const st = (await d.api('GET', '/api/pairs')).body.pairs;
    assert.equal(st.map((p: any) => p.port), [null, { onHost: 'C', moving: false, fault: null, state: 'known', unknown: null }]);
    await waitFor(async () => (await d.api('GET', '/api/status')).body.host.power === 'on', 10_000, 'host on');
    const fo = await d.api('POST', '/api/pairs/data/failover', { confirm: 'failover' });
    assert.is(fo.status, 202, JSON.stringify(fo.body));
    await waitFor(() => d.app.panel.panel!.lastScreen?.pairs?.[0]?.active === 'D', 20_000, 'the screen shows bay D as the data disk');
    assert.equal(leds(), { C: false, D: true });
    assert.equal(d.app.panel.panel!.lastScreen!.activeBay, 'A', 'the boot pair did not move');
  } finally {
    await d.stop();
  }
});

test('docs/front-panel.md describes every LED, the screen and the button as the code drives them', () => {
  const doc = readFileSync(new URL('../../docs/front-panel.md', import.meta.url), 'utf8');
  for (const led of OPTIONAL_OUTPUTS) assert.ok(doc.includes(`(\`${led}\`)`), `the legend has a row for ${led}`);
  assert.ok(doc.includes('(`ledBayC` … `ledBayH`)'), 'the legend has a row for the data bays\' LEDs');
  assert.ok(doc.includes('DATA D OK'), 'the legend shows a data pair\'s line');
  assert.ok(doc.includes(`default ${DEFAULT_TIMING.holdMs / 1000} s`), 'the hold time is the default one');
  const screen = readFileSync(new URL('../../src/bootswitch/ssd1306.ts', import.meta.url), 'utf8');
  for (const line of ['ACTIVE BAY ', 'SYNC ', "'NEVER'", '! ']) assert.ok(screen.includes(line), `renderStatus draws ${line}`);
  for (const line of ['ACTIVE BAY A', 'SYNC 24.11 02:00', 'NEVER', '! DRIVE-HEALTH']) assert.ok(doc.includes(line), `the legend shows ${line}`);
  // Every gesture the button watcher reports that changes something is explained.
  for (const g of ['short press', 'hold for `holdMs`', 'held while the controller starts']) assert.ok(doc.includes(g), g);
  assert.match(doc, /fault \(`ledFault`\) \| red \| a standby \(of any pair\) is \*\*inconsistent\*\*/);
});

test.run();
