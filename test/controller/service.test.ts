/**
 * dpsrd as a systemd service: readiness once the API listens and a watchdog
 * fed from the event loop (checked against a fake NOTIFY_SOCKET that records
 * each datagram with its sender's credentials), log lines in the form each
 * place needs, and `--check-config`.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync, openSync, closeSync, fstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call, waitFor } from './support/harness.ts';
import { requireEnv } from '../support/require.ts';
import { prettyLine, resolveLogFormat, syslogPriority, logDestination } from '../../firmware/controller/log-output.ts';
import { serviceNotifier } from '../../firmware/controller/systemd.ts';

const repo = new URL('../../', import.meta.url).pathname;
const dirs: string[] = [];
const children: ChildProcess[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'dpsr-service-'));
  dirs.push(d);
  return d;
};
test.after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A unix datagram listener (python3: Node has none) printing "pid=<sender pid> <fields>" per datagram. */
const LISTENER = `
import socket, sys, struct, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print("listening", flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(64))
    pid = None
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", data[:12])[0]
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            for i in range(len(data) // 4):
                os.close(struct.unpack("i", data[i * 4:i * 4 + 4])[0])
    print("pid=%s %s" % (pid, msg.decode().replace("\\n", " ")), flush=True)
`;

function fakeNotifySocket(dir: string) {
  const path = join(dir, 'notify.sock');
  const p = spawn('python3', ['-c', LISTENER, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(p);
  const lines: string[] = [];
  let buf = '';
  p.stdout!.setEncoding('utf8');
  p.stdout!.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  let markers = 0;
  /** Resolves once every datagram sent before the call is in `lines`: datagrams are read in order, so a marker sent now comes after them. */
  const drained = async () => {
    const marker = `STATUS=drained-${++markers}`;
    spawnSync('systemd-notify', [marker], { env: { ...process.env, NOTIFY_SOCKET: path } });
    await waitFor(() => lines.some((l) => l.endsWith(` ${marker}`)), 10_000, `the marker ${marker} through the fake notify socket`);
  };
  return { path, lines, drained, ready: waitFor(() => lines.includes('listening'), 10_000, 'the fake notify socket') };
}

/** Whether every child of `pid` has exited (a stopped parent leaves them zombies): each systemd-notify it started has sent its datagram. */
function childrenDone(pid: number): boolean {
  const tasks = readdirSync(`/proc/${pid}/task`);
  const kids = tasks.flatMap((t) => {
    try {
      return readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean);
    } catch {
      return []; // a thread that ended meanwhile
    }
  });
  return kids.every((k) => {
    try {
      return /^\d+ \(.*\) Z /.test(readFileSync(`/proc/${k}/stat`, 'utf8'));
    } catch {
      return true; // gone already
    }
  });
}

test('under systemd: READY=1 once the API answers, WATCHDOG=1 from the event loop, STOPPING=1, all credited to dpsrd', async () => {
  if (!requireEnv('the sd_notify test', { tools: ['python3', 'systemd-notify'], root: true })) return;
  const dir = tempDir();
  const sock = fakeNotifySocket(dir);
  await sock.ready;
  const state = join(dir, 'state');
  const d = spawn(process.execPath, ['bin/dpsrd.js', '--state-dir', state, '--listen', '127.0.0.1:0'], {
    cwd: repo,
    env: { ...process.env, NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: '400000', DPSR_LOG_FORMAT: 'json' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(d);
  let out = '';
  d.stdout!.on('data', (c) => (out += c));
  d.stderr!.on('data', (c) => (out += c));
  const ready = await waitFor(() => sock.lines.find((l) => l.includes('READY=1')), 30_000, `READY=1 (output: ${out})`);
  const url = /"url":"(http:[^"]+)"/.exec(out)?.[1];
  assert.ok(url, 'the daemon logged its URL before it told systemd it is ready');
  assert.is((await call(url!, 'GET', '/api/health')).status, 200);
  assert.ok(ready.startsWith(`pid=${d.pid} `), `READY=1 is sent as dpsrd (pid ${d.pid}): ${ready}`);
  assert.match(ready, /STATUS=API at http:/);

  const pings = () => sock.lines.filter((l) => l.includes('WATCHDOG=1')).length;
  await waitFor(() => pings() >= 3, 10_000, 'three watchdog pings');
  assert.ok(sock.lines.filter((l) => l.includes('WATCHDOG=1')).every((l) => l.startsWith(`pid=${d.pid} `)));
  // A stopped event loop sends nothing: this is what lets systemd restart a hung daemon.
  d.kill('SIGSTOP');
  // A ping whose helper was started just before the stop still arrives, however long a loaded machine takes to run it.
  await waitFor(() => childrenDone(d.pid!), 10_000, "the notify helpers dpsrd started before it was stopped to end");
  await sock.drained();
  const frozen = pings();
  await new Promise((r) => setTimeout(r, 1000));
  await sock.drained();
  assert.is(pings(), frozen, 'no ping while the process is stopped');
  d.kill('SIGCONT');
  await waitFor(() => pings() > frozen, 10_000, 'pings again after SIGCONT');

  const exited = new Promise((r) => d.on('exit', r));
  d.kill('SIGTERM');
  await waitFor(() => sock.lines.some((l) => l.includes('STOPPING=1')), 10_000, 'STOPPING=1');
  await exited;
});

test('the notifier takes NOTIFY_SOCKET out of the environment children inherit; no watchdog for another pid', () => {
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1' };
  const n = serviceNotifier({ env, pid: 4242, command: '/bin/true' });
  assert.is(n.active, true);
  assert.is(n.watchdogIntervalMs, null, 'WATCHDOG_PID names another process');
  assert.equal(env, {});
  n.close();
  const mine = serviceNotifier({ env: { NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000' }, pid: 4242, command: '/bin/true' });
  assert.is(mine.watchdogIntervalMs, 15_000, 'half of WatchdogSec');
  mine.close();
  const none = serviceNotifier({ env: {} });
  assert.is(none.active, false);
});

test('the unit waits for readiness, has a watchdog, and does not wait for udev to settle', () => {
  const unit = readFileSync(join(repo, 'deploy/dpsrd.service'), 'utf8');
  assert.match(unit, /^Type=notify$/m);
  assert.match(unit, /^NotifyAccess=all$/m);
  assert.match(unit, /^WatchdogSec=\d+/m);
  assert.not.match(unit, /^(After|Wants|Requires)=.*udev-settle/m);
  if (!requireEnv('checking the unit with systemd-analyze', { tools: ['systemd-analyze'] })) return;
  // The installed code is not here: the check runs on a copy whose ExecStart is a binary that exists.
  const dir = tempDir();
  writeFileSync(join(dir, 'dpsrd.service'), unit.replace(/^ExecStart=\S+/m, 'ExecStart=/bin/true'));
  const r = spawnSync('systemd-analyze', ['verify', join(dir, 'dpsrd.service')], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stderr.trim(), '', 'systemd-analyze has nothing to say about the unit');
});

test('log lines: syslog priorities under journald, one readable line on a terminal', () => {
  assert.equal([10, 20, 30, 40, 50, 60].map(syslogPriority), [7, 7, 6, 4, 3, 2]);
  const line = JSON.stringify({ level: 40, time: Date.parse('2026-01-02T03:04:05.678Z'), svc: 'dpsrd', job: '3', msg: 'the standby is inconsistent', err: { message: 'boom', stack: 'x' } });
  assert.is(prettyLine(line), '03:04:05.678 WARN  the standby is inconsistent job=3 err="boom"\n');
  assert.is(prettyLine('not json'), 'not json\n');
  // JOURNAL_STREAM names the device and inode of stdout when systemd connected it to the journal.
  const dir = tempDir();
  const file = join(dir, 'journal');
  const fd = openSync(file, 'w');
  try {
    const st = fstatSync(fd);
    assert.is(resolveLogFormat(undefined, fd, { JOURNAL_STREAM: `${st.dev}:${st.ino}` }), 'journal');
    assert.is(resolveLogFormat(undefined, fd, { JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }), 'json', 'stdout redirected elsewhere');
    assert.is(resolveLogFormat('pretty', fd, {}), 'pretty');
    assert.throws(() => resolveLogFormat('xml', fd, {}), /--log-format is "xml"; allowed: auto, json, pretty, journal/);
    const dest = logDestination('journal', fd);
    dest.write(`${JSON.stringify({ level: 50, msg: 'a' })}\n`);
    dest.write(`${JSON.stringify({ level: 30, msg: 'b' })}\n`);
  } finally {
    closeSync(fd);
  }
  assert.is(readFileSync(file, 'utf8'), '<3>{"level":50,"msg":"a"}\n<6>{"level":30,"msg":"b"}\n');
});

test('dpsrd --check-config: 0 for a valid file, 2 naming the key for a bad one, nothing started', () => {
  const dir = tempDir();
  const run = (file: string) => spawnSync(process.execPath, ['bin/dpsrd.js', '--check-config', file], { cwd: repo, encoding: 'utf8', env: { ...process.env, DPSR_STATE_DIR: join(dir, 'state') } });
  const good = run(join(repo, 'deploy/config.example.yaml'));
  assert.is(good.status, 0, good.stderr);
  assert.match(good.stdout, /config\.example\.yaml: valid \(rig hardware/);
  writeFileSync(join(dir, 'bad.yaml'), 'rig: sim\nsync:\n  chunkKiB: 3\n');
  const bad = run(join(dir, 'bad.yaml'));
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /sync\.chunkKiB is 3; allowed: an integer from 64 to 65536/);
  const missing = run(join(dir, 'none.yaml'));
  assert.is(missing.status, 2);
  assert.match(missing.stderr, /cannot read the config file/);
  assert.throws(() => readFileSync(join(dir, 'state', 'api-token')), /ENOENT/, 'no state directory was made');
});

test.run();
