import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, writeFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { validateDaemonConfig, loadConfigFile, parseListen } from '../../firmware/controller/config.ts';
import { BadInputError } from '../../src/errors.ts';

const msg = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.instance(e, BadInputError);
    return (e as Error).message;
  }
  throw new Error('no error');
};

test('no config: the simulated rig with defaults', () => {
  const c = validateDaemonConfig(undefined);
  assert.is(c.rig, 'sim');
  assert.is(c.sync.mode, 'compare');
  assert.is(c.sim.driveSizeMiB, 64);
  assert.is(c.recovery.interrupted, 'resume');
  assert.ok(c.bootswitch.channels.muxA);
});

test('every error names the key, the value and what is allowed; unknown keys are errors', () => {
  assert.match(msg(() => validateDaemonConfig({ rigg: 'sim' })), /config: rigg is "sim"; allowed: no such key; known keys: rig, listen, drives/);
  assert.match(msg(() => validateDaemonConfig({ rig: 'real' })), /config: rig is "real"; allowed: "sim", "hardware"/);
  assert.match(msg(() => validateDaemonConfig({ sync: { chunkKiB: 3 } })), /config: sync.chunkKiB is 3; allowed: an integer from 64 to 65536/);
  assert.match(msg(() => validateDaemonConfig({ sync: { mode: 'manifest', extra: 1 } })), /sync.extra is 1; allowed: no such key/);
  assert.match(msg(() => validateDaemonConfig({ sim: { driveSizeMiB: '64' } })), /sim.driveSizeMiB is "64"; allowed: an integer/);
  assert.match(msg(() => validateDaemonConfig({ listen: 'localhost' })), /listen is "localhost"; allowed: HOST:PORT/);
  assert.match(msg(() => validateDaemonConfig({ health: { temperatureWarnC: 70, temperatureCriticalC: 60 } })), /health.temperatureWarnC is 70; allowed: at most health.temperatureCriticalC \(60\)/);
  assert.match(msg(() => validateDaemonConfig({ rig: 'hardware' })), /drives is missing; allowed: an object \{ A, B \}/);
  assert.match(msg(() => validateDaemonConfig({ rig: 'hardware', drives: { A: 'sda', B: '/dev/sdb' } })), /drives.A is "sda"; allowed: an absolute path/);
  assert.match(msg(() => validateDaemonConfig({ rig: 'hardware', drives: { A: '/dev/sda', B: '/dev/sdb' } })), /bootswitch is missing/);
  assert.match(msg(() => validateDaemonConfig({ rig: 'hardware', drives: { A: '/dev/sda', B: '/dev/sdb' }, bootswitch: { boards: {} } })), /config: bootswitch.boards is \{\}; allowed/);
  assert.match(msg(() => validateDaemonConfig({ bootswitch: { boards: {} } })), /bootswitch.boards is \{\}; allowed: timing or failover/);
  assert.match(msg(() => validateDaemonConfig({ bootswitch: { timing: { holdMs: 10 } } })), /config: bootswitch.timing.holdMs is 10; allowed: at least 500/);
  assert.match(msg(() => validateDaemonConfig({ drives: { A: '/a', B: '/b' } })), /drives is .*allowed: nothing: the simulated rig/);
});

