/**
 * The QMP client (against a fake peer and the real daemon) and the
 * qemu-storage-daemon supervisor: the graph, the host export over a unix
 * socket and over TCP with TLS-PSK, a restart after a crash that serves the
 * same disk under the same address.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer } from 'node:net';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChildDaemonProcess, QmpClient, QmpError, QmpConnectionError, StorageDaemon, ACTIVE_NODE, TOP_NODE } from '../../src/export/index.ts';
import { NbdDrive, NbdOptionError } from '../../src/sata-bridge/index.ts';
import { BadInputError, DeviceError } from '../../src/errors.ts';
import { randomImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { rejection } from '../support/assert-async.ts';
import { freePort } from '../support/net.ts';

const dir = tempDir('dpsr-export-');
const MiB = 1024 * 1024;
const haveQsd = requireEnv('qemu-storage-daemon tests', { tools: ['qemu-storage-daemon', 'qemu-img'] });
let n = 0;

/** A fake QMP peer that answers with a script: each client line gets the next reply lines. */
async function fakeQmp(replies: (line: Record<string, any>) => string[]): Promise<string> {
  const path = join(dir, `fake-qmp-${n++}.sock`);
  const server = createServer((c) => {
    c.write('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}\r\n');
    let buf = '';
    c.on('data', (d) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        for (const r of replies(line)) c.write(`${r}\r\n`);
      }
    });
    c.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  server.unref();
  return path;
}


test('QMP: greeting, capabilities, answers matched by id out of order, events between answers, errors typed', async () => {
  const held: Record<string, any>[] = [];
  const path = await fakeQmp((line) => {
    if (line.execute === 'qmp_capabilities') return [`{"return": {}, "id": ${JSON.stringify(line.id)}}`];
    if (line.execute === 'slow') {
      held.push(line);
      return [];
    }
    if (line.execute === 'fast') {
      const slow = held.shift()!;
      return [
        `{"event": "BLOCK_JOB_READY", "data": {"device": "j1"}, "timestamp": {"seconds": 1, "microseconds": 2}}`,
        `{"return": {"which": "fast"}, "id": ${JSON.stringify(line.id)}}`,
        `{"return": {"which": "slow"}, "id": ${JSON.stringify(slow.id)}}`,
      ];
    }
    return [`{"error": {"class": "CommandNotFound", "desc": "The command ${line.execute} has not been found"}, "id": ${JSON.stringify(line.id)}}`];
  });
  const qmp = await QmpClient.connect(path);
  assert.equal(qmp.version, { major: 7, minor: 2, micro: 0 });
  const events: string[] = [];
  qmp.on('*', (e) => events.push(e.event));
  const ready = qmp.waitEvent('BLOCK_JOB_READY', (e) => e.data.device === 'j1');
  const slow = qmp.execute<{ which: string }>('slow');
  const fast = qmp.execute<{ which: string }>('fast');
  assert.equal(await fast, { which: 'fast' });
  assert.equal(await slow, { which: 'slow' });
  assert.is((await ready).event, 'BLOCK_JOB_READY');
  assert.equal(events, ['BLOCK_JOB_READY']);
  const err = await rejection(qmp.execute('nonsense'));
  assert.instance(err, QmpError);
  assert.is((err as QmpError).errorClass, 'CommandNotFound');
  assert.match((err as Error).message, /refused nonsense: The command nonsense has not been found/);
  qmp.close();
});

test('QMP: a line that is not JSON, or an answer to no command, ends the connection with a QmpConnectionError', async () => {
  const garbage = await fakeQmp((line) => (line.execute === 'qmp_capabilities' ? [`{"return": {}, "id": ${JSON.stringify(line.id)}}`] : ['<html>not qmp']));
  const qmp = await QmpClient.connect(garbage);
  assert.instance(await rejection(qmp.execute('query-version')), QmpConnectionError);
  assert.instance(await rejection(qmp.execute('query-version')), QmpConnectionError, 'and every later call');
  const stray = await fakeQmp((line) => (line.execute === 'qmp_capabilities' ? [`{"return": {}, "id": ${JSON.stringify(line.id)}}`] : ['{"return": {}, "id": "someone-else"}']));
  const q2 = await QmpClient.connect(stray);
  assert.instance(await rejection(q2.execute('query-version')), QmpConnectionError);
  assert.instance(await rejection(QmpClient.connect(join(dir, 'nothing-here.sock'))), QmpConnectionError);
});

function daemonFor(name: string, extra: Partial<ConstructorParameters<typeof StorageDaemon>[0]> = {}) {
  const runDir = join(dir, name);
  mkdirSync(runDir, { recursive: true });
  const drive = randomImage(join(runDir, 'drive.img'), 32 * MiB, 7);
  const daemon = new StorageDaemon({ drive, runDir, listen: { unix: join(runDir, 'nbd.sock') }, exportName: 'sys', ...extra });
  return { daemon, drive, runDir };
}

