/**
 * releaseWriteBack (the start-up recovery after a crash during a restore of
 * files) returns only once each loop device it detached is unbound from the
 * drive: a FUSE driver (ntfs-3g, exfat-fuse) keeps its loop device open for
 * a moment after its unmount, and `losetup -d` on an open device only marks
 * it for clearing. Before that moment nothing else may open the range.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { releaseWriteBack } from '../../src/file-view/index.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';

const tmp = tempDir('dpsr-wb-release-');

/** Whether process `pid` has `device` open as its descriptor 3. */
function holds(pid: number, device: string): boolean {
  try {
    return readlinkSync(`/proc/${pid}/fd/3`) === device;
  } catch {
    return false;
  }
}
const ok = requireEnv('releasing loop devices left by a restore of files', { tools: ['losetup'], root: true });

test('a loop device still held open when detached is waited for until it is unbound', async () => {
  if (!ok) return;
  const image = join(tmp, 'active.img');
  writeFileSync(image, Buffer.alloc(8 << 20));
  const startByte = 1 << 20;
  const loop = execFileSync('losetup', ['-f', '--show', '-o', String(startByte), image], { encoding: 'utf8' }).trim();
  const bound = join('/sys/block', loop.slice('/dev/'.length), 'loop');
  // A holder like an exiting FUSE driver: the device stays open for 1.5 s.
  const holder = spawn('sh', ['-c', `exec 3<${loop}; sleep 1.5`], { stdio: 'ignore' });
  try {
    // Released once the holder has the device open, however long a loaded machine takes to start it.
    for (let i = 0; i < 500 && !holds(holder.pid!, loop); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(holds(holder.pid!, loop), `the holder opened ${loop}`);
    const st = statSync(image);
    const released = await releaseWriteBack({ dev: st.dev, ino: st.ino, startByte });
    assert.equal(released.detached, [loop]);
    assert.equal(released.failed, []);
    assert.not.ok(existsSync(bound), `${loop} is unbound when releaseWriteBack returns`);
  } finally {
    holder.kill();
    if (existsSync(bound)) execFileSync('losetup', ['-d', loop]);
  }
});

test.run();
