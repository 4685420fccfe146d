/**
 * The NBD client drive against real servers: nbdkit (memory, file, and its
 * error filter for faults) and qemu-nbd. qemu-storage-daemon's exports and
 * dirty bitmaps are exercised in test/snapshot and test/export.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, unlinkSync, openSync, writeSync, closeSync } from 'node:fs';
import {
  NbdDrive,
  openDrive,
  locateDrive,
  sameStorage,
  parseNbdUri,
  NbdOptionError,
  NbdRequestError,
  STATE_HOLE,
  STATE_ZERO,
  type BlockDevice,
} from '../../src/sata-bridge/index.ts';
import { BadInputError, DeviceError } from '../../src/errors.ts';
import { readRescued } from '../../src/sync/rescue.ts';
import { randomImage, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { nbdkit, qemuNbd } from '../support/nbd-servers.ts';
import { dpsr } from '../support/cli.ts';
import { rejection } from '../support/assert-async.ts';

const dir = tempDir();
const MiB = 1024 * 1024;
const haveNbdkit = requireEnv('NBD interop with nbdkit', { tools: ['nbdkit'] });
const haveQemuNbd = requireEnv('NBD interop with qemu-nbd', { tools: ['qemu-nbd'] });


test('drive addresses: nbd+unix and nbd:// parse; malformed ones are bad input naming the problem', () => {
  const u = parseNbdUri('nbd+unix:///active?socket=/run/dpsr/export.sock');
  assert.equal(u.address, { socket: '/run/dpsr/export.sock' });
  assert.is(u.exportName, 'active');
  const t = parseNbdUri('nbd://192.0.2.7:10900/sys%20disk');
  assert.equal(t.address, { host: '192.0.2.7', port: 10900 });
  assert.is(t.exportName, 'sys disk');
  assert.equal(parseNbdUri('nbd://example.net').address, { host: 'example.net', port: 10809 });
  assert.is(parseNbdUri('nbd://example.net').exportName, '');
  assert.equal(parseNbdUri('nbd://[::1]:10810/x').address, { host: '::1', port: 10810 });
  // TLS with a pre-shared key, in libnbd's spellings; the user names the key in the file.
  const s = parseNbdUri('nbds://backup@192.0.2.7:10900/sys?tls-psk-file=/etc/dpsr/keys.psk');
  assert.equal(s.address, { host: '192.0.2.7', port: 10900 });
  assert.equal(s.tls, { username: 'backup', pskFile: '/etc/dpsr/keys.psk' });
  assert.is(s.canonical, 'nbds://192.0.2.7:10900/sys');
  const su = parseNbdUri('nbds+unix://backup@/sys?socket=/run/e.sock&tls-psk-file=/k');
  assert.equal(su.address, { socket: '/run/e.sock' });
  assert.equal(su.tls, { username: 'backup', pskFile: '/k' });
  assert.is(su.exportName, 'sys');
  assert.is(parseNbdUri('nbd://example.net/x').tls, undefined);
  for (const [bad, why] of [
    ['nbd+unix:///x', /needs \?socket=PATH/],
    ['nbd+unix://host/x?socket=/s', /no host/],
    ['nbd+unix:///x?socket=/s&tls=1', /unknown parameter tls/],
    ['nbd:///x', /no host/],
    ['nbds://host/x', /needs \?tls-psk-file=PATH/],
    ['nbds://u:secret@host/x?tls-psk-file=/k', /password/],
    ['nbd://u@host/x', /user name is only used with TLS/],
    ['nbd://host/x?tls-psk-file=/k', /unknown parameter tls-psk-file/],
    ['nbds://host/x?tls-psk-file=/k&tls-certificates=/d', /unknown parameter tls-certificates/],
    ['nbds+unix://u@/x?tls-psk-file=/k', /needs \?socket=PATH/],
    ['nbd://h:99999/x', /not a valid NBD address/],
  ] as const) {
    let err: unknown;
    try {
      parseNbdUri(bad);
    } catch (e) {
      err = e;
    }
    assert.instance(err, BadInputError, bad);
    assert.match((err as Error).message, why, bad);
  }
});

test('locateDrive takes an NBD URI as a drive; two spellings of one export are the same storage', () => {
  const a = locateDrive('nbd+unix:///d?socket=/tmp/x/../x/s.sock');
  const b = locateDrive('nbd+unix:///d?socket=/tmp/x/s.sock');
  assert.is(a.kind, 'nbd');
  assert.ok(sameStorage(a, b));
  assert.not.ok(sameStorage(a, locateDrive('nbd+unix:///e?socket=/tmp/x/s.sock')));
});

/** What every drive does, run here against the NBD drive (the contract suite covers the others). */
async function driveContract(dev: BlockDevice, size: number): Promise<void> {
  assert.is(dev.size, size);
  assert.is(dev.logicalSectorSize, 512);
  assert.ok(dev.physicalSectorSize >= 512);
  const data = Buffer.alloc(3 * MiB);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i * 2654435761 >>> 0, i);
  await dev.write(data, MiB);
  await dev.flush();
  const back = Buffer.alloc(3 * MiB);
  await dev.read(back, MiB);
  assert.ok(back.equals(data));
  // The last sector is readable, one past it is not.
  await dev.read(Buffer.alloc(512), size - 512);
  assert.instance(await rejection(dev.read(Buffer.alloc(512), size)), DeviceError);
  let err: unknown;
  try {
    await dev.read(Buffer.alloc(512), 100);
  } catch (e) {
    err = e;
  }
  assert.instance(err, RangeError, 'unaligned position');
  // A sub-range of a buffer: only its first `length` bytes are touched.
  const part = Buffer.alloc(4096, 0xee);
  await dev.read(part, MiB, 1024);
  assert.ok(part.subarray(0, 1024).equals(data.subarray(0, 1024)));
  assert.ok(part.subarray(1024).every((x) => x === 0xee));
}