test('the daemon builds file → active → top, exports top writable to the host; writes land on the raw drive', async () => {
  if (!haveQsd) return;
  const { daemon, drive } = daemonFor('graph');
  await daemon.start();
  try {
    const nodes = await daemon.qmp.execute<{ 'node-name': string; drv: string; image: { filename: string } }[]>('query-named-block-nodes', { flat: true });
    const byName = new Map(nodes.map((x) => [x['node-name'], x]));
    assert.is(byName.get(ACTIVE_NODE)?.drv, 'raw');
    assert.is(byName.get(TOP_NODE)?.drv, 'raw');
    const exports = await daemon.qmp.execute<{ id: string; 'node-name': string }[]>('query-block-exports');
    assert.equal(exports.map((e) => [e.id, e['node-name']]), [['host', TOP_NODE]]);
    assert.is(daemon.hostUri, `nbd+unix:///sys?socket=${join(dir, 'graph', 'nbd.sock')}`);
    const host = await NbdDrive.open(daemon.hostUri, { write: true });
    assert.is(host.size, 32 * MiB);
    await host.write(Buffer.alloc(MiB, 0xa5), 3 * MiB);
    await host.flush();
    await host.close();
    assert.ok(readFileSync(drive).subarray(3 * MiB, 4 * MiB).every((x) => x === 0xa5));
    // The daemon keeps its NBD request buffers on the heap (DAEMON_MALLOC_TUNABLES).
    const pid = readdirSync('/proc').find((p) => /^\d+$/.test(p) && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(daemon.qmpSocket));
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    // glibc rewrites the variable in the process as it reads it: look for the setting that matters.
    assert.ok(env.some((v) => v.startsWith('GLIBC_TUNABLES=') && v.includes('glibc.malloc.mmap_threshold=33554432')), 'GLIBC_TUNABLES');
  } finally {
    await daemon.stop();
  }
});

test('the qcow2 bitmap metadata file is made beside the drive without touching it: its bytes are the same after the first start, read through the export as they are, and the drive stays a plain raw disk', async () => {
  if (!haveQsd) return;
  const runDir = join(dir, 'meta');
  mkdirSync(runDir, { recursive: true });
  const drive = randomImage(join(runDir, 'drive.img'), 16 * MiB, 21);
  const before = readFileSync(drive);
  const metadata = join(runDir, 'state', 'bitmaps.qcow2');
  mkdirSync(join(runDir, 'state'));
  const daemon = new StorageDaemon({ drive, runDir, listen: { unix: join(runDir, 'nbd.sock') }, exportName: 'sys', metadata });
  await daemon.start();
  try {
    assert.ok(readFileSync(drive).equals(before), 'the drive holds what it held before the metadata file was made');
    const host = await NbdDrive.open(daemon.hostUri);
    const buf = Buffer.alloc(16 * MiB);
    await host.read(buf, 0);
    await host.close();
    assert.ok(buf.equals(before), 'the export serves the drive as it is');
    const nodes = await daemon.qmp.execute<{ 'node-name': string; drv: string }[]>('query-named-block-nodes', { flat: true });
    assert.is(nodes.find((x) => x['node-name'] === ACTIVE_NODE)?.drv, 'qcow2');
  } finally {
    await daemon.stop();
  }
  assert.equal(readdirSync(join(runDir, 'state')), ['bitmaps.qcow2'], 'no scratch left beside it');
  assert.ok(readFileSync(drive).equals(before));
});

test('a daemon left running by a controller that died hard is asked to quit, and the new one serves the drive at the same address', async () => {
  if (!haveQsd) return;
  const { daemon, drive, runDir } = daemonFor('leftover');
  // What a SIGKILLed controller leaves: a daemon on the same QMP socket that holds the drive's lock.
  const left = spawn('qemu-storage-daemon', ['--chardev', `socket,id=qmp,path=${daemon.qmpSocket},server=on,wait=off`, '--monitor', 'chardev=qmp', '--blockdev', `file,node-name=f,filename=${drive}`], { stdio: 'ignore' });
  const exited = new Promise((r) => left.once('exit', r));
  for (let i = 0; i < 200 && !existsSync(daemon.qmpSocket); i++) await new Promise((r) => setTimeout(r, 25));
  await daemon.start();
  try {
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    assert.is(left.exitCode, 0, 'the leftover quit cleanly');
    const host = await NbdDrive.open(daemon.hostUri, { write: true });
    await host.write(Buffer.alloc(4096, 0x3c), 0);
    await host.flush();
    await host.close();
    assert.ok(readFileSync(drive).subarray(0, 4096).every((x) => x === 0x3c));
    assert.ok(existsSync(join(runDir, 'nbd.sock')));
  } finally {
    left.kill('SIGKILL');
    await daemon.stop();
  }
});

