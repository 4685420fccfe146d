/**
 * The daemon killed (SIGKILL) in the middle of a sync and started again on
 * the same state directory: it finds the interrupted sync and resumes it
 * (default) or rolls it back (recovery.interrupted: rollback).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnDaemon, waitFor, sha, type ChildDaemon } from './support/harness.ts';

function configFile(dir: string, interrupted: 'resume' | 'rollback'): string {
  const file = join(dir, '..', `${dir.split('/').pop()}.yaml`);
  writeFileSync(
    file,
    [
      'rig: sim',
      'sim:',
      '  driveSizeMiB: 64',
      '  bridgeMiBps: 24',
      '  hostBootMs: 150',
      '  heartbeatMs: 100',
      'recovery:',
      `  interrupted: ${interrupted}`,
      'log:',
      '  level: info',
      '',
    ].join('\n'),
  );
  return file;
}

async function idle(d: ChildDaemon) {
  return waitFor(async () => ((await d.api('GET', '/api/status')).body.job === null ? true : undefined), 60_000, 'idle');
}

function syncMapSaved(dir: string): boolean {
  const pairs = join(dir, 'pairs');
  return existsSync(pairs) && readdirSync(pairs).some((id) => existsSync(join(pairs, id, 'sync-map.json')));
}

async function killMidSync(dir: string, cfg: string) {
  const d1 = await spawnDaemon(dir, cfg);
  await idle(d1);
  const s0 = (await d1.api('GET', '/api/status')).body;
  const backup = sha(s0.drives.B.path);
  await d1.api('POST', '/api/sim/host/write', { mib: 24 });
  const source = sha(s0.drives.A.path);
  const r = await d1.api('POST', '/api/sync', { mode: 'compare' });
  assert.is(r.status, 202);
  await waitFor(async () => {
    const j = (await d1.api('GET', `/api/jobs/${r.body.id}`)).body;
    // Killed only once a checkpoint of the sync map exists, so there is something to resume.
    return j.progress && j.progress.percent > 40 && j.progress.bytesWritten > 0 && syncMapSaved(dir) ? j : undefined;
  }, 30_000, 'sync under way with a checkpoint saved');
  d1.child.kill('SIGKILL');
  await d1.exited;
  return { s0, backup, source, jobId: r.body.id as string };
}

test('killed mid-sync and restarted: the daemon resumes the sync and the standby ends identical', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-restart-'));
  const cfg = configFile(dir, 'resume');
  let d2: ChildDaemon | undefined;
  try {
    const { s0, backup, source, jobId } = await killMidSync(dir, cfg);
    assert.is.not(sha(s0.drives.B.path), backup, 'the sync had written to the standby');
    d2 = await spawnDaemon(dir, cfg);
    const jobs = (await d2.api('GET', '/api/jobs')).body.jobs;
    const killed = jobs.find((j: { id: string }) => j.id === jobId);
    assert.is(killed.state, 'failed');
    assert.is(killed.interrupted, true);
    const resumed = jobs.find((j: { trigger: string }) => j.trigger === 'restart-resume');
    assert.ok(resumed, 'a resume job was started');
    assert.is(resumed.kind, 'sync');
    assert.is(resumed.options.mode, 'compare');
    await idle(d2);
    const job = (await d2.api('GET', `/api/jobs/${resumed.id}`)).body;
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.ok(job.log.some((l: { message: string }) => /resuming the interrupted sync/.test(l.message)), 'the engine resumed the interrupted sync');
    const s = (await d2.api('GET', '/api/status')).body;
    assert.is(s.standbyState, 'consistent');
    assert.is(sha(s.drives.B.path), source);
    const alerts = (await d2.api('GET', '/api/events/log?types=alert')).body.events;
    assert.ok(alerts.some((e: { data: { code: string } }) => e.data.code === 'interrupted-copy'));
  } finally {
    d2?.child.kill('SIGTERM');
    await d2?.exited;
    rmSync(dir, { recursive: true, force: true });
    rmSync(cfg, { force: true });
  }
});

test('killed mid-sync with recovery.interrupted rollback: the standby is the previous backup again', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-restart-'));
  const cfg = configFile(dir, 'rollback');
  let d2: ChildDaemon | undefined;
  try {
    const { s0, backup } = await killMidSync(dir, cfg);
    d2 = await spawnDaemon(dir, cfg);
    const jobs = (await d2.api('GET', '/api/jobs')).body.jobs;
    const rec = jobs.find((j: { trigger: string }) => j.trigger === 'restart-rollback');
    assert.ok(rec);
    assert.is(rec.kind, 'recover');
    await idle(d2);
    const job = (await d2.api('GET', `/api/jobs/${rec.id}`)).body;
    assert.is(job.state, 'done', JSON.stringify(job.error));
    const s = (await d2.api('GET', '/api/status')).body;
    assert.is(s.standbyState, 'consistent');
    assert.is(sha(s0.drives.B.path), backup);
    // A graceful stop (SIGTERM) exits 0.
    d2.child.kill('SIGTERM');
    assert.is(await d2.exited, 0);
    d2 = undefined;
  } finally {
    d2?.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    rmSync(cfg, { force: true });
  }
});

test.run();
