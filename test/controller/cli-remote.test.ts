/**
 * `dpsr … --url`: the storage commands through a running daemon as they work
 * locally (jobs, cancel, verify, recover, reprotect, restore), progress from
 * the event stream, Ctrl-C detaching, status exit codes, and token files whose
 * contents are never shown.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { SimRig } from '../../firmware/controller/sim/rig.ts';
import { makeDaemon, idle, type TestDaemon } from './support/harness.ts';

let d: TestDaemon;
const root = new URL('../../', import.meta.url).pathname;
/** Stalls the standby's bridge, so the job reading it is still running when the test acts on it. */
const holdStandby = () => (d.app.rig as SimRig).holdBridge('B');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function dpsr(args: string[], opts: { env?: Record<string, string>; onStderr?: (text: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ['bin/dpsr.js', ...args], { cwd: root, env: { ...process.env, DPSR_STATE_DIR: d.dir, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (x) => (stdout += x));
    c.stderr.on('data', (x) => {
      stderr += x;
      opts.onStderr?.(stderr, c);
    });
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test.before(async () => {
  // A bridge of 16 MiB/s makes a 64 MiB verify last seconds: long enough to watch and interrupt.
  d = await makeDaemon({ sim: { bridgeMiBps: 16 } });
  await idle(d);
});
test.after(async () => d?.stop());

test('verify --url follows the job on the event stream and exits 0 for identical drives', async () => {
  const r = await dpsr(['verify', '--url', d.url]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /verify job \S+ started/);
  assert.match(r.stderr, /(comparing|verifying|preparing) [\d.]+% of 64\.0 MiB/, 'progress came through');
  assert.match(r.stdout, /identical/);
});

test('jobs --url lists the history; jobs ID --url --json shows one job', async () => {
  const list = await dpsr(['jobs', '--url', d.url]);
  assert.is(list.code, 0, list.stderr);
  assert.match(list.stdout, /verify +done/);
  const all = JSON.parse((await dpsr(['jobs', '--url', d.url, '--json'])).stdout).jobs as { id: string; kind: string }[];
  const one = await dpsr(['jobs', all[0]!.id, '--url', d.url, '--json']);
  assert.is(one.code, 0);
  assert.is(JSON.parse(one.stdout).id, all[0]!.id);
  assert.is((await dpsr(['jobs', 'no-such-job', '--url', d.url])).code, 2);
});

test('Ctrl-C off a terminal detaches: the job runs on, dpsr cancel --url stops it', async () => {
  let sent = false;
  let release = () => {};
  try {
    const r = await dpsr(['verify', '--url', d.url], {
      onStderr: (text, child) => {
        if (!sent && /started/.test(text)) {
          sent = true;
          // The verify must outlast the detach, the status and the cancel, however slow the CLI starts.
          release = holdStandby();
          setTimeout(() => child.kill('SIGINT'), 300);
        }
      },
    });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /detached: \S+ keeps running; .*dpsr cancel/);
    const status = JSON.parse((await dpsr(['status', '--url', d.url, '--json'])).stdout);
    assert.is(status.job?.kind, 'verify', 'still running on the daemon');
    const c = await dpsr(['cancel', '--url', d.url]);
    assert.is(c.code, 0, c.stderr);
    assert.match(c.stdout, /cancel requested for verify job/);
  } finally {
    release();
  }
  await idle(d);
  assert.is((await dpsr(['cancel', '--url', d.url])).code, 2, 'nothing to cancel');
});

test('status --url exits 1 while the standby needs attention; recover --url brings it back', async () => {
  const started = JSON.parse((await dpsr(['sync', '--url', d.url, '--no-wait', '--json', '--yes'])).stdout);
  await new Promise((r) => setTimeout(r, 500));
  // Held, the sync cannot end before the cancel reaches it.
  const release = holdStandby();
  try {
    const c = await dpsr(['cancel', started.id, '--url', d.url, '--no-rollback']);
    assert.is(c.code, 0, c.stderr);
  } finally {
    release();
  }
  await idle(d);
  const bad = await dpsr(['status', '--url', d.url]);
  assert.is(bad.code, 1, bad.stdout);
  assert.match(bad.stdout, /NEEDS ATTENTION: the standby is inconsistent/);
  const json = await dpsr(['status', '--url', d.url, '--json']);
  assert.is(json.code, 1);
  assert.is(JSON.parse(json.stdout).standbyState, 'inconsistent', 'the JSON shape is the daemon\'s status');
  assert.is((await dpsr(['recover', '--url', d.url])).code, 2, 'recover needs confirmation');
  const rec = await dpsr(['recover', '--url', d.url, '--yes']);
  assert.is(rec.code, 0, rec.stderr);
  const good = await dpsr(['status', '--url', d.url]);
  assert.is(good.code, 0, good.stdout);
});

test('reprotect and restore --url run as jobs; restore needs --i-mean-restore and a host that is off or --window', async () => {
  const rp = await dpsr(['reprotect', '--url', d.url, '--yes', '--quiet']);
  assert.is(rp.code, 0, rp.stderr + rp.stdout);
  assert.match(rp.stdout, /reprotect done/);
  assert.is((await dpsr(['restore', '--url', d.url, '--yes'])).code, 2, 'without --i-mean-restore: bad usage, like every confirmation not given');
  for (const cmd of ['recover', 'reprotect', 'failover', 'clone']) assert.is((await dpsr([cmd, '--url', d.url])).code, 2, `${cmd} --url without --yes off a terminal: bad usage`);
  assert.is((await d.api('POST', '/api/restore', { iMeanRestore: false })).status, 400, 'the API says the same: 400');
  const powered = await dpsr(['restore', '--url', d.url, '--yes', '--i-mean-restore']);
  assert.is(powered.code, 3, powered.stderr);
  assert.match(powered.stderr, /powered host runs from/);
  assert.match(powered.stderr, /--window/, 'the refusal names the CLI option that asks for a sync window');
  await d.api('POST', '/api/sim/host/power', { power: 'off' });
  await new Promise((r) => setTimeout(r, 300));
  const rs = await dpsr(['restore', '--url', d.url, '--yes', '--i-mean-restore', '--json']);
  assert.is(rs.code, 0, rs.stderr);
  const job = JSON.parse(rs.stdout);
  assert.is(job.kind, 'restore');
  assert.is(job.state, 'done');
  // --window with the host on: the daemon shuts the host down for the copy itself.
  await d.api('POST', '/api/sim/host/power', { power: 'on' });
  await new Promise((r) => setTimeout(r, 300));
  const windowed = await dpsr(['restore', '--url', d.url, '--yes', '--i-mean-restore', '--window', '--json']);
  assert.is(windowed.code, 0, windowed.stderr);
  const wjob = JSON.parse(windowed.stdout);
  assert.equal([wjob.kind, wjob.state, wjob.options.window], ['restore', 'done', true]);
});

test('after a failover, status --url says which bay the host left, that its copy dates from the failover, and what makes it a standby again; reprotect --url does', async () => {
  await idle(d);
  const fo = await dpsr(['failover', '--url', d.url, '--yes']);
  assert.is(fo.code, 0, fo.stderr + fo.stdout);
  const s = await dpsr(['status', '--url', d.url]);
  assert.is(s.code, 1, s.stdout);
  const from = /standby  bay ([AB])/.exec(s.stdout)![1];
  assert.match(s.stdout, new RegExp(`standby  bay ${from} .*CONSISTENT \\(as of the failover; bay ${from} is marked failed\\)`));
  assert.match(s.stdout, new RegExp(`NEEDS ATTENTION: bay ${from} is marked failed after a failover away from it \\(the host runs from bay [AB] now; no failover goes back to it\\): .*dpsr reprotect`));
  const rp = await dpsr(['reprotect', '--url', d.url, '--yes', '--quiet']);
  assert.is(rp.code, 0, rp.stderr + rp.stdout);
  const after = await dpsr(['status', '--url', d.url]);
  assert.is(after.code, 0, after.stdout);
  assert.not.match(after.stdout, /marked failed/);
});

test('a standby whose size changed since pairing: the status needs attention (exit 1) and a job the daemon refuses to protect data exits 3 through --url, as the same command does locally', async () => {
  await idle(d);
  const standby = (d.app.rig as SimRig).drivePath((JSON.parse((await dpsr(['status', '--url', d.url, '--json'])).stdout) as { standby: 'A' | 'B' }).standby)!;
  const size = statSync(standby).size;
  const tail = Buffer.alloc(8 * 512);
  const fd = openSync(standby, 'r+');
  readSync(fd, tail, 0, tail.length, size - tail.length);
  truncateSync(standby, size - 8 * 512);
  try {
    // The status says so before any job is tried (it said CONSISTENT and exit 0, while every copy and verify was refused).
    await new Promise((r) => setTimeout(r, 1100)); // past the status cache
    const st = await dpsr(['status', '--url', d.url]);
    assert.is(st.code, 1, st.stdout + st.stderr);
    assert.match(st.stdout, /NEEDS ATTENTION: .*the standby drive .* now reports .*4,096 bytes \(8 sectors\) less/);
    const body = (await d.api('GET', '/api/status')).body;
    assert.match(body.geometryChanged.join(' '), /4,096 bytes \(8 sectors\) less/);
    assert.match(body.pairs[0].geometryChanged.join(' '), /4,096 bytes \(8 sectors\) less/);
    const pair = await dpsr(['status', '--url', d.url, '--pair', body.pairs[0].id]);
    assert.is(pair.code, 1, pair.stdout + pair.stderr);
    assert.match(pair.stdout, /NEEDS ATTENTION: .*4,096 bytes \(8 sectors\) less/);
    for (const cmd of [['sync', '--yes'], ['verify'], ['sync', '--yes', '--window'], ['verify', '--window']]) {
      const r = await dpsr([...cmd, '--url', d.url]);
      assert.is(r.code, 3, `${cmd.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout + r.stderr, /4,096 bytes \(8 sectors\) less/);
      // Rule 7: refused before the window shut the host down for a copy that could not run.
      const job = (await d.api('GET', `/api/jobs/${(await d.api('GET', '/api/jobs')).body.jobs[0].id}`)).body;
      assert.not.ok(job.log.some((l: { message: string }) => /sync window/.test(l.message)), `${cmd.join(' ')}: ${JSON.stringify(job.log)}`);
      assert.is((await d.api('GET', '/api/status')).body.host.power, 'on', cmd.join(' '));
    }
  } finally {
    // Its end as it was, so the standby is the backup again for the tests after this one.
    writeSync(fd, tail, 0, tail.length, size - tail.length);
    closeSync(fd);
  }
});

test('a wrong --token-file is named, never shown', async () => {
  const secret = 'correct horse battery staple\nsecond line of a private file\n';
  writeFileSync(join(d.dir, 'not-a-token'), secret);
  const r = await dpsr(['status', '--url', d.url, '--token-file', join(d.dir, 'not-a-token')]);
  assert.is(r.code, 2);
  assert.match(r.stderr, /not-a-token does not hold an API token/);
  assert.not.match(r.stderr + r.stdout, /horse|private/);
  writeFileSync(join(d.dir, 'wrong-token'), 'sekrit-but-wrong\n');
  const wrong = await dpsr(['status', '--url', d.url, '--token-file', join(d.dir, 'wrong-token')]);
  assert.is(wrong.code, 2);
  assert.match(wrong.stderr, /refused the token/);
  assert.not.match(wrong.stderr + wrong.stdout, /sekrit/);
  const big = await dpsr(['status', '--url', d.url, '--token-file', '/etc/services']);
  assert.is(big.code, 2);
  assert.not.match(big.stderr + big.stdout, /tcp|udp/);
  const missing = await dpsr(['status', '--url', d.url, '--token-file', join(d.dir, 'nope')]);
  assert.is(missing.code, 2);
  assert.match(missing.stderr, /cannot read the API token from .*nope: ENOENT/);
});

test.run();
