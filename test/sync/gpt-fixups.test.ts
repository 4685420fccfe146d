/**
 * Partition-table fix-ups planned before the first write: a source whose
 * primary GPT is damaged but whose backup is valid gets, on a larger standby,
 * a backup GPT at the standby's end built from that valid copy; the copy runs
 * again cleanly; nothing is refused after writing.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { openSync, writeSync, closeSync, readFileSync, truncateSync, statSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { dpsr } from '../support/cli.ts';
import { randomImage, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { openDrive, openLocated, FaultyDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { clone, verify, verifyHeadline } from '../../src/sync/index.ts';
import { readLayout } from '../../src/disk-layout/index.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

/** What `sgdisk -v` says, from both of its streams (it reports some damage on stderr). */
function gdiskVerify(path: string): string {
  const r = spawnSync('sgdisk', ['-v', path], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`;
}

function damagedPrimary(path: string): string {
  sparseImage(path, 64 * MiB);
  execFileSync('sgdisk', ['-n1:2048:+16M', '-t1:ef00', '-n2:0:0', '-t2:8300', path], { stdio: 'pipe' });
  // Data in the partitions, so the copy has something to carry.
  const fd = openSync(path, 'r+');
  writeSync(fd, readFileSync(randomImage(join(dir, 'fill.bin'), 4 * MiB, 5)), 0, 4 * MiB, 2 * MiB);
  // One byte of the primary header: its CRC no longer matches (the backup stays valid).
  writeSync(fd, Buffer.from([0xff]), 0, 1, 512 + 16);
  closeSync(fd);
  return path;
}

test('a damaged primary GPT onto a larger standby: the backup is rebuilt at its end from the valid copy, and a rerun succeeds (f03)', async () => {
  if (!requireEnv('GPT fix-up test', { tools: ['sgdisk'] })) return;
  const a = damagedPrimary(join(dir, 'f03-a.img'));
  assert.match(gdiskVerify(a), /invalid main GPT header, but valid backup/);
  const b = randomImage(join(dir, 'f03-b.img'), 96 * MiB, 9);
  const env = { DPSR_STATE_DIR: join(dir, 'f03-state') };
  const r = dpsr(['clone', a, b, '--yes', '--json'], env);
  assert.is(r.code, 0, r.stderr);
  assert.ok(r.json().gptRelocated);
  assert.match(JSON.stringify(r.json().notes), /built from the source's valid backup copy/);
  const verdict = gdiskVerify(b);
  assert.not.match(verdict, /Creating new GPT entries/);
  // The copy's GPT is found: the backup at its last LBA, the same partitions as the source.
  const dev = await openDrive(b);
  const src = await openDrive(a);
  try {
    const layout = await readLayout(dev, { sniff: false });
    const source = await readLayout(src, { sniff: false });
    assert.is(layout.gpt?.backupValid, true);
    assert.is(layout.gpt?.backupAtEnd, true);
    assert.equal(
      layout.partitions.map((p) => [p.number, p.firstLba, p.lastLba]),
      source.partitions.map((p) => [p.number, p.firstLba, p.lastLba]),
    );
  } finally {
    await dev.close();
    await src.close();
  }
  // Verify knows what the relocation from the backup leaves there: identical.
  const v = dpsr(['verify', a, b, '--json'], env);
  assert.is(v.code, 0, v.stdout + v.stderr);
  assert.ok(v.json().identical);
  // The same clone again, as an operator would: it runs (as a sync onto the consistent backup) and succeeds.
  const again = dpsr(['clone', a, b, '--yes', '--quiet'], env);
  assert.is(again.code, 0, again.stderr);
  assert.not.match(gdiskVerify(b), /Creating new GPT entries/);
});

test('a sound primary GPT header over a damaged partition table onto a larger standby: the header points at the new backup, so gdisk reads the standby as it reads the source', async () => {
  if (!requireEnv('GPT fix-up test', { tools: ['sgdisk'] })) return;
  const a = join(dir, 'table-a.img');
  sparseImage(a, 64 * MiB);
  execFileSync('sgdisk', ['-n1:2048:+16M', '-t1:ef00', '-n2:0:0', '-t2:8300', a], { stdio: 'pipe' });
  // One byte of an unused entry of the primary table: its CRC no longer matches, while the header's own CRC does.
  const fd = openSync(a, 'r+');
  writeSync(fd, Buffer.from([1]), 0, 1, 1024 + 128 * 5 + 60);
  closeSync(fd);
  const source = gdiskVerify(a);
  assert.match(source, /Main header: OK[\s\S]*Backup header: OK[\s\S]*Main partition table: ERROR[\s\S]*Backup partition table: OK/);
  const b = randomImage(join(dir, 'table-b.img'), 96 * MiB, 11);
  const env = { DPSR_STATE_DIR: join(dir, 'table-state') };
  const r = dpsr(['clone', a, b, '--yes', '--json'], env);
  assert.is(r.code, 0, r.stderr);
  // Before: the primary header still pointed at the old backup in the middle of the standby, zeroed by the copy: "Backup header: ERROR".
  const copy = gdiskVerify(b);
  assert.match(copy, /Main header: OK[\s\S]*Backup header: OK[\s\S]*Main partition table: ERROR[\s\S]*Backup partition table: OK/, copy);
  assert.not.match(copy, /invalid backup GPT header/);
  const v = dpsr(['verify', a, b, '--json'], env);
  assert.is(v.code, 0, v.stdout + v.stderr);
  // A standby whose primary header is gone is told apart.
  const bfd = openSync(b, 'r+');
  writeSync(bfd, Buffer.alloc(512), 0, 512, 512);
  closeSync(bfd);
  const bad = dpsr(['verify', a, b, '--json'], env);
  assert.is(bad.code, 1, bad.stdout + bad.stderr);
  assert.match(JSON.stringify(bad.json().notes), /LBA 1 \(primary GPT header, over its damaged table\)/);
});

test('an unreadable primary GPT (or LBA 0) onto a larger standby: the copy is done with errors and its backup GPT is built at the standby\'s end from the readable backup, so the copy\'s GPT is found (f03, f09)', async () => {
  if (!requireEnv('GPT fix-up test', { tools: ['sgdisk'] })) return;
  for (const [name, bad] of [
    ['mbr-and-primary', [0, 1, 2, 3, 4, 5, 6, 7]],
    ['mbr-only', [0]],
    ['primary-table', [2, 3]],
  ] as const) {
    const a = join(dir, `unr-${name}-a.img`);
    sparseImage(a, 64 * MiB);
    execFileSync('sgdisk', ['-n1:2048:+16M', '-t1:ef00', '-n2:0:0', '-t2:8300', a], { stdio: 'pipe' });
    // The standby's previous life: nothing a partitioning tool would take for a table.
    const b = randomImage(join(dir, `unr-${name}-b.img`), 96 * MiB, 13);
    const openDevice = async (loc: DriveLocation, options: OpenDriveOptions) => {
      const dev = await openLocated(loc, options);
      return loc.requested === a ? new FaultyDevice(dev, { badReadLbas: bad }) : dev;
    };
    const stateDir = join(dir, `unr-${name}-state`);
    const report = await clone({ stateDir, source: a, target: b, retries: 0, openDevice });
    assert.is(report.result, 'done-with-errors', name);
    assert.equal(report.unreadable.map((u) => [u.firstLba, u.sectors]), [[bad[0], bad.length]], name);
    assert.ok(report.gptRelocated, `${name}: the backup GPT was not moved to the standby's end`);
    assert.not.match(gdiskVerify(b), /Creating new GPT entries/, `${name}: gdisk finds no GPT on the copy`);
    const dev = await openDrive(b);
    try {
      const layout = await readLayout(dev, { sniff: false });
      assert.is(layout.gpt?.backupAtEnd, true, name);
      assert.equal(layout.partitions.map((p) => [p.number, p.firstLba]), [[1, 2048], [2, 34816]], name);
    } finally {
      await dev.close();
    }
    const v = await verify({ stateDir, source: a, target: b, retries: 0, openDevice });
    assert.is(v.differenceCount, 0, `${name}: ${JSON.stringify(v.differences)} ${v.notes.join('; ')}`);
    assert.is(v.unreadableSectors, bad.length, name);
    assert.match(verifyHeadline(v), /^INCOMPLETE/, name);
  }
});

