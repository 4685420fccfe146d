import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'node:http';
import { makeDaemon, idle, waitFor, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';
import { driveState } from '../../firmware/controller/browse.ts';

const ok = requireEnv('browsing the drives\' files', { tools: ['fls', 'icat', 'ifind', 'debugfs', 'sfdisk'] });
const tmp = tempDir('dpsr-browse-');
let d: TestDaemon;

test.before(async () => {
  if (!ok) return;
  d = await makeDaemon();
  await idle(d);
  await waitFor(async () => ((await d.api('GET', '/api/status')).body.standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
});
test.after(async () => {
  await d?.stop();
});

/** The raw bytes of a GET. */
function getBytes(path: string): Promise<{ status: number; body: Buffer; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(`${d.url}${path}`, { headers: { authorization: `Bearer ${d.token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Replaces a file in ext4 partition `n` of a drive image (debugfs on a cut-out copy, put back), with `mtime` (seconds) when given. */
function writeExt4(image: string, n: number, path: string, content: string, mtime?: number): void {
  const json = JSON.parse(execFileSync('sfdisk', ['-J', image]).toString()) as { partitiontable: { partitions: { start: number; size: number }[] } };
  const p = json.partitiontable.partitions[n - 1]!;
  const cut = join(tmp, 'part.img');
  const local = join(tmp, 'upload');
  execFileSync('dd', [`if=${image}`, `of=${cut}`, 'bs=512', `skip=${p.start}`, `count=${p.size}`, 'status=none']);
  execFileSync('sh', ['-c', `printf %s "$1" > "$2"`, 'sh', content, local]);
  execFileSync('debugfs', ['-w', '-R', `rm ${path}`, cut], { stdio: 'pipe' });
  execFileSync('debugfs', ['-w', '-R', `write ${local} ${path}`, cut], { stdio: 'pipe' });
  if (mtime !== undefined) execFileSync('debugfs', ['-w', '-R', `sif ${path} mtime @${mtime}`, cut], { stdio: 'pipe' });
  execFileSync('dd', [`if=${cut}`, `of=${image}`, 'bs=512', `seek=${p.start}`, 'conv=notrunc', 'status=none']);
}

/** Removes a file from ext4 partition `n` of a drive image (debugfs on a cut-out copy, put back). */
function removeExt4(image: string, n: number, path: string): void {
  const json = JSON.parse(execFileSync('sfdisk', ['-J', image]).toString()) as { partitiontable: { partitions: { start: number; size: number }[] } };
  const p = json.partitiontable.partitions[n - 1]!;
  const cut = join(tmp, 'part.img');
  execFileSync('dd', [`if=${image}`, `of=${cut}`, 'bs=512', `skip=${p.start}`, `count=${p.size}`, 'status=none']);
  execFileSync('debugfs', ['-w', '-R', `rm ${path}`, cut], { stdio: 'pipe' });
  execFileSync('dd', [`if=${cut}`, `of=${image}`, 'bs=512', `seek=${p.start}`, 'conv=notrunc', 'status=none']);
}

test('the standby is read while the host runs; the active drive is refused with why and what to do', async () => {
  if (!ok) return;
  const st = (await d.api('GET', '/api/status')).body;
  assert.is(st.host.power, 'on', 'the simulated host runs');
  const file = await getBytes('/api/browse/file?side=standby&partition=2&path=/etc/hostname');
  assert.is(file.status, 200);
  assert.is(file.body.toString(), 'dpsr-sim-host\n');
  const active = await d.api('GET', '/api/browse/file?side=active&partition=2&path=/etc/hostname');
  assert.is(active.status, 409);
  assert.match(active.body.error.message, /host is running/);
  assert.match(active.body.error.hint, /sync window/);
  const both = await d.api('GET', '/api/browse?partition=2&path=/etc');
  assert.is(both.status, 409);
  assert.match(both.body.error.hint, /side=standby/);
});

test('while the host runs, the standby alone is listed, with why the active side is not shown', async () => {
  if (!ok) return;
  const r = await d.api('GET', '/api/browse?partition=2&path=/etc&side=standby');
  assert.is(r.status, 200, JSON.stringify(r.body));
  assert.is(r.body.side, 'standby');
  assert.equal(r.body.rows.map((x: { name: string; standby: { type: string } }) => [x.name, x.standby.type]), [['hostname', 'file'], ['os-release', 'file']]);
  assert.is(r.body.rows[0].active, undefined);
  assert.is(r.body.total, 2);
  assert.match(r.body.activeUnavailable.message, /host is running/);
  assert.match(r.body.activeUnavailable.hint, /shut it down/);
  const page = await d.api('GET', '/api/browse?partition=2&path=/etc&side=standby&offset=1&limit=1');
  assert.equal(page.body.rows.map((x: { name: string }) => x.name), ['os-release']);
  assert.is((await d.api('GET', '/api/browse?partition=2&path=/etc&side=active')).status, 409);
  assert.is((await d.api('GET', '/api/browse?partition=2&path=/etc&side=standby&hash=true')).status, 400);
  assert.is((await d.api('GET', '/api/browse?partition=2&path=/etc&side=both')).status, 400);
});

test('the files\' routes take the pair: /api/pairs/{id}/browse… answer like the old routes for the boot pair; an unknown pair is 404', async () => {
  if (!ok) return;
  const id = (await d.api('GET', '/api/pairs')).body.pairs[0].id as string;
  const r = await d.api('GET', `/api/pairs/${id}/browse?partition=2&path=/etc&side=standby`);
  assert.is(r.status, 200, JSON.stringify(r.body));
  assert.is(r.body.total, 2);
  const file = await getBytes(`/api/pairs/${id}/browse/file?side=standby&partition=2&path=/etc/hostname`);
  assert.is(file.body.toString(), 'dpsr-sim-host\n');
  const nope = await d.api('GET', '/api/pairs/nope/browse?partition=2&path=/etc&side=standby');
  assert.is(nope.status, 404);
  assert.match(nope.body.error.message, /no pair "nope"/);
  assert.is((await d.api('POST', '/api/pairs/nope/restore/files', { partition: 2, paths: ['/etc'] })).status, 404);
});

test('bad paths and queries are 400, absent ones 404', async () => {
  if (!ok) return;
  for (const q of ['path=/../etc', 'path=/etc/..', 'path=a%00b', 'path=/etc//x']) {
    const r = await d.api('GET', `/api/browse/file?side=standby&partition=2&${q}`);
    assert.is(r.status, 400, q);
  }
  assert.is((await d.api('GET', '/api/browse/file?side=standby&partition=2&path=/etc/nope')).status, 404);
  assert.is((await d.api('GET', '/api/browse/file?side=standby&partition=9&path=/etc/hostname')).status, 404);
  assert.is((await d.api('GET', '/api/browse/file?side=both&partition=2&path=/etc/hostname')).status, 400);
  assert.is((await d.api('GET', '/api/browse/file?side=standby&path=/etc/hostname')).status, 400);
  assert.is((await d.api('GET', '/api/browse/file?side=standby&partition=2&path=/etc')).status, 400, 'a folder is no file');
});

test('with the host off, the side-by-side listing shows same, changed, new and deleted entries', async () => {
  if (!ok) return;
  const st = (await d.api('GET', '/api/status')).body;
  assert.is((await d.api('POST', '/api/sim/host/power', { power: 'off' })).status, 200);
  await waitFor(async () => ((await d.api('GET', '/api/status')).body.host.power === 'off' ? true : undefined), 10_000, 'host off');
  const activePath = st.drives[st.active].path as string;
  const same = await d.api('GET', '/api/browse?partition=2&path=/etc');
  assert.is(same.status, 200, JSON.stringify(same.body));
  assert.equal(same.body.rows.map((r: { name: string; state: string }) => [r.name, r.state]), [['hostname', 'same'], ['os-release', 'same']]);
  writeExt4(activePath, 2, '/etc/hostname', 'renamed-host\n');
  writeExt4(activePath, 2, '/etc/motd', 'new\n');
  const json = JSON.parse(execFileSync('sfdisk', ['-J', activePath]).toString()) as { partitiontable: { partitions: { start: number; size: number }[] } };
  const cut = join(tmp, 'part2.img');
  const p = json.partitiontable.partitions[1]!;
  execFileSync('dd', [`if=${activePath}`, `of=${cut}`, 'bs=512', `skip=${p.start}`, `count=${p.size}`, 'status=none']);
  execFileSync('debugfs', ['-w', '-R', 'rm /etc/os-release', cut], { stdio: 'pipe' });
  execFileSync('dd', [`if=${cut}`, `of=${activePath}`, 'bs=512', `seek=${p.start}`, 'conv=notrunc', 'status=none']);
  const diff = await d.api('GET', '/api/browse?partition=2&path=/etc');
  assert.is(diff.status, 200, JSON.stringify(diff.body));
  assert.equal(diff.body.rows.map((r: { name: string; state: string }) => [r.name, r.state]), [['hostname', 'changed'], ['motd', 'only-active'], ['os-release', 'only-standby']]);
  assert.equal(diff.body.counts, { same: 0, changed: 1, 'only-active': 1, 'only-standby': 1 });
  const page = await d.api('GET', '/api/browse?partition=2&path=/etc&offset=1&limit=1');
  assert.equal(page.body.rows.map((r: { name: string }) => r.name), ['motd']);
  assert.is(page.body.total, 3);
  const activeFile = await getBytes('/api/browse/file?side=active&partition=2&path=/etc/hostname');
  assert.is(activeFile.status, 200);
  assert.is(activeFile.body.toString(), 'renamed-host\n');
});

test('a file with the same size and time but other content is told apart only when hashes are asked for', async () => {
  if (!ok) return;
  const st = (await d.api('GET', '/api/status')).body;
  const before = await d.api('GET', '/api/browse?partition=2&path=/home/operator');
  const row = before.body.rows.find((r: { name: string }) => r.name === 'notes.txt');
  assert.is(row.state, 'same');
  const old = 'The simulated host keeps its notes here.\n';
  writeExt4(st.drives[st.active].path, 2, '/home/operator/notes.txt', old.toUpperCase(), row.standby.mtime);
  const plain = await d.api('GET', '/api/browse?partition=2&path=/home/operator');
  assert.is(plain.body.rows[0].state, 'same', 'size and time agree');
  const hashed = await d.api('GET', '/api/browse?partition=2&path=/home/operator&hash=true');
  assert.is(hashed.body.rows[0].state, 'changed');
  assert.is(hashed.body.rows[0].hashed, true);
  assert.is((await d.api('GET', '/api/browse?partition=2&path=/home/operator&hash=yes')).status, 400);
});

/** Waits for job `id` to finish and returns it. */
async function finished(id: string): Promise<any> {
  return waitFor(async () => {
    const j = (await d.api('GET', `/api/jobs/${id}`)).body;
    return j.state === 'running' ? undefined : j;
  }, 60_000, `job ${id} finished`);
}

test('listings are kept between pages and forgotten on any daemon event; an image written behind the daemon\'s back reads anew', async () => {
  if (!ok) return;
  const { listings } = d.app.browser;
  listings.invalidate();
  const first = await d.api('GET', '/api/browse?partition=2&path=/etc');
  assert.is(first.status, 200, JSON.stringify(first.body));
  assert.ok(listings.size > 0, 'kept');
  const kept = listings.generation;
  await new Promise((r) => setTimeout(r, 1500));
  assert.is(listings.generation, kept, 'an idle daemon with the host off moves nothing: what is kept stays useful');
  d.app.bus.publish('alert', { level: 'info', code: 'test', message: 'anything the daemon reports' });
  assert.is(listings.size, 0, 'forgotten');
  await d.api('GET', '/api/browse?partition=2&path=/etc');
  // The event-free path: the image's own times change its scope, so the write shows at once.
  const st = (await d.api('GET', '/api/status')).body;
  writeExt4(st.drives[st.active].path, 2, '/etc/kept-test', 'x\n');
  const after = await d.api('GET', '/api/browse?partition=2&path=/etc');
  assert.ok(after.body.rows.some((r: { name: string }) => r.name === 'kept-test'), JSON.stringify(after.body.rows));
  removeExt4(st.drives[st.active].path, 2, '/etc/kept-test');
  const gone = await d.api('GET', '/api/browse?partition=2&path=/etc');
  assert.not.ok(gone.body.rows.some((r: { name: string }) => r.name === 'kept-test'));
});

test('a block device\'s state moves with a write through the controller', () => {
  if (!ok || process.getuid?.() !== 0) return;
  const img = join(tmp, 'loop.img');
  execFileSync('truncate', ['-s', '4M', img]);
  const dev = execFileSync('losetup', ['-f', '--show', img]).toString().trim();
  try {
    const before = driveState(dev);
    assert.ok(before?.startsWith('block:'), String(before));
    assert.is(driveState(dev), before);
    execFileSync('dd', ['if=/dev/zero', `of=${dev}`, 'bs=4096', 'count=1', 'oflag=direct', 'status=none']);
    assert.is.not(driveState(dev), before);
  } finally {
    execFileSync('losetup', ['-d', dev]);
  }
  assert.is(driveState(join(tmp, 'nothing-here')), null);
});

test('a folder downloads as tar and as zip with the files the standby holds', async () => {
  if (!ok) return;
  for (const format of ['tar', 'zip'] as const) {
    const r = await getBytes(`/api/browse/archive?side=standby&partition=2&path=/etc&format=${format}`);
    assert.is(r.status, 200);
    assert.is(r.headers['content-type'], format === 'tar' ? 'application/x-tar' : 'application/zip');
    const out = join(tmp, `etc-${format}`);
    mkdirSync(out, { recursive: true });
    writeFileSync(join(tmp, `etc.${format}`), r.body);
    if (format === 'tar') execFileSync('tar', ['-x', '-f', join(tmp, 'etc.tar'), '-C', out]);
    else execFileSync('unzip', ['-q', join(tmp, 'etc.zip'), '-d', out]);
    assert.is(readFileSync(join(out, 'etc/hostname'), 'utf8'), 'dpsr-sim-host\n');
    assert.is(readFileSync(join(out, 'etc/os-release'), 'utf8'), 'NAME="dpsr simulated host"\nID=dpsr-sim\n');
  }
  assert.is((await d.api('GET', '/api/browse/archive?side=standby&partition=2&path=/etc&format=rar')).status, 400);
  assert.is((await d.api('GET', '/api/browse/archive?side=standby&partition=2&path=/etc/hostname')).status, 400);
  assert.is((await d.api('GET', '/api/browse/archive?side=standby&partition=2&path=/etc/../..')).status, 400);
  assert.is((await d.api('GET', '/api/browse/archive?side=standby&partition=2&path=/nope')).status, 404);
});

test('the whole-tree walk runs as a job and its differences page', async () => {
  if (!ok) return;
  const started = await d.api('POST', '/api/browse/diff', { partition: 2 });
  assert.is(started.status, 202, JSON.stringify(started.body));
  const job = await finished(started.body.id);
  assert.is(job.state, 'done', JSON.stringify(job.error));
  assert.is(job.result.differences, 3);
  const all = await d.api('GET', `/api/browse/diff/${job.id}`);
  assert.equal(all.body.rows.map((r: { path: string; state: string }) => [r.path, r.state]), [['/etc/hostname', 'changed'], ['/etc/motd', 'only-active'], ['/etc/os-release', 'only-standby']]);
  const page = await d.api('GET', `/api/browse/diff/${job.id}?offset=1&limit=1`);
  assert.equal(page.body.rows.map((r: { path: string }) => r.path), ['/etc/motd']);
  assert.is(page.body.total, 3);
  assert.is((await d.api('GET', `/api/browse/diff/${job.id}?limit=0`)).status, 400);
  assert.is((await d.api('POST', '/api/browse/diff', { partition: 2, path: '/../x' })).status, 400);
  // A line a crash left torn at the pages' end is left out, not answered with 500.
  appendFileSync(join(d.stateDir, 'diff-walks', `${job.id}.jsonl`), '{"path":"/etc/pass');
  const torn = await d.api('GET', `/api/browse/diff/${job.id}?offset=2`);
  assert.is(torn.status, 200, JSON.stringify(torn.body));
  assert.equal(torn.body.rows.map((r: { path: string }) => r.path), ['/etc/os-release']);
  assert.is(torn.body.total, 3);
});

const canWrite = ok && requireEnv('restoring files onto the active drive', { tools: ['losetup', 'mount', 'e2fsck'], root: true });

test('files restored from the standby replace the active drive\'s, and the job lists what they overwrote', async () => {
  if (!canWrite) return;
  assert.is((await d.api('POST', '/api/restore/files', { partition: 2, paths: ['/etc/../x'] })).status, 400);
  assert.is((await d.api('POST', '/api/restore/files', { partition: 2, paths: ['/etc/nope'] })).status, 404);
  assert.is((await d.api('POST', '/api/restore/files', { partition: 2, paths: [] })).status, 400);
  const started = await d.api('POST', '/api/restore/files', { partition: 2, paths: ['/etc'] });
  assert.is(started.status, 202, JSON.stringify(started.body));
  const job = await finished(started.body.id);
  assert.is(job.state, 'done', JSON.stringify(job.error));
  assert.equal(job.result.overwritten.map((o: { path: string }) => o.path), ['/etc/hostname']);
  assert.is(job.result.fsck.clean, true, job.result.fsck.output);
  const diff = await d.api('GET', '/api/browse?partition=2&path=/etc');
  assert.equal(diff.body.rows.map((r: { name: string; state: string }) => [r.name, r.state]), [['hostname', 'same'], ['motd', 'only-active'], ['os-release', 'same']]);
});

test('a partition restore needs the typed confirmation and the host off, then brings the partition back whole', async () => {
  if (!ok) return;
  const wrong = await d.api('POST', '/api/restore/partition', { partition: 2, confirm: 'yes' });
  assert.is(wrong.status, 400);
  assert.match(wrong.body.error.message, /restore partition 2/);
  assert.is((await d.api('POST', '/api/restore/partition', { partition: 2 })).status, 400);
  const started = await d.api('POST', '/api/restore/partition', { partition: 2, confirm: 'restore partition 2' });
  assert.is(started.status, 202, JSON.stringify(started.body));
  const job = await finished(started.body.id);
  assert.is(job.state, 'done', JSON.stringify(job.error));
  assert.equal(job.options.partitions, [2]);
  const diff = await d.api('GET', '/api/browse?partition=2&path=/etc');
  assert.equal(diff.body.rows.map((r: { name: string; state: string }) => [r.name, r.state]), [['hostname', 'same'], ['os-release', 'same']]);
  assert.is((await d.api('POST', '/api/sim/host/power', { power: 'on' })).status, 200);
  await waitFor(async () => ((await d.api('GET', '/api/status')).body.host.power === 'on' ? true : undefined), 10_000, 'host on');
  const refused = await d.api('POST', '/api/restore/partition', { partition: 2, confirm: 'restore partition 2', window: false });
  assert.is(refused.status, 409);
  assert.match(refused.body.error.hint, /window/);
  assert.is((await d.api('POST', '/api/restore/files', { partition: 2, paths: ['/etc'], window: false })).status, 409);
});

test('the OpenAPI document describes the routes', async () => {
  if (!ok) return;
  const doc = (await d.api('GET', '/api/openapi.json')).body;
  assert.ok(doc.paths['/api/browse']?.get);
  assert.ok(doc.paths['/api/browse/file']?.get);
  assert.ok(doc.paths['/api/browse/archive']?.get);
  assert.ok(doc.paths['/api/browse/diff']?.post);
  assert.ok(doc.paths['/api/browse/diff/{job}']?.get);
  assert.ok(doc.paths['/api/pairs/{id}/browse']?.get);
  assert.ok(doc.paths['/api/pairs/{id}/browse/diff/{job}']?.get);
  assert.ok(doc.paths['/api/pairs/{id}/restore/files']?.post?.requestBody);
  assert.ok(doc.paths['/api/pairs/{id}/restore/files/dismiss']?.post);
  assert.ok(doc.paths['/api/restore/files']?.post?.requestBody);
  assert.ok(doc.paths['/api/restore/partition']?.post?.requestBody);
});

test('a folder on both drives is marked from the newest current walk: contents differ or same; not compared without one', async () => {
  if (!ok) return;
  assert.is((await d.api('POST', '/api/sim/host/power', { power: 'off' })).status, 200);
  await waitFor(async () => ((await d.api('GET', '/api/status')).body.host.power === 'off' ? true : undefined), 10_000, 'host off');
  const st = (await d.api('GET', '/api/status')).body;
  writeExt4(st.drives[st.active].path, 2, '/etc/hostname', 'marked-host\n');
  // The host the test before switched on may still be finishing its boot: the listing answers once it is off for good.
  const before = await waitFor(async () => {
    const r = await d.api('GET', '/api/browse?partition=2&path=/');
    return r.status === 200 ? r : (await d.api('POST', '/api/sim/host/power', { power: 'off' }), undefined);
  }, 20_000, 'the active drive readable');
  assert.equal(before.body.rows.filter((r: { name: string }) => r.name === 'etc').map((r: { contents: string }) => r.contents), ['not-compared'], 'no walk yet that is current');
  const whole = await finished((await d.api('POST', '/api/browse/diff', { partition: 2 })).body.id);
  assert.is(whole.state, 'done', JSON.stringify(whole.error));
  const walkId = whole.id as string;
  const contents = async (path: string) => {
    const r = await d.api('GET', `/api/browse?partition=2&path=${path}`);
    assert.is(r.status, 200, JSON.stringify(r.body));
    return { walk: r.body.walk, rows: Object.fromEntries(r.body.rows.filter((x: { contents?: string }) => x.contents).map((x: { name: string; state: string; contents: string }) => [x.name, `${x.state}/${x.contents}`])) };
  };
  const root = await contents('/');
  assert.is(root.rows.etc, 'same/differ', 'the folder\'s own entry matches, what it holds does not');
  assert.is(root.rows.home, 'same/same');
  assert.is(root.walk.job, walkId);
  // A walk of a sub-folder is newer, but covers only that folder: the root's other folders keep the whole walk's marks.
  const sub = await finished((await d.api('POST', '/api/browse/diff', { partition: 2, path: '/home' })).body.id);
  assert.is(sub.state, 'done');
  assert.is((await contents('/')).rows.etc, 'same/differ');
  assert.is((await contents('/home')).walk.job, sub.id);
  // A drive written behind the daemon's back since the walks (a tool on the controller, or another drive in the bay): no event, but the marks are stale.
  writeExt4(st.drives[st.standby].path, 2, '/outside.txt', 'written elsewhere\n');
  const behind = await contents('/');
  assert.is(behind.rows.etc, 'same/not-compared', 'a standby written since the walk');
  assert.is(behind.walk, null);
  // The host on since the walks: the active drive may have changed under them (the standby alone is listed while it runs).
  assert.is((await d.api('POST', '/api/sim/host/power', { power: 'on' })).status, 200);
  await waitFor(async () => ((await d.api('GET', '/api/status')).body.host.power === 'on' ? true : undefined), 10_000, 'host on');
  assert.is((await d.api('POST', '/api/sim/host/power', { power: 'off' })).status, 200);
  await waitFor(async () => ((await d.api('GET', '/api/status')).body.host.power === 'off' ? true : undefined), 10_000, 'host off');
  const stale = await contents('/');
  assert.is(stale.rows.etc, 'same/not-compared');
  assert.is(stale.rows.home, 'same/not-compared');
  assert.is(stale.walk, null);
  assert.is((await d.api('POST', '/api/sim/host/power', { power: 'on' })).status, 200);
});

test.run();
