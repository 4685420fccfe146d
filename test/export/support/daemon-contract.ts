/**
 * The contract every way of running qemu-storage-daemon passes under
 * StorageDaemon (a child process, a systemd unit): the graph and the host
 * export come up; a crash is noticed, the daemon runs again (restarted by
 * the supervisor or by systemd) with the same export at the same address
 * and its bitmaps in memory lost; a clean stop leaves nothing running and
 * saves persistent bitmaps; a daemon a hard-killed controller left is asked
 * to quit and replaced; a TCP export's accepted sockets have TCP_NODELAY.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { QmpClient, StorageDaemon, ACTIVE_NODE, type DaemonProcess, type ExitInfo, type NbdListen } from '../../../src/export/index.ts';
import { NbdDrive } from '../../../src/sata-bridge/index.ts';
import { randomImage } from '../../support/images.ts';
import { freePort } from '../../support/net.ts';

const MiB = 1024 * 1024;

export interface ContractSetup {
  /** A new way to run a daemon named `name` (one name per daemon; a second call with the same name reaches the same daemon). */
  process(name: string): DaemonProcess;
  /** Scratch directory the daemon may read and write (drives, NBD sockets, metadata). */
  dir: string;
  /** After the suite. */
  cleanup(): Promise<void>;
  /** For a runner with a service manager: whether the daemon's unit is active, and how often the manager restarted it. */
  unit?(name: string): { active: boolean; restarts: number };
}

/** The live (not zombie) processes whose command line holds `needle`. */
function pidsWith(needle: string): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).flatMap((p) => {
    try {
      if (!readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(needle)) return [];
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z' ? [] : [Number(p)];
    } catch {
      return [];
    }
  });
}

/**
 * TCP_NODELAY (0 or 1) of each connected TCP socket process `pid` holds
 * with local port `port`: the socket is duplicated out of the process with
 * pidfd_getfd (Linux 5.6; syscall 438 on every architecture) and asked with
 * getsockopt. No tool shows the option of another process's socket.
 */
