/**
 * The `HostDisk` contract (src/export/host-disk.ts): what the host sees of a
 * pair's export through the host's disk, written once and run against every
 * implementation — the simulated host's NBD connection
 * (test/controller/sim-host-disk.test.ts) and the board's kernel nbd client
 * with the USB mass-storage gadget in a virtual board
 * (test/hil/board-link.test.ts). The suite runs two real qemu-storage-daemon
 * exports over two image files (a failover re-points from one to the other)
 * and reads and writes them only as the host does.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageDaemon, type ExportAddress, type HostDisk, type NbdListen } from '../../src/export/index.ts';
import { DeviceError } from '../../src/errors.ts';
import { randomImage, sha256Range, tempDir } from './images.ts';
import { rejection } from './assert-async.ts';

export interface HostDiskSubject {
  disk: HostDisk;
  /** Where export 0 or 1 listens (a unix socket in `dir`, or TCP the subject's host can reach). */
  listen(which: 0 | 1, dir: string): NbdListen;
  /** An address no export serves, in the same form. */
  deadListen(dir: string): NbdListen;
  /** Bytes the host reads from its disk at a byte offset (waits for the disk to appear). */
  hostRead(offset: number, length: number): Promise<Buffer>;
  /** Writes as the host does, flushed (SYNCHRONIZE CACHE on the USB disk). */
  hostWrite(offset: number, data: Buffer): Promise<void>;
  /**
   * Starts a flushed host write without waiting for it (as the host's own I/O
   * goes on while the controller works): `settled()` says whether it has
   * finished yet, `result()` waits for it and throws if it failed.
   */
  startHostWrite(offset: number, data: Buffer): Promise<{ settled(): Promise<boolean>; result(): Promise<void> }>;
  /** Whether the host sees a disk now (waits up to `settleMs` for a change to show). */
  hostSees(expect: boolean): Promise<boolean>;
  close(): Promise<void>;
}

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export function hostDiskContract(name: string, make: () => Promise<HostDiskSubject>, opts: { sizeBytes?: number } = {}): void {
  const size = opts.sizeBytes ?? 8 * MiB;
  const t = suite(`HostDisk contract: ${name}`);
  const dir = tempDir('dpsr-host-disk-');
  const images = [randomImage(join(dir, 'drive-a.img'), size, 11), randomImage(join(dir, 'drive-b.img'), size, 12)] as const;
  let s: HostDiskSubject;
  const daemons: StorageDaemon[] = [];
  const address = (i: 0 | 1): ExportAddress => ({ listen: daemons[i]!.options.listen, name: 'system', uri: daemons[i]!.hostUri });

  t.before(async () => {
    s = await make();
    for (const i of [0, 1] as const) {
      const d = new StorageDaemon({ drive: images[i], runDir: join(dir, `run-${i}`), listen: s.listen(i, dir), exportName: 'system', restartDelayMs: 50 });
      await d.start();
      daemons.push(d);
    }
  });
  t.after(async () => {
    await s?.disk.detach().catch(() => {});
    await s?.close();
    for (const d of daemons) await d.stop();
  });

  t('detached: status says so and the host sees no disk', async () => {
    await s.disk.detach();
    const st = await s.disk.status();
    assert.is(st.attached, false);
    assert.is(await s.hostSees(false), false);
  });

  t('attach: the host reads the export\'s bytes; status attached, connected, the export\'s size', async () => {
    await s.disk.attach(address(0));
    const st = await s.disk.status();
    assert.is(st.attached, true, st.detail);
    assert.is(st.connected, true, st.detail);
    assert.is(st.sizeBytes, size);
    const got = await s.hostRead(0, 64 * 1024);
    assert.is(sha(got), sha256Range(images[0], 0, 64 * 1024));
    const tail = await s.hostRead(size - 4096, 4096);
    assert.is(sha(tail), sha256Range(images[0], size - 4096, 4096));
  });

  t('a host write lands in the drive behind the export', async () => {
    const data = Buffer.alloc(128 * 1024, 0).map((_, i) => (i * 7 + 3) & 0xff) as Buffer;
    await s.hostWrite(MiB, Buffer.from(data));
    assert.is(sha256Range(images[0], MiB, data.length), sha(Buffer.from(data)));
    assert.is(sha(await s.hostRead(MiB, data.length)), sha(Buffer.from(data)));
  });

  t('attach again to the same export changes nothing', async () => {
    await s.disk.attach(address(0));
    const st = await s.disk.status();
    assert.ok(st.attached && st.connected, st.detail);
    assert.is(sha(await s.hostRead(0, 4096)), sha256Range(images[0], 0, 4096));
  });

  t('the export restarts after a crash: attach reconnects and the host reads and writes again', async () => {
    const restarted = new Promise((r) => daemons[0]!.once('ready', r));
    await daemons[0]!.kill();
    await restarted;
    await s.disk.attach(address(0));
    const st = await s.disk.status();
    assert.ok(st.attached && st.connected, st.detail);
    const data = Buffer.alloc(64 * 1024, 0x5a);
    await s.hostWrite(2 * MiB, data);
    assert.is(sha256Range(images[0], 2 * MiB, data.length), sha(data));
    assert.is(sha(await s.hostRead(0, 4096)), sha256Range(images[0], 0, 4096));
  });

  t('the export crashed: a host write waits, not fails, and lands once attach reconnects', async () => {
    const restarted = new Promise((r) => daemons[0]!.once('ready', r));
    await daemons[0]!.kill();
    await restarted;
    // The connection the crash broke is not replaced yet: the write is held.
    const data = Buffer.alloc(64 * 1024, 0x3c);
    const w = await s.startHostWrite(4 * MiB, data);
    await new Promise((r) => setTimeout(r, 1500));
    assert.is(await w.settled(), false, 'the write waits for a new connection (it neither completed nor failed)');
    assert.is((await s.disk.status()).attached, true, 'the host keeps its disk meanwhile');
    await s.disk.attach(address(0));
    await w.result();
    assert.is(sha256Range(images[0], 4 * MiB, data.length), sha(data));
    assert.is(sha(await s.hostRead(4 * MiB, data.length)), sha(data));
  });

  t('failover: detach, the other drive\'s export, attach: the host reads the other drive', async () => {
    await s.disk.detach();
    assert.is((await s.disk.status()).attached, false);
    assert.is(await s.hostSees(false), false);
    await s.disk.attach(address(1));
    assert.is(sha(await s.hostRead(0, 64 * 1024)), sha256Range(images[1], 0, 64 * 1024));
    const data = Buffer.alloc(64 * 1024, 0xa5);
    await s.hostWrite(3 * MiB, data);
    assert.is(sha256Range(images[1], 3 * MiB, data.length), sha(data));
    // The first drive kept what it had.
    assert.is(sha256Range(images[0], 3 * MiB, data.length), sha(readFileSync(images[0]).subarray(3 * MiB, 3 * MiB + data.length)));
  });

  t('detach twice is fine; an address no export serves is refused and leaves no disk', async () => {
    await s.disk.detach();
    await s.disk.detach();
    const dead = s.deadListen(dir);
    const uri = 'unix' in dead ? `nbd+unix:///system?socket=${dead.unix}` : `nbd://${dead.tcp.host}:${dead.tcp.port}/system`;
    const e = await rejection(s.disk.attach({ listen: dead, name: 'system', uri }));
    assert.instance(e, DeviceError, String(e));
    assert.is((await s.disk.status()).attached, false);
    assert.is(await s.hostSees(false), false);
  });

  t.run();
}
