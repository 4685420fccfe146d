/**
 * Node-RED beside dpsrd as an operator meets it: a taken editor port is said
 * once, in words naming the setting to change; without an MQTT broker the
 * default flows stay quiet (no reconnect line every five seconds) and say so
 * in one node status; the default flows have a debug node; the node package
 * carries its licence, repository and palette colour, and its status texts
 * fit the badge.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer } from 'node:net';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Rig, until, sleep, require } from './support/rig.ts';
import { NodeRedSupervisor, RepeatedLines, startNodeRed } from '../../firmware/controller/node-red-runner.ts';

const dir = 'firmware/flows';
const { fitBadge, errorBadge, BADGE_MAX } = require(join(process.cwd(), dir, 'lib/util.js')) as {
  fitBadge(s: { text?: string }): { text?: string };
  errorBadge(e: unknown): { text: string };
  BADGE_MAX: number;
};

test('a taken editor port is reported once, naming DPSR_NODE_RED_LISTEN; Node-RED is not restarted forever', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as { port: number }).port;
  const rig = await new Rig().start();
  const logs: { level: string; message: string }[] = [];
  const origLog = rig.daemon.log;
  try {
    const alerts: { code: string; message: string }[] = [];
    rig.daemon.app.bus.subscribe((e) => e.type === 'alert' && alerts.push(e.data as { code: string; message: string }));
    // The daemon's handle as startNodeRed uses it, with a log that records what the operator would read.
    const record = (level: string) => (extra: object, message: string) => logs.push({ level, message });
    const log = { child: () => ({ info: record('info'), warn: record('warn'), error: record('error') }) };
    const nr = startNodeRed({ ...rig.daemon, log: log as unknown as typeof origLog }, { listen: `127.0.0.1:${port}` }) as NodeRedSupervisor;
    const gaveUp = new Promise<{ message: string }>((r) => nr.once('gave-up', r));
    const { message } = await gaveUp;
    assert.match(message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}.*another program holds that port`));
    assert.match(message, /Set DPSR_NODE_RED_LISTEN=HOST:PORT/);
    await sleep(1500);
    assert.is(nr.pid, undefined, 'Node-RED stays stopped');
    assert.is(logs.filter((l) => l.level === 'error' || /another program holds/.test(l.message)).length, 0, `the supervisor leaves the saying to the alert: ${JSON.stringify(logs)}`);
    assert.is(logs.filter((l) => /port in use|Unable to listen/.test(l.message)).length, 0, "Node-RED's own lines are not repeated per attempt");
    assert.is(alerts.filter((a) => a.code === 'node-red-port-in-use').length, 1, 'one alert on the event bus');
    await nr.stop();
  } finally {
    blocker.close();
    await rig.close();
  }
});

test('without an MQTT broker the default flows start and do not try to connect', async () => {
  const rig = await new Rig().start();
  let output = '';
  const nr = new NodeRedSupervisor({ stateDir: rig.stateDir, url: rig.url, listen: '127.0.0.1:0', env: { DPSR_MQTT_BROKER: undefined }, output: (l) => (output += `${l}\n`), log: () => {} });
  try {
    await new Promise((r) => nr.once('flows-started', r));
    // The broker node used to try at once (and every 5 s): a refused connection shows within a second.
    await sleep(2000);
    assert.not.match(output, /mqtt|broker/i, output);
  } finally {
    await nr.stop();
    await rig.close();
  }
});

test("a line Node-RED repeats on a timer (a broker that is down) is shown once per ten minutes, with a count", () => {
  const r = new RepeatedLines(600_000);
  const line = (t: string) => `29 Nov ${t} - [info] [mqtt-broker:alerts broker] Connection failed to broker: mqtt://10.0.0.9:1883`;
  const shown = [0, 5, 10, 15, 20].map((s) => r.pass(line(`09:16:${String(s).padStart(2, '0')}`), s * 1000));
  assert.equal(shown, [line('09:16:00'), null, null, null, null]);
  assert.is(r.pass('29 Nov 09:16:21 - [info] Started flows', 21_000), '29 Nov 09:16:21 - [info] Started flows');
  assert.is(r.pass(line('09:26:05'), 605_000), `${line('09:26:05')} (also 4 times in the 605 s before)`);
  assert.is(r.pass(line('09:26:10'), 610_000), null);
});

test('the default flows: a debug node on the alerts and reports; MQTT only through the broker gate, which explains itself', () => {
  const flow = JSON.parse(readFileSync(join(dir, 'appliance/flows.json'), 'utf8')) as Record<string, any>[];
  const debug = flow.filter((n) => n.type === 'debug');
  assert.is(debug.length, 1);
  const feeding = flow.filter((n) => (n.wires ?? []).flat().includes(debug[0]!.id)).map((n) => n.id);
  assert.equal(feeding.sort(), ['dpsr-alert-format', 'dpsr-sync-failed', 'dpsr-sync-report']);
  const out = flow.find((n) => n.type === 'mqtt out')!;
  assert.equal(flow.filter((n) => (n.wires ?? []).flat().includes(out.id)).map((n) => n.id), ['dpsr-mqtt-gate']);
  const gate = flow.find((n) => n.id === 'dpsr-mqtt-gate')!;
  assert.match(gate.initialize, /no broker: set DPSR_MQTT_BROKER/);
  assert.ok('no broker: set DPSR_MQTT_BROKER'.length <= BADGE_MAX);
  assert.is(flow.find((n) => n.type === 'mqtt-broker')!.autoConnect, '${DPSR_MQTT_AUTOCONNECT}');
});

test('the node package has its LICENSE, repository and a palette colour of its own', () => {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  assert.ok(existsSync(join(dir, 'LICENSE')));
  assert.ok(pkg.files.includes('LICENSE'));
  assert.match(readFileSync(join(dir, 'LICENSE'), 'utf8'), new RegExp(`^${pkg.license} License`));
  assert.is(pkg.repository.type, 'git');
  assert.is(pkg.repository.directory, 'firmware/flows');
  // Node-RED's own palette colours, and the one its documentation's example uses.
  const core = ['#a6bbcf', '#e2d96e', '#fdd0a2', '#87a980', '#c0deed', '#e7e7ae', '#d8bfd8', '#dddddd', '#c0c0c0', '#e2a0a0'];
  const colours = readdirSync(join(dir, 'nodes'))
    .filter((f) => f.endsWith('.html') && f !== 'dpsr-controller.html')
    .map((f) => /color:\s*'(#[0-9a-f]{6})'/i.exec(readFileSync(join(dir, 'nodes', f), 'utf8'))?.[1]?.toLowerCase());
  for (const c of colours) assert.ok(c && !core.includes(c), `colour ${c}`);
});

test('status texts fit the badge: every node.status goes through fitBadge, which cuts at BADGE_MAX', () => {
  assert.is(fitBadge({ text: 'x'.repeat(100) }).text!.length, BADGE_MAX);
  assert.ok(fitBadge({ text: 'x'.repeat(100) }).text!.endsWith('…'));
  assert.is(fitBadge({ text: 'syncing\n42 %' }).text, 'syncing 42 %');
  assert.equal(fitBadge({}), {});
  const e = errorBadge({ status: 401, body: { error: { message: 'the bearer token is wrong' } }, message: 'GET /api/status → 401: the bearer token is wrong' });
  assert.is(e.text, 'error 401: the bearer token is…');
  for (const f of readdirSync(join(dir, 'nodes')).filter((x) => x.endsWith('.js'))) {
    const js = readFileSync(join(dir, 'nodes', f), 'utf8');
    for (const m of js.matchAll(/node\.status\(([^)]*)/g)) assert.ok(/^(fitBadge\(|errorBadge\(|\{\}$)/.test(m[1]!), `${f}: node.status(${m[1]}…) bypasses fitBadge`);
  }
});

test.run();
