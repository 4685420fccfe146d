/**
 * `dpsr`'s command line as an operator meets it: per-command help, version,
 * usage errors (exit 2 with the command's usage), the rack details before a
 * drive is overwritten, and the progress bar on a real 80-column terminal
 * (tmux), Ctrl-C included.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dpsr, DPSR_BIN } from '../support/cli.ts';
import { partitionedImage, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { buildProgram } from '../../firmware/controller/cli/program.ts';
import { formatEta, progressLine } from '../../firmware/controller/cli/terminal.ts';
import { describeDrive } from '../../firmware/controller/cli/drive-summary.ts';
import type { Progress } from '../../src/sync/index.ts';

const dir = tempDir();
const MiB = 1024 * 1024;
const env = { DPSR_STATE_DIR: join(dir, 'state') };
const version = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version as string;
const commands = buildProgram(async () => 0, { code: 0 }).commands.map((c) => c.name()).filter((n) => n !== 'help');

test('every command has its own --help with its usage and options', () => {
  assert.ok(commands.length >= 13, commands.join(' '));
  for (const c of commands) {
    const r = dpsr([c, '--help']);
    assert.is(r.code, 0, `${c} --help: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^Usage: dpsr ${c} `), c);
    assert.match(r.stdout, /--json/, c);
    assert.match(r.stdout, /Exit codes: 0 done/, c);
  }
  assert.match(dpsr(['sync', '--help']).stdout, /--journal-budget <size>/);
  assert.match(dpsr(['help', 'verify']).stdout, /^Usage: dpsr verify /);
});

test('--version prints the package version', () => {
  const r = dpsr(['--version']);
  assert.is(r.code, 0);
  assert.is(r.stdout.trim(), version);
});

test('an unknown option is exit 2 with that command\'s usage; under --json an error object too', () => {
  const r = dpsr(['sync', 'a.img', 'b.img', '--bogus']);
  assert.is(r.code, 2);
  assert.match(r.stderr, /unknown option '--bogus'/);
  assert.match(r.stderr, /Usage: dpsr sync \[options\] <source> <target>/);
  const j = dpsr(['clone', '--frobnicate', '--json']);
  assert.is(j.code, 2);
  assert.is(j.json().error.kind, 'bad-input');
  assert.is(dpsr(['no-such-command']).code, 2);
  const bareUrl = dpsr(['status', '--url', '127.0.0.1:8750']);
  assert.is(bareUrl.code, 2);
  assert.match(bareUrl.stderr, /--url is "127\.0\.0\.1:8750"; allowed: http:\/\/HOST:PORT\n  for example --url http:\/\/127\.0\.0\.1:8750/);
  // A URL no request can be made to is bad usage (exit 2) naming what is wrong, not "no dpsrd answers" (exit 1).
  for (const [url, why] of [
    ['http://127.0.0.1:99999', /--url is "http:\/\/127\.0\.0\.1:99999", which is not a valid URL \(a port is 1 to 65535\)/],
    ['http://user:pw@127.0.0.1:8750', /--url "http:\/\/user:\*\*\*@127\.0\.0\.1:8750" holds a user name or password; the daemon takes its token/],
    ['http://[::1', /is not a valid URL/],
  ] as const) {
    const r = dpsr(['status', '--url', url, '--token-file', '/dev/null']);
    assert.is(r.code, 2, `${url}: ${r.stderr}`);
    assert.match(r.stderr, why);
    assert.not.match(r.stderr, /no dpsrd answers|pw@/);
  }
  const emptyId = dpsr(['jobs', '--url', 'http://127.0.0.1:1', '--token-file', '/dev/null', '']);
  assert.is(emptyId.code, 2, emptyId.stderr);
  assert.match(emptyId.stderr, /the job id is empty/);
  const typo = dpsr(['help', 'synk']);
  assert.is(typo.code, 2);
  assert.match(typo.stderr, /unknown command 'synk'/);
  assert.match(typo.stderr, /Did you mean sync\?/);
  const help = dpsr(['help', 'sync']);
  assert.is(help.code, 0);
  assert.match(help.stdout, /Usage: dpsr sync/);
  assert.is(dpsr([]).code, 2, 'no command is bad usage');
});

test('an option that takes one value, given twice, is exit 2 naming it before anything runs; a repeatable one collects its values', () => {
  for (const args of [
    ['sync', 'a.img', 'b.img', '--mode', 'compare', '--mode', 'manifest'],
    ['sync', 'a.img', 'b.img', '--journal-budget=1M', '--journal-budget', '2M'],
    ['status', '--state-dir', join(dir, 's1'), '--state-dir', join(dir, 's2')],
    ['status', '--url', 'http://127.0.0.1:1', '--url', 'http://127.0.0.1:2'],
  ]) {
    const r = dpsr(args, env);
    assert.is(r.code, 2, args.join(' '));
    assert.match(r.stderr, /option '--[a-z-]+' is given twice; which value was meant cannot be told/, args.join(' '));
  }
  const j = dpsr(['verify', 'a.img', 'b.img', '--sector-size', '512', '--sector-size', '4096', '--json'], env);
  assert.is(j.code, 2);
  assert.match(j.json().error.message, /--sector-size' is given twice/);
  const collected = dpsr(['sync', join(dir, 'none-a.img'), join(dir, 'none-b.img'), '--partition', '1', '--partition', '2', '--yes'], env);
  assert.not.match(collected.stderr, /given twice/);
});

test('a flag and its negation given together (--window --no-window) is exit 2 naming both before anything runs; one flag twice is harmless', () => {
  for (const args of [
    ['sync', '--url', 'http://127.0.0.1:1', '--window', '--no-window', '--yes'],
    ['verify', '--url', 'http://127.0.0.1:1', '--no-window', '--window'],
  ]) {
    const r = dpsr(args, env);
    assert.is(r.code, 2, args.join(' '));
    assert.match(r.stderr, /options '--(no-)?window' and '--(no-)?window' contradict each other; give one/, r.stderr);
    assert.not.match(r.stderr, /ECONNREFUSED|cannot reach/, 'refused before anything runs');
  }
  const twice = dpsr(['status', '--state-dir', join(dir, 'empty-state'), '--json', '--json'], env);
  assert.is(twice.code, 0, twice.stderr);
});

test('options before the command still work, as they always did', () => {
  const r = dpsr(['--json', 'status', '--state-dir', join(dir, 'empty-state')]);
  assert.is(r.code, 0, r.stderr);
  assert.equal(r.json().pairs, []);
  const remote = dpsr(['--url', 'http://127.0.0.1:1', '--token-file', '/dev/null', 'status']);
  assert.is(remote.code, 2);
  assert.match(remote.stderr, /does not hold an API token/, 'reached the remote status');
  const help = dpsr(['--url', 'http://127.0.0.1:1', '--help']);
  assert.is(help.code, 0);
  assert.match(help.stdout, /^Usage: dpsr /);
});

test('arguments and --url-only parts are checked before anything runs', () => {
  const one = dpsr(['sync', join(dir, 'a.img')], env);
  assert.is(one.code, 2);
  assert.match(one.stderr, /sync takes a source and a target, got 1/);
  const jobs = dpsr(['jobs'], env);
  assert.is(jobs.code, 2);
  assert.match(jobs.stderr, /jobs works through the daemon and needs --url/);
  const noWait = dpsr(['verify', 'a', 'b', '--no-wait'], env);
  assert.is(noWait.code, 2);
  assert.match(noWait.stderr, /--no-wait goes only with --url/);
  const remoteArgs = dpsr(['sync', 'a', 'b', '--url', 'http://127.0.0.1:1', '--token-file', '/dev/null'], env);
  assert.is(remoteArgs.code, 2);
  assert.match(remoteArgs.stderr, /takes no arguments/);
});

test('a file as --state-dir and a device as --token-file are bad input named so, at once', () => {
  const file = join(dir, 'not-a-dir');
  writeFileSync(file, 'x');
  for (const args of [['status'], ['forget', 'abc123']]) {
    const r = dpsr([...args, '--state-dir', file], env);
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, /the state directory .*not-a-dir is not a directory/);
    assert.not.match(r.stderr, /damaged/);
  }
  const t = spawnSync(process.execPath, [DPSR_BIN, 'status', '--url', 'http://127.0.0.1:1', '--token-file', '/dev/zero'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(t.status, 2, t.stderr);
  assert.match(t.stderr, /\/dev\/zero is not an API token file: it holds more than 4 KiB/);
});

test('numbers past what a byte offset can hold are bad input named as typed, never rounded', () => {
  const at = dpsr(['migrate', 'a.img', '--partition', '1', 'b.img', '--at', '99999999999999999999999', '--yes'], env);
  assert.is(at.code, 2, at.stderr);
  assert.match(at.stderr, /--at "99999999999999999999999" is too large/);
  assert.not.match(at.stderr, /e\+/, 'no float notation');
  const budget = dpsr(['sync', 'a.img', 'b.img', '--journal-budget', '99999999999999999999T', '--yes'], env);
  assert.is(budget.code, 2, budget.stderr);
  assert.match(budget.stderr, /--journal-budget "99999999999999999999T" is too large/);
  const part = dpsr(['sync', 'a.img', 'b.img', '--partition', '99999999999999999999', '--yes'], env);
  assert.is(part.code, 2, part.stderr);
  assert.match(part.stderr, /--partition 99999999999999999999 is not a partition number/);
});

test('the progress line fits 77 columns and speaks in human units, whatever the numbers', () => {
  const cases: Progress[] = [
    { phase: 'recovering', bytesDone: 0, bytesTotal: 0, bytesWritten: 0, rate: 0, etaSeconds: null, percent: 0 },
    { phase: 'copying', bytesDone: 1_234_567_890_123, bytesTotal: 16 * 1024 ** 4 - 1, bytesWritten: 5, rate: 1023.777 * MiB, etaSeconds: 99 * 3600 + 59 * 60, percent: 7.3 },
    { phase: 'verifying', bytesDone: 511, bytesTotal: 1023, bytesWritten: 0, rate: 333.3333, etaSeconds: 1.2, percent: 49.95 },
  ];
  for (const p of cases) {
    const line = progressLine(p);
    assert.ok(line.length <= 77, `${line.length}: ${line}`);
    assert.not.match(line, /\d{5,}/, `no raw byte counts: ${line}`);
    assert.match(line, / of \d+(\.\d+)? (B|KiB|MiB|GiB|TiB)  \d+(\.\d+)? (B|KiB|MiB|GiB)\/s  ETA /, line);
  }
  assert.match(progressLine(cases[1]!), /ETA 99h59m$/);
  assert.is(formatEta(null), '--');
  assert.is(formatEta(61), '1m01s');
  assert.is(progressLine({ ...cases[2]!, percent: 100 }, 60).length, 60);
});

test('before overwriting, the target is described as an operator checks it: model, serial, bytes and GB, partitions, mounts', async () => {
  if (!requireEnv('drive summary test', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const img = partitionedImage(dir, 'summary.img', { scheme: 'gpt', sizeMiB: 32 });
  const lines = (await describeDrive(img.path, 'TARGET')).join('\n');
  assert.match(lines, /^TARGET: /);
  assert.match(lines, /model {3}image file/);
  assert.match(lines, /size {4}33554432 bytes \(0\.0 GB, 32\.0 MiB\)/);
  assert.match(lines, /table {3}GPT, 1: [\d.]+ MiB ext4.*, 2: [\d.]+ MiB vfat/);
  assert.match(lines, /mounted nothing/);
  const missing = (await describeDrive(join(dir, 'nope.img'), 'TARGET')).join('\n');
  assert.match(missing, /no drive at/);
});

/** Runs `command` in a detached tmux session of 80×24 and returns a function that captures the screen. */
function tmux(name: string, command: string) {
  execFileSync('tmux', ['new-session', '-d', '-s', name, '-x', '80', '-y', '24', command]);
  return {
    screen: () => execFileSync('tmux', ['capture-pane', '-p', '-t', name], { encoding: 'utf8' }),
    keys: (...keys: string[]) => execFileSync('tmux', ['send-keys', '-t', name, ...keys]),
    kill: () => spawnSync('tmux', ['kill-session', '-t', name]),
  };
}

