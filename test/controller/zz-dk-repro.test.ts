/**
 * dpsrd keeps the drives of its bays for its lifetime: a `dpsr` from another
 * state directory cannot clone onto its idle standby, copy back onto its
 * active drive or restore over it, while the daemon's own jobs work; once
 * the daemon stops, the drives are free again.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { PairStore } from '../../src/sync/index.ts';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDaemon, idle, waitFor, waitJob, sha } from './support/harness.ts';
import { dpsrAsync } from '../support/cli.ts';
import { randomImage } from '../support/images.ts';

/** The CLI in a child process (spawnSync would block the daemon in this one). */
const dpsr = (args: string[]) => dpsrAsync(args);

test('re-protect onto a new drive that its clone refuses (smaller than the active drive) keeps the pair\'s records; a fitting one replaces them', async () => {
  const d = await makeDaemon({ sim: { hostPoweredAtStart: false } });
  try {
    await idle(d);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    const [pair] = new PairStore(d.dir).pairs();
    assert.is((await d.api('POST', '/api/sim/drive/B/pull', {})).status, 200);
    const ins = await d.api('POST', '/api/sim/drive/B/insert', { replacement: true });
    assert.is(ins.status, 200, JSON.stringify(ins.body));
    truncateSync(ins.body.path, statSync(ins.body.path).size - 1024 * 1024);
    const rp = await d.api('POST', '/api/reprotect', { confirm: 'reprotect' });
    assert.is(rp.status, 202, JSON.stringify(rp.body));
    const job = await waitJob(d, rp.body.id);
    assert.is(job.state, 'failed');
    assert.match(job.error.message, /smaller/, `the job failed for another reason: ${job.error.message}`);
    assert.equal(new PairStore(d.dir).pairs().map((p) => p.id), [pair!.id], 'the pair is still recorded');
    truncateSync(ins.body.path, statSync((await d.api('GET', '/api/status')).body.drives.A.path).size);
    const again = await waitJob(d, (await d.api('POST', '/api/reprotect', { confirm: 'reprotect' })).body.id);
    assert.is(again.state, 'done', JSON.stringify(again.error));
    const pairs = new PairStore(d.dir).pairs();
    assert.is(pairs.length, 1);
    assert.is.not(pairs[0]!.id, pair!.id, 'the new drive\'s pair replaced the old one');
    assert.is((await d.api('GET', '/api/status')).body.standbyState, 'consistent');
  } finally {
    await d.stop();
  }
});

test.run();
