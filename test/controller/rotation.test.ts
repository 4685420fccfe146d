/**
 * Standby rotation on the simulated rig: a second standby put into the
 * standby bay is cloned as one more standby only when asked to, syncs go to
 * the pair of the standby in the bay, and the status lists every standby of
 * the active drive with its age and whether it is in a bay.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeDaemon, idle, sha, waitJob } from './support/harness.ts';
import { dpsrAsync } from '../support/cli.ts';


/** The CLI as a child process (the daemon runs in this one, so nothing may block it). */
const dpsr = (args: string[], stateDir: string) => dpsrAsync(args, { DPSR_STATE_DIR: stateDir });

test('a second standby in the bay: the clone asks for addStandby, then syncs go to it; both standbys show in the status; an unknown third drive is not taken for either', async () => {
  const d = await makeDaemon();
  try {
    await idle(d);
    let s = (await d.api('GET', '/api/status')).body;
    const first = { pairId: s.pairId, path: s.drives.B.path };
    assert.is(s.standbys.length, 1);
    assert.is(s.standbys[0].present, true);
    // The first standby goes off-site; another drive takes its bay.
    assert.is((await d.api('POST', '/api/sim/drive/B/pull', {})).status, 200);
    const ins = await d.api('POST', '/api/sim/drive/B/insert', { replacement: true });
    assert.is(ins.status, 200);
    const plain = await waitJob(d, (await d.api('POST', '/api/clone', {})).body.id);
    assert.is(plain.state, 'failed');
    assert.match(plain.error.message, new RegExp(`already has a standby: ${first.path}`));
    assert.match(plain.error.hint, /--add-standby/);
    const added = await dpsr(['clone', '--url', d.url, '--add-standby', '--yes'], d.dir);
    assert.is(added.code, 0, added.stderr);
    s = (await d.api('GET', '/api/status')).body;
    assert.is(s.standbyState, 'consistent');
    assert.is.not(s.pairId, first.pairId, 'the status follows the pair of the standby in the bay');
    assert.is(s.standbys.length, 2);
    const byPair = Object.fromEntries(s.standbys.map((x: { pairId: string }) => [x.pairId, x]));
    assert.is(byPair[first.pairId].present, false);
    assert.is(byPair[s.pairId].present, true);
    for (const x of s.standbys) assert.ok(x.ageSeconds >= 0 && x.lastSyncedAt, JSON.stringify(x));
    const synced = await waitJob(d, (await d.api('POST', '/api/sync', {})).body.id);
    assert.is(synced.state, 'done', JSON.stringify(synced.error));
    assert.is(synced.result.pairId, s.pairId);
    assert.is(sha(s.drives.B.path), sha(s.drives.A.path));
    const text = await dpsr(['status', '--url', d.url], d.dir);
    assert.is(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`standby ${first.path} \\(pair ${first.pairId}\\) not in a bay, age \\d+ s`));
    assert.match(text.stdout, new RegExp(`standby ${s.drives.B.path} \\(pair ${s.pairId}\\) in its bay, age \\d+ s`));
    // A third, unknown drive in the bay: re-protect cannot tell which standby it replaces, and forgets none.
    assert.is((await d.api('POST', '/api/sim/drive/B/pull', {})).status, 200);
    assert.is((await d.api('POST', '/api/sim/drive/B/insert', { replacement: true })).status, 200);
    const rp = await d.api('POST', '/api/reprotect', { confirm: 'reprotect' });
    assert.is(rp.status, 409, JSON.stringify(rp.body));
    assert.match(rp.body.error.message, /none of the 2 standbys of the active drive/);
    assert.match(rp.body.error.hint, /addStandby/);
    s = (await d.api('GET', '/api/status')).body;
    assert.is(s.standbys.length, 2);
    assert.ok(s.standbys.every((x: { present: boolean }) => !x.present));
  } finally {
    await d.stop();
  }
});

test.run();
