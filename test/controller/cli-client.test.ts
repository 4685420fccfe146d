import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDaemon, idle, type TestDaemon } from './support/harness.ts';
import { dpsrAsync } from '../support/cli.ts';

let d: TestDaemon;

const dpsr = (args: string[], env: Record<string, string> = {}) => dpsrAsync(args, { DPSR_STATE_DIR: d.dir, ...env });

test.before(async () => {
  d = await makeDaemon();
  await idle(d);
});
test.after(async () => d?.stop());

test('dpsr status --url reads the token from the state directory', async () => {
  const r = await dpsr(['status', '--url', d.url]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /standby {2}bay B {2}generation \d+ {2}CONSISTENT/);
  const j = await dpsr(['status', '--url', d.url, '--json']);
  assert.is(JSON.parse(j.stdout).active, 'A');
});

test('every command that changes a drive or the boot asks with --url as it does locally: off a terminal, exit 2 naming --yes, nothing started', async () => {
  const jobsBefore = (await d.api('GET', '/api/jobs')).body.jobs.length;
  const status = JSON.stringify((await d.api('GET', '/api/status')).body.generations);
  for (const args of [['sync'], ['sync', '--partition', '1'], ['clone'], ['recover'], ['reprotect'], ['restore', '--i-mean-restore'], ['failover']]) {
    const r = await dpsr([...args, '--url', d.url]);
    assert.is(r.code, 2, `dpsr ${args.join(' ')} --url: exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, /needs confirmation: pass --yes/, `dpsr ${args.join(' ')} --url`);
  }
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobsBefore, 'no job was started');
  assert.is(JSON.stringify((await d.api('GET', '/api/status')).body.generations), status);
  assert.is((await d.api('GET', '/api/status')).body.active, 'A', 'no failover');
});

test('dpsr sync --url --yes follows the job to the end', async () => {
  const r = await dpsr(['sync', '--url', d.url, '--json', '--yes']);
  assert.is(r.code, 0, r.stderr);
  const job = JSON.parse(r.stdout);
  assert.is(job.state, 'done');
  assert.is(job.kind, 'sync');
});

test('exit codes keep their meaning through the daemon', async () => {
  writeFileSync(join(d.dir, 'wrong-token'), 'nope\n');
  const wrong = await dpsr(['status', '--url', d.url, '--token-file', join(d.dir, 'wrong-token')]);
  assert.is(wrong.code, 2);
  assert.match(wrong.stderr, /refused the token/);
  const noConfirm = await dpsr(['failover', '--url', d.url]);
  assert.is(noConfirm.code, 2);
  const badMode = await dpsr(['sync', '--url', d.url, '--mode', 'fast']);
  assert.is(badMode.code, 2);
  const noDaemon = await dpsr(['status', '--url', 'http://127.0.0.1:1']);
  assert.is(noDaemon.code, 1);
  assert.match(noDaemon.stderr, /no dpsrd answers/);
  // A refusal by the daemon (nothing paired in the standby bay after a pull) is exit 3.
  await d.api('POST', '/api/sim/drive/B/pull', {});
  const refused = await dpsr(['failover', '--url', d.url, '--yes']);
  assert.is(refused.code, 3, refused.stderr);
  await d.api('POST', '/api/sim/drive/B/insert', {});
  const local = await dpsr(['status']);
  assert.is(local.code, 0, 'the local command still works');
  assert.match(local.stdout, /pair [0-9a-f]+/);
});

test.run();