function noDelayOfAccepted(pid: number, port: number): number[] {
  const script = `
import ctypes, os, socket, sys
pid, port = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(pid)
for name in os.listdir("/proc/%d/fd" % pid):
    try:
        if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"): continue
    except OSError: continue
    fd = libc.syscall(438, pidfd, int(name), 0)
    if fd < 0: sys.exit("pidfd_getfd: " + os.strerror(ctypes.get_errno()))
    s = socket.socket(fileno=fd)
    try:
        if s.family in (socket.AF_INET, socket.AF_INET6) and s.getsockname()[1] == port:
            s.getpeername()
            print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) and 1 or 0)
    except OSError: pass
    s.close()
`;
  return execFileSync('python3', ['-c', script, String(pid), String(port)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
}

export function storageDaemonContract(kind: string, setup: () => Promise<ContractSetup | null>): void {
  let s: ContractSetup | null = null;
  const make = (name: string, extra: { metadata?: string; restartDelayMs?: number; listen?: NbdListen } = {}) => {
    const runDir = join(s!.dir, name);
    mkdirSync(runDir, { recursive: true });
    const drive = join(runDir, 'drive.img');
    try {
      readFileSync(drive, { flag: 'r' }).length;
    } catch {
      randomImage(drive, 16 * MiB, name.length);
    }
    return { drive, daemon: new StorageDaemon({ drive, runDir, listen: extra.listen ?? { unix: join(runDir, 'nbd.sock') }, exportName: 'sys', process: s!.process(name), restartDelayMs: 50, ...extra }) };
  };

  test(`${kind}: set up`, async () => {
    s = await setup();
  });

  test(`${kind}: the graph and the writable host export come up; writes land on the drive; the daemon runs with the malloc tunables`, async () => {
    if (!s) return;
    const { daemon, drive } = make('basic');
    await daemon.start();
    try {
      assert.ok(daemon.running);
      assert.is(daemon.generation, 1);
      if (s.unit) assert.ok(s.unit('basic').active, 'the unit runs the daemon');
      const nodes = await daemon.qmp.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true });
      assert.ok(nodes.some((n) => n['node-name'] === ACTIVE_NODE));
      const host = await NbdDrive.open(daemon.hostUri, { write: true });
      await host.write(Buffer.alloc(MiB, 0x5a), 2 * MiB);
      await host.flush();
      await host.close();
      assert.ok(readFileSync(drive).subarray(2 * MiB, 3 * MiB).every((x) => x === 0x5a));
      const [pid] = pidsWith('basic/qmp.sock');
      assert.ok(pid, 'the daemon process is found by its QMP socket');
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      assert.ok(env.some((v) => v.startsWith('GLIBC_TUNABLES=') && v.includes('glibc.malloc.mmap_threshold=33554432')), 'GLIBC_TUNABLES');
    } finally {
      await daemon.stop();
    }
    assert.is(daemon.running, false);
    assert.equal(pidsWith('basic/qmp.sock'), [], 'nothing left running after a clean stop');
    if (s.unit) assert.not.ok(s.unit('basic').active, 'the unit is stopped, not restarting');
  });

  test(`${kind}: a crash is noticed, the daemon runs again with the same export at the same address, and its bitmap in memory is gone`, async () => {
    if (!s) return;
    const { daemon } = make('crash');
    const crashes: ExitInfo[] = [];
    daemon.on('crashed', (c) => crashes.push(c));
    await daemon.start();
    try {
      await daemon.qmp.execute('block-dirty-bitmap-add', { node: ACTIVE_NODE, name: 'epoch' });
      const w = await NbdDrive.open(daemon.hostUri, { write: true });
      await w.write(Buffer.alloc(64 * 1024, 0x3c), 0);
      await w.flush();
      await w.close();
      const uri = daemon.hostUri;
      const ready = new Promise<number>((r) => daemon.once('ready', r));
      const [pid] = pidsWith('crash/qmp.sock');
      process.kill(pid!, 'SIGKILL');
      assert.is(await ready, 2, 'the next generation');
      assert.is(crashes.length, 1);
      assert.is(crashes[0]!.signal, 'SIGKILL', JSON.stringify(crashes[0]));
      assert.is(daemon.hostUri, uri);
      if (s.unit) assert.is(s.unit('crash').restarts, 1, 'the service manager restarted it, and the supervisor built on that start');
      const nodes = await daemon.qmp.execute<{ 'node-name': string; 'dirty-bitmaps'?: { name: string }[] }[]>('query-named-block-nodes', { flat: true });
      assert.not.ok(nodes.find((n) => n['node-name'] === ACTIVE_NODE)!['dirty-bitmaps']?.some((b) => b.name === 'epoch'), 'the bitmap in memory died with the daemon');
      const r = await NbdDrive.open(uri);
      const back = Buffer.alloc(64 * 1024);
      await r.read(back, 0);
      await r.close();
      assert.ok(back.every((x) => x === 0x3c), 'the same disk');
      // The restarted daemon is the one watched now: its crash is told apart from the first.
      const again = new Promise<number>((r) => daemon.once('ready', r));
      process.kill(pidsWith('crash/qmp.sock')[0]!, 'SIGKILL');
      assert.is(await again, 3);
      assert.is(crashes.length, 2);
      assert.is(crashes[1]!.signal, 'SIGKILL', JSON.stringify(crashes[1]));
      if (s.unit) assert.ok(s.unit('crash').active, 'the unit runs the daemon again');
    } finally {
      await daemon.stop();
    }
    assert.equal(pidsWith('crash/qmp.sock'), []);
  });

  test(`${kind}: a clean stop saves a persistent bitmap, and the next start has it back`, async () => {
    if (!s) return;
    const metadata = join(s.dir, 'persist', 'bitmaps.qcow2');
    const first = make('persist', { metadata });
    await first.daemon.start();
    await first.daemon.qmp.execute('block-dirty-bitmap-add', { node: ACTIVE_NODE, name: 'epoch', persistent: true });
    const w = await NbdDrive.open(first.daemon.hostUri, { write: true });
    await w.write(Buffer.alloc(128 * 1024, 1), 4 * MiB);
    await w.flush();
    await w.close();
    await first.daemon.stop();
    const second = make('persist', { metadata });
    await second.daemon.start();
    try {
      const nodes = await second.daemon.qmp.execute<{ 'node-name': string; 'dirty-bitmaps'?: { name: string; count: number }[] }[]>('query-named-block-nodes', { flat: true });
      const bm = nodes.find((n) => n['node-name'] === ACTIVE_NODE)!['dirty-bitmaps']?.find((b) => b.name === 'epoch');
      assert.ok(bm, 'the bitmap came back');
      assert.is(bm!.count, 128 * 1024);
    } finally {
      await second.daemon.stop();
    }
  });

  test(`${kind}: a daemon a hard-killed controller left is asked to quit (saving its bitmap) and replaced at the same address`, async () => {
    if (!s) return;
    const metadata = join(s.dir, 'left', 'bitmaps.qcow2');
    const old = make('left', { metadata });
    await old.daemon.start();
    await old.daemon.qmp.execute('block-dirty-bitmap-add', { node: ACTIVE_NODE, name: 'epoch', persistent: true });
    const w = await NbdDrive.open(old.daemon.hostUri, { write: true });
    await w.write(Buffer.alloc(64 * 1024, 2), 0);
    await w.flush();
    await w.close();
    const [oldPid] = pidsWith('left/qmp.sock');
    // The controller dies: its QMP connection drops, the daemon stays.
    // Nothing of the dead controller runs on: no crash handling of the old supervisor (its service manager goes with the test).
    (old.daemon as unknown as { stopping: boolean }).stopping = true;
    old.daemon.removeAllListeners();
    (old.daemon as unknown as { client: QmpClient }).client.close();
    const next = make('left', { metadata });
    await next.daemon.start();
    try {
      assert.not.ok(pidsWith('left/qmp.sock').includes(oldPid!), 'the old daemon is gone');
      const nodes = await next.daemon.qmp.execute<{ 'node-name': string; 'dirty-bitmaps'?: { name: string; count: number }[] }[]>('query-named-block-nodes', { flat: true });
      assert.is(nodes.find((n) => n['node-name'] === ACTIVE_NODE)!['dirty-bitmaps']?.find((b) => b.name === 'epoch')?.count, 64 * 1024, 'its bitmap was saved at its quit');
    } finally {
      await next.daemon.stop();
    }
  });

  test(`${kind}: a TCP export's accepted sockets have TCP_NODELAY (qemu 7.2 does not set it; every small reply would wait for a delayed ACK), also after a crash`, async () => {
    if (!s) return;
    const port = await freePort();
    const { daemon } = make('tcp', { listen: { tcp: { host: '127.0.0.1', port } } });
    await daemon.start();
    try {
      assert.is(daemon.hostUri, `nbd://127.0.0.1:${port}/sys`);
      for (const generation of [1, 2]) {
        const host = await NbdDrive.open(daemon.hostUri, { write: true });
        await host.write(Buffer.alloc(4096, generation), 0);
        await host.flush();
        const [pid] = pidsWith('tcp/qmp.sock');
        assert.equal(noDelayOfAccepted(pid!, port), [1], `generation ${generation}: the daemon's one accepted socket`);
        await host.close();
        if (generation === 1) {
          const ready = new Promise<number>((r) => daemon.once('ready', r));
          process.kill(pid!, 'SIGKILL');
          assert.is(await ready, 2);
        }
      }
    } finally {
      await daemon.stop();
    }
    assert.equal(pidsWith('tcp/qmp.sock'), []);
  });

  test(`${kind}: clean up`, async () => {
    await s?.cleanup();
  });
}
