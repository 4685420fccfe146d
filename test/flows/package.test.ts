// The node package as Node-RED and npm see it: package.json conventions, a
// .html per node registering the same type with an edit dialog and help, and
// flows (examples and the appliance defaults) that are whole: unique ids,
// every wire and config reference resolving, cron schedules well formed, and
// no node type the appliance does not have in its default flows.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

const dir = 'firmware/flows';
const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
const OURS = ['dpsr-controller', 'dpsr-sync', 'dpsr-status', 'dpsr-events', 'dpsr-failover'];
const CORE = ['tab', 'comment', 'inject', 'debug', 'function', 'change', 'switch', 'delay', 'trigger', 'mqtt in', 'mqtt out', 'mqtt-broker', 'catch', 'status', 'link in', 'link out'];

test('package.json follows the Node-RED packaging conventions', () => {
  assert.match(pkg.name, /^@[a-z0-9-]+\/node-red-[a-z0-9-]+$/);
  assert.ok(pkg.keywords.includes('node-red'));
  assert.match(pkg['node-red'].version, /^>=4/);
  assert.equal(Object.keys(pkg['node-red'].nodes).sort(), [...OURS].sort());
  assert.is(pkg.type, undefined, 'CommonJS, as Node-RED loads nodes with require');
  assert.is(Object.keys(pkg.dependencies ?? {}).length, 0, 'no runtime dependencies');
  for (const f of pkg.files) assert.ok(existsSync(join(dir, f)), f);
});

for (const type of OURS) {
  test(`${type}: .js registers it, .html has its dialog and help`, () => {
    const js = join(dir, pkg['node-red'].nodes[type]);
    const html = js.replace(/\.js$/, '.html');
    assert.match(readFileSync(js, 'utf8'), new RegExp(`registerType\\('${type}'`));
    const h = readFileSync(html, 'utf8');
    assert.match(h, new RegExp(`RED\\.nodes\\.registerType\\('${type}'`));
    assert.match(h, new RegExp(`data-template-name="${type}"`));
    assert.match(h, new RegExp(`data-help-name="${type}"`));
    const mod = require(join(process.cwd(), js)) as (red: unknown) => void;
    const registered: string[] = [];
    mod({ nodes: { registerType: (t: string) => registered.push(t), createNode() {}, getNode() {} }, util: {} });
    assert.equal(registered, [type]);
  });
}

const flowFiles = [...readdirSync(join(dir, 'examples')).map((f) => join(dir, 'examples', f)), join(dir, 'appliance', 'flows.json')];

for (const file of flowFiles) {
  test(`${file}: whole and well formed`, () => {
    const flow = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>[];
    const ids = new Set(flow.map((n) => n.id));
    assert.is(ids.size, flow.length, 'unique ids');
    const types = new Set<string>();
    for (const n of flow) {
      types.add(n.type);
      if (n.z) assert.ok(ids.has(n.z), `${n.id}: tab ${n.z}`);
      for (const out of n.wires ?? []) for (const to of out) assert.ok(ids.has(to), `${n.id} → ${to}`);
      if (n.controller !== undefined) assert.is(flow.find((c) => c.id === n.controller)?.type, 'dpsr-controller', `${n.id}: controller`);
      if (n.broker !== undefined && n.type !== 'mqtt-broker') assert.is(flow.find((c) => c.id === n.broker)?.type, 'mqtt-broker', `${n.id}: broker`);
      if (n.type === 'inject' && n.crontab) assert.match(n.crontab, /^(\S+\s+){4}\S+$/, `${n.id}: cron`);
      if (n.type === 'dpsr-sync') {
        assert.ok(['sync', 'verify'].includes(n.action));
        assert.match(n.partitions, /^(\d+(\s*,\s*\d+)*)?$/, `${n.id}: partitions`);
        assert.is(n.wires.length, 3);
      }
      // A property equal to a node id makes Node-RED take it for a config reference.
      for (const [k, v] of Object.entries(n)) if (k !== 'id' && k !== 'z' && k !== 'controller' && k !== 'broker' && typeof v === 'string') assert.not.ok(ids.has(v) && v !== n.z, `${n.id}.${k} = "${v}" is also a node id`);
      // The controller's token is a credential: never in a flow file.
      if (n.type === 'dpsr-controller') assert.is(n.token, undefined);
    }
    const allowed = file.includes('appliance') ? [...OURS, ...CORE] : [...OURS, ...CORE, 'e-mail'];
    for (const t of types) assert.ok(allowed.includes(t), `${t} is not a node type this flow may use`);
    assert.ok([...types].some((t) => OURS.includes(t)));
  });
}

test('the examples cover the schedule, mail and MQTT alerts, the idle-host sync and a failover', () => {
  const all = flowFiles.filter((f) => f.includes('examples')).map((f) => JSON.parse(readFileSync(f, 'utf8')) as Record<string, any>[]);
  const nodes = all.flat();
  assert.ok(nodes.some((n) => n.type === 'inject' && n.crontab === '00 02 * * *'));
  assert.ok(nodes.some((n) => n.type === 'inject' && /^00 03 \* \* 0$/.test(n.crontab)));
  assert.ok(nodes.some((n) => n.type === 'e-mail'));
  assert.ok(nodes.some((n) => n.type === 'mqtt out'));
  assert.ok(nodes.some((n) => n.type === 'dpsr-sync' && n.waitIdle === true));
  assert.ok(nodes.some((n) => n.type === 'dpsr-events' && /failover/.test(n.types) && /alert/.test(n.types) && /job\.failed/.test(n.types)));
  assert.ok(nodes.some((n) => n.type === 'dpsr-failover'));
});

test.run();
