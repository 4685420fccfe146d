/**
 * Refusals that protect data, against the running rig: no failover to a
 * standby a cut-short sync left inconsistent (neither from the API nor from
 * the button), and no boot selection under a powered host. Each refusal
 * changes nothing: the host keeps running from the same drive.
 */
import { performance } from 'node:perf_hooks';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rigAvailable, scenario } from '../support/scenario.ts';
import { sleep } from '../controller.ts';

if (rigAvailable('refusals scenario')) {
  test(
    'refusals: failover to an inconsistent standby, boot select with the host powered',
    scenario('refusals', { bridgeMiBps: 12 }, async ({ rig, note }) => {
      // A sync cancelled without rollback leaves the standby inconsistent; new data each try, in case a sync wins the race.
      for (let attempt = 1; ; attempt++) {
        await rig.transition('booted:A');
        await rig.console.command('blob', [`big${attempt}`, 16 * 1024], 120_000);
        await rig.transition('off');
        const { id } = await rig.dpsrd.ok('POST', '/api/sync', {});
        let j: any;
        do {
          await sleep(50);
          j = await rig.dpsrd.ok('GET', `/api/jobs/${id}`);
        } while (j.state === 'running' && !(j.progress?.bytesWritten > 0));
        const c = await rig.dpsrd.api('POST', `/api/jobs/${id}/cancel`, { rollback: false });
        await rig.dpsrd.idle();
        if (c.status === 202) break;
        if (attempt === 3) throw new Error(`three syncs finished before they could be cancelled: ${JSON.stringify(c.body)}`);
      }
      assert.is((await rig.dpsrd.status()).standbyState, 'inconsistent');
      await rig.transition('booted:A');

      const r = await rig.dpsrd.api('POST', '/api/failover', { confirm: 'failover', hardOff: true });
      assert.is(r.status, 409);
      assert.is(r.body.error.kind, 'refused');
      assert.match(r.body.error.message, /standby in bay B is inconsistent/);
      note(`failover refused: ${r.body.error.message}`);
      const t = performance.now();
      await rig.holdButton(1500);
      const es = rig.dpsrd.events();
      const refused = await es.wait((e) => e.type === 'alert' && e.data.code === 'failover-refused', 10_000, 'button refusal', t);
      note(`button failover refused: ${refused.data.message}`);
      await sleep(1000);
      assert.equal(await rig.state(), 'booted:A', 'the host still runs from A');
      assert.is(rig.hostLog.filter((h) => h.at > t && h.kind === 'power-off').length, 0, 'the host was not touched');

      const before = await rig.dpsrd.status();
      const sel = await rig.dpsrd.api('POST', '/api/bootselect', { bay: 'B' });
      assert.is(sel.status, 409);
      assert.match(sel.body.error.message, /host is powered/);
      note(`boot select with the host powered refused: ${sel.body.error.message}`);
      const after = await rig.dpsrd.status();
      assert.equal(after.relays, before.relays, 'no relay moved');
      assert.is((await rig.console.command('ping')).fields.bay, 'BAY-A', 'the host still answers from A');

      // Recover puts the previous backup back: the standby is usable again.
      await rig.transition('off');
      const rec = await rig.dpsrd.ok('POST', '/api/recover', {});
      assert.is((await rig.dpsrd.waitJob(rec.id)).state, 'done');
      assert.is((await rig.dpsrd.status()).standbyState, 'consistent');
      if (rig.kind === 'sim') assert.equal((rig as unknown as { violations: string[] }).violations, []);
    }),
  );
}

test.run();
