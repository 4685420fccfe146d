/**
 * NbdFile: an NBD export read as a file (nbdfuse). The file holds the
 * export's bytes, refuses writes, and is gone after close (nothing mounted
 * or left); a URI nothing serves fails with a DeviceError and leaves nothing.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdFile } from '../../src/sata-bridge/index.ts';
import { DeviceError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';
import { qemuNbd } from '../support/nbd-servers.ts';
import { xorshift32 } from '../support/xorshift.ts';

const ok = requireEnv('NBD exports as files', { tools: ['nbdfuse', 'fusermount3', 'qemu-nbd'] });
const mounted = (dir: string) => readFileSync('/proc/self/mountinfo', 'utf8').includes(dir);

test('the file holds the export\'s bytes, refuses writes, and is unmounted and removed by close', async () => {
  if (!ok) return;
  const dir = tempDir('dpsr-nbd-file-');
  const image = join(dir, 'drive.img');
  const next = xorshift32(7);
  const content = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < content.length; i += 4) content.writeUInt32LE(next(), i);
  writeFileSync(image, content);
  const server = await qemuNbd(dir, image, 'drive', ['-r']);
  const parent = join(dir, 'mounts');
  try {
    const file = await NbdFile.mount(server.uri('drive'), parent);
    assert.is(file.size, content.length);
    assert.ok((await readFile(file.path)).equals(content));
    assert.throws(() => writeFileSync(file.path, 'x'), /EACCES|EROFS|EPERM/);
    assert.ok(mounted(parent));
    await file.close();
    await file.close();
    assert.not.ok(mounted(parent), 'nothing mounted');
    assert.equal(readdirSync(parent), [], 'the mount point is gone');
    assert.not.ok(existsSync(file.path));
  } finally {
    await server.stop();
  }
});

test('an export nothing serves: DeviceError, nothing mounted, nothing left', async () => {
  if (!ok) return;
  const dir = tempDir('dpsr-nbd-file-');
  const parent = join(dir, 'mounts');
  try {
    await NbdFile.mount(`nbd+unix:///none?socket=${join(dir, 'no.sock')}`, parent, 5000);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, DeviceError);
    assert.match((e as Error).message, /could not be mounted as a file|did not appear as a file/);
  }
  assert.not.ok(mounted(parent));
  assert.equal(readdirSync(parent), []);
});

test.run();
