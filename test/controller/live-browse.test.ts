/**
 * The explorer's active side in inline mode (the simulated rig, the real
 * qemu-storage-daemon, The Sleuth Kit, nbdfuse): listings, files, archives
 * and the difference walk read a live snapshot of the active drive while the
 * host runs, never the drive the host is changing; readers share the
 * picture, it is torn down after them, and a job's own snapshot comes first.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'node:http';
import { makeDaemon, idle, waitFor, waitJob, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';
import { assertTornDown, tornDown } from './support/inline.ts';
import { NbdDrive } from '../../src/sata-bridge/index.ts';

const ok = requireEnv("the active drive's files in inline mode", { tools: ['qemu-storage-daemon', 'qemu-img', 'nbdfuse', 'fusermount3', 'fls', 'icat', 'ifind', 'debugfs', 'sfdisk'] });
const tmp = tempDir('dpsr-live-browse-');
const CSV = '/reports/2024-q1.csv';
const ORIGINAL = 'month,units\njan,120\nfeb,98\nmar,143\n';

/** The raw bytes of a GET. */
function getBytes(d: TestDaemon, path: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(`${d.url}${path}`, { headers: { authorization: `Bearer ${d.token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * The host rewrites a file in ext4 partition `n`: the partition is cut out of the drive, changed with debugfs,
 * and the 4 KiB blocks that changed are written through the host's export (as the host's own writes would come).
 */
async function hostRewritesFile(drive: string, hostUri: string, n: number, path: string, content: string): Promise<void> {
  const json = JSON.parse(execFileSync('sfdisk', ['-J', drive]).toString()) as { partitiontable: { partitions: { start: number; size: number }[] } };
  const p = json.partitiontable.partitions[n - 1]!;
  const cut = join(tmp, 'part.img');
  const local = join(tmp, 'upload');
  execFileSync('dd', [`if=${drive}`, `of=${cut}`, 'bs=512', `skip=${p.start}`, `count=${p.size}`, 'status=none']);
  const before = readFileSync(cut);
  writeFileSync(local, content);
  execFileSync('debugfs', ['-w', '-R', `rm ${path}`, cut], { stdio: 'pipe' });
  execFileSync('debugfs', ['-w', '-R', `write ${local} ${path}`, cut], { stdio: 'pipe' });
  const after = readFileSync(cut);
  const host = await NbdDrive.open(hostUri, { write: true });
  try {
    for (let at = 0; at < after.length; at += 4096) {
      const block = after.subarray(at, at + 4096);
      if (!block.equals(before.subarray(at, at + 4096))) await host.write(Buffer.from(block), p.start * 512 + at);
    }
    await host.flush();
  } finally {
    await host.close();
  }
}

test('inline mode: the active side is read from a shared picture while the host runs and writes; the picture is torn down after its readers; a job comes first; the difference walk reads a picture too', async () => {
  if (!ok) return;
  const d = await makeDaemon({ mode: 'inline', sync: { quiescence: { quietSeconds: 0.3, maxWaitSeconds: 1 } }, inline: { snapshot: { preHook: { command: ['sh', '-c', 'test "$DPSR_SNAPSHOT_PHASE" != pre || test ! -e ' + join(tmp, 'slow') + ' || sleep 3'] } } } });
  try {
    await idle(d);
    await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
    const s = (await d.api('GET', '/api/status')).body;
    assert.is(s.host.power, 'on', 'the simulated host runs');

    // Read through a picture while the host runs (in switched mode this is refused).
    const first = await getBytes(d, `/api/browse/file?side=active&partition=3&path=${CSV}`);
    assert.is(first.status, 200, first.body.toString());
    assert.is(first.body.toString(), ORIGINAL);
    const listing = await d.api('GET', '/api/browse?partition=3&path=/reports');
    assert.is(listing.status, 200, JSON.stringify(listing.body));
    assert.ok(listing.body.pictureAt, 'the listing says when its picture was taken');
    assert.equal(listing.body.rows.map((r: { name: string; state: string }) => [r.name, r.state]), [['2024-q1.csv', 'same']]);

    // The host changes the file now: readers of the same (young, shared) picture still see the instant it was taken.
    await hostRewritesFile(s.drives.A.path, s.inline.hostUri, 3, CSV, 'month,units\njan,1\n');
    const shared = await getBytes(d, `/api/browse/file?side=active&partition=3&path=${CSV}`);
    assert.is(shared.body.toString(), ORIGINAL, 'the picture, not the drive the host changed');
    const again = await d.api('GET', '/api/browse?partition=3&path=/reports');
    assert.is(again.body.pictureAt, listing.body.pictureAt, 'one picture shared');

    // Its last reader gone, the picture goes after the linger; the next reader gets a new one, with the host's change.
    await waitFor(async () => ((await tornDown(d)) ? true : undefined), 20_000, 'the picture torn down');
    await assertTornDown(d);
    const fresh = await getBytes(d, `/api/browse/file?side=active&partition=3&path=${CSV}`);
    assert.is(fresh.body.toString(), 'month,units\njan,1\n');
    const changed = await d.api('GET', '/api/browse?partition=3&path=/reports');
    assert.not.equal(changed.body.pictureAt, listing.body.pictureAt);
    assert.equal(changed.body.rows.map((r: { name: string; state: string }) => [r.name, r.state]), [['2024-q1.csv', 'changed']]);
    const tar = await getBytes(d, '/api/browse/archive?side=active&partition=3&path=/reports&format=tar');
    assert.is(tar.status, 200);
    assert.ok(tar.body.includes(Buffer.from('month,units\njan,1\n')), 'the archive holds the picture\'s file');

    // The difference walk: a job holding a picture for its whole run.
    const walk = await d.api('POST', '/api/browse/diff', { partition: 3 });
    assert.is(walk.status, 202, JSON.stringify(walk.body));
    const walked = await waitJob(d, walk.body.id);
    assert.is(walked.state, 'done', JSON.stringify(walked.error));
    assert.match(walked.log.map((l: { message: string }) => l.message).join('\n'), /read from a picture of it taken at/);
    const page = await d.api('GET', `/api/browse/diff/${walk.body.id}`);
    assert.ok(page.body.rows.some((r: { path: string; state: string }) => r.path === CSV && r.state === 'changed'), JSON.stringify(page.body.rows));

    // A sync takes the daemon's snapshot itself: the explorer's picture gives way, and the active side waits for the job.
    writeFileSync(join(tmp, 'slow'), '');
    const sync = await d.api('POST', '/api/sync', {});
    assert.is(sync.status, 202);
    await waitFor(async () => ((await d.api('GET', `/api/jobs/${sync.body.id}`)).body.log?.some((l: { message: string }) => /quiet|crash-consistent/.test(l.message)) ? true : undefined), 20_000, 'the sync waiting in its pre hook');
    const busy = await d.api('GET', `/api/browse?partition=3&path=/reports`);
    assert.is(busy.status, 409, JSON.stringify(busy.body));
    assert.match(busy.body.error.message, /a sync is reading its own snapshot of the active drive/);
    const standbyOnly = await d.api('GET', '/api/browse?partition=3&path=/reports&side=standby');
    assert.is(standbyOnly.status, 200, 'the standby alone still answers');
    const synced = await waitJob(d, sync.body.id);
    rmSync(join(tmp, 'slow'), { force: true });
    assert.is(synced.state, 'done', JSON.stringify(synced.error));
    const after = await d.api('GET', '/api/browse?partition=3&path=/reports');
    assert.equal(after.body.rows.map((r: { name: string; state: string }) => [r.name, r.state]), [['2024-q1.csv', 'same']]);
    await d.app.inline!.pictures.revoke('end of test');
    await assertTornDown(d);
  } finally {
    await d.stop();
  }
});

test('inline mode: a picture the daemon lost in a crash is not shared (the next reader gets a new one); a difference walk cancelled half-way lets its picture go; nothing stays mounted', async () => {
  if (!ok) return;
  const d = await makeDaemon({ mode: 'inline' });
  try {
    await idle(d);
    const before = await d.api('GET', '/api/browse?partition=3&path=/reports');
    assert.is(before.status, 200, JSON.stringify(before.body));
    const pair = d.app.inline!.pair!;
    const generation = pair.daemon.generation;
    pair.daemon.kill();
    await waitFor(async () => (pair.daemon.running && pair.daemon.generation > generation ? true : undefined), 20_000, 'the export restarted');
    const after = await getBytes(d, `/api/browse/file?side=active&partition=3&path=${CSV}`);
    assert.is(after.status, 200, after.body.toString());
    assert.is(after.body.toString(), ORIGINAL);
    const listing = await d.api('GET', '/api/browse?partition=3&path=/reports');
    assert.is(listing.status, 200);
    assert.not.equal(listing.body.pictureAt, before.body.pictureAt, 'a new picture, not the lost one');
    await d.app.inline!.pictures.revoke('next case');

    const walk = await d.api('POST', '/api/browse/diff', { partition: 2, hash: true });
    assert.is(walk.status, 202, JSON.stringify(walk.body));
    await waitFor(async () => ((await d.api('GET', `/api/jobs/${walk.body.id}`)).body.log?.some((l: { message: string }) => /read from a picture/.test(l.message)) ? true : undefined), 20_000, 'the walk reading its picture');
    await d.api('POST', `/api/jobs/${walk.body.id}/cancel`, {});
    const ended = await waitJob(d, walk.body.id);
    assert.ok(['cancelled', 'done'].includes(ended.state), ended.state);
    await waitFor(async () => ((await tornDown(d)) ? true : undefined), 20_000, 'the picture torn down');
    await assertTornDown(d);
    assert.not.ok(readFileSync('/proc/self/mountinfo', 'utf8').includes(d.dir), 'no picture left mounted');
  } finally {
    await d.stop();
  }
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));

test.run();