test('two bays naming one drive are refused: by path, and by the storage a symlink reaches', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-config-drives-'));
  try {
    const a = join(dir, 'a.img');
    writeFileSync(a, Buffer.alloc(1024 * 1024));
    symlinkSync(a, join(dir, 'alias.img'));
    const board = { boards: {} };
    assert.match(msg(() => validateDaemonConfig({ rig: 'hardware', drives: { A: '/dev/disk/by-id/wwn-0x1', B: '/dev/disk/by-id/wwn-0x1' }, bootswitch: board })), /drives.B is "\/dev\/disk\/by-id\/wwn-0x1"; allowed: a drive of its own \(bay A names the same drive/);
    assert.match(msg(() => validateDaemonConfig({ rig: 'hardware', drives: { A: a, B: join(dir, 'alias.img') }, bootswitch: board })), /drives.B is ".*alias.img"; allowed: a drive of its own \(bay A names the same drive/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a hardware config with a simulated board validates', () => {
  const c = validateDaemonConfig({
    rig: 'hardware',
    drives: { A: '/dev/disk/by-id/wwn-0x1', B: '/dev/disk/by-id/wwn-0x2' },
    bootswitch: {
      boards: { io: { driver: 'sim' } },
      channels: {
        muxA: { board: 'io', pin: 1 }, muxB: { board: 'io', pin: 2 }, pwrA: { board: 'io', pin: 3 }, pwrB: { board: 'io', pin: 4 },
        atxPower: { board: 'io', pin: 5 }, atxReset: { board: 'io', pin: 6 }, powerLed: { board: 'io', pin: 7 }, button: { board: 'io', pin: 8 },
      },
    },
  });
  assert.is(c.rig, 'hardware');
  assert.is(c.drives!.A, '/dev/disk/by-id/wwn-0x1');
});

test('YAML and JSON files; syntax errors name the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-cfg-'));
  try {
    writeFileSync(join(dir, 'a.yaml'), 'sim:\n  driveSizeMiB: 32\nsync:\n  mode: manifest\n');
    const c = loadConfigFile(join(dir, 'a.yaml'));
    assert.is(c.sim.driveSizeMiB, 32);
    assert.is(c.sync.mode, 'manifest');
    writeFileSync(join(dir, 'b.json'), '{"jobs": {"history": 5}}');
    assert.is(loadConfigFile(join(dir, 'b.json')).jobs.history, 5);
    writeFileSync(join(dir, 'c.yaml'), 'sim: [unclosed\n');
    assert.match(msg(() => loadConfigFile(join(dir, 'c.yaml'))), /c.yaml is not valid YAML/);
    // A key given twice: which value was meant cannot be told, in JSON as in YAML.
    writeFileSync(join(dir, 'd.json'), '{"sync": {"mode": "compare", "mode": "manifest"}}');
    assert.match(msg(() => loadConfigFile(join(dir, 'd.json'))), /d.json.*key sync.mode is given twice/);
    writeFileSync(join(dir, 'e.yaml'), 'sync:\n  mode: compare\n  mode: manifest\n');
    assert.match(msg(() => loadConfigFile(join(dir, 'e.yaml'))), /e.yaml is not valid YAML.*unique/);
    // A file with no settings is no choice of rig (a truncated /etc/dpsr/config.yaml ran the simulated rig on the board).
    for (const [name, text] of [['empty.yaml', ''], ['comments.yaml', '# bays and relays\n\n'], ['null.yaml', 'null\n'], ['tilde.yaml', '~\n'], ['null.json', 'null']]) {
      writeFileSync(join(dir, name), text);
      assert.match(msg(() => loadConfigFile(join(dir, name))), new RegExp(`${name.replace('.', '\\.')} holds no settings`));
    }
    // YAML's special numbers are named as what they are, not all as "too large".
    writeFileSync(join(dir, 'nan.yaml'), 'sim: {driveSizeMiB: .nan}\n');
    assert.match(msg(() => loadConfigFile(join(dir, 'nan.yaml'))), /sim\.driveSizeMiB is not a number \(NaN\); allowed: an integer from 16/);
    writeFileSync(join(dir, 'inf.yaml'), 'jobs: {history: -.inf}\n');
    assert.match(msg(() => loadConfigFile(join(dir, 'inf.yaml'))), /jobs\.history is a negative number too large to hold/);
    writeFileSync(join(dir, 'sim.yaml'), 'rig: sim\n');
    assert.is(loadConfigFile(join(dir, 'sim.yaml')).rig, 'sim');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("inline mode: a data pair's export settings name a data pair, and no two exports share an address; the daemon runner is child or systemd", () => {
  const pairs = [{ id: 'system', bays: ['A', 'B'] }, { id: 'data', bays: ['C', 'D'] }];
  const ok = validateDaemonConfig({ mode: 'inline', pairs, inline: { listen: '0.0.0.0:10809', daemon: 'systemd', dataPairs: [{ pair: 'data', listen: '0.0.0.0:10810', exportName: 'disk2' }] } });
  assert.equal(ok.inline.dataPairs, [{ pair: 'data', listen: '0.0.0.0:10810', exportName: 'disk2' }]);
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', pairs, inline: { dataPairs: [{ pair: 'system' }] } })), /inline.dataPairs\[0\].pair is "system"; allowed: the id of a data pair \(data\)/);
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', pairs, inline: { dataPairs: [{ pair: 'data' }, { pair: 'data' }] } })), /inline.dataPairs\[1\].pair is "data"; allowed: a pair no other entry names/);
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', pairs, inline: { listen: ':10809', dataPairs: [{ pair: 'data', listen: ':10809' }] } })), /inline.dataPairs\[0\].listen is ":10809"; allowed: an address inline.listen does not use/);
  assert.match(msg(() => validateDaemonConfig({ inline: { daemon: 'docker' } })), /inline.daemon is "docker"; allowed: "child", "systemd"/);
});

test("inline mode: the board's USB disk (inline.usbGadget) is for the hardware rig, without TLS, on a kernel nbd device", () => {
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', inline: { usbGadget: {} } })), /inline.usbGadget is \{.*allowed: absent on the simulated rig/);
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', inline: { listen: '0.0.0.0:10809', tlsPskDir: '/etc/dpsr/psk', usbGadget: {} } })), /inline.usbGadget is .*allowed: absent with inline.tlsPskDir/);
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', inline: { usbGadget: { nbdDevice: '/dev/sda' } } })), /inline.usbGadget.nbdDevice is "\/dev\/sda"; allowed: \/dev\/nbdN/);
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', inline: { usbGadget: { serial: 'has space' } } })), /inline.usbGadget.serial is "has space"; allowed: 1 to 32 letters and digits/);
});

test('--check-config refuses what a start would: ports past 65535 in every address, a NUL in any string, a file too large to be a config', () => {
  assert.match(msg(() => validateDaemonConfig({ listen: '127.0.0.1:99999' })), /listen is "127.0.0.1:99999"; allowed: HOST:PORT with a port from 0 to 65535/);
  assert.match(msg(() => validateDaemonConfig({ api: { httpsListen: '0.0.0.0:70000' } })), /api.httpsListen is "0.0.0.0:70000"; allowed: HOST:PORT with a port from 0 to 65535/);
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', inline: { listen: '[::1]:65536' } })), /inline.listen is "\[::1\]:65536"; allowed: .*a port from 0 to 65535/);
  assert.equal(validateDaemonConfig({ listen: ':65535', mode: 'inline', inline: { listen: '/run/dpsr/nbd.sock' } }).listen, ':65535');
  assert.match(msg(() => validateDaemonConfig({ mode: 'inline', inline: { listen: '/tmp/x\u0000y.sock' } })), /inline.listen is "\/tmp\/x\\u0000y.sock"; allowed: .* without a NUL character/);
  assert.match(msg(() => validateDaemonConfig({ pairs: [{ id: 'system', bays: ['A', 'B'], label: 'a\u0000b' }] })), /pairs\[0\].label .* without a NUL/);
  const r = spawnSync(process.execPath, ['bin/dpsrd.js', '--check-config', '/dev/zero'], { encoding: 'utf8', cwd: new URL('../../', import.meta.url).pathname, timeout: 30_000 });
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /the config file \/dev\/zero is larger than 1 MiB/);
});

test('listen addresses', () => {
  assert.equal(parseListen('127.0.0.1:0', 'x'), { host: '127.0.0.1', port: 0 });
  assert.equal(parseListen(':8750', 'x'), { host: '127.0.0.1', port: 8750 });
  assert.equal(parseListen('[::1]:9', 'x'), { host: '::1', port: 9 });
  assert.throws(() => parseListen('host:99999', '--listen'), /--listen is "host:99999"/);
});

test('dpsrd does not start on a bad config: exit 2 and the message', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-cfg-'));
  try {
    writeFileSync(join(dir, 'bad.yaml'), 'sync:\n  mode: turbo\n');
    const r = spawnSync(process.execPath, ['bin/dpsrd.js', '--config', join(dir, 'bad.yaml'), '--state-dir', join(dir, 'state')], { encoding: 'utf8', cwd: new URL('../../', import.meta.url).pathname });
    assert.is(r.status, 2);
    assert.match(r.stderr, /config: sync.mode is "turbo"; allowed: "compare", "manifest"/);
    const u = spawnSync(process.execPath, ['bin/dpsrd.js', '--bogus'], { encoding: 'utf8', cwd: new URL('../../', import.meta.url).pathname });
    assert.is(u.status, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('dpsrd with a bad --listen or config listen: exit 2 naming HOST:PORT, and no state directory made', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-cfg-'));
  try {
    const cwd = new URL('../../', import.meta.url).pathname;
    const state = join(dir, 'state');
    const r = spawnSync(process.execPath, ['bin/dpsrd.js', '--listen', 'nohost', '--state-dir', state], { encoding: 'utf8', cwd });
    assert.is(r.status, 2, r.stderr);
    assert.match(r.stderr, /--listen is "nohost"; allowed: HOST:PORT/);
    assert.not.ok(existsSync(state), 'the state directory was not created');
    const e = spawnSync(process.execPath, ['bin/dpsrd.js', '--state-dir', state], { encoding: 'utf8', cwd, env: { ...process.env, DPSR_LISTEN: 'nohost' } });
    assert.is(e.status, 2, e.stderr);
    assert.match(e.stderr, /DPSR_LISTEN is "nohost"; allowed: HOST:PORT/, 'the variable is named, not an option that was not given');
    assert.not.ok(existsSync(state));
    writeFileSync(join(dir, 'port.yaml'), 'listen: 8750\n');
    const c = spawnSync(process.execPath, ['bin/dpsrd.js', '--check-config', join(dir, 'port.yaml')], { encoding: 'utf8', cwd });
    assert.is(c.status, 2, c.stderr);
    assert.match(c.stderr, /config: listen is 8750; allowed: HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:8750/);
    const level = spawnSync(process.execPath, ['bin/dpsrd.js', '--state-dir', state], { encoding: 'utf8', cwd, env: { ...process.env, DPSR_LOG_LEVEL: 'loud' } });
    assert.is(level.status, 2, level.stderr);
    assert.match(level.stderr, /DPSR_LOG_LEVEL is "loud"; allowed: fatal, error/, 'names where the bad level came from');
    assert.not.ok(existsSync(state));
    // --check-config looks at the whole command line it is given: a config called valid must start with it.
    writeFileSync(join(dir, 'ok.yaml'), 'rig: sim\n');
    const checked = spawnSync(process.execPath, ['bin/dpsrd.js', '--check-config', join(dir, 'ok.yaml'), '--log-level', 'loud'], { encoding: 'utf8', cwd });
    assert.is(checked.status, 2, checked.stderr);
    assert.match(checked.stderr, /--log-level is "loud"; allowed: fatal/);
    assert.not.match(checked.stdout, /valid/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
