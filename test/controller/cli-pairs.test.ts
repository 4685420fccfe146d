/**
 * `dpsr … --url` on a controller with a data pair, as an operator uses it:
 * a data pair's failover is reported by its own outcome (not the boot
 * pair's), `dpsr status --url` exits 1 when any pair needs attention, a
 * command that does not say which pair names the option to give, and a
 * partition restore takes --pair.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeDaemon, waitFor, type TestDaemon } from './support/harness.ts';
import { dpsrAsync } from '../support/cli.ts';

const TWO_PAIRS = [
  { id: 'system', label: 'system drive', bays: ['A', 'B'] },
  { id: 'data', label: 'data drive', bays: ['C', 'D'] },
];

let d: TestDaemon;

const dpsr = (args: string[]) => dpsrAsync([...args, '--url', d.url], { DPSR_STATE_DIR: d.dir });

const status = async () => (await d.api('GET', '/api/status')).body;

test.before(async () => {
  d = await makeDaemon({ pairs: TWO_PAIRS });
  await waitFor(async () => {
    const s = await status();
    return s.pairs.every((p: { standbyState: string }) => p.standbyState === 'consistent') && s.job === null && s.queued.length === 0;
  }, 60_000, 'both pairs cloned');
  await waitFor(async () => (await status()).host.lastHeartbeat?.bay === 'A', 10_000, 'host running on A');
});
test.after(async () => d?.stop());

test('a command without --pair on two pairs is bad usage naming --pair, before anything starts', async () => {
  const r = await dpsr(['sync', '--yes']);
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /2 pairs \(system, data\): dpsr sync --url needs --pair/);
  assert.match(r.stderr, /--pair system/);
  assert.not.match(r.stderr, /\/api\/pairs\/\{id\}/, 'the operator is not sent to the API');
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.filter((j: { kind: string }) => j.kind === 'sync').length, 0, 'no sync started');
});

test('failover --pair data: done when the data pair swapped, exit 0; the boot pair untouched', async () => {
  const r = await dpsr(['failover', '--pair', 'data', '--yes']);
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /failover of pair data done: bay D is the host's data disk/);
  const p = (await d.api('GET', '/api/pairs/data/status')).body;
  assert.equal([p.active, p.standby], ['D', 'C']);
  const s = await status();
  assert.equal([s.active, s.bootBay], ['A', 'A'], 'the boot pair did not move');
});

test('status --url exits 1 when a data pair needs attention, naming the pair; 0 once it is whole again', async () => {
  const before = await dpsr(['status']);
  assert.is(before.code, 0, before.stdout);
  await waitFor(async () => (await d.api('POST', '/api/sim/drive/C/pull', {})).status === 200, 5_000, 'standby pulled');
  try {
    const r = await dpsr(['status']);
    assert.is(r.code, 1, r.stdout);
    assert.match(r.stdout, /NEEDS ATTENTION: pair data: the standby is /);
    const one = await dpsr(['status', '--pair', 'data']);
    assert.is(one.code, 1, one.stdout);
    const sys = await dpsr(['status', '--pair', 'system']);
    assert.is(sys.code, 0, sys.stdout);
  } finally {
    await d.api('POST', '/api/sim/drive/C/insert', {});
  }
});

test('restore --partition --pair goes to that pair (refused here: the data pair\'s host is on)', async () => {
  const r = await dpsr(['restore', '--pair', 'data', '--partition', '1', '--i-mean-restore', '--yes']);
  assert.not.match(r.stderr, /takes no --pair/);
  assert.match(r.stderr, /dpsr: /);
  assert.ok(r.code === 3 || r.code === 2, `${r.code}: ${r.stderr}`);
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.filter((j: { kind: string; pair?: string }) => j.kind === 'restore-partition' && j.pair === 'system').length, 0, 'nothing went to the boot pair');
});

test.run();
