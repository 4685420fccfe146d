/**
 * The controller in inline mode on the simulated rig, with the real
 * qemu-storage-daemon: the host's writes go through the NBD export, status
 * shows the export and the dirty bytes, a changed-block sync copies only
 * those blocks while the host runs, other modes also start epochs, and a
 * controller not in inline mode falls back to manifest mode and says why.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, existsSync, openSync, readSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { makeDaemon, openEvents, waitJob, waitFor, idle, sha, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';
import { validateDaemonConfig } from '../../firmware/controller/config.ts';
import { inlineListen } from '../../firmware/controller/inline.ts';
import { BadInputError } from '../../src/errors.ts';
import { dpsr, dpsrAsync } from '../support/cli.ts';
import { randomImage, sparseImage, tempDir } from '../support/images.ts';

const MiB = 1024 * 1024;
const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;
const tools = { tools: ['qemu-storage-daemon', 'qemu-img'] };

async function runSync(d: TestDaemon, body: Record<string, unknown>) {
  const r = await d.api('POST', '/api/sync', body);
  assert.is(r.status, 202, JSON.stringify(r.body));
  const job = await waitJob(d, r.body.id);
  assert.is(job.state, 'done', JSON.stringify(job.error));
  return job;
}

test('inline mode: status shows the export, host writes go through it and show as dirty bytes, a changed-block sync copies only them while the host runs', async () => {
  if (!requireEnv('inline mode in the controller', tools)) return;
  const d = await makeDaemon({ mode: 'inline' });
  try {
    await idle(d);
    await waitFor(async () => (await status(d)).host.lastHeartbeat, 10_000, 'host running');
    let s = await status(d);
    assert.is(s.mode, 'inline');
    assert.is(s.inline.bay, 'A');
    assert.is(s.inline.running, true);
    assert.is(s.inline.hostUri, `nbd+unix:///system?socket=${join(d.dir, 'inline', 'nbd.sock')}`);
    assert.ok(existsSync(join(d.dir, 'inline', 'nbd.sock')));
    // The simulated host's disk is its NBD connection to the export (the board's would be the USB gadget).
    assert.equal(s.inline.hostDisk, { kind: 'sim', attached: true, connected: true, detail: `NBD connection to ${s.inline.hostUri}` });
    // The bitmap metadata file was made beside the drive, which still holds the system the rig built (its GPT).
    const gpt = Buffer.alloc(8);
    const fd = openSync(s.drives.A.path, 'r');
    readSync(fd, gpt, 0, 8, 512);
    closeSync(fd);
    assert.is(gpt.toString('latin1'), 'EFI PART');
    // The first clone ran in an epoch: its bitmap is the baseline, which has recorded nothing yet.
    assert.is(await d.app.inline!.refreshDirty(), 0);

    const w = await d.api('POST', '/api/sim/host/write', { mib: 2 });
    assert.is(w.status, 200);
    assert.is(w.body.through, s.inline.hostUri, 'the simulated host wrote through the export');
    assert.is(w.body.bay, 'A');
    assert.not.equal(sha(s.drives.A.path), sha(s.drives.B.path), 'the writes reached the raw drive');
    const dirty = await d.app.inline!.refreshDirty();
    // 32 random 64 KiB blocks, some of which may land on the same granule.
    assert.ok(dirty! > 0 && dirty! <= 2 * MiB, `dirty bytes ${dirty}`);
    s = await status(d);
    assert.is(s.inline.dirtyBytes, dirty);
    const metrics = (await d.api('GET', '/metrics')).body as string;
    assert.match(metrics, new RegExp(`dpsr_inline_dirty_bytes\\{pair="system"\\} ${dirty}`));
    assert.match(metrics, /dpsr_inline_export_up\{pair="system"\} 1/);

    const job = await runSync(d, { mode: 'changed' });
    assert.is(s.host.power, 'on', 'no sync window: the host stayed up');
    assert.is((await status(d)).host.power, 'on');
    assert.is(job.result.mode, 'changed');
    assert.is(job.result.bytesTotal, dirty, 'only the dirty granules were read');
    assert.is(job.options.window, false);
    s = await status(d);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path), 'the standby equals the active drive');
    assert.is(s.standbyState, 'consistent');
    assert.is(s.inline.changedSyncsSinceVerify, 1);

    // The default sync mode in inline mode is changed; nothing written since: nothing to copy.
    const again = await runSync(d, {});
    assert.is(again.options.mode, 'changed');
    assert.is(again.result.bytesTotal, 0);

    // A compare-mode sync also runs in an epoch: the next changed sync sees only what came after it.
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    await runSync(d, { mode: 'compare' });
    const after = await runSync(d, { mode: 'changed' });
    assert.is(after.result.bytesTotal, 0);

    const cli = await dpsrAsync(['status', '--url', d.url, '--token-file', d.tokenFile]);
    assert.is(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /\(sim rig, inline mode\)/);
    assert.match(cli.stdout, new RegExp(`export   bay A at ${s.inline.hostUri.replace(/[?+.]/g, '\\$&')}; written since the last sync \\d+\\.\\d MiB`));
    assert.match(cli.stdout, /host disk sim: attached \(NBD connection to nbd\+unix:/);

    const win = await d.api('POST', '/api/sync', { window: true });
    assert.is(win.status, 400);
    assert.match(win.body.error.message, /no sync window/);
  } finally {
    await d.stop();
  }
});

test('inline mode: a drive whose size changed since pairing is refused as such (rule 8) by a changed-block sync and a verify, before a snapshot is taken, the standby unchanged', async () => {
  if (!requireEnv('inline mode in the controller', tools)) return;
  const d = await makeDaemon({ mode: 'inline' });
  try {
    await idle(d);
    const s = await status(d);
    const active = s.drives.A.path as string;
    const size = statSync(active).size;
    const tail = Buffer.alloc(8 * 512);
    const fd = openSync(active, 'r+');
    readSync(fd, tail, 0, tail.length, size - tail.length);
    // The export keeps the size it opened: the snapshot showed that one, and the sync failed with "not a picture of this drive".
    truncateSync(active, size - tail.length);
    const before = sha(s.drives.B.path);
    try {
      for (const [kind, body] of [['sync', { mode: 'changed' }], ['sync', {}], ['verify', {}]] as const) {
        const r = await d.api('POST', `/api/${kind}`, body);
        assert.is(r.status, 202, JSON.stringify(r.body));
        const job = await waitJob(d, r.body.id);
        assert.is(job.state, 'failed', JSON.stringify(job));
        assert.is(job.error.kind, 'refused', JSON.stringify(job.error));
        assert.match(job.error.message, /the active drive .* now reports .*4,096 bytes \(8 sectors\) less/);
        assert.match(job.error.hint, /dpsr forget/);
        assert.not.ok(job.log.some((l: { message: string }) => /snapshot/.test(l.message)), JSON.stringify(job.log));
      }
      assert.is(sha(s.drives.B.path), before, 'the standby is unchanged');
    } finally {
      writeSync(fd, tail, 0, tail.length, size - tail.length);
      closeSync(fd);
    }
  } finally {
    await d.stop();
  }
});

test('a verify finding a difference after a changed-block sync raises the critical alert changed-blocks-missed; the next sync copies the whole drive and says why', async () => {
  if (!requireEnv('inline mode in the controller', tools)) return;
  const d = await makeDaemon({ mode: 'inline' });
  try {
    await idle(d);
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    await runSync(d, { mode: 'changed' });
    const s = await status(d);
    // A write the tracker never saw (straight to the raw drive, behind the export): what a silently failing tracker looks like.
    const fd = openSync(s.drives.A.path, 'r+');
    writeSync(fd, Buffer.alloc(4096, 0x5c), 0, 4096, 20 * MiB);
    closeSync(fd);
    const es = openEvents(d.url, d.token, '?types=alert');
    await es.ready;
    const v = await d.api('POST', '/api/verify', {});
    const job = await waitJob(d, v.body.id);
    assert.is(job.state, 'done');
    assert.is(job.result.identical, false);
    const alert = await es.wait((e) => e.data.data.code === 'changed-blocks-missed', 5000);
    es.close();
    assert.is(alert.data.data.level, 'critical');
    assert.match(alert.data.data.message, /4096 differing bytes .* after 1 changed-block sync/);
    assert.is((await status(d)).inline.changedSyncsSinceVerify, 0);
    const next = await runSync(d, { mode: 'changed' });
    assert.is(next.result.mode, 'manifest');
    assert.match(next.result.notes.join('\n'), /changed-block mode not possible \(a verify found a difference after a changed-block sync/);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
    // A verify of identical drives raises nothing.
    const ok = await waitJob(d, (await d.api('POST', '/api/verify', {})).body.id);
    assert.is(ok.result.identical, true);
  } finally {
    await d.stop();
  }
});

test('inline mode: a whole-drive restore is refused (409) before anything is written, with the host on or off, and says to fail over instead', async () => {
  if (!requireEnv('inline mode in the controller', tools)) return;
  const d = await makeDaemon({ mode: 'inline' });
  try {
    await idle(d);
    await waitFor(async () => ((await status(d)).standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    await d.api('POST', '/api/sim/host/write', { mib: 4 });
    assert.is((await d.api('POST', '/api/host/shutdown', {})).status, 200);
    await waitFor(async () => ((await status(d)).host.power === 'off' ? true : undefined), 10_000, 'host off');
    const s = await status(d);
    const active = sha(s.drives[s.active].path);
    const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
    for (const path of ['/api/restore', `/api/pairs/${s.pairs[0].id}/restore`]) {
      const r = await d.api('POST', path, { confirm: 'restore' });
      assert.is(r.status, 409, `${path}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /not done in inline mode.*changed-block tracking/);
      assert.match(r.body.error.hint, /POST \/api\/failover/);
    }
    const part = await d.api('POST', '/api/restore/partition', { partition: 2, confirm: 'restore partition 2' });
    assert.is(part.status, 409, JSON.stringify(part.body));
    assert.not.match(part.body.error.hint, /POST \/api\/restore\b/, 'the hint does not send the operator to the whole-drive restore, which is refused too');
    assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'no job started');
    assert.is(sha(s.drives[s.active].path), active, 'the active drive is unchanged');
  } finally {
    await d.stop();
  }
});

test('inline config: bad values are named and refused before anything starts', () => {
  const bad = (raw: unknown, re: RegExp) => {
    const e = (() => {
      try {
        validateDaemonConfig(raw);
      } catch (err) {
        return err as Error;
      }
      return null;
    })();
    assert.instance(e, BadInputError, JSON.stringify(raw));
    assert.match(e!.message, re);
  };
  bad({ mode: 'inlined' }, /config: mode is "inlined"; allowed: "switched", "inline"/);
  bad({ mode: 'inline', inline: { listen: 'nbd.sock' } }, /config: inline.listen is "nbd.sock"; allowed: an absolute unix socket path, or HOST:PORT/);
  bad({ mode: 'inline', inline: { exportName: 'a b' } }, /inline.exportName is "a b"/);
  bad({ mode: 'inline', inline: { tlsPskDir: '/etc/dpsr/psk' } }, /inline.tlsPskDir is "\/etc\/dpsr\/psk"; allowed: absent unless inline.listen is HOST:PORT/);
  bad({ mode: 'inline', sync: { window: 'always' } }, /sync.window is "always"; allowed: "auto" or "never" in inline mode/);
  const c = validateDaemonConfig({ mode: 'inline' });
  assert.is(c.sync.mode, 'changed', 'inline mode syncs changed blocks by default');
  assert.is(validateDaemonConfig({}).sync.mode, 'compare');
  assert.is(validateDaemonConfig({ mode: 'inline', sync: { mode: 'manifest' } }).sync.mode, 'manifest');
  assert.equal(inlineListen(validateDaemonConfig({ mode: 'inline', inline: { listen: '127.0.0.1:10809' } }), '/x'), { tcp: { host: '127.0.0.1', port: 10809 } });
  assert.equal(inlineListen(c, '/var/lib/dpsr'), { unix: '/var/lib/dpsr/inline/nbd.sock' });
  assert.throws(() => inlineListen(c, `/${'x'.repeat(100)}`), /longer than 107 bytes, the limit of a unix socket/);
});

test('dpsr sync --mode changed: locally there is no tracker, so a full sync in manifest mode that says why; an NBD address nobody serves is a clear error that writes nothing', () => {
  const dir = tempDir('dpsr-inline-cli-');
  const src = randomImage(join(dir, 'a.img'), 8 * MiB, 3);
  const dst = sparseImage(join(dir, 'b.img'), 8 * MiB);
  const env = { DPSR_STATE_DIR: join(dir, 'state') };
  assert.is(dpsr(['clone', src, dst, '--yes'], env).code, 0);
  const r = dpsr(['sync', src, dst, '--mode', 'changed', '--yes', '--json'], env);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.json().mode, 'manifest');
  assert.match(r.json().notes.join('\n'), /changed-block mode not possible \(there is no changed-block tracking: the controller is not in inline mode\)/);
  const before = sha(dst);
  const gone = dpsr(['sync', `nbd+unix:///system?socket=${join(dir, 'none.sock')}`, dst, '--mode', 'changed', '--yes'], env);
  assert.is(gone.code, 1);
  assert.match(gone.stderr, /cannot talk to the NBD server nbd\+unix:\/\/\/system\?socket=.*none\.sock: connect ENOENT/);
  assert.match(gone.stderr, /is the server running and the address right\?/);
  assert.is(sha(dst), before);
  const bad = dpsr(['sync', src, dst, '--mode', 'dirty', '--yes'], env);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--mode dirty is not known/);
  assert.match(bad.stderr, /use --mode compare, manifest or changed/);
});

test('not in inline mode: a changed-block sync falls back to manifest mode and says why in the job', async () => {
  const d = await makeDaemon();
  try {
    await idle(d);
    const s = await status(d);
    assert.is(s.mode, 'switched');
    assert.is(s.inline, null);
    await d.api('POST', '/api/sim/host/write', { mib: 1 });
    const job = await runSync(d, { mode: 'changed' });
    assert.is(job.result.mode, 'manifest');
    assert.match(job.result.notes.join('\n'), /changed-block mode not possible \(there is no changed-block tracking: the controller is not in inline mode\)/);
    assert.is(sha(s.drives.A.path), sha(s.drives.B.path));
  } finally {
    await d.stop();
  }
});

test.run();
