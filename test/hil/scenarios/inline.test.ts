/**
 * Inline mode: the host boots from the controller's NBD export
 * (qemu-storage-daemon serving bay A's drive) instead of a drive on its
 * port. The guest writes records; a changed-block sync runs while the host
 * keeps running; the guest writes more; then the standby boots (the export
 * re-pointed to bay B at the same address while the host is off) and holds
 * exactly the records written before the sync started.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { performance } from 'node:perf_hooks';
import { rigAvailable, scenario } from '../support/scenario.ts';
import { seconds } from '../rig.ts';
import { requireEnv } from '../../support/require.ts';

const onRealRig = (process.env.DPSR_HIL_RIG ?? 'sim') === 'real';
if (onRealRig) console.log('SKIP: the inline scenario runs on the simulated rig only (the real rig has no inline wiring yet)');

if (!onRealRig && rigAvailable('inline scenario') && requireEnv('the inline scenario', { tools: ['qemu-storage-daemon', 'qemu-img'] })) {
  test(
    'inline: the host boots from the NBD export, a changed-block sync runs while it writes, the standby boots with the data written before the sync',
    scenario('inline', { inline: true }, async ({ rig, note }) => {
      const s0 = await rig.dpsrd.status();
      assert.is(s0.mode, 'inline');
      assert.is(s0.inline.bay, 'A');
      const uri = s0.inline.hostUri as string;
      const up = await rig.transition('booted:A');
      note(`booted from ${uri} (bay A's drive) in ${seconds(up.bootMs!)}`);

      const before = await rig.console.writeRecords(30, 'before');
      assert.is(before.count, 30);
      const dirty = (await rig.dpsrd.status()).inline.dirtyBytes;

      const t = performance.now();
      const { id } = await rig.dpsrd.ok('POST', '/api/sync', { mode: 'changed' });
      const job = await rig.dpsrd.waitJob(id);
      assert.is(job.state, 'done', JSON.stringify(job.error));
      assert.is(job.result.mode, 'changed', job.result.notes?.join('; '));
      assert.is(job.options.window, false);
      note(`changed-block sync while the host ran: ${(job.result.bytesTotal / 1024).toFixed(0)} KiB dirty (status showed ${dirty ?? '?'} bytes), ${(job.result.bytesWritten / 1024).toFixed(0)} KiB written, in ${seconds(performance.now() - t)}`);
      assert.ok(job.result.bytesTotal > 0 && job.result.bytesTotal < rig.image.sizeBytes / 4, `only the changed blocks: ${job.result.bytesTotal} of ${rig.image.sizeBytes} bytes`);
      assert.is(await rig.state(), 'booted:A', 'the host ran through the sync');
      const ping = await rig.console.command('ping');
      assert.is(ping.fields.bay, 'BAY-A');

      const after = await rig.console.writeRecords(10, 'after');
      assert.is(after.count, 40);

      const b = await rig.transition('booted:B');
      note(`standby booted from the same address ${uri} (export re-pointed to bay B) in ${seconds(b.bootMs!)}`);
      const s1 = await rig.dpsrd.status();
      assert.is(s1.inline.bay, 'B');
      assert.is(s1.inline.hostUri, uri);
      const onB = await rig.console.readRecords();
      assert.is(onB.count, 30, 'the standby holds the records written before the sync, and none after');
      assert.equal(onB.md5, before.md5);
      assert.ok(onB.records.every((r) => r.tag === 'before'));
      note(`B holds exactly the ${onB.count} records written before the sync (md5 ${onB.md5})`);
      await rig.transition('off');
      assert.is((await rig.dpsrd.status()).active, 'A', 'a maintenance boot of B changes no roles');
    }),
  );
}

test.run();
