/**
 * Every refusal of rule 1 through the CLI as an operator meets it: the exit
 * code, a message that says why, and a target hashed before and after.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { existsSync, linkSync, symlinkSync, copyFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dpsr } from '../support/cli.ts';
import { randomImage, sha256File, sha256Range, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { discoverDrives } from '../../src/sata-bridge/index.ts';

const dir = tempDir();
const MiB = 1024 * 1024;
const env = { DPSR_STATE_DIR: join(dir, 'state') };
const src = randomImage(join(dir, 'src.img'), 8 * MiB, 1);

function refused(args: string[], target: string, pattern: RegExp, code = 3): void {
  const before = sha256File(target);
  const r = dpsr(args, env);
  assert.is(r.code, code, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.is(sha256File(target), before, 'target unchanged');
}

test('a target smaller than the source is refused (exit 3)', () => {
  const small = randomImage(join(dir, 'small.img'), 4 * MiB, 2);
  refused(['clone', src, small, '--yes'], small, /smaller than the source/);
});

test('the source itself is refused: same path, another path, a symlink, a hard link', () => {
  const before = sha256File(src);
  refused(['clone', src, src, '--yes'], src, /is the source/);
  refused(['clone', src, join(dir, '.', 'src.img').replace('/src.img', '/./src.img'), '--yes'], src, /is the source/);
  const link = join(dir, 'link.img');
  symlinkSync(src, link);
  refused(['clone', src, link, '--yes'], src, /is the source/);
  const hard = join(dir, 'hard.img');
  linkSync(src, hard);
  refused(['clone', src, hard, '--yes'], src, /is the source/);
  assert.is(sha256File(src), before);
});

test('a missing source or target is bad input (exit 2) and nothing is created', () => {
  const missing = join(dir, 'nope.img');
  const tgt = randomImage(join(dir, 'exists.img'), 8 * MiB, 3);
  let r = dpsr(['clone', src, missing, '--yes'], env);
  assert.is(r.code, 2);
  assert.match(r.stderr, /does not exist/);
  assert.not.ok(existsSync(missing), 'no file was created');
  r = dpsr(['clone', missing, tgt, '--yes'], env);
  assert.is(r.code, 2);
  assert.not.ok(existsSync(missing));
});

test('bad usage is exit 2 with a message naming the problem', () => {
  const tgt = randomImage(join(dir, 'usage.img'), 8 * MiB, 4);
  refused(['clone', src], tgt, /takes a source and a target/, 2);
  refused(['clone', src, tgt, '--bogus'], tgt, /bogus/, 2);
  refused(['sync', src, tgt, '--partition', 'x', '--yes'], tgt, /--partition x/, 2);
  refused(['sync', src, tgt, '--mode', 'fast', '--yes'], tgt, /--mode fast/, 2);
  refused(['frobnicate'], tgt, /unknown command/, 2);
  refused(['sync', src, tgt, '--journal-budget', 'lots', '--yes'], tgt, /not a size/, 2);
});

test('without a terminal a writing command needs --yes (exit 2, nothing written)', () => {
  const tgt = randomImage(join(dir, 'noyes.img'), 8 * MiB, 5);
  refused(['clone', src, tgt], tgt, /needs confirmation/, 2);
});

test('sync onto a drive that is not the recorded standby is refused; so is the reverse direction', () => {
  const tgt = sparseImage(join(dir, 'pair-b.img'), 8 * MiB);
  const stranger = randomImage(join(dir, 'stranger.img'), 8 * MiB, 6);
  refused(['sync', src, stranger, '--yes'], stranger, /not the standby of any recorded pair/);
  assert.is(dpsr(['clone', src, tgt, '--yes', '--quiet'], env).code, 0);
  // The backup over the active drive: the operator typed the arguments the wrong way round.
  refused(['sync', tgt, src, '--yes'], src, /over the ACTIVE drive/);
  refused(['clone', tgt, src, '--yes'], src, /ACTIVE drive/);
  // A second clone onto a consistent backup would throw away the way back while it runs: it runs as a journaled sync.
  const again = dpsr(['clone', src, tgt, '--yes', '--json'], env);
  assert.is(again.code, 0, again.stderr);
  assert.is(again.json().kind, 'sync');
  assert.match(again.stderr + JSON.stringify(again.json().notes), /already holds a consistent backup .*syncing instead of cloning/);
  // Restore needs its explicit flag: a confirmation not given is bad usage (exit 2), as for every command.
  refused(['restore', tgt, src, '--yes'], src, /--i-mean-restore/, 2);
});

test('a confirmation not given is bad usage (exit 2) for every command that writes, and nothing is changed', () => {
  const a = randomImage(join(dir, 'confirm-a.img'), 8 * MiB, 21);
  const b = randomImage(join(dir, 'confirm-b.img'), 8 * MiB, 22);
  const own = { DPSR_STATE_DIR: join(dir, 'confirm-state') };
  assert.is(dpsr(['clone', a, b, '--yes', '--quiet'], own).code, 0);
  const state = sha256File(join(dir, 'confirm-state', 'pairs.json'));
  // Not on a terminal (stdin is not one here): --yes is required, and restore also needs --i-mean-restore.
  const cases: [string[], string, RegExp][] = [
    [['clone', a, b], b, /needs confirmation.*\n.*--yes/s],
    [['sync', a, b], b, /needs confirmation/],
    [['recover', b], b, /needs confirmation/],
    [['migrate', a, b, '--partition', '1'], b, /migrate writes a partition onto another drive and needs confirmation: pass --yes/],
    [['restore', b, a, '--i-mean-restore'], a, /needs confirmation/],
    [['restore', b, a], a, /--i-mean-restore/],
    [['restore', b, a, '--yes'], a, /--i-mean-restore/],
    [['forget', dpsr(['status', '--json'], own).json().pairs[0].id], b, /needs confirmation/],
  ];
  for (const [args, target, pattern] of cases) {
    const before = sha256File(target);
    const r = dpsr(args, own);
    assert.is(r.code, 2, `dpsr ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, pattern, `dpsr ${args.join(' ')}`);
    assert.is(sha256File(target), before, `dpsr ${args.join(' ')}: the drive is unchanged`);
  }
  assert.is(sha256File(join(dir, 'confirm-state', 'pairs.json')), state, 'the state is unchanged');
});

test("the controller's own system disk is refused as a target", () => {
  const system = discoverDrives().find((d) => d.isSystemDisk);
  if (!system) {
    console.log('SKIP: no system disk is visible in sysfs here');
    return;
  }
  // The sandbox may forbid even reading the disk; the refusal comes before any open, so it is checked regardless.
  const hashHead = () => {
    try {
      return sha256Range(system.devicePath, 0, MiB);
    } catch {
      return 'unreadable';
    }
  };
  const head = hashHead();
  const r = dpsr(['clone', src, system.devicePath, '--yes'], env);
  assert.is(r.code, 3, r.stderr);
  assert.match(r.stderr, /controller's own system/);
  assert.is(hashHead(), head);
});

test('a different logical sector size is refused (loop device with 4096-byte sectors)', () => {
  if (!requireEnv('sector size refusal', { root: true, tools: ['losetup'] })) return;
  const backing = randomImage(join(dir, 'fourk.img'), 16 * MiB, 7);
  const loop = execFileSync('losetup', ['--find', '--show', '--sector-size', '4096', backing]).toString().trim();
  try {
    refused(['clone', src, loop, '--yes'], backing, /4096-byte sectors/);
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
});

test('an image is the same drive as a loop device over it', () => {
  if (!requireEnv('loop aliasing refusal', { root: true, tools: ['losetup'] })) return;
  const copy = join(dir, 'aliased.img');
  copyFileSync(src, copy);
  const loop = execFileSync('losetup', ['--find', '--show', copy]).toString().trim();
  try {
    refused(['clone', loop, copy, '--yes'], copy, /is the source/);
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
});

test('a mounted target is refused, by its loop device or by its image file', () => {
  if (!requireEnv('mounted target refusal', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount'] })) return;
  const img = sparseImage(join(dir, 'mounted.img'), 16 * MiB);
  execFileSync('mkfs.ext4', ['-q', '-F', img]);
  const loop = execFileSync('losetup', ['--find', '--show', img]).toString().trim();
  const mnt = join(dir, 'mnt');
  execFileSync('mkdir', ['-p', mnt]);
  execFileSync('mount', [loop, mnt]);
  try {
    const big = randomImage(join(dir, 'src16.img'), 16 * MiB, 8);
    refused(['clone', big, loop, '--yes'], img, /mounted at/);
    refused(['clone', big, img, '--yes'], img, /mounted at/);
  } finally {
    execFileSync('umount', [mnt]);
    execFileSync('losetup', ['-d', loop]);
  }
});

test.run();
