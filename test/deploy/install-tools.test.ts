/**
 * scripts/install-tools.sh on machines like a fresh Debian 12: the preflight
 * names what is missing (an old Node, no sudo) and how to get it before
 * anything is installed; a user with sudo gets the script run again through
 * sudo; the README's commands are the ones CI runs.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../support/images.ts';
import { isRoot, requireEnv } from '../support/require.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const script = join(repo, 'scripts/install-tools.sh');
const dir = tempDir('dpsr-tools-');
chmodSync(dir, 0o755); // the stand-ins must run as an unprivileged user too

/** A folder of stand-in commands put first on PATH; each records that it ran. */
function fakes(name: string, commands: Record<string, string>): { path: string; ran: (cmd: string) => string | null } {
  const bin = join(dir, name);
  mkdirSync(bin, { recursive: true });
  chmodSync(bin, 0o777); // written by stand-ins run as an unprivileged user
  for (const [cmd, body] of Object.entries(commands)) {
    writeFileSync(join(bin, cmd), `#!/bin/sh\necho "$0 $*" >> ${bin}/${cmd}.ran\n${body}\n`);
    chmodSync(join(bin, cmd), 0o755);
  }
  return { path: bin, ran: (cmd) => (existsSync(join(bin, `${cmd}.ran`)) ? readFileSync(join(bin, `${cmd}.ran`), 'utf8') : null) };
}

const run = (env: Record<string, string>, args: string[] = [], asUser = false) => {
  const argv = asUser ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'bash', script, ...args] : ['bash', script, ...args];
  return spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, ...env } });
};

test('an old Node stops the preflight with where to get Node 20, before apt-get runs', () => {
  const f = fakes('old-node', { node: 'case "$1" in -p) echo 18;; --version) echo v18.19.0;; esac', 'apt-get': 'exit 0' });
  const r = run({ PATH: `${f.path}:${process.env.PATH}` });
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, /node v18\.19\.0 is too old/);
  assert.match(r.stderr, /Node\.js 20 or newer is needed \(Debian 12's own nodejs package is 18\)/);
  assert.match(r.stderr, /deb\.nodesource\.com\/setup_20\.x/);
  assert.is(f.ran('apt-get'), null, 'nothing installed');
});

test('no node at all is named too', () => {
  const f = fakes('no-node', { 'apt-get': 'exit 0' });
  // A PATH with the shell tools but without the folder node lives in.
  const tools = fakes('tools', {});
  for (const t of ['id', 'sed', 'cat']) spawnSync('ln', ['-sf', spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim(), join(tools.path, t)]);
  const r = spawnSync('/bin/bash', [script], { encoding: 'utf8', env: { PATH: `${f.path}:${tools.path}` } });
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, /node is not installed/);
  assert.is(f.ran('apt-get'), null);
});

test('a user without root and without sudo is told how to go on; with sudo the script runs itself through it', () => {
  if (!requireEnv('install-tools user test', { root: true, tools: ['setpriv'] })) return;
  assert.ok(isRoot);
  const none = fakes('user-no-sudo', { 'apt-get': 'exit 0' });
  const r = run({ PATH: `${none.path}:${process.env.PATH!.split(':').filter((p) => !existsSync(join(p, 'sudo'))).join(':')}` }, [], true);
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, /not root, and sudo is not installed: run this as root \(su -\)/);
  const withSudo = fakes('user-sudo', { sudo: 'exit 0', 'apt-get': 'exit 0' });
  const s = run({ PATH: `${withSudo.path}:${process.env.PATH}` }, ['--tests'], true);
  assert.is(s.status, 0, s.stderr);
  assert.match(withSudo.ran('sudo') ?? '', new RegExp(`sudo -- ${script.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} --tests`));
  assert.is(withSudo.ran('apt-get'), null, 'apt-get only runs as root');
});

test('as root the packages native modules need are installed; bad arguments are exit 2', () => {
  const f = fakes('root-apt', { 'apt-get': 'exit 0' });
  if (!isRoot) return void console.log('SKIP: the root path of install-tools.sh needs root');
  const r = run({ PATH: `${f.path}:${process.env.PATH}` });
  assert.is(r.status, 0, r.stderr);
  const apt = f.ran('apt-get') ?? '';
  assert.match(apt, /install .*build-essential python3 /);
  assert.not.match(apt, /qemu-system-x86/, 'test tools only with --tests');
  assert.is(run({ PATH: `${f.path}:${process.env.PATH}` }, ['--bogus']).status, 2);
});

test('.ci/run runs the README\'s two commands, taken from the README itself', () => {
  const r = spawnSync('bash', [join(repo, 'scripts/readme-commands.sh')], { encoding: 'utf8', cwd: repo });
  assert.is(r.status, 0, r.stderr);
  const commands = r.stdout.trim().split('\n');
  assert.is(commands.length, 2, r.stdout);
  assert.match(commands[0]!, /^scripts\/install-tools\.sh && npm ci && npm start$/);
  assert.match(commands[1]!, /^scripts\/install-tools\.sh --tests && npm test$/);
  assert.not.match(r.stdout, /sudo/, 'no sudo: a root shell on a minimal Debian has none; the script asks for it itself');
  const ci = readFileSync(join(repo, '.ci/run'), 'utf8');
  assert.match(ci, /scripts\/readme-commands\.sh/);
});

test.run();
