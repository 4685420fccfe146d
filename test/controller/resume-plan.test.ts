/**
 * After a crash the daemon resumes the interrupted copy by its recorded plan,
 * never by the options of another job: a whole-drive sync killed midway, with
 * a partition sync before it in the job history, resumes as a whole-drive
 * sync and leaves the standby identical to the active drive.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readJsonChecked } from '../../src/durable-file.ts';
import { spawnDaemon, waitFor, sha, type ChildDaemon } from './support/harness.ts';

function configFile(dir: string): string {
  const file = join(dir, '..', `${dir.split('/').pop()}.yaml`);
  writeFileSync(file, ['rig: sim', 'sim:', '  driveSizeMiB: 64', '  bridgeMiBps: 24', '  hostBootMs: 150', '  heartbeatMs: 100', 'recovery:', '  interrupted: resume', 'log:', '  level: info', ''].join('\n'));
  return file;
}

const idle = (d: ChildDaemon) => waitFor(async () => ((await d.api('GET', '/api/status')).body.job === null ? true : undefined), 60_000, 'idle');

test('a whole-drive sync killed midway resumes as a whole-drive sync, not with the options of an older partition sync', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-resume-plan-'));
  const cfg = configFile(dir);
  let d2: ChildDaemon | undefined;
  try {
    const d1 = await spawnDaemon(dir, cfg);
    await idle(d1);
    const s0 = (await d1.api('GET', '/api/status')).body;
    // An older partition sync in the job history.
    const part = await d1.api('POST', '/api/sync', { partitions: [2], mode: 'compare' });
    assert.is(part.status, 202);
    await idle(d1);
    assert.is((await d1.api('GET', `/api/jobs/${part.body.id}`)).body.state, 'done');
    // Then a whole-drive copy (a re-protect is one), killed once a checkpoint exists.
    await d1.api('POST', '/api/sim/host/write', { mib: 24 });
    const source = sha(s0.drives.A.path);
    const whole = await d1.api('POST', '/api/reprotect', { confirm: 'reprotect' });
    assert.is(whole.status, 202, JSON.stringify(whole.body));
    const pairs = join(dir, 'pairs');
    await waitFor(async () => {
      const j = (await d1.api('GET', `/api/jobs/${whole.body.id}`)).body;
      const saved = existsSync(pairs) && readdirSync(pairs).some((id) => existsSync(join(pairs, id, 'sync-map.json')));
      return j.progress && j.progress.percent > 40 && j.progress.bytesWritten > 0 && saved ? j : undefined;
    }, 30_000, 'whole-drive sync under way with a checkpoint saved');
    d1.child.kill('SIGKILL');
    await d1.exited;

    d2 = await spawnDaemon(dir, cfg);
    const jobs = (await d2.api('GET', '/api/jobs')).body.jobs;
    const resumed = jobs.find((j: { trigger: string }) => j.trigger === 'restart-resume');
    assert.ok(resumed, 'a resume job was started');
    assert.equal(resumed.options.partitions ?? [], [], 'resumed with the recorded plan: the whole drive');
    await idle(d2);
    const job = (await d2.api('GET', `/api/jobs/${resumed.id}`)).body;
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.ok(job.log.some((l: { message: string }) => /resuming the interrupted sync: the same whole-drive sync/.test(l.message)), 'the same plan was resumed');
    const s = (await d2.api('GET', '/api/status')).body;
    assert.is(s.standbyState, 'consistent');
    assert.is(sha(s.drives.B.path), source);
  } finally {
    d2?.child.kill('SIGTERM');
    await d2?.exited;
    rmSync(dir, { recursive: true, force: true });
    rmSync(cfg, { force: true });
  }
});

test('the drives written while the daemon was down: the sync resumed at restart ends with the standby equal to the active drive as it is then', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-resume-changed-'));
  const cfg = configFile(dir);
  let d2: ChildDaemon | undefined;
  try {
    const d1 = await spawnDaemon(dir, cfg);
    await idle(d1);
    const s0 = (await d1.api('GET', '/api/status')).body;
    await d1.api('POST', '/api/sim/host/write', { mib: 24 });
    const job = await d1.api('POST', '/api/reprotect', { confirm: 'reprotect' });
    assert.is(job.status, 202, JSON.stringify(job.body));
    const pairs = join(dir, 'pairs');
    // The drives are written below in the first 4 MiB chunk: the saved checkpoint must already count it as finished.
    const firstChunkSaved = () =>
      existsSync(pairs) &&
      readdirSync(pairs).some((id) => {
        const map = readJsonChecked<{ done: string }>(join(pairs, id, 'sync-map.json'));
        return map !== undefined && (Buffer.from(map.done, 'base64')[0]! & 1) === 1;
      });
    await waitFor(async () => {
      const j = (await d1.api('GET', `/api/jobs/${job.body.id}`)).body;
      return j.progress && j.progress.percent > 40 && j.progress.bytesWritten > 0 && firstChunkSaved() ? j : undefined;
    }, 30_000, 'sync under way with a checkpoint saved that holds the first chunk');
    d1.child.kill('SIGKILL');
    await d1.exited;
    // Meanwhile the host booted the active drive and wrote near its start, and a tool wrote to the standby,
    // both where the killed sync had finished.
    const active = s0.drives.A.path as string;
    const standby = s0.drives.B.path as string;
    const poke = (file: string, at: number, length: number, byte: number) => {
      const fd = openSync(file, 'r+');
      writeSync(fd, Buffer.alloc(length, byte), 0, length, at);
      closeSync(fd);
    };
    poke(active, 1024 * 1024, 256 * 1024, 0x5a);
    poke(standby, 3 * 1024 * 1024, 64 * 1024, 0xa5);
    const source = sha(active);

    d2 = await spawnDaemon(dir, cfg);
    const resumed = (await d2.api('GET', '/api/jobs')).body.jobs.find((j: { trigger: string }) => j.trigger === 'restart-resume');
    assert.ok(resumed, 'a resume job was started');
    await idle(d2);
    const done = (await d2.api('GET', `/api/jobs/${resumed.id}`)).body;
    assert.is(done.state, 'done', JSON.stringify(done.error));
    assert.ok(done.log.some((l: { message: string }) => /changed since the interruption .* copied again/.test(l.message)), JSON.stringify(done.log));
    assert.is((await d2.api('GET', '/api/status')).body.standbyState, 'consistent');
    assert.is(sha(standby), source);
  } finally {
    d2?.child.kill('SIGTERM');
    await d2?.exited;
    rmSync(dir, { recursive: true, force: true });
    rmSync(cfg, { force: true });
  }
});

test.run();
