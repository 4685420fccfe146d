/**
 * Power loss of the controller mid-sync: dpsrd is SIGKILLed while the sync
 * writes the standby (slow simulated bridges make the window), then started
 * again. Configured to resume, the sync completes; configured to roll back,
 * the standby is the previous backup again. Either way the standby boots
 * and holds a whole backup.
 */
import { performance } from 'node:perf_hooks';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rigAvailable, scenario, type ScenarioContext } from '../support/scenario.ts';
import { seconds, type Rig } from '../rig.ts';
import { sleep } from '../controller.ts';

const BRIDGE_MIBPS = 12;

/** Data for the sync to write (a 16 MiB random blob), then a sync killed once it writes. */
async function killMidSync(rig: Rig, note: ScenarioContext['note']) {
  await rig.transition('booted:A');
  const before = await rig.console.writeRecords(6, 'backup1');
  await rig.sync();
  await rig.transition('booted:A');
  const after = await rig.console.writeRecords(6, 'backup2');
  const blob = (await rig.console.command('blob', ['big', 16 * 1024], 120_000)).fields.md5!;
  await rig.transition('off');
  const { id } = await rig.dpsrd.ok('POST', '/api/sync', {});
  const end = performance.now() + 60_000;
  let job: any;
  for (;;) {
    job = await rig.dpsrd.ok('GET', `/api/jobs/${id}`);
    if (job.state !== 'running') throw new Error(`the sync ended (${job.state}) before it could be cut short; slow the bridges down`);
    if (job.progress?.bytesWritten > 1024 * 1024 && job.progress.percent > 20) break;
    if (performance.now() > end) throw new Error('the sync did not get under way');
    await sleep(50);
  }
  const killedAt = performance.now();
  await rig.dpsrd.kill();
  note(`dpsrd killed at ${job.progress.percent.toFixed(0)} % of the sync, ${(job.progress.bytesWritten / 1024 / 1024).toFixed(1)} MiB written to the standby`);
  await rig.dpsrd.start();
  await rig.dpsrd.events().ready();
  return { before, after, blob, killedAt };
}

async function bootStandby(rig: Rig, note: ScenarioContext['note']) {
  const t = performance.now();
  const r = await rig.dpsrd.api('POST', '/api/failover', { confirm: 'failover' });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const up = await rig.waitBooted('B', t);
  note(`booted from B in ${seconds(up.heartbeat.at - t)} after the failover request (boot ${seconds(up.bootMs)})`);
}

if (rigAvailable('power loss scenario')) {
  test(
    'power loss mid-sync, recovery "resume": the restarted controller completes the sync; B boots with the new data',
    scenario('power-loss-resume', { bridgeMiBps: BRIDGE_MIBPS, recovery: { interrupted: 'resume' } }, async (ctx) => {
      const { rig, note, downtime } = ctx;
      const { after, blob, killedAt } = await killMidSync(rig, note);
      await rig.dpsrd.idle(120_000);
      const jobs = (await rig.dpsrd.ok('GET', '/api/jobs')).jobs as any[];
      const resumed = jobs.find((j) => j.trigger === 'restart-resume');
      assert.ok(resumed, 'the restarted daemon resumed the sync');
      assert.is(resumed.state, 'done');
      const s = await rig.dpsrd.status();
      assert.is(s.standbyState, 'consistent');
      downtime(performance.now() - killedAt, 'kill → sync resumed and completed');
      assert.ok((await rig.verify()).identical, 'the standby is identical after the resumed sync');
      await bootStandby(rig, note);
      assert.is((await rig.console.recordStat()).md5, after.md5);
      assert.is((await rig.console.command('md5', ['big'])).fields.md5, blob, 'the blob written before the sync is there');
    }),
  );

  test(
    'power loss mid-sync, recovery "rollback": the standby is the previous backup again and boots',
    scenario('power-loss-rollback', { bridgeMiBps: BRIDGE_MIBPS, recovery: { interrupted: 'rollback' } }, async (ctx) => {
      const { rig, note, downtime } = ctx;
      const { before, killedAt } = await killMidSync(rig, note);
      await rig.dpsrd.idle(120_000);
      const jobs = (await rig.dpsrd.ok('GET', '/api/jobs')).jobs as any[];
      const rolled = jobs.find((j) => j.trigger === 'restart-rollback');
      assert.ok(rolled, 'the restarted daemon rolled the sync back');
      assert.is(rolled.state, 'done');
      assert.is((await rig.dpsrd.status()).standbyState, 'consistent');
      downtime(performance.now() - killedAt, 'kill → standby rolled back to the previous backup');
      await bootStandby(rig, note);
      const onB = await rig.console.readRecords();
      assert.is(onB.md5, before.md5, 'B is the previous backup');
      assert.ok(onB.records.every((r) => r.tag === 'backup1'));
      const blob = await rig.console.command('md5', ['big']).then(() => true, () => false);
      assert.not.ok(blob, 'nothing of the cut-short sync is on B');
    }),
  );
}

test.run();
