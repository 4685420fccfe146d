/**
 * Inline mode's qemu-storage-daemon unit (deploy/dpsr-export@.service) and
 * its PR_SET_IO_FLUSHER wrapper (deploy/dpsr-io-flusher). The unit's runs
 * under a real systemd are the StorageDaemon contract's
 * (test/export/storage-daemon.contract.test.ts).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DAEMON_MALLOC_TUNABLES, unitEnvironmentFile, unitQmpSocket } from '../../src/export/index.ts';
import { tempDir } from '../support/images.ts';
import { inCI, requireEnv } from '../support/require.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const unit = readFileSync(join(repo, 'deploy/dpsr-export@.service'), 'utf8');
const wrapper = join(repo, 'deploy/dpsr-io-flusher');
/** PF_MEMALLOC_NOIO in /proc/PID/stat's flags: what PR_SET_IO_FLUSHER sets (with PF_LOCAL_THROTTLE). */
const PF_MEMALLOC_NOIO = 0x80000;
const CAP_SYS_RESOURCE = 24;

const capIn = (set: 'CapEff' | 'CapBnd', bit: number) => (BigInt('0x' + new RegExp(`^${set}:\\s*([0-9a-f]+)`, 'm').exec(readFileSync('/proc/self/status', 'utf8'))![1]) >> BigInt(bit)) & 1n;
const flagsOf = (script: string, env: Record<string, string> = {}) => spawnSync(wrapper, ['sh', '-c', script], { encoding: 'utf8', env: { ...process.env, ...env } });

test('the unit: the wrapper starts the daemon with only a QMP monitor where dpsr looks for it, the malloc tunables, restarted by systemd after a crash, never given up', () => {
  const exec = /^ExecStart=(.*)$/m.exec(unit)![1]!;
  assert.ok(exec.startsWith('/opt/dpsr/deploy/dpsr-io-flusher /opt/dpsr/deploy/dpsr-nbd-listen /usr/bin/qemu-storage-daemon '), exec);
  // The TCP listener's address, written by dpsrd before each start (SystemdDaemonProcess).
  assert.match(unit, /^EnvironmentFile=-%t\/dpsr-export\/%i\.env$/m);
  assert.is(unitEnvironmentFile('system'), '/run/dpsr-export/system.env');
  assert.match(exec, /--chardev socket,id=qmp,path=%t\/dpsr-export\/%i\/qmp\.sock,server=on,wait=off --monitor chardev=qmp$/);
  // %t is /run for the system manager: the path the controller connects to.
  assert.is(unitQmpSocket('system'), '/run/dpsr-export/system/qmp.sock');
  assert.match(unit, /^RuntimeDirectory=dpsr-export\/%i$/m);
  assert.is(/^Environment=GLIBC_TUNABLES=(.*)$/m.exec(unit)![1], DAEMON_MALLOC_TUNABLES);
  assert.match(unit, /^Restart=on-failure$/m);
  assert.match(unit, /^StartLimitIntervalSec=0$/m);
  assert.match(unit, /^ReadWritePaths=-\/var\/lib\/dpsr$/m);
});

test('systemd-analyze verify has nothing to say about the unit', () => {
  if (!requireEnv('checking the export unit with systemd-analyze', { tools: ['systemd-analyze', 'qemu-storage-daemon'] })) return;
  const dir = tempDir();
  // Installed under the checkout's prefix, as deploy/install.sh does with PREFIX.
  const path = join(dir, 'dpsr-export@system.service');
  writeFileSync(path, unit.replaceAll('/opt/dpsr', repo));
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', path], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stderr.trim(), '');
});

test('the wrapper runs the program with its arguments and passes its exit status on; no program is bad usage', () => {
  if (!requireEnv('the IO_FLUSHER wrapper', { tools: ['python3'] })) return;
  const r = spawnSync(wrapper, ['sh', '-c', 'echo "$0 $1"; exit 7', 'a b', 'c'], { encoding: 'utf8' });
  assert.is(r.status, 7);
  assert.is(r.stdout, 'a b c\n');
  assert.is(spawnSync(wrapper, [], { encoding: 'utf8' }).status, 2);
  const missing = spawnSync(wrapper, ['/nonexistent/qemu-storage-daemon'], { encoding: 'utf8' });
  assert.is(missing.status, 127);
  assert.match(missing.stderr, /cannot run \/nonexistent/);
});

test('without CAP_SYS_RESOURCE the wrapper warns and runs the program without the state, or refuses when DPSR_IO_FLUSHER=required', () => {
  if (!requireEnv('the IO_FLUSHER wrapper', { tools: ['python3', 'setpriv'] })) return;
  const drop = ['--inh-caps=-sys_resource', '--bounding-set=-sys_resource'];
  const warned = spawnSync('setpriv', [...drop, wrapper, 'sh', '-c', 'cut -d" " -f9 /proc/$$/stat'], { encoding: 'utf8' });
  assert.is(warned.status, 0, warned.stderr);
  assert.match(warned.stderr, /PR_SET_IO_FLUSHER failed: Operation not permitted .*running without it/);
  assert.is(Number(warned.stdout) & PF_MEMALLOC_NOIO, 0);
  const refused = spawnSync('setpriv', [...drop, wrapper, 'sh', '-c', 'echo ran'], { encoding: 'utf8', env: { ...process.env, DPSR_IO_FLUSHER: 'required' } });
  assert.is(refused.status, 1);
  assert.is(refused.stdout, '', 'the program did not run');
});

test('with CAP_SYS_RESOURCE the program runs in the IO_FLUSHER state (kept across exec, inherited by its children)', () => {
  if (!requireEnv('the IO_FLUSHER wrapper', { tools: ['python3'] })) return;
  if (!capIn('CapBnd', CAP_SYS_RESOURCE)) {
    // Like hardware, no install step gives it: a sandbox whose bounding set lacks it skips here, in CI too.
    console.log('SKIP (loud): the IO_FLUSHER state needs CAP_SYS_RESOURCE, and this machine\'s process tree lacks it in its bounding set: no install step can give it; run this test on the board');
    return;
  }
  if (!capIn('CapEff', CAP_SYS_RESOURCE)) {
    const message = 'the IO_FLUSHER state needs CAP_SYS_RESOURCE, which this process does not have: run the tests as root';
    if (inCI) throw new Error(message);
    console.log(`SKIP: ${message}`);
    return;
  }
  const r = flagsOf('cut -d" " -f9 /proc/$$/stat; sh -c \'cut -d" " -f9 /proc/$$/stat\'', { DPSR_IO_FLUSHER: 'required' });
  assert.is(r.status, 0, r.stderr);
  const [own, child] = r.stdout.trim().split('\n').map(Number);
  assert.ok(own! & PF_MEMALLOC_NOIO, `flags ${own!.toString(16)}`);
  assert.ok(child! & PF_MEMALLOC_NOIO, `child flags ${child!.toString(16)}`);
});

test.run();
