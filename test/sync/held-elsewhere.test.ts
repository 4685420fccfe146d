/**
 * A standby in use where this process's own mount table does not show it is
 * refused before anything is written (exit 3, target unchanged): mounted
 * through a loop device in another mount namespace, open for writing by
 * another program (an NBD export, a virtual machine), or held by the kernel
 * for an exclusive user. Each is tried by the image file and by the loop
 * device over it.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { dpsr } from '../support/cli.ts';
import { randomImage, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';

const dir = tempDir();
const MiB = 1024 * 1024;
const env = { DPSR_STATE_DIR: join(dir, 'state') };
const ready = requireEnv('standbys held elsewhere', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount', 'unshare'] });
const src = randomImage(join(dir, 'src.img'), 16 * MiB, 1);

function refused(args: string[], target: string, pattern: RegExp): string {
  const before = sha256File(target);
  const r = dpsr(args, env);
  assert.is(r.code, 3, `dpsr ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.is(sha256File(target), before, 'target unchanged');
  return r.stderr;
}

/** Starts a helper and waits until it prints its first line (its setup is done). */
async function holder(command: string, args: string[]): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.once('exit', (code) => reject(new Error(`${command} exited ${code} before it was ready`)));
  });
  return { child, line };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await gone;
}

function freshStandby(name: string): string {
  const img = sparseImage(join(dir, name), 16 * MiB);
  execFileSync('mkfs.ext4', ['-q', '-F', img]);
  return img;
}

test('a standby mounted through a loop device in another mount namespace is refused, naming the namespace', async () => {
  if (!ready) return;
  const img = freshStandby('ns.img');
  const mnt = join(dir, 'ns-mnt');
  mkdirSync(mnt, { recursive: true });
  // The loop device is set up and mounted inside a private mount namespace: this process's mountinfo never lists it.
  const script = `set -e; L=$(losetup -f --show ${img}); mount "$L" ${mnt}; echo "$L"; exec sleep 600`;
  const { child, line: loop } = await holder('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script]);
  try {
    const msg = refused(['clone', src, img, '--yes'], img, /is mounted at .*ns-mnt \(in the mount namespace of sleep, pid \d+\)/);
    assert.match(msg, /nsenter -t \d+ -m umount /);
    refused(['clone', src, loop, '--yes'], img, /is mounted at .*ns-mnt \(in the mount namespace/);
  } finally {
    await stop(child);
    execFileSync('losetup', ['-d', loop]);
  }
});

test('a standby another program has open for writing (an NBD export, a VM) is refused, naming it', async () => {
  if (!ready) return;
  const img = freshStandby('writer.img');
  // As qemu-nbd or a virtual machine holds its disk: a descriptor opened read-write, kept by a running process.
  const { child } = await holder('sh', ['-c', `exec 3<>${img}; echo ready; exec sleep 600`]);
  try {
    refused(['clone', src, img, '--yes'], img, /is open for writing by sleep \(pid \d+, as .*writer\.img\)/);
  } finally {
    await stop(child);
  }
  const loop = execFileSync('losetup', ['--find', '--show', img]).toString().trim();
  const held = await holder('sh', ['-c', `exec 3<>${loop}; echo ready; exec sleep 600`]);
  try {
    refused(['clone', src, img, '--yes'], img, new RegExp(`is open for writing by sleep \\(pid \\d+, as ${loop}\\)`));
    refused(['clone', src, loop, '--yes'], img, /is open for writing by sleep/);
  } finally {
    await stop(held.child);
    execFileSync('losetup', ['-d', loop]);
  }
});

test('a standby whose loop device the kernel holds for an exclusive user is refused with exit 3 before any write', async () => {
  if (!ready) return;
  const img = freshStandby('excl.img');
  const loop = execFileSync('losetup', ['--find', '--show', img]).toString().trim();
  // An exclusive open is what a mount, swap, md or device mapper takes; this one is read-only, so no writer shows.
  const code = `const fs=require('fs');fs.openSync(${JSON.stringify(loop)},fs.constants.O_RDONLY|fs.constants.O_EXCL);console.log('ready');setTimeout(()=>{},600000)`;
  const { child } = await holder(process.execPath, ['-e', code]);
  try {
    refused(['clone', src, img, '--yes'], img, new RegExp(`the kernel holds ${loop} for another user`));
    refused(['clone', src, loop, '--yes'], img, new RegExp(`the kernel holds ${loop}`));
  } finally {
    await stop(child);
    execFileSync('losetup', ['-d', loop]);
  }
  // Once the holder is gone the same clone runs.
  const r = dpsr(['clone', src, img, '--yes', '--quiet'], env);
  assert.is(r.code, 0, r.stderr);
});

test.run();
