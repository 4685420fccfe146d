/**
 * A target in use is refused by device and inode numbers, never by path
 * strings: the same file mounted through a hard link or a bind-mounted folder,
 * a loop device over another name of the image, a swap file. Each refusal
 * exits 3 with the target unchanged. (Holders: test/sata-bridge/usage.test.ts,
 * on a sysfs tree, since device mapper and md need kernel drivers.)
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { linkSync, mkdirSync, renameSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dpsr } from '../support/cli.ts';
import { randomImage, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { locateDrive, sameStorage, usageOf } from '../../src/sata-bridge/index.ts';
import { clone, sync, recover, JournalFullError } from '../../src/sync/index.ts';
import { RefusedError } from '../../src/errors.ts';

const dir = tempDir('dpsr-storage-');
const MiB = 1024 * 1024;
const env = { DPSR_STATE_DIR: join(dir, 'state') };
const src = randomImage(join(dir, 'src.img'), 16 * MiB, 1);

function refused(args: string[], target: string, pattern: RegExp): void {
  const before = sha256File(target);
  const r = dpsr(args, env);
  assert.is(r.code, 3, `exit ${r.code}: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.is(sha256File(target), before, 'target unchanged');
}

/** Runs `body` with a loop device over `path`, detached afterwards whatever happens. */
function withLoop<T>(path: string, body: (loop: string) => T): T {
  const loop = execFileSync('losetup', ['--find', '--show', path]).toString().trim();
  try {
    return body(loop);
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
}

function withMount<T>(device: string, body: (mnt: string) => T): T {
  const mnt = join(dir, `mnt-${Math.random().toString(36).slice(2)}`);
  mkdirSync(mnt);
  execFileSync('mount', [device, mnt]);
  try {
    return body(mnt);
  } finally {
    execFileSync('umount', [mnt]);
  }
}

function ext4Image(name: string): string {
  const img = sparseImage(join(dir, name), 16 * MiB);
  execFileSync('mkfs.ext4', ['-q', '-F', img]);
  return img;
}

test('a standby mounted through a hard link of its image is refused before anything is written', () => {
  if (!requireEnv('mounted hard link refusal', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount'] })) return;
  const img = ext4Image('hard.img');
  const link = join(dir, 'hard-link.img');
  linkSync(img, link);
  withLoop(link, (loop) =>
    withMount(loop, (mnt) => {
      assert.equal(usageOf(locateDrive(img)).mountPoints, [mnt]);
      refused(['clone', src, img, '--yes'], img, /mounted at/);
    }),
  );
});

test('a standby mounted through a bind-mounted folder is refused', () => {
  if (!requireEnv('bind-mounted folder refusal', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount'] })) return;
  const real = join(dir, 'real');
  const bound = join(dir, 'bound');
  mkdirSync(real);
  mkdirSync(bound);
  const img = ext4Image('real/bind.img');
  execFileSync('mount', ['--bind', real, bound]);
  try {
    withLoop(join(bound, 'bind.img'), (loop) =>
      withMount(loop, () => {
        refused(['clone', src, img, '--yes'], img, /mounted at/);
      }),
    );
  } finally {
    execFileSync('umount', [bound]);
  }
});

test('a loop device over a hard link of the image is the same storage, and its mount counts for the image', () => {
  if (!requireEnv('loop device over a hard link', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount'] })) return;
  const img = ext4Image('loopy.img');
  const link = join(dir, 'loopy-link.img');
  linkSync(img, link);
  withLoop(img, (plain) =>
    withLoop(link, (viaLink) => {
      assert.ok(sameStorage(locateDrive(plain), locateDrive(viaLink)), 'two loop devices over one inode are one storage');
      assert.ok(sameStorage(locateDrive(img), locateDrive(viaLink)));
      withMount(viaLink, (mnt) => {
        // Writing the other loop device writes the same bytes under the mount.
        assert.equal(usageOf(locateDrive(plain)).mountPoints, [mnt]);
        refused(['clone', src, plain, '--yes'], img, /mounted at/);
      });
    }),
  );
});

test('a loop device stacked on the loop device of the image is the same storage, and its mount counts for the image and both loop devices', () => {
  if (!requireEnv('stacked loop devices', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount'] })) return;
  const img = ext4Image('stacked.img');
  withLoop(img, (lower) =>
    withLoop(lower, (upper) => {
      // The upper loop device's backing file is a device node: it is matched by the device it names, not the node's inode.
      assert.ok(sameStorage(locateDrive(img), locateDrive(upper)), 'a loop device over the image\'s loop device writes the image');
      assert.ok(sameStorage(locateDrive(lower), locateDrive(upper)));
      refused(['clone', img, upper, '--yes'], img, /is the source/);
      withMount(upper, (mnt) => {
        assert.equal(usageOf(locateDrive(img)).mountPoints, [mnt]);
        refused(['clone', src, img, '--yes'], img, /mounted at/);
        refused(['clone', src, lower, '--yes'], img, /mounted at/);
      });
      withMount(lower, (mnt) => {
        // Writing the upper loop device writes the lower one's bytes, under its mount.
        assert.equal(usageOf(locateDrive(upper)).mountPoints, [mnt]);
        refused(['clone', src, upper, '--yes'], img, /mounted at/);
      });
    }),
  );
});

test('a loop device whose attach-time name was deleted is still matched by its inode', () => {
  if (!requireEnv('deleted backing name', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount'] })) return;
  const img = ext4Image('gone.img');
  const link = join(dir, 'gone-link.img');
  linkSync(img, link);
  withLoop(link, (loop) => {
    execFileSync('rm', [link]);
    withMount(loop, () => refused(['clone', src, img, '--yes'], img, /mounted at/));
  });
});

test('an image in use as a swap file, under another name, is refused', () => {
  if (!requireEnv('swap file refusal', { root: true, tools: ['mkswap', 'swapon', 'swapoff'] })) return;
  const img = sparseImage(join(dir, 'swap.img'), 16 * MiB);
  execFileSync('dd', ['if=/dev/zero', `of=${img}`, 'bs=1M', 'count=16', 'conv=notrunc', 'status=none']);
  execFileSync('chmod', ['600', img]);
  execFileSync('mkswap', ['-q', img]);
  const link = join(dir, 'swap-link.img');
  linkSync(img, link);
  try {
    execFileSync('swapon', [link]);
  } catch {
    console.log('SKIP: swapon on a file is not allowed here');
    return;
  }
  try {
    refused(['clone', src, img, '--yes'], img, /in use as swap/);
  } finally {
    execFileSync('swapoff', [link]);
  }
});

test('recover refuses a standby mounted through a hard link, as a copy does', async () => {
  if (!requireEnv('recover refusal', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount'] })) return;
  const stateDir = join(dir, 'state-recover');
  const a = ext4Image('rec-a.img');
  const b = sparseImage(join(dir, 'rec-b.img'), 16 * MiB);
  await clone({ stateDir, source: a, target: b });
  // The active drive changes past its metadata; a sync stops part-way (journal budget), leaving the standby to recover.
  execFileSync('dd', ['if=/dev/urandom', `of=${a}`, 'bs=1M', 'seek=8', 'count=8', 'conv=notrunc', 'status=none']);
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, journalBudget: 2 * MiB }).catch((e: unknown) => e);
  assert.instance(err, JournalFullError);
  const link = join(dir, 'rec-b-link.img');
  linkSync(b, link);
  const loop = execFileSync('losetup', ['--find', '--show', link]).toString().trim();
  const mnt = join(dir, 'mnt-recover');
  mkdirSync(mnt);
  execFileSync('mount', [loop, mnt]);
  try {
    const before = sha256File(b);
    const e = await recover({ stateDir, target: b }).then(
      () => undefined,
      (x: unknown) => x,
    );
    assert.instance(e, RefusedError, 'recover wrote under a mounted filesystem');
    assert.match((e as Error).message, /mounted at/);
    assert.is(sha256File(b), before);
  } finally {
    execFileSync('umount', [mnt]);
    execFileSync('losetup', ['-d', loop]);
  }
});

test('a standby image replaced by another file of the same size is not the paired standby: a manifest sync refuses it', async () => {
  const stateDir = join(dir, 'state-swapped');
  const a = randomImage(join(dir, 'swap-a.img'), 8 * MiB, 7);
  const b = sparseImage(join(dir, 'swap-b.img'), 8 * MiB);
  await clone({ stateDir, source: a, target: b });
  await sync({ stateDir, source: a, target: b, mode: 'manifest' });
  execFileSync('dd', ['if=/dev/urandom', `of=${a}`, 'bs=64K', 'seek=10', 'count=1', 'conv=notrunc', 'status=none']);
  // The bay's drive is swapped: a blank file of the same size now sits at the standby's path.
  renameSync(b, join(dir, 'swap-b-old.img'));
  sparseImage(b, 8 * MiB);
  // Trusting the old hash map would write 64 KiB and call a blank drive consistent.
  refused(['sync', a, b, '--mode', 'manifest', '--yes', '--state-dir', stateDir], b, /replaced since/);
});

test('an interrupted sync does not resume onto a standby image replaced by another file of the same size', async () => {
  const stateDir = join(dir, 'state-swapped-resume');
  const a = randomImage(join(dir, 'swapr-a.img'), 8 * MiB, 8);
  const b = sparseImage(join(dir, 'swapr-b.img'), 8 * MiB);
  await clone({ stateDir, source: a, target: b });
  execFileSync('dd', ['if=/dev/urandom', `of=${a}`, 'bs=1M', 'seek=1', 'count=6', 'conv=notrunc', 'status=none']);
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, journalBudget: 2 * MiB }).catch((e: unknown) => e);
  assert.instance(err, JournalFullError);
  renameSync(b, join(dir, 'swapr-b-old.img'));
  sparseImage(b, 8 * MiB);
  // Resuming would skip the finished chunks, which the new file never received.
  refused(['sync', a, b, '--yes', '--state-dir', stateDir], b, /replaced since/);
});

test('a loop device attached again over another file of the same name is not the paired standby', async () => {
  if (!requireEnv('loop standby replaced', { root: true, tools: ['losetup'] })) return;
  const stateDir = join(dir, 'state-swapped-loop');
  const a = randomImage(join(dir, 'swapl-a.img'), 8 * MiB, 9);
  const b = sparseImage(join(dir, 'swapl-b.img'), 8 * MiB);
  const first = execFileSync('losetup', ['--find', '--show', b]).toString().trim();
  try {
    await clone({ stateDir, source: a, target: first });
    await sync({ stateDir, source: a, target: first, mode: 'manifest' });
  } finally {
    execFileSync('losetup', ['-d', first]);
  }
  execFileSync('dd', ['if=/dev/urandom', `of=${a}`, 'bs=64K', 'seek=10', 'count=1', 'conv=notrunc', 'status=none']);
  renameSync(b, join(dir, 'swapl-b-old.img'));
  sparseImage(b, 8 * MiB);
  withLoop(b, (loop) => refused(['sync', a, loop, '--mode', 'manifest', '--yes', '--state-dir', stateDir], b, /replaced since|not the standby/));
});

test('the standby of a pair reached through a loop device is that pair\'s standby: another clone onto it and a migration into it are refused', async () => {
  if (!requireEnv('standby through a loop device', { root: true, tools: ['losetup', 'sfdisk'] })) return;
  const stateDir = join(dir, 'state-loop-standby');
  const a = randomImage(join(dir, 'ls-a.img'), 8 * MiB, 11);
  const b = sparseImage(join(dir, 'ls-b.img'), 8 * MiB);
  await clone({ stateDir, source: a, target: b });
  const other = randomImage(join(dir, 'ls-other.img'), 8 * MiB, 12);
  const donor = sparseImage(join(dir, 'ls-donor.img'), 8 * MiB);
  execFileSync('sfdisk', ['-q', donor], { input: 'label: gpt\n,2M\n' });
  withLoop(b, (loop) => {
    refused(['clone', other, loop, '--yes', '--state-dir', stateDir], b, /belongs to another pair/);
    refused(['migrate', donor, '--partition', '1', loop, '--yes', '--state-dir', stateDir], b, /is the standby of pair/);
    // The pair's own sync reaches it through the loop device as well.
    const r = dpsr(['sync', a, loop, '--yes', '--state-dir', stateDir], env);
    assert.is(r.code, 0, r.stdout + r.stderr);
  });
});

test.run();
