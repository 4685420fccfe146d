/**
 * OS failure: A's boot files are damaged after the last sync; the host does
 * not boot; the operator holds the failover button; the host boots from B
 * with the data up to the last sync (what was written after it is lost).
 */
import { performance } from 'node:perf_hooks';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rigAvailable, scenario } from '../support/scenario.ts';
import { seconds } from '../rig.ts';

if (rigAvailable('OS failure scenario')) {
  test(
    'OS failure: damaged kernel on A, no boot, button held, the host boots from B with the data of the last sync',
    // The button forces a hung host off (it ignores ACPI at the boot loader prompt); the tries outlast the test's wait.
    scenario('os-failure', { failover: { hardOffOnButton: true, confirmTimeoutMs: 120_000 } }, async ({ rig, note, downtime }) => {
      await rig.transition('booted:A');
      const synced = await rig.console.writeRecords(12, 'synced');
      await rig.sync();
      await rig.transition('booted:A');
      await rig.console.writeRecords(5, 'unsynced');
      await rig.transition('off');
      await rig.damageBootFiles('A', 'kernel');
      note("A's kernel damaged after the last sync");

      const failedAt = performance.now();
      await rig.dpsrd.ok('POST', '/api/bootselect', { bay: 'A', powerOn: true });
      // Several normal boots long, so a slow machine does not pass a slow boot off as a failure.
      const noBoot = 15_000;
      await rig.waitHost((r) => r.kind === 'power-on' && r.bay === 'A', 10_000, 'power-on from A', failedAt);
      const booted = await rig.waitHost((r) => r.kind === 'boot', noBoot, 'boot', failedAt).then(() => true, () => false);
      assert.not.ok(booted, 'a damaged kernel must not boot');
      assert.is(await rig.state(), 'unknown', 'the host hangs powered');
      note(`no boot line from A within ${seconds(noBoot)}: the operator holds the button`);

      const pressed = performance.now();
      await rig.holdButton(1500);
      const up = await rig.waitBooted('B', pressed);
      const s = await rig.dpsrd.status();
      assert.is(s.active, 'B');
      assert.is(s.failover.failovers, 1);
      note(`booted from B in ${seconds(up.heartbeat.at - pressed)} after the button (boot ${seconds(up.bootMs)})`);
      downtime(up.heartbeat.at - failedAt, 'power-on of the broken A → first heartbeat from B');
      const onB = await rig.console.readRecords();
      assert.is(onB.md5, synced.md5, 'B holds the data up to the last sync');
      assert.ok(onB.records.every((r) => r.tag === 'synced'));
    }),
  );
}

test.run();
