/**
 * Restoring files reads the standby: like every restore it must refuse a
 * standby that holds a half-written copy (an interrupted sync), before the
 * active drive is opened for writing.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { makeDaemon, idle, waitFor, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';

const ok = requireEnv('restoring files onto the active drive', { tools: ['fls', 'icat', 'ifind', 'debugfs', 'sfdisk', 'losetup', 'mount', 'e2fsck'], root: true });
let d: TestDaemon;

const digest = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

test.before(async () => {
  if (!ok) return;
  d = await makeDaemon({ sim: { bridgeMiBps: 48 } });
  await idle(d);
  await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
});
test.after(async () => {
  await d?.stop();
});

test('files are not restored from a standby an interrupted sync left inconsistent, and the active drive is not touched', async () => {
  if (!ok) return;
  await d.api('POST', '/api/sim/host/write', { mib: 8 });
  const r = await d.api('POST', '/api/sync', {});
  assert.is(r.status, 202, JSON.stringify(r.body));
  await new Promise((res) => setTimeout(res, 400));
  await d.api('POST', `/api/jobs/${r.body.id}/cancel`, { rollback: false });
  await idle(d);
  const s = (await d.api('GET', '/api/status')).body;
  assert.is(s.standbyState, 'inconsistent');
  const activePath = s.drives[s.active].path as string;
  assert.ok(activePath, 'the status names the active drive\'s image');
  const before = digest(activePath);
  const started = await d.api('POST', '/api/restore/files', { partition: 2, paths: ['/etc'], window: true });
  assert.is(started.status, 409, JSON.stringify(started.body));
  assert.is(started.body.error.kind, 'refused');
  assert.match(started.body.error.message, /inconsistent/);
  assert.match(started.body.error.hint, /recover/);
  await idle(d);
  assert.is(digest(activePath), before, 'the active drive is unchanged');
});

test.run();
