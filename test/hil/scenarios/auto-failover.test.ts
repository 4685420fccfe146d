/**
 * Automatic failover: A's boots are never confirmed by a heartbeat; after
 * its tries the failover state machine fails over to the consistent standby
 * on its own (the hung host forced off), and the host runs from B.
 */
import { performance } from 'node:perf_hooks';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rigAvailable, scenario } from '../support/scenario.ts';
import { seconds } from '../rig.ts';

const TRIES = 2;
const CONFIRM_MS = 12_000;

if (rigAvailable('automatic failover scenario')) {
  test(
    `automatic failover: ${TRIES} unconfirmed boots of A, the state machine fails over to B`,
    scenario('auto-failover', { failover: { bootTries: TRIES, confirmTimeoutMs: CONFIRM_MS } }, async ({ rig, note, downtime }) => {
      await rig.transition('booted:A');
      const synced = await rig.console.writeRecords(8, 'synced');
      await rig.sync();
      await rig.damageBootFiles('A', 'agent');
      note("A's agent damaged: the kernel starts, the OS never confirms its boot");

      const es = rig.dpsrd.events();
      const failedAt = performance.now();
      await rig.dpsrd.ok('POST', '/api/bootselect', { bay: 'A', powerOn: true });
      const fo = await es.wait((e) => e.type === 'failover', TRIES * CONFIRM_MS + 60_000, 'failover', failedAt);
      assert.is(fo.data.from, 'A');
      assert.is(fo.data.to, 'B');
      const tries = rig.hostLog.filter((r) => r.kind === 'power-on' && r.bay === 'A' && r.at >= failedAt).length;
      assert.is(tries, TRIES, `A was booted ${TRIES} times (power-on, then reset)`);
      const unconfirmed = es.seen.filter((e) => e.received >= failedAt && e.type === 'boot' && e.data.bay === 'A' && e.data.status === 'unconfirmed').length;
      assert.is(unconfirmed, TRIES);
      note(`${tries} boots of A unconfirmed (${seconds(CONFIRM_MS)} each); failover after ${seconds(fo.received - failedAt)}: ${fo.data.reason}`);

      const up = await rig.waitBooted('B', fo.received - 30_000);
      assert.ok(up.on.at > failedAt);
      note(`booted from B in ${seconds(up.heartbeat.at - fo.received)} after the failover decision (boot ${seconds(up.bootMs)})`);
      downtime(up.heartbeat.at - failedAt, 'power-on of the broken A → first heartbeat from B');
      await es.wait((e) => e.type === 'boot' && e.data.bay === 'B' && e.data.status === 'confirmed', 10_000, 'confirmed boot of B', up.on.at);
      const s = await rig.dpsrd.status();
      assert.is(s.active, 'B');
      assert.is(s.failover.failed.A, true);
      assert.is(s.failover.halted, null);
      assert.is((await rig.console.recordStat()).md5, synced.md5, 'B holds the synced data');
    }),
  );
}

test.run();