test('a restore from a larger standby copies the active drive\'s size and puts its backup GPT back at its end', async () => {
  if (!requireEnv('GPT fix-up test', { tools: ['sgdisk'] })) return;
  const a = sparseImage(join(dir, 'r-a.img'), 64 * MiB);
  execFileSync('sgdisk', ['-n1:2048:+16M', '-t1:ef00', '-n2:0:0', '-t2:8300', a], { stdio: 'pipe' });
  const fd = openSync(a, 'r+');
  writeSync(fd, readFileSync(randomImage(join(dir, 'r-fill.bin'), 4 * MiB, 7)), 0, 4 * MiB, 20 * MiB);
  closeSync(fd);
  const c = randomImage(join(dir, 'r-c.img'), 80 * MiB, 11);
  const env = { DPSR_STATE_DIR: join(dir, 'r-state') };
  const cl = dpsr(['clone', a, c, '--yes', '--quiet'], env);
  assert.is(cl.code, 0, cl.stderr);
  const before = sha256File(a);
  // Damage the active drive: its primary GPT, data in partition 2, and its backup GPT at the end.
  const hit = openSync(a, 'r+');
  writeSync(hit, Buffer.alloc(1 * MiB), 0, 1 * MiB, 0);
  writeSync(hit, Buffer.alloc(1 * MiB, 0x5a), 0, 1 * MiB, 21 * MiB);
  writeSync(hit, Buffer.alloc(64 * 512), 0, 64 * 512, 64 * MiB - 64 * 512);
  closeSync(hit);
  assert.is.not(sha256File(a), before);
  const r = dpsr(['restore', c, a, '--yes', '--i-mean-restore', '--json'], env);
  assert.is(r.code, 0, r.stderr);
  assert.is(statSync(a).size, 64 * MiB);
  assert.is(sha256File(a), before, 'the active drive is back byte for byte');
  assert.match(gdiskVerify(a), /No problems found/);
  const v = dpsr(['verify', a, c, '--json'], env);
  assert.is(v.code, 0, v.stdout + v.stderr);
  assert.ok(v.json().identical);
  // The same restore again writes nothing new and leaves the same bytes.
  const again = dpsr(['restore', c, a, '--yes', '--i-mean-restore', '--quiet'], env);
  assert.is(again.code, 0, again.stderr);
  assert.is(sha256File(a), before);
  // An active drive that now reports less than its recorded size is refused, before anything is written.
  truncateSync(a, 60 * MiB);
  const cut = sha256File(a);
  const refused = dpsr(['restore', c, a, '--yes', '--i-mean-restore'], env);
  assert.is(refused.code, 3, refused.stderr);
  assert.match(refused.stderr, /active drive .* now reports 62,914,560 bytes/);
  assert.is(statSync(a).size, 60 * MiB);
  assert.is(sha256File(a), cut);
});

