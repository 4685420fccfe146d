/** The `dpsr` CLI end to end: inspect, clone, sync, verify, status, JSON output and Ctrl-C. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dpsr, DPSR_BIN } from '../support/cli.ts';
import { partitionedImage, randomImage, scatterWrites, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir();
const MiB = 1024 * 1024;
const env = { DPSR_STATE_DIR: join(dir, 'state') };

test('inspect shows geometry, identity and partitions, as text and JSON', () => {
  if (!requireEnv('inspect test', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const img = partitionedImage(dir, 'inspect.img', { scheme: 'gpt', sizeMiB: 32 });
  const text = dpsr(['inspect', img.path], env);
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, /32\.0 MiB/);
  assert.match(text.stdout, /ext4/);
  const json = dpsr(['inspect', img.path, '--json'], env).json();
  assert.is(json.layout.scheme, 'gpt');
  assert.is(json.layout.partitions.length, 2);
  assert.is(json.layout.partitions[0].filesystem, 'ext4');
  assert.is(json.layout.partitions[1].filesystem, 'vfat');
});

test('clone, sync and verify with --json and their exit codes', () => {
  const a = randomImage(join(dir, 'a.img'), 16 * MiB, 1);
  const b = sparseImage(join(dir, 'b.img'), 16 * MiB);
  const c = dpsr(['clone', a, b, '--yes', '--json'], env);
  assert.is(c.code, 0, c.stderr);
  assert.is(c.json().kind, 'clone');
  scatterWrites(a, 16 * MiB, 10);
  const v1 = dpsr(['verify', a, b, '--json'], env);
  assert.is(v1.code, 1, 'differences are exit 1');
  assert.ok(v1.json().differenceCount >= 1);
  const s = dpsr(['sync', a, b, '--yes', '--json'], env);
  assert.is(s.code, 0, s.stderr);
  assert.ok(s.json().bytesWritten >= 4096);
  const v2 = dpsr(['verify', a, b], env);
  assert.is(v2.code, 0);
  assert.match(v2.stdout, /identical/);
  assert.is(sha256File(a), sha256File(b));
  const st = dpsr(['status', '--json'], env).json();
  assert.is(st.pairs.length, 1);
  assert.is(st.pairs[0].standbyState, 'consistent');
});

test('errors come as JSON too under --json', () => {
  const r = dpsr(['clone', join(dir, 'nope'), join(dir, 'nope2'), '--yes', '--json'], env);
  assert.is(r.code, 2);
  assert.is(r.json().error.kind, 'not-found');
});

test('Ctrl-C stops a clone within a second and says what state the target is in', async () => {
  const a = sparseImage(join(dir, 'big-a.img'), 2048 * MiB);
  const b = sparseImage(join(dir, 'big-b.img'), 2048 * MiB);
  const child = spawn(process.execPath, [DPSR_BIN, 'clone', a, b, '--yes'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const started = new Promise<void>((resolve) => child.stderr.on('data', (d) => ((stderr += d), /copying/.test(stderr) && resolve())));
  await started;
  const t = performance.now();
  child.kill('SIGINT');
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 128)));
  const ms = performance.now() - t;
  assert.ok(ms < 1500, `stopped in ${ms.toFixed(0)} ms`);
  assert.is(code, 1);
  assert.match(stderr, /cancelled/);
  assert.match(stderr, /incomplete: run the same clone again/);
});

test('dpsr sync run again after the active drive was written ends with the standby equal to the active drive as it is now', () => {
  const stateDir = join(dir, 'state-resume-changed');
  const e = { DPSR_STATE_DIR: stateDir };
  const a = randomImage(join(dir, 'rc-a.img'), 48 * MiB, 61);
  const b = sparseImage(join(dir, 'rc-b.img'), 48 * MiB);
  assert.is(dpsr(['clone', a, b, '--yes', '--quiet'], e).code, 0);
  randomImage(a, 48 * MiB, 62);
  // Stopped part-way by its journal budget: the first chunks are new, the standby is inconsistent.
  const first = dpsr(['sync', a, b, '--yes', '--quiet', '--journal-budget', '20M'], e);
  // It wrote part of the standby, so it is a failed operation (exit 1), not a refusal (exit 3 promises nothing was written).
  assert.is(first.code, 1, first.stderr);
  assert.match(first.stderr, /budget of 20\.0 MiB/);
  assert.ok(readFileSync(b).subarray(0, MiB).equals(readFileSync(a).subarray(0, MiB)), 'the first chunks were copied');
  assert.is(dpsr(['status', '--json'], e).json().pairs[0].standbyState, 'inconsistent');
  // The host boots the active drive and writes at its start, where the first run had finished.
  const fresh = readFileSync(randomImage(join(dir, 'rc-new.bin'), MiB, 63));
  const fd = openSync(a, 'r+');
  writeSync(fd, fresh, 0, MiB, 0);
  closeSync(fd);
  const again = dpsr(['sync', a, b, '--yes', '--json'], e);
  assert.is(again.code, 0, again.stderr);
  assert.ok(again.json().notes.some((n: string) => /resuming the interrupted sync/.test(n)), again.stdout);
  assert.is(sha256File(b), sha256File(a));
  assert.is(dpsr(['verify', a, b, '--quiet'], e).code, 0);
  assert.is(dpsr(['status', '--json'], e).json().pairs[0].standbyState, 'consistent');
});

test('a sync whose journal budget is already used up by the interrupted run is refused before anything is written (exit 3)', () => {
  const stateDir = join(dir, 'state-budget-used');
  const e = { DPSR_STATE_DIR: stateDir };
  const a = randomImage(join(dir, 'bu-a.img'), 48 * MiB, 71);
  const b = sparseImage(join(dir, 'bu-b.img'), 48 * MiB);
  assert.is(dpsr(['clone', a, b, '--yes', '--quiet'], e).code, 0);
  randomImage(a, 48 * MiB, 72);
  assert.is(dpsr(['sync', a, b, '--yes', '--quiet', '--journal-budget', '20M'], e).code, 1);
  const half = sha256File(b);
  const before = dpsr(['status', '--json'], e).json().pairs[0];
  const r = dpsr(['sync', a, b, '--yes', '--journal-budget', '16M'], e);
  assert.is(r.code, 3, r.stderr);
  assert.match(r.stderr, /undo journal holds [\d.]+ MiB of the interrupted sync already: its budget of 16\.0 MiB leaves no room/);
  assert.match(r.stderr, /--journal-budget|dpsr recover/);
  assert.is(sha256File(b), half, 'nothing was written');
  const after = dpsr(['status', '--json'], e).json().pairs[0];
  for (const k of ['standbyState', 'pendingCopy', 'lastSync', 'drives']) assert.equal(after[k], before[k], `nothing was recorded (${k})`);
  // A budget of nothing is known too small up front for any journaled copy.
  const zero = dpsr(['sync', a, b, '--yes', '--journal-budget', '0'], e);
  assert.is(zero.code, 3, zero.stderr);
  assert.is(sha256File(b), half);
  // With room the same sync finishes.
  assert.is(dpsr(['sync', a, b, '--yes', '--quiet', '--journal-budget', '64M'], e).code, 0);
  assert.is(sha256File(b), sha256File(a));
});

test('a copy with unreadable source sectors reports exact byte counts and the sectors as a range, as verify does (f09)', async () => {
  if (!requireEnv('unreadable source through nbdkit', { tools: ['nbdkit', 'nbdfuse', 'fusermount3'] })) return;
  const img = partitionedImage(dir, 'unr-cli.img', { scheme: 'gpt', sizeMiB: 16 });
  const size = statSync(img.path).size;
  const bad = size - 8 * 512;
  const map = join(dir, 'unr-cli.map');
  const hex = (n: number) => `0x${n.toString(16)}`;
  writeFileSync(map, `# Mapfile. Created by GNU ddrescue version 1.27\n${hex(bad)} + 1\n0x0 ${hex(bad)} +\n${hex(bad)} ${hex(8 * 512)} -\n`);
  const mnt = join(dir, 'unr-cli-mnt');
  mkdirSync(mnt);
  const fuse = spawn('nbdfuse', ['-r', join(mnt, 'active.img'), '--command', 'nbdkit', '-s', '--filter=ddrescue', 'file', `file=${img.path}`, `ddrescue-mapfile=${map}`], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 50 && !existsSync(join(mnt, 'active.img')); i++) await new Promise((r) => setTimeout(r, 100));
    const target = sparseImage(join(dir, 'unr-cli-b.img'), 16 * MiB);
    const r = dpsr(['clone', join(mnt, 'active.img'), target, '--yes'], { DPSR_STATE_DIR: join(dir, 'state-unr-cli') });
    assert.is(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /16,773,120 bytes written \(4,096 bytes \(8 sectors\) of the source unreadable, not written\)/);
    assert.match(r.stdout, new RegExp(`LBA ${bad / 512}–${size / 512 - 1} \\(8 sectors\\) in the backup GPT`));
  } finally {
    execFileSync('fusermount3', ['-u', mnt]);
    fuse.kill();
  }
});

test.run();