async function until(what: string, fn: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('on an 80-column terminal: rack details and prompt, one bar line, Ctrl-C as a clean line of its own', async () => {
  if (!requireEnv('terminal test', { tools: ['tmux'] })) return;
  const b = sparseImage(join(dir, 'tty-b.img'), 2048 * MiB);
  const big = sparseImage(join(dir, 'tty-big.img'), 2048 * MiB);
  const session = `dpsr-test-${process.pid}`;
  const t = tmux(session, `DPSR_STATE_DIR=${env.DPSR_STATE_DIR} ${process.execPath} ${DPSR_BIN} clone ${big} ${b}; echo "EXIT $?"; sleep 60`);
  try {
    await until('the prompt', () => /Type "yes" to continue/.test(t.screen()));
    const prompt = t.screen();
    assert.match(prompt, /TARGET, WILL BE OVERWRITTEN: .*tty-b\.img/);
    assert.match(prompt, /size {4}2147483648 bytes \(2\.1 GB, 2\.00 GiB\)/);
    assert.match(prompt, /mounted nothing/);
    t.keys('yes', 'Enter');
    await until('the bar', () => /copying +\[#*\.*\] +[\d.]+% of 2\.00 GiB/.test(t.screen()));
    t.keys('C-c');
    await until('the end', () => /EXIT \d+/.test(t.screen()));
    const screen = t.screen();
    const lines = screen.split('\n');
    for (const l of lines) assert.ok(l.length <= 80, `line of ${l.length} columns: ${l}`);
    const bars = lines.filter((l) => /^(copying|preparing|flushing) +\[/.test(l));
    assert.ok(bars.length >= 1, screen);
    for (const l of bars) assert.match(l, /^\w+ +\[[#.]+\] +[\d.]+% of 2\.00 GiB {2}[\d.]+ (B|KiB|MiB|GiB)\/s {2}ETA \S+$/, 'a bar line holds the bar only');
    assert.ok(lines.some((l) => /^stopping after the current chunk/.test(l)), `the Ctrl-C note starts its own line:\n${screen}`);
    assert.match(screen, /EXIT 1/);
  } finally {
    t.kill();
  }
});

test.run();