test('a crash whose end the service manager cannot report (systemctl failing) is still a crash: reported, restarted, nothing thrown', async () => {
  if (!haveQsd) return;
  const runDir = join(dir, 'unknown-end');
  mkdirSync(runDir, { recursive: true });
  const real = new ChildDaemonProcess(join(runDir, 'qmp.sock'));
  let failing = false;
  // The real process, but how it ended cannot be asked once it crashed (as when systemctl fails).
  const process_ = new Proxy(real, {
    get(target, key) {
      if (key === 'exited' && failing) return async () => Promise.reject(new Error('systemctl show: Failed to connect to bus'));
      const v = Reflect.get(target, key, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  const { daemon } = daemonFor('unknown-end', { restartDelayMs: 50, process: process_ });
  const crashes: { stderr: string }[] = [];
  daemon.on('crashed', (c) => crashes.push(c));
  await daemon.start();
  try {
    const restarted = new Promise<number>((r) => daemon.once('ready', r));
    failing = true;
    await real.kill('SIGKILL');
    assert.is(await restarted, 2);
    failing = false;
    assert.is(crashes.length, 1);
    assert.match(crashes[0]!.stderr, /how qemu-storage-daemon ended is not known: systemctl show: Failed to connect to bus/);
    assert.ok(daemon.running);
  } finally {
    await daemon.stop();
  }
});

test('a crash restarts the daemon with the same export at the same address and the same disk', async () => {
  if (!haveQsd) return;
  const { daemon } = daemonFor('crash', { restartDelayMs: 50 });
  const crashes: unknown[] = [];
  daemon.on('crashed', (c) => crashes.push(c));
  await daemon.start();
  try {
    const before = await NbdDrive.open(daemon.hostUri, { write: true });
    await before.write(Buffer.alloc(64 * 1024, 0x3c), 0);
    await before.flush();
    const restarted = new Promise<number>((r) => daemon.once('ready', r));
    daemon.kill();
    assert.is(await restarted, 2);
    assert.is(crashes.length, 1);
    // The old connection is gone (the host's NBD client reconnects); the address serves the same data.
    assert.instance(await rejection(before.read(Buffer.alloc(512), 0)), Error);
    await before.close();
    const after = await NbdDrive.open(daemon.hostUri, { write: true });
    const back = Buffer.alloc(64 * 1024);
    await after.read(back, 0);
    assert.ok(back.every((x) => x === 0x3c));
    await after.close();
  } finally {
    await daemon.stop();
  }
  assert.is(daemon.running, false);
});

test('NBD over TCP with TLS from a pre-shared key: libnbd and dpsr\'s own client read it, a client without TLS is refused', async () => {
  if (!haveQsd || !requireEnv('TLS-PSK export test', { tools: ['nbdinfo'] })) return;
  const pskDir = join(dir, 'psk');
  mkdirSync(pskDir, { recursive: true });
  const key = randomBytes(32).toString('hex');
  writeFileSync(join(pskDir, 'keys.psk'), `dpsr:${key}\n`, { mode: 0o600 });
  const port = await freePort();
  const { daemon, drive } = daemonFor('tls', { listen: { tcp: { host: '127.0.0.1', port, tlsPskDir: pskDir } } });
  await daemon.start();
  try {
    assert.is(daemon.hostUri, `nbds://dpsr@127.0.0.1:${port}/sys?tls-psk-file=${join(pskDir, 'keys.psk')}`);
    const info = execFileSync('nbdinfo', ['--size', daemon.hostUri], { encoding: 'utf8' });
    assert.is(info.trim(), String(32 * MiB));
    // dpsr's NBD drive speaks the same TLS (GnuTLS on the server, OpenSSL here): what it writes lands on the raw drive.
    const dev = await NbdDrive.open(daemon.hostUri, { write: true });
    const data = randomBytes(MiB);
    await dev.write(data, 3 * MiB);
    await dev.flush();
    const back = Buffer.alloc(MiB);
    await dev.read(back, 3 * MiB);
    assert.ok(back.equals(data));
    await dev.close();
    assert.ok(readFileSync(drive).subarray(3 * MiB, 4 * MiB).equals(data));
    const plain = await rejection(NbdDrive.open(`nbd://127.0.0.1:${port}/sys`));
    assert.instance(plain, NbdOptionError);
    assert.match((plain as Error).message, /requires TLS/);
  } finally {
    await daemon.stop();
  }
});

test('a TCP port another program listens on is a clear error naming the address', async () => {
  if (!haveQsd) return;
  const other = createServer();
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  const port = (other.address() as { port: number }).port;
  try {
    const { daemon } = daemonFor('busy', { listen: { tcp: { host: '127.0.0.1', port } } });
    const e = await rejection(daemon.start());
    assert.instance(e, DeviceError);
    assert.match((e as Error).message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: Address already in use`));
    assert.is(daemon.running, false);
  } finally {
    await new Promise((r) => other.close(r));
  }
});

test('bad listen settings are bad input before anything starts', () => {
  assert.throws(() => new StorageDaemon({ drive: '/dev/null', runDir: dir, listen: { tcp: { host: '0.0.0.0', port: 70000 } } }), (e: unknown) => e instanceof BadInputError && /not a TCP port/.test((e as Error).message));
  assert.throws(() => new StorageDaemon({ drive: '/dev/null', runDir: dir, listen: { tcp: { host: '0.0.0.0', port: 10809, tlsPskDir: dir } } }), (e: unknown) => e instanceof BadInputError && /keys\.psk/.test((e as Error).message));
});

test.run();
