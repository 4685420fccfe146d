/**
 * Boots a copy of a standby drive in a second QEMU (while the host goes on
 * running from the active drive) and checks its data filesystem the way an
 * operator after a failover would meet it: the kernel mounts it (recovering
 * its journal when the picture was crash-consistent), the agent unmounts it
 * cleanly, then `e2fsck -fn` must find it clean, and the load writer's files
 * are read out with debugfs for the record and in-place checks.
 *
 * A copy, not the standby itself: booting writes (journal replay), and the
 * controller's standby must stay the picture it copied.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DeviceError } from '../errors.ts';
import type { HilImage } from '../image/build.ts';
import { QemuHost } from '../qemu-host.ts';
import { INPLACE_FILES } from './load.ts';

export interface Fsck {
  /** e2fsck -fn exit status: 0 = clean. */
  status: number;
  output: string;
}

export interface StandbyBoot {
  /** The superblock of the picture (before the boot) said the journal needs recovery. */
  needsRecoveryBefore: boolean;
  /** e2fsck -fn of the picture as copied, when it needed no recovery (e2fsck -n cannot replay a journal). */
  fsckBefore: Fsck | null;
  /** Kernel messages of the standby's boot about its disk and filesystems. */
  kmsg: string[];
  /** e2fsck -fn after the boot mounted the filesystem and the agent unmounted it. */
  fsckAfter: Fsck;
  needsRecoveryAfter: boolean;
  shutdown: 'clean' | 'forced';
  bootMs: number;
  /** The load writer's files on the standby: `load-records`, `inplace-0`… (absent ones left out). */
  files: Map<string, Buffer>;
}

function dataPartition(disk: string, image: HilImage, out: string): string {
  const buf = Buffer.alloc(image.data.size);
  const fd = openSync(disk, 'r');
  try {
    let done = 0;
    while (done < buf.length) {
      const n = readSync(fd, buf, done, buf.length - done, image.data.offset + done);
      if (n === 0) break;
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  writeFileSync(out, buf);
  return out;
}

function needsRecovery(part: string): boolean {
  const out = execFileSync('dumpe2fs', ['-h', part], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const features = /^Filesystem features:\s*(.*)$/m.exec(out)?.[1];
  if (features === undefined) throw new DeviceError(`dumpe2fs -h ${part} shows no features line`);
  return features.split(/\s+/).includes('needs_recovery');
}

function fsck(part: string): Fsck {
  try {
    return { status: 0, output: execFileSync('e2fsck', ['-fn', part], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (e) {
    const err = e as { status?: number; stdout?: string; stderr?: string };
    return { status: err.status ?? -1, output: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}

function dump(part: string, name: string, dir: string): Buffer | null {
  const out = join(dir, `dump-${name}`);
  rmSync(out, { force: true });
  execFileSync('debugfs', ['-R', `dump /${name} ${out}`, part], { stdio: ['ignore', 'pipe', 'pipe'] });
  return existsSync(out) ? readFileSync(out) : null;
}

/**
 * Copies `drive` into `dir`, checks the copy's data partition as it is,
 * boots it in its own QEMU (disk serial `serial`), reads its kernel
 * messages, shuts it down through the agent, then checks it again and
 * reads the load writer's files.
 */
export async function bootStandbyCopy(o: { drive: string; image: HilImage; dir: string; name: string; serial: string }): Promise<StandbyBoot> {
  const copy = join(o.dir, `${o.name}.img`);
  copyFileSync(o.drive, copy);
  const part = join(o.dir, `${o.name}-data.img`);
  dataPartition(copy, o.image, part);
  const needsRecoveryBefore = needsRecovery(part);
  const fsckBefore = needsRecoveryBefore ? null : fsck(part);

  const qemu = new QemuHost({ name: o.name });
  const t = performance.now();
  let shutdown: 'clean' | 'forced';
  let kmsg: string[];
  try {
    const boot = await qemu.boot(copy, { serial: o.serial });
    if (boot.data === 'none') throw new DeviceError(`${o.name}: the standby booted but its data partition did not mount: ${qemu.serialLog().slice(-5).map((l) => l.text).join(' / ')}`);
    kmsg = (await qemu.command('kmsg')).data;
  } finally {
    shutdown = await qemu.shutdown();
  }
  const bootMs = performance.now() - t;
  dataPartition(copy, o.image, part);
  const files = new Map<string, Buffer>();
  for (const name of ['load-records', ...Array.from({ length: INPLACE_FILES }, (_, f) => `inplace-${f}`)]) {
    const b = dump(part, name, o.dir);
    if (b) files.set(name, b);
  }
  const result = { needsRecoveryBefore, fsckBefore, kmsg, fsckAfter: fsck(part), needsRecoveryAfter: needsRecovery(part), shutdown, bootMs, files };
  rmSync(copy, { force: true });
  rmSync(part, { force: true });
  return result;
}
