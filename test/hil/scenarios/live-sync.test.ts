/**
 * Inline mode, live sync under load: the guest appends numbered records to
 * a file (fsync after each batch) all the time; a live sync runs in the
 * middle and the guest never stops. Then the standby boots from the same
 * address: its records form an unbroken prefix (no torn record, none
 * missing before the last one present), and every record the guest had
 * fsynced before the sync started is there. Reports the longest write the
 * guest saw during the sync.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { performance } from 'node:perf_hooks';
import { rigAvailable, scenario } from '../support/scenario.ts';
import { seconds } from '../rig.ts';
import { requireEnv } from '../../support/require.ts';

const onRealRig = (process.env.DPSR_HIL_RIG ?? 'sim') === 'real';
if (onRealRig) console.log('SKIP: the live-sync scenario runs on the simulated rig only (the real rig has no inline wiring yet)');

if (!onRealRig && rigAvailable('live-sync scenario') && requireEnv('the live-sync scenario', { tools: ['qemu-storage-daemon', 'qemu-img'] })) {
  test(
    'live sync under load: the guest writes all the time, the standby boots with an unbroken prefix of its records holding every one fsynced before the sync',
    // The guest never goes quiet: a short wait, then a crash-consistent snapshot (what the guest's journal and fsync must survive).
    scenario('live-sync', { inline: true, config: { sync: { quiescence: { quietSeconds: 1, maxWaitSeconds: 2, fallback: 'crash-consistent' } } } }, async ({ rig, note }) => {
      const uri = (await rig.dpsrd.status()).inline.hostUri as string;
      await rig.transition('booted:A');
      await rig.console.writeRecords(30, 'before');

      let writing = true;
      let acked = 30;
      const stalls: number[] = [];
      let window: [number, number] = [Infinity, Infinity];
      const load = (async () => {
        while (writing) {
          const t = performance.now();
          const st = await rig.console.writeRecords(5, 'load');
          const end = performance.now();
          if (end >= window[0] && t <= window[1]) stalls.push(end - t);
          acked = st.count;
        }
      })();
      while (acked < 60) await new Promise((r) => setTimeout(r, 50));
      const ackedBeforeSync = acked;
      window = [performance.now(), Infinity];
      const { id } = await rig.dpsrd.ok('POST', '/api/sync', { mode: 'changed' });
      const job = await rig.dpsrd.waitJob(id);
      window = [window[0], performance.now()];
      const ackedAfterSync = acked;
      writing = false;
      await load;
      assert.is(job.state, 'done', JSON.stringify(job.error));
      const log = job.log.map((l: { message: string }) => l.message).join('\n');
      assert.match(log, /live sync from a crash-consistent snapshot/);
      note(`live sync while the guest wrote: ${(job.result.bytesTotal / 1024).toFixed(0)} KiB copied in ${seconds(window[1] - window[0])}; the guest acknowledged records ${ackedBeforeSync} → ${ackedAfterSync} meanwhile; longest guest write (5 records + fsync, serial round trip included) during the sync ${seconds(Math.max(0, ...stalls))} of ${stalls.length}`);

      const all = await rig.console.readRecords();
      await rig.transition('booted:B');
      const s = await rig.dpsrd.status();
      assert.is(s.inline.hostUri, uri);
      const onB = await rig.console.readRecords();
      // An unbroken prefix: 1..count, no gap, no torn line (readRecords refuses a malformed one).
      assert.equal(onB.records.map((r) => r.seq), Array.from({ length: onB.count }, (_, i) => i + 1));
      assert.equal(onB.records, all.records.slice(0, onB.count), 'the same records the active drive holds, in order');
      assert.ok(onB.count >= ackedBeforeSync, `every record fsynced before the sync is there (${onB.count} ≥ ${ackedBeforeSync})`);
      assert.ok(onB.count <= ackedAfterSync + 5, `none from after the sync (${onB.count} ≤ ${ackedAfterSync + 5})`);
      note(`B booted and holds records 1..${onB.count}: an unbroken prefix, ≥ the ${ackedBeforeSync} fsynced before the sync; A held ${all.count}`);
      await rig.transition('off');
    }),
  );
}

test.run();
