// End to end: dpsrd on the simulated rig, Node-RED as its own process run by
// the daemon's Node-RED supervisor with the default flows and settings, an MQTT
// broker (aedes) in this process. The schedule's inject is fired through the
// admin API after logging in; the sync is checked on dpsrd and the alerts on
// the broker. Killing Node-RED leaves dpsrd running, and the supervisor brings
// Node-RED back.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type Server } from 'node:net';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import mqtt, { type MqttClient } from 'mqtt';
import { NodeRedSupervisor } from '../../firmware/controller/node-red-runner.ts';
import { Rig, until, sleep } from './support/rig.ts';
import { freePort } from '../support/net.ts';

const rig = new Rig({ bridgeMiBps: 4 });
let broker: Aedes;
let brokerServer: Server;
let brokerPort = 0;
let sub: MqttClient;
let nr: NodeRedSupervisor;
let editor = '';
let nrLog = '';
const received: { topic: string; payload: any }[] = [];

function mqttMessage(pred: (m: { topic: string; payload: any }) => boolean, timeoutMs: number, what: string) {
  return until(() => received.find(pred), timeoutMs, `MQTT ${what} (got ${received.map((m) => m.topic).join(', ') || 'nothing'})`);
}

async function login(): Promise<string> {
  const password = readFileSync(join(rig.stateDir, 'node-red', 'admin-password'), 'utf8').trim();
  const res = await fetch(`${editor}/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_id: 'node-red-admin', grant_type: 'password', scope: '*', username: 'admin', password }),
  });
  assert.is(res.status, 200, 'admin login');
  return ((await res.json()) as { access_token: string }).access_token;
}

async function inject(id: string, token: string): Promise<number> {
  const res = await fetch(`${editor}/inject/${id}`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  return res.status;
}

/** The next "flows started" of a Node-RED process other than `notPid`. */
function waitFlows(notPid?: number): Promise<{ url?: string; pid?: number }> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`Node-RED did not start its flows within 60 s:\n${nrLog.slice(-3000)}`)), 60_000);
    const on = (info: { url?: string; pid?: number }) => {
      if (info.pid === notPid) {
        nr.once('flows-started', on);
        return;
      }
      clearTimeout(t);
      resolve(info);
    };
    nr.once('flows-started', on);
  });
}

test.before(async () => {
  try {
    await setUp();
  } catch (e) {
    // uvu does not report a failing before hook; say it and stop.
    console.error('set-up failed:', e, `\n${nrLog.slice(-3000)}`);
    process.exit(1);
  }
});

async function setUp() {
  broker = await Aedes.createBroker();
  brokerServer = createServer(broker.handle as unknown as (s: import('node:net').Socket) => void);
  await new Promise<void>((r) => brokerServer.listen(0, '127.0.0.1', r));
  brokerPort = (brokerServer.address() as { port: number }).port;
  sub = mqtt.connect(`mqtt://127.0.0.1:${brokerPort}`, { clientId: 'e2e-observer' });
  await new Promise<void>((resolve, reject) => (sub.once('connect', () => resolve()), sub.once('error', reject)));
  await sub.subscribeAsync('dpsr/#', { qos: 1 });
  sub.on('message', (topic, payload) => received.push({ topic, payload: JSON.parse(payload.toString()) }));

  await rig.start();
  const port = await freePort();
  editor = `http://127.0.0.1:${port}`;
  nr = new NodeRedSupervisor({
    stateDir: rig.stateDir,
    url: rig.url,
    listen: `127.0.0.1:${port}`,
    env: { DPSR_MQTT_BROKER: '127.0.0.1', DPSR_MQTT_PORT: String(brokerPort) },
    output: (line: string) => (nrLog += line + '\n'),
    log: (_level, message) => (nrLog += `[supervisor] ${message}\n`),
    minDelayMs: 200,
  });
  await waitFlows();
  // The flows' MQTT client connects once its flow runs.
  await until(() => Object.keys((broker as unknown as { clients: Record<string, unknown> }).clients).some((id) => id !== 'e2e-observer'), 20_000, 'the flows to connect to the broker');
}

test.after(async () => {
  await nr?.stop();
  await sub?.endAsync();
  await new Promise((r) => brokerServer?.close(r));
  await new Promise<void>((r) => (broker ? broker.close(() => r()) : r()));
  await rig.close();
});

test('appliance settings: editor behind a login, secrets 0600 in the state directory, flows copied there', async () => {
  const anon = await fetch(`${editor}/flows`);
  assert.is(anon.status, 401);
  assert.is(await inject('dpsr-nightly-data', 'wrong'), 401);
  for (const f of ['credential-secret', 'admin-password']) assert.is(statSync(join(rig.stateDir, 'node-red', f)).mode & 0o777, 0o600, f);
  const token = await login();
  const flows = (await (await fetch(`${editor}/flows`, { headers: { authorization: `Bearer ${token}` } })).json()) as { id: string; type: string }[];
  assert.ok(flows.some((n) => n.id === 'dpsr-nightly-data' && n.type === 'inject'));
  assert.ok(statSync(join(rig.stateDir, 'node-red', 'flows.json')).isFile());
});

test('the nightly schedule fired through the admin API syncs the data partition on dpsrd and reports on MQTT', async () => {
  const token = await login();
  const before = (await rig.api('GET', '/api/jobs')).body.jobs.length;
  assert.is(await inject('dpsr-nightly-data', token), 200);
  const job = await until(async () => (await rig.api('GET', '/api/jobs')).body.jobs.find((j: any) => j.kind === 'sync' && j.state === 'done'), 30_000, 'the sync on dpsrd');
  assert.equal(job.options.partitions, [3]);
  assert.is((await rig.api('GET', '/api/jobs')).body.jobs.length, before + 1);
  const m = await mqttMessage((x) => x.topic === 'dpsr/sync/done', 10_000, 'dpsr/sync/done');
  assert.is(m.payload.schedule, 'nightly-data');
  assert.is(m.payload.id, job.id);
  assert.is(m.payload.state, 'done');
});

test('a drive-health warning becomes an MQTT alert', async () => {
  const r = await rig.api('POST', '/api/sim/drive/B/smart', { temperatureC: 58 });
  assert.ok(r.status < 300, `smart: ${r.status} ${JSON.stringify(r.body)}`);
  const m = await mqttMessage((x) => x.topic === 'dpsr/alert/drive-health', 15_000, 'dpsr/alert/drive-health');
  assert.is(m.payload.level, 'warning');
  assert.is(m.payload.bay, 'B');
  assert.match(m.payload.message, /58 °C/);
});

test('a failover becomes an MQTT alert', async () => {
  await rig.waitIdle();
  const r = await rig.api('POST', '/api/failover', { confirm: 'failover' });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const m = await mqttMessage((x) => x.topic === 'dpsr/alert/failover', 30_000, 'dpsr/alert/failover');
  assert.equal([m.payload.from, m.payload.to, m.payload.level], ['A', 'B', 'critical']);
});

test('a sync that fails, and one that cannot start, become MQTT alerts', async () => {
  const token = await login();
  await rig.waitIdle();
  const { standby } = (await rig.api('GET', '/api/status')).body;
  // Unreadable sectors all over the standby: the compare reads it and the sync fails.
  const lbas = Array.from({ length: 4000 }, (_, i) => 2048 + i * 7);
  assert.is((await rig.api('POST', `/api/sim/drive/${standby}/read-errors`, { lbas })).status, 200);
  assert.is(await inject('dpsr-weekly-system', token), 200);
  const m = await mqttMessage((x) => x.topic === 'dpsr/alert/sync-failed' && !!x.payload.job, 30_000, 'dpsr/alert/sync-failed of a job');
  assert.is(m.payload.level, 'critical');
  assert.equal(m.payload.job.options.partitions, [1, 2]);
  assert.match(m.payload.message, /unreadable sector/);
  const job = (await rig.api('GET', `/api/jobs/${m.payload.job.id}`)).body;
  assert.is(job.state, 'failed');
  assert.is((await rig.api('POST', `/api/sim/drive/${standby}/read-errors`, { lbas: [] })).status, 200);

  // With the standby pulled, the next scheduled sync is refused before any job starts.
  await rig.waitIdle();
  assert.ok((await rig.api('POST', `/api/sim/drive/${standby}/pull`, {})).status < 300);
  const jobsBefore = (await rig.api('GET', '/api/jobs')).body.jobs.length;
  const n = received.length;
  assert.is(await inject('dpsr-nightly-data', token), 200);
  const refused = await mqttMessage((x) => received.indexOf(x) >= n && x.topic === 'dpsr/alert/sync-failed' && !x.payload.job, 30_000, 'the could-not-start alert');
  assert.match(refused.payload.message, /could not start/);
  assert.is(refused.payload.schedule, 'nightly-data');
  assert.is((await rig.api('GET', '/api/jobs')).body.jobs.length, jobsBefore);
});

test('Node-RED killed: dpsrd keeps running, the supervisor restarts Node-RED with its flows', async () => {
  const pid = nr.pid!;
  const flows = waitFlows(pid);
  process.kill(pid, 'SIGKILL');
  await sleep(100);
  const health = await fetch(`${rig.url}/api/health`);
  assert.is(health.status, 200);
  await flows;
  assert.ok(nr.pid && nr.pid !== pid, `pid ${pid} → ${nr.pid}, restarts ${nr.restarts}`);
  assert.is(nr.restarts, 1);
  const token = await login();
  const res = await fetch(`${editor}/flows`, { headers: { authorization: `Bearer ${token}` } });
  assert.is(res.status, 200);
});

test.run();
