/**
 * A switch whose relays start-up left in an unknown state (the host powered,
 * latches unreadable or not as recorded: test/bootswitch/failover-rig.test.ts
 * drives that on the simulated board): the daemon shows it in the status
 * and refuses (409, naming why) every job and move on its drives, before
 * anything is written, until the recorded pattern is applied with the host off.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeDaemon, idle, waitFor } from './support/harness.ts';

test('relays in an unknown state: status says so, and every job and move on those drives is refused with the reason until the host is off', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    const sw = d.app.bs.bootSwitch;
    const why = 'the host is powered and relay latches muxA, muxB, pwrA, pwrB cannot be read back; recorded {"muxA":false,"muxB":false,"pwrA":false,"pwrB":false} (bay A)';
    sw.hold(why, async () => {});
    // The status is cached for up to a second while no event arrives.
    const s = await waitFor(async () => {
      const b = (await d.api('GET', '/api/status')).body;
      return b.relays.state === 'unknown' ? b : undefined;
    }, 5000, 'status showing the unknown state');
    assert.is(s.relays.unknown, why);
    const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
    for (const [path, body] of [
      ['/api/sync', { window: true }],
      ['/api/verify', { window: true }],
      ['/api/clone', { force: true, window: true }],
      ['/api/restore', { confirm: 'restore' }],
      ['/api/restore/partition', { partition: 1, confirm: 'restore partition 1' }],
      ['/api/restore/files', { partition: 1, paths: ['/a'] }],
      ['/api/bootselect', { bay: 'B' }],
      ['/api/failover', { confirm: 'failover' }],
    ] as const) {
      const r = await d.api('POST', path, body);
      assert.is(r.status, 409, `${path}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /relays of the boot switch are in an unknown state \(the host is powered and relay latches/, path);
      assert.match(r.body.error.hint, /shut the host down/, path);
    }
    assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'no job started');
    // The host off (it is): the recorded pattern is applied, and jobs run again.
    assert.is(await sw.applyRecorded(), true);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.relays.state === 'known' ? true : undefined), 5000, 'status known again');
    const r = await d.api('POST', '/api/verify', { window: true });
    assert.is(r.status, 202, JSON.stringify(r.body));
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.job === null ? true : undefined), 60_000, 'idle');
  } finally {
    await d.stop();
  }
});

test.run();
