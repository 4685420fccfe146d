import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { request } from 'node:http';
import { makeDaemon, idle, waitFor, type TestDaemon } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';

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
  assert.is((await d.api('GET', '/api/browse?partition=2&path=/etc')).status, 409);
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

test('the OpenAPI document describes the routes', async () => {
  if (!ok) return;
  const doc = (await d.api('GET', '/api/openapi.json')).body;
  assert.ok(doc.paths['/api/browse']?.get);
  assert.ok(doc.paths['/api/browse/file']?.get);
});

test.run();
