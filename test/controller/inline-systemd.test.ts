/**
 * dpsrd in inline mode with config inline.daemon "systemd": the host's
 * export runs as the shipped unit dpsr-export@system.service under a real
 * systemd (in its own namespaces: systemd is not this machine's init). A
 * crash is restarted by systemd, and the controller notices it exactly as
 * with a child: an alert, the export back at the same address, the next
 * sync a full one saying why. A clean stop leaves the unit stopped.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDaemon, openEvents, waitFor, waitJob } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';
import { canSandboxSystemd, installExportUnit, startSystemdSandbox } from '../support/systemd-sandbox.ts';

const status = async (d: { api: (m: string, p: string) => Promise<{ body: any }> }) => (await d.api('GET', '/api/status')).body;

test('inline mode on the export unit: served by systemd, a crash restarted by systemd and noticed by the controller, stopped with dpsrd', async () => {
  if (!requireEnv('dpsrd with the export unit', { tools: ['qemu-storage-daemon', 'qemu-img', 'python3'], root: true }) || !canSandboxSystemd('dpsrd with the export unit')) return;
  const dir = mkdtempSync(join(tmpdir(), 'dpsrd-unit-'));
  const units = join(dir, 'units');
  installExportUnit(units, dir);
  const sb = await startSystemdSandbox(units);
  const unit = () => Object.fromEntries(sb.run('show', 'dpsr-export@system.service', '-p', 'ActiveState', '-p', 'NRestarts', '-p', 'MainPID').trim().split('\n').map((l) => l.split('=')));
  const state = join(dir, 'state');
  try {
    const d = await makeDaemon({ mode: 'inline', inline: { daemon: 'systemd' } }, state, { serviceManager: { systemctl: sb.systemctl, root: sb.root, journalctl: null } });
    try {
      await waitFor(async () => (await status(d)).standbyState === 'consistent' && (await status(d)).job === null, 60_000, 'first clone');
      let s = await status(d);
      assert.equal([s.inline.running, s.inline.bay, s.inline.generation], [true, 'A', 1]);
      assert.is(unit().ActiveState, 'active', 'the unit serves the drive');
      // The daemon is the unit's (its cgroup), not a child of dpsrd.
      const pid = readdirSync('/proc').find((p) => /^\d+$/.test(p) && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('dpsr-export/system/qmp.sock') && readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('/usr/bin/qemu-storage-daemon'));
      assert.ok(pid, 'the unit\'s daemon process');
      assert.match(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), /dpsr-export@system\.service/);
      const w = await d.api('POST', '/api/sim/host/write', { mib: 1 });
      assert.is(w.body.through, s.inline.hostUri);

      const es = openEvents(d.url, d.token, '?types=alert');
      await es.ready;
      process.kill(Number(pid), 'SIGKILL');
      const alert = await es.wait((e) => e.data.data.code === 'export-crashed', 15_000);
      es.close();
      assert.match(alert.data.data.message, /died \(SIGKILL\)/);
      s = await waitFor(async () => ((await status(d)).inline.generation === 2 && (await status(d)).inline.running ? status(d) : undefined), 20_000, 'export back');
      assert.is(unit().NRestarts, '1', 'systemd restarted it');
      const r = await d.api('POST', '/api/sync', { mode: 'changed' });
      const job = await waitJob(d, r.body.id, 60_000);
      assert.is(job.state, 'done', JSON.stringify(job.error));
      assert.is(job.result.mode, 'manifest', 'the bitmap died with the daemon: a full sync');
    } finally {
      await d.close();
    }
    assert.is(unit().ActiveState, 'inactive', 'dpsrd stopped the unit');
  } finally {
    await sb.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