test('a restore from a larger standby whose partition was grown into the last sectors the active drive\'s backup GPT needs is refused before anything is written, whole or by partition', async () => {
  if (!requireEnv('GPT fix-up test', { tools: ['sgdisk'] })) return;
  const a = sparseImage(join(dir, 'grown-a.img'), 64 * MiB);
  execFileSync('sgdisk', ['-n1:2048:+16M', '-t1:ef00', '-n2:0:0', '-t2:8300', a], { stdio: 'pipe' });
  const c = randomImage(join(dir, 'grown-c.img'), 96 * MiB, 17);
  const env = { DPSR_STATE_DIR: join(dir, 'grown-state') };
  assert.is(dpsr(['clone', a, c, '--yes', '--quiet'], env).code, 0);
  // On the standby, partition 2 now ends 2 sectors short of the active drive's end: inside the disk, but where its backup table goes.
  execFileSync('sgdisk', ['-d2', '-n2:34816:131069', '-t2:8300', c], { stdio: 'pipe' });
  const before = sha256File(a);
  for (const extra of [[], ['--partition', '1'], ['--partition', '2']]) {
    const r = dpsr(['restore', c, a, '--yes', '--i-mean-restore', ...extra], env);
    // It used to copy the whole drive and then refuse (exit 3) at the GPT fix-up, leaving the active drive half-restored.
    assert.is(r.code, 3, `${extra.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /partition 2 of the source ends at LBA 131069, inside the last 33 sectors of the target \(LBA 131039–131071\)/);
    assert.match(r.stderr, /ends by LBA 131038/);
    assert.match(r.stderr, /Nothing was written/);
    assert.is(sha256File(a), before, `${extra.join(' ')}: the active drive is unchanged`);
  }
  const st = dpsr(['status'], env);
  assert.is(st.code, 0, `no copy is pending: ${st.stdout}`);
});

test('a partition restore from a larger standby restores that partition and leaves the active drive\'s GPT valid, its backup at its own end', async () => {
  if (!requireEnv('GPT fix-up test', { tools: ['sgdisk'] })) return;
  const a = sparseImage(join(dir, 'pr-a.img'), 64 * MiB);
  execFileSync('sgdisk', ['-n1:2048:+16M', '-t1:ef00', '-n2:0:0', '-t2:8300', a], { stdio: 'pipe' });
  const fd = openSync(a, 'r+');
  writeSync(fd, readFileSync(randomImage(join(dir, 'pr-fill.bin'), 4 * MiB, 9)), 0, 4 * MiB, 20 * MiB);
  closeSync(fd);
  const c = randomImage(join(dir, 'pr-c.img'), 96 * MiB, 13);
  const env = { DPSR_STATE_DIR: join(dir, 'pr-state') };
  const cl = dpsr(['clone', a, c, '--yes', '--quiet'], env);
  assert.is(cl.code, 0, cl.stderr);
  const before = sha256File(a);
  // Damage partition 2 only, and change partition 1 afterwards: the restore of partition 2 must not touch partition 1.
  const hit = openSync(a, 'r+');
  writeSync(hit, Buffer.alloc(1 * MiB, 0x5a), 0, 1 * MiB, 21 * MiB);
  writeSync(hit, Buffer.alloc(4096, 0x11), 0, 4096, 2 * MiB);
  closeSync(hit);
  const r = dpsr(['restore', c, a, '--yes', '--i-mean-restore', '--partition', '2'], env);
  assert.is(r.code, 0, r.stderr + r.stdout);
  assert.is(statSync(a).size, 64 * MiB);
  const got = readFileSync(a);
  const want = readFileSync(c);
  assert.ok(got.subarray(18 * MiB, 60 * MiB).equals(want.subarray(18 * MiB, 60 * MiB)), 'partition 2 is the standby\'s');
  assert.ok(got.subarray(2 * MiB, 2 * MiB + 4096).equals(Buffer.alloc(4096, 0x11)), 'partition 1 kept what the host wrote');
  assert.match(gdiskVerify(a), /No problems found/);
  // Undo partition 1's change: the drive is then what it was at the clone, byte for byte.
  const undo = openSync(a, 'r+');
  writeSync(undo, want.subarray(2 * MiB, 2 * MiB + 4096), 0, 4096, 2 * MiB);
  closeSync(undo);
  assert.is(sha256File(a), before, 'the GPT on the active drive is back as it was');
});

test.run();
