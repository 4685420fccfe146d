/**
 * Inline mode with a data pair: every pair's active drive is served by its
 * own qemu-storage-daemon at its own address, with changed-block syncs per
 * pair; a data pair's failover re-points its export without moving a relay
 * (both drives of every pair stay on the controller), the boot pair's
 * export untouched.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import type { SimBoard } from '../../src/bootswitch/index.ts';
import { makeDaemon, openEvents, sha, waitFor, waitJob, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';

const TWO_PAIRS = [
  { id: 'system', label: 'system drive', bays: ['A', 'B'] },
  { id: 'data', label: 'data drive', bays: ['C', 'D'] },
];
const PORT = ['C', 'D'] as const;
const MiB = 1024 * 1024;
const board = (d: TestDaemon) => d.app.rig.board as SimBoard;
const status = async (d: TestDaemon) => (await d.api('GET', '/api/status')).body;
const pairOf = async (d: TestDaemon, id: string) => (await status(d)).pairs.find((p: { id: string }) => p.id === id);

test('inline mode serves each pair at its own address; a data pair syncs its changed blocks and fails over by re-pointing its export', async () => {
  if (!requireEnv('inline mode with a data pair', { tools: ['qemu-storage-daemon', 'qemu-img'] })) return;
  const d = await makeDaemon({ mode: 'inline', pairs: TWO_PAIRS });
  try {
    await waitFor(async () => {
      const s = await status(d);
      return s.pairs.every((p: { standbyState: string }) => p.standbyState === 'consistent') && s.job === null && s.queued.length === 0;
    }, 90_000, 'both pairs cloned');
    let sys = await pairOf(d, 'system');
    let data = await pairOf(d, 'data');
    assert.equal([sys.inline.running, sys.inline.bay, sys.inline.hostUri], [true, 'A', `nbd+unix:///system?socket=${join(d.dir, 'inline', 'nbd.sock')}`]);
    assert.equal([data.inline.running, data.inline.bay, data.inline.hostUri], [true, 'C', `nbd+unix:///data?socket=${join(d.dir, 'inline', 'pairs', 'data', 'nbd.sock')}`]);
    assert.equal(board(d).drivesOnHost(), [], 'the boot pair\'s drives stay on the controller');
    assert.equal(board(d).drivesOnDataPort(PORT), [], 'the data pair\'s drives stay on the controller');
    const sysGeneration = sys.inline.generation;

    // The host's data disk is the data pair's export: its writes are tracked there, and a changed sync copies just them.
    const w = await d.api('POST', '/api/sim/host/write', { mib: 1, pair: 'data' });
    assert.is(w.status, 200, JSON.stringify(w.body));
    assert.equal([w.body.bay, w.body.through], ['C', data.inline.hostUri]);
    data = await waitFor(async () => ((await pairOf(d, 'data')).inline.dirtyBytes > 0 ? pairOf(d, 'data') : undefined), 10_000, 'dirty bytes of the data pair');
    const dirty = data.inline.dirtyBytes;
    assert.ok(dirty <= MiB, `dirty ${dirty}`);
    assert.is((await pairOf(d, 'system')).inline.dirtyBytes, 0, 'the boot pair saw none of it');
    const metrics = (await d.api('GET', '/metrics')).body as string;
    assert.match(metrics, new RegExp(`dpsr_inline_dirty_bytes\\{pair="data"\\} ${dirty}`));
    assert.match(metrics, /dpsr_inline_export_up\{pair="system"\} 1/);
    assert.match(metrics, /dpsr_inline_export_up\{pair="data"\} 1/);
    const r = await d.api('POST', '/api/pairs/data/sync', { mode: 'changed' });
    assert.is(r.status, 202, JSON.stringify(r.body));
    const job = await waitJob(d, r.body.id, 60_000);
    assert.is(job.state, 'done', JSON.stringify(job.error));
    assert.equal([job.result.mode, job.result.bytesTotal], ['changed', dirty]);
    assert.is(sha(join(d.dir, 'sim', 'bay-C.img')), sha(join(d.dir, 'sim', 'bay-D.img')));

    // The data pair's failover: the host off, no relay moved, its export re-pointed to bay D at the same address.
    const contacts: string[] = [];
    board(d).on('contact', (relay, on) => relay.startsWith('K_ATX') || contacts.push(`${relay}=${on ? 1 : 0}`));
    const es = openEvents(d.url, d.token, '?types=failover,alert');
    await es.ready;
    const fo = await d.api('POST', '/api/pairs/data/failover', { confirm: 'failover' });
    assert.is(fo.status, 202, JSON.stringify(fo.body));
    await es.wait((e) => e.event === 'failover' && e.data.data.pair === 'data', 30_000);
    es.close();
    data = await pairOf(d, 'data');
    assert.equal([data.active, data.inline.bay, data.inline.running], ['D', 'D', true]);
    assert.is(data.inline.hostUri, w.body.through, 'the same address and name');
    assert.equal(contacts, [], 'no mux or drive power relay moved');
    assert.equal(board(d).drivesOnDataPort(PORT), []);
    const shaC = sha(join(d.dir, 'sim', 'bay-C.img'));
    const w2 = await d.api('POST', '/api/sim/host/write', { mib: 1, pair: 'data' });
    assert.equal([w2.body.bay, w2.body.through], ['D', data.inline.hostUri]);
    assert.is(sha(join(d.dir, 'sim', 'bay-C.img')), shaC, 'the old active drive is no longer written');
    assert.not.equal(sha(join(d.dir, 'sim', 'bay-D.img')), shaC);
    sys = await pairOf(d, 'system');
    assert.equal([sys.inline.bay, sys.inline.generation], ['A', sysGeneration], "the boot pair's export was not restarted");
    assert.equal(board(d).violations, []);
  } finally {
    await d.close();
  }
});

test.run();
