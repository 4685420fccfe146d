/**
 * The daemon and its state directory: one daemon per directory (case r04),
 * and a full directory (case r09): recover still works, sync and verify say
 * what to do, no job is listed that was never recorded; a read-only one says
 * so (507) the same way. A port in use refuses the start before the
 * controller runs anything.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../../firmware/controller/daemon.ts';
import { readJsonChecked } from '../../src/durable-file.ts';
import { BusyError, DeviceError } from '../../src/errors.ts';
import { makeDaemon, idle, waitJob, FAST_SIM } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';

const REPO = new URL('../../', import.meta.url).pathname;
const rejects = async (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

test("case r04: a second dpsrd on the same state directory refuses at start, naming the first; the first one's job runs on", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-r04-'));
  const d = await makeDaemon({ sim: { bridgeMiBps: 16 } }, dir);
  try {
    await idle(d, 60_000);
    await d.api('POST', '/api/sim/host/write', { mib: 32 });
    const job = (await d.api('POST', '/api/sync', {})).body.job;
    assert.is(job.state, 'running');

    const second = await rejects(startDaemon({ stateDir: dir, listen: '127.0.0.1:0', config: { sim: FAST_SIM }, logLevel: 'silent' }));
    assert.instance(second, BusyError);
    assert.match((second as Error).message, `another dpsrd, process ${process.pid}`);
    assert.match((second as Error).message, d.url);
    // The same from the command line, in another process: exit 1 and the message, before anything else.
    const cli = spawnSync(process.execPath, ['bin/dpsrd.js', '--state-dir', dir, '--listen', '127.0.0.1:0'], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    assert.is(cli.status, 1);
    assert.match(cli.stderr, `already uses the state directory ${dir}`);

    const stored = readJsonChecked<{ jobs: { id: string; state: string; interrupted?: boolean }[] }>(join(dir, 'jobs.json'))!;
    const mine = stored.jobs.find((j) => j.id === job.id)!;
    assert.is(mine.state, 'running', 'the refused daemon did not mark the running job failed');
    assert.not.ok(mine.interrupted);
    const done = await waitJob(d, job.id, 120_000);
    assert.is(done.state, 'done');
  } finally {
    await d.close();
  }
  // Stopped, the first daemon lets go: the next one starts.
  const again = await startDaemon({ stateDir: dir, listen: '127.0.0.1:0', config: { sim: FAST_SIM }, logLevel: 'silent' });
  await again.close();
  rmSync(dir, { recursive: true, force: true });
});

test('case r04 from another network namespace: the second dpsrd refuses at start all the same', async () => {
  if (!requireEnv('the network namespace test', { root: true, tools: ['unshare'] })) return;
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-r04-netns-'));
  const d = await makeDaemon({ sim: { bridgeMiBps: 16 } }, dir);
  try {
    // Its own network namespace: the abstract socket names of the first daemon are not there.
    const cli = spawnSync('unshare', ['-n', process.execPath, 'bin/dpsrd.js', '--state-dir', dir, '--listen', '127.0.0.1:0'], { cwd: REPO, encoding: 'utf8', timeout: 60_000, env: { ...process.env, DPSR_NODE_RED_LISTEN: '127.0.0.1:0' } });
    assert.is(cli.status, 1, cli.stderr);
    assert.match(cli.stderr, `already uses the state directory ${dir}`);
    assert.is((await d.api('GET', '/api/health')).status, 200);
  } finally {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a port in use refuses the start before the controller starts: no job recorded, no copy begun, the state directory free for the next start', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-port-'));
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  const port = (taken.address() as AddressInfo).port;
  try {
    // A fresh simulated rig starts its first clone as soon as its controller runs: here it must not run at all.
    const e = await rejects(startDaemon({ stateDir: dir, listen: `127.0.0.1:${port}`, config: { sim: FAST_SIM }, logLevel: 'silent' }));
    assert.instance(e, DeviceError);
    assert.match((e as Error).message, `cannot listen on 127.0.0.1:${port}`);
    assert.not.ok(existsSync(join(dir, 'jobs.json')), 'no job was recorded by a daemon that could not serve');
    assert.not.ok(existsSync(join(dir, 'pairs.json')), 'no copy began');
    const events = existsSync(join(dir, 'events.jsonl')) ? readFileSync(join(dir, 'events.jsonl'), 'utf8') : '';
    assert.not.match(events, /job\.started/);
  } finally {
    await new Promise<void>((r) => taken.close(() => r()));
  }
  // The refused start left no lock behind, and the next start on a free port runs the first clone.
  const d = await makeDaemon({}, dir);
  try {
    await idle(d, 60_000);
    const jobs = (await d.api('GET', '/api/jobs')).body.jobs as { kind: string; state: string }[];
    assert.equal(jobs.map((j) => `${j.kind} ${j.state}`), ['clone done']);
  } finally {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a state directory too small for the simulated rig\'s drives: dpsrd says the filesystem is full and what to do, not a bare tool failure', () => {
  if (!requireEnv('the tiny state directory test', { root: true, tools: ['mount', 'umount'] })) return;
  const mnt = mkdtempSync(join(tmpdir(), 'dpsrd-tiny-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', mnt]);
  try {
    const r = spawnSync(process.execPath, ['bin/dpsrd.js', '--state-dir', join(mnt, 'state'), '--listen', '127.0.0.1:0'], { encoding: 'utf8', cwd: REPO, timeout: 60_000, env: { ...process.env, DPSR_NODE_RED_LISTEN: '127.0.0.1:0' } });
    assert.is(r.status, 1, r.stderr);
    assert.match(r.stderr, /dpsrd: (the filesystem of .* is full|no space left to write)/);
    assert.match(r.stderr, /free space/);
    assert.not.match(r.stderr, /ENOSPC|Command failed/);
  } finally {
    execFileSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test('case r09: on a full state directory recover works, sync and verify say what to do, and no job is listed that was never recorded', async () => {
  if (!requireEnv('the full state directory test', { root: true, tools: ['mount', 'umount', 'dd'] })) return;
  const mnt = mkdtempSync(join(tmpdir(), 'dpsrd-r09-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=160m', 'tmpfs', mnt]);
  const dir = join(mnt, 'state');
  const d = await makeDaemon({ sim: { driveSizeMiB: 48 } }, dir);
  try {
    await idle(d, 60_000);
    const before = (await d.api('GET', '/api/jobs')).body.jobs.length;
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${join(mnt, 'filler')}`, 'bs=64k'], { stdio: 'ignore' });
    } catch {
      /* dd ends at ENOSPC: the filesystem is full */
    }
    for (const path of ['/api/sync', '/api/verify']) {
      const r = await d.api('POST', path, {});
      assert.is(r.status, 507, `${path}: HTTP ${r.status} (507 Insufficient Storage)`);
      assert.match(r.body.error?.message ?? r.body.message, /is full/);
      assert.match(r.body.error?.hint ?? r.body.hint, /free space/);
    }
    const jobs = (await d.api('GET', '/api/jobs')).body.jobs as { state: string }[];
    assert.is(jobs.length, before, 'no job was listed for the refused requests');
    assert.is(jobs.filter((j) => j.state === 'running').length, 0);

    const rec = await d.api('POST', '/api/recover', {});
    assert.is(rec.status, 202);
    const done = await waitJob(d, rec.body.id, 60_000);
    assert.is(done.state, 'done', JSON.stringify(done.error));
    const recorded = readJsonChecked<{ jobs: { id: string; state: string }[] }>(join(dir, 'jobs.json'))!;
    assert.is(recorded.jobs.find((j) => j.id === rec.body.id)?.state, 'done', 'the recovery was recorded, in the space kept in reserve');
  } finally {
    await d.close();
    execFileSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test('a state directory that went read-only: sync, verify and recover say so and what to do (507), and no job is listed that was never recorded', async () => {
  if (!requireEnv('the read-only state directory test', { root: true, tools: ['mount', 'umount'] })) return;
  const mnt = mkdtempSync(join(tmpdir(), 'dpsrd-ro-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=160m', 'tmpfs', mnt]);
  const dir = join(mnt, 'state');
  const d = await makeDaemon({ sim: { driveSizeMiB: 48 } }, dir);
  try {
    await idle(d, 60_000);
    const before = (await d.api('GET', '/api/jobs')).body.jobs.length;
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    for (const [path, body] of [['/api/sync', {}], ['/api/verify', {}], ['/api/recover', {}]] as const) {
      const r = await d.api('POST', path, body);
      assert.is(r.status, 507, `${path}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /read-only/, path);
      assert.match(r.body.error.hint ?? '', /remount|writable/, path);
    }
    const jobs = (await d.api('GET', '/api/jobs')).body.jobs as { state: string }[];
    assert.is(jobs.length, before, 'no job was listed for the refused requests');
    execFileSync('mount', ['-o', 'remount,rw', mnt]);
    const again = await d.api('POST', '/api/verify', {});
    assert.is(again.status, 202, JSON.stringify(again.body));
    assert.is((await waitJob(d, again.body.id, 60_000)).state, 'done');
  } finally {
    await d.close();
    execFileSync('umount', ['-l', mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test.run();
