/**
 * Drive failure: A's drive is pulled under the running host, which hangs;
 * the operator fails over (forcing the hung host off); the host runs from
 * B; a replacement drive goes into bay A and is re-protected (with the host
 * off); then the host boots from the replacement.
 */
import { performance } from 'node:perf_hooks';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rigAvailable, scenario } from '../support/scenario.ts';
import { seconds } from '../rig.ts';

if (rigAvailable('drive failure scenario')) {
  test(
    'drive failure: A pulled, failover to B, re-protect onto a replacement, boot from the replacement',
    scenario('drive-failure', {}, async ({ rig, note, downtime }) => {
      await rig.transition('booted:A');
      await rig.console.writeRecords(10, 'synced');
      await rig.sync();
      await rig.transition('booted:A');

      const pulledAt = performance.now();
      await rig.pullDrive('A');
      note('drive A pulled under the running host');
      const hung = await rig.console.command('ping', [], 3000).then(() => false, () => true);
      assert.ok(hung, 'the host stops answering without its disk');
      const r = await rig.dpsrd.api('POST', '/api/failover', { confirm: 'failover', hardOff: true });
      assert.is(r.status, 202, JSON.stringify(r.body));
      const up = await rig.waitBooted('B', pulledAt);
      note(`booted from B in ${seconds(up.heartbeat.at - pulledAt)} after the pull (boot ${seconds(up.bootMs)})`);
      downtime(up.heartbeat.at - pulledAt, 'pull of A → first heartbeat from B');
      const onB = await rig.console.writeRecords(4, 'on-b');
      assert.is(onB.count, 14, 'B has the synced records and takes new ones');

      await rig.insertDrive('A', true);
      await rig.transition('off');
      const { id } = await rig.dpsrd.ok('POST', '/api/reprotect', { confirm: 'reprotect' });
      const job = await rig.dpsrd.waitJob(id);
      assert.is(job.state, 'done', job.error?.message);
      let s = await rig.dpsrd.status();
      assert.is(s.standby, 'A');
      assert.is(s.standbyState, 'consistent');
      assert.is(s.failover.failed.A, false, 're-protect clears the failed mark of the new drive');
      note(`replacement in bay A re-protected (${job.options.newDrive ? 'new drive: cloned' : 'synced'}) in ${seconds(job.seconds * 1000)}`);

      const t = performance.now();
      assert.is((await rig.dpsrd.api('POST', '/api/failover', { confirm: 'failover' })).status, 202);
      const back = await rig.waitBooted('A', t);
      note(`booted from the replacement in A in ${seconds(back.heartbeat.at - t)}`);
      s = await rig.dpsrd.status();
      assert.is(s.active, 'A');
      assert.is((await rig.console.recordStat()).md5, onB.md5, 'the replacement holds what the host wrote on B');
    }),
  );
}

test.run();
