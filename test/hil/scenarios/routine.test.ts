/**
 * Routine protection: the host runs from A and writes data; the host is shut
 * down (switched mode syncs with the host off), the standby synced and
 * verified, and the data is on B: booting B shows it.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rigAvailable, scenario } from '../support/scenario.ts';
import { seconds } from '../rig.ts';

if (rigAvailable('routine scenario')) {
  test(
    'routine: boot from A, write data, sync with the host off, verify, the data is on B',
    scenario('routine', {}, async ({ rig, note }) => {
      const up = await rig.transition('booted:A');
      note(`booted from A in ${seconds(up.bootMs!)} (transition ${seconds(up.ms)})`);
      assert.equal(await rig.state(), 'booted:A');
      assert.not.ok((await rig.transition('booted:A')).changed, 'a transition to the current state does nothing');
      const written = await rig.console.writeRecords(20, 'routine');
      assert.is(written.count, 20);

      const off = await rig.transition('off');
      note(`host shut down (ACPI through the ATX relay) in ${seconds(off.ms)}`);
      const job = await rig.sync();
      note(`sync: generation ${job.result.generation}, ${job.result.bytesWritten / 1024} KiB written in ${seconds(job.seconds * 1000)}`);
      const v = await rig.verify();
      assert.ok(v.identical, `verify: ${JSON.stringify(v).slice(0, 300)}`);
      note('verify: the drives are identical');

      const b = await rig.transition('booted:B');
      note(`booted from B in ${seconds(b.bootMs!)}`);
      const onB = await rig.console.readRecords();
      assert.equal(onB.md5, written.md5, 'B holds the data written on A');
      assert.is(onB.count, 20);
      await rig.transition('off');
      const s = await rig.dpsrd.status();
      assert.is(s.active, 'A', 'a maintenance boot of B changes no roles');
    }),
  );
}

test.run();