test('nbdkit memory: the drive contract (reads, writes, flush, bounds, alignment), writes larger than a request are split', async () => {
  if (!haveNbdkit) return;
  const s = await nbdkit(dir, ['memory', '64M'], ['blocksize-policy']);
  try {
    const dev = await NbdDrive.open(s.uri(), { write: true });
    assert.is(dev.identity.kind, 'nbd');
    assert.match(dev.identity.key, /^nbd:nbd\+unix:\/\/\//);
    await driveContract(dev, 64 * MiB);
    // 40 MiB is more than the 32 MiB payload limit: the drive splits it.
    const big = Buffer.alloc(40 * MiB, 0x42);
    await dev.write(big, 8 * MiB);
    const back = Buffer.alloc(40 * MiB);
    await dev.read(back, 8 * MiB);
    assert.ok(back.equals(big));
    await dev.close();
    assert.instance(await rejection(dev.read(Buffer.alloc(512), 0)), DeviceError, 'closed');
  } finally {
    await s.stop();
  }
});

test('nbdkit file: what the drive writes is in the file; read-only opens refuse writes', async () => {
  if (!haveNbdkit) return;
  const image = randomImage(join(dir, 'file.img'), 8 * MiB, 5);
  const s = await nbdkit(dir, ['file', image]);
  try {
    const ro = await openDrive(s.uri());
    const first = Buffer.alloc(MiB);
    await ro.read(first, 0);
    assert.ok(first.equals(readFileSync(image).subarray(0, MiB)));
    assert.instance(await rejection(ro.write(first, 0)), DeviceError);
    await ro.close();
    const rw = await openDrive(s.uri(), { write: true });
    await rw.write(Buffer.alloc(4096, 0x11), 4 * MiB);
    await rw.flush();
    await rw.close();
    assert.ok(readFileSync(image).subarray(4 * MiB, 4 * MiB + 4096).every((x) => x === 0x11));
  } finally {
    await s.stop();
  }
});

test('nbdkit error filter: a failing read is an EIO request error, the connection stays usable, rescue reads around it', async () => {
  if (!haveNbdkit) return;
  const trigger = join(dir, 'fail-now');
  // nbdkit takes the filter's parameters after the plugin's.
  const t = await nbdkit(dir, ['memory', '4M', 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`], ['error']);
  try {
    const dev = await NbdDrive.open(t.uri(), { write: true });
    await dev.write(Buffer.alloc(MiB, 0x33), 0);
    writeFileSync(trigger, '');
    const err = await rejection(dev.read(Buffer.alloc(4096), 0));
    assert.instance(err, NbdRequestError);
    assert.is((err as NbdRequestError).code, 'EIO');
    // The rescue path gives up on every sector and reports them, without crashing the connection.
    const r = await readRescued(dev, Buffer.alloc(2048), 0, 2048, 0);
    assert.equal(r.unreadable, [{ start: 0, length: 2048 }]);
    unlinkSync(trigger);
    const back = Buffer.alloc(4096);
    await dev.read(back, 0);
    assert.ok(back.every((x) => x === 0x33));
    await dev.close();
  } finally {
    await t.stop();
  }
});

test('nbdkit error filter: failing writes and flushes are errors with their errno', async () => {
  if (!haveNbdkit) return;
  const t = await nbdkit(dir, ['memory', '4M', 'error-pwrite=ENOSPC', 'error-pwrite-rate=100%'], ['error']);
  try {
    const dev = await NbdDrive.open(t.uri(), { write: true });
    const err = await rejection(dev.write(Buffer.alloc(4096), 0));
    assert.instance(err, NbdRequestError);
    assert.is((err as NbdRequestError).code, 'ENOSPC');
    assert.match((err as Error).message, /write of 4096 bytes at byte 0: ENOSPC/);
    await dev.close();
  } finally {
    await t.stop();
  }
});

test('qemu-nbd: reads match the image, base:allocation reports holes of a sparse image, block sizes negotiated', async () => {
  if (!haveQemuNbd) return;
  const image = sparseImage(join(dir, 'sparse.img'), 16 * MiB);
  const data = Buffer.alloc(MiB, 0x77);
  const f = openSync(image, 'r+');
  writeSync(f, data, 0, data.length, 2 * MiB);
  closeSync(f);
  const s = await qemuNbd(dir, image, 'sys');
  try {
    const dev = await NbdDrive.open(s.uri('sys'), { metaContexts: ['base:allocation'] });
    assert.is(dev.size, 16 * MiB);
    assert.ok(dev.export.blockSize.maximumPayload >= MiB);
    const back = Buffer.alloc(MiB);
    await dev.read(back, 2 * MiB);
    assert.ok(back.equals(data));
    const ext = await dev.extents('base:allocation');
    const dataExtents = ext.filter((e) => (e.flags & STATE_HOLE) === 0);
    assert.equal(dataExtents.map((e) => [e.start, e.length]), [[2 * MiB, MiB]]);
    assert.ok(ext.filter((e) => e.flags & STATE_HOLE).every((e) => e.flags & STATE_ZERO));
    assert.is(ext.reduce((n, e) => n + e.length, 0), 16 * MiB, 'the extents cover the whole export');
    await dev.close();
  } finally {
    await s.stop();
  }
});

test('an unknown export, a context the server lacks and an unreachable socket are clear errors', async () => {
  if (!haveQemuNbd) return;
  const image = sparseImage(join(dir, 'small.img'), MiB);
  const s = await qemuNbd(dir, image, 'sys');
  try {
    const unknown = await rejection(NbdDrive.open(s.uri('nope')));
    assert.instance(unknown, NbdOptionError);
    assert.match((unknown as Error).message, /no export named "nope"/);
    const ctx = await rejection(NbdDrive.open(s.uri('sys'), { metaContexts: ['qemu:dirty-bitmap:missing'] }));
    assert.instance(ctx, NbdOptionError);
    assert.match((ctx as Error).message, /does not offer the metadata context qemu:dirty-bitmap:missing/);
    assert.match((ctx as NbdOptionError).hint ?? '', /bitmaps/);
  } finally {
    await s.stop();
  }
  const gone = await rejection(openDrive(`nbd+unix:///sys?socket=${join(dir, 'no-such.sock')}`));
  assert.instance(gone, DeviceError);
  assert.match((gone as Error).message, /cannot talk to the NBD server/);
});

test('nbdkit with TLS-PSK: nbds+unix reads and writes inside TLS; a wrong key, an unknown user and a server without TLS are clear errors, never plain text', async () => {
  if (!haveNbdkit) return;
  const keys = join(dir, 'keys.psk');
  const key = randomBytes(32).toString('hex');
  writeFileSync(keys, `other:${'00'.repeat(32)}\nbackup:${key}\n`, { mode: 0o600 });
  const s = await nbdkit(dir, ['memory', '16M'], [], ['--tls=require', `--tls-psk=${keys}`]);
  const plain = await nbdkit(dir, ['memory', '16M']);
  try {
    const uri = (user: string, file = keys) => `nbds+unix://${user}@/?socket=${s.socket}&tls-psk-file=${file}`;
    const dev = await NbdDrive.open(uri('backup'), { write: true });
    await driveContract(dev, 16 * MiB);
    await dev.close();
    // The server requires TLS: a plain client is told how to ask for it.
    const refused = await rejection(NbdDrive.open(s.uri()));
    assert.instance(refused, NbdOptionError);
    assert.match((refused as Error).message, /requires TLS/);
    assert.match((refused as NbdOptionError).hint ?? '', /nbds:\/\/USER@HOST:PORT\/EXPORT\?tls-psk-file=/);
    // A key that is not the server's for this user: the handshake fails.
    const wrongKey = join(dir, 'wrong.psk');
    writeFileSync(wrongKey, `backup:${'11'.repeat(32)}\n`);
    const bad = await rejection(NbdDrive.open(uri('backup', wrongKey)));
    assert.instance(bad, DeviceError);
    assert.match((bad as Error).message, /TLS handshake with the NBD server .* failed/);
    assert.match((bad as DeviceError).hint ?? '', /"backup"/);
    const nobody = await rejection(NbdDrive.open(uri('nobody')));
    assert.instance(nobody, BadInputError);
    assert.match((nobody as Error).message, /no key for the user "nobody"/);
    // A server that does not speak TLS is refused: no fallback to plain text.
    const downgrade = await rejection(NbdDrive.open(`nbds+unix://backup@/?socket=${plain.socket}&tls-psk-file=${keys}`));
    assert.instance(downgrade, NbdOptionError);
    assert.match((downgrade as Error).message, /does not offer TLS/);
  } finally {
    await s.stop();
    await plain.stop();
  }
});

test('a server that goes away mid-transmission fails what is pending and every later call', async () => {
  if (!haveNbdkit) return;
  const s = await nbdkit(dir, ['memory', '64M']);
  const dev = await NbdDrive.open(s.uri(), { write: true });
  await dev.read(Buffer.alloc(4096), 0);
  s.process.kill('SIGKILL');
  const err = await rejection((async () => {
    for (let i = 0; i < 1000; i++) await dev.read(Buffer.alloc(MiB), 0);
  })());
  assert.instance(err, DeviceError);
  assert.instance(await rejection(dev.write(Buffer.alloc(512), 0)), DeviceError);
  await dev.close();
});

test('the CLI takes an NBD URI as a drive: dpsr inspect reads it; a malformed URI is exit 2 naming the problem', async () => {
  if (!haveNbdkit) return;
  const s = await nbdkit(dir, ['memory', '16M']);
  try {
    const ok = dpsr(['inspect', '--json', s.uri()]);
    assert.is(ok.code, 0, ok.stderr);
    const info = JSON.parse(ok.stdout);
    assert.is(info.size, 16 * MiB);
    assert.match(info.identity.key, /^nbd:nbd\+unix:/);
  } finally {
    await s.stop();
  }
  const bad = dpsr(['inspect', 'nbd+unix:///x']);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /needs \?socket=PATH/);
});

test.run();
