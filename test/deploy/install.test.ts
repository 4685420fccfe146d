/**
 * The installed shape: production dependencies only, the compiled bins on the
 * PATH with man pages and bash completion (deploy/install.sh into a staging
 * root), the bins choosing a current build over the sources and never a stale
 * one, and the generated CLI docs in step with the parser.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { manPage, bashCompletion, MAN_PATH, COMPLETION_PATH } from '../../firmware/controller/cli/cli-docs.ts';
import { packageVersion } from '../../firmware/controller/cli/version.ts';
// @ts-expect-error: plain JavaScript without types (the bins' helper)
import { whichBuild } from '../../bin/entry.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string>; license: string; repository?: { url?: string } };

test('test and type packages are devDependencies; every production dependency is used by the shipped code', () => {
  for (const dev of ['uvu', 'fast-check', 'aedes', 'mqtt', 'mock-firmata', 'node-red-node-test-helper', 'typescript', 'tsx', '@types/node']) {
    assert.ok(pkg.devDependencies[dev], `${dev} in devDependencies`);
    assert.not.ok(pkg.dependencies[dev], `${dev} not a production dependency`);
  }
  for (const name of Object.keys(pkg.dependencies)) assert.not.match(name, /^@types\//);
  const shipped = execFileSync('git', ['ls-files', 'src', 'firmware', 'bin'], { cwd: repo, encoding: 'utf8' }).split('\n').filter((f) => /\.(ts|js|mjs)$/.test(f) && existsSync(join(repo, f)));
  const text = shipped.map((f) => readFileSync(join(repo, f), 'utf8')).join('\n');
  for (const name of Object.keys(pkg.dependencies)) {
    assert.ok(text.includes(`'${name}'`) || text.includes(`'${name}/`) || text.includes(`"${name}"`), `${name} is used by src/, firmware/ or bin/`);
  }
  assert.is(pkg.license, 'MIT');
  assert.match(readFileSync(join(repo, 'LICENSE'), 'utf8'), /^MIT License/);
  assert.ok(pkg.repository?.url, 'repository');
});

test('the bins run the build only when it is at least as new as every source, else the sources', () => {
  const root = tempDir('dpsr-which-');
  mkdirSync(join(root, 'dist/firmware/controller/cli'), { recursive: true });
  mkdirSync(join(root, 'firmware/controller/cli'), { recursive: true });
  mkdirSync(join(root, 'src/sync'), { recursive: true });
  const entry = 'firmware/controller/cli/main';
  const at = (path: string, seconds: number) => utimesSync(join(root, path), seconds, seconds);
  assert.is(whichBuild(root, entry), 'source', 'no build');
  writeFileSync(join(root, `dist/${entry}.js`), '');
  writeFileSync(join(root, `${entry}.ts`), '');
  writeFileSync(join(root, 'src/sync/engine.ts'), '');
  for (const p of [`${entry}.ts`, 'src/sync/engine.ts', 'src/sync', 'src', 'firmware/controller/cli', 'firmware/controller', 'firmware']) at(p, 1000);
  assert.is(whichBuild(root, entry), 'source', 'a build without its stamp');
  writeFileSync(join(root, 'dist/.build-stamp'), `${2000 * 1000}\n`);
  assert.is(whichBuild(root, entry), 'dist', 'a current build');
  assert.is(whichBuild(root, entry, { DPSR_FROM_SOURCE: '1' }), 'source', 'forced');
  at('src/sync/engine.ts', 3000);
  assert.is(whichBuild(root, entry), 'source', 'a source edited after the build');
  at('src/sync/engine.ts', 1000);
  at('src/sync', 3000);
  assert.is(whichBuild(root, entry), 'source', 'a file deleted after the build (its folder changed)');
  at('src/sync', 1000);
  assert.is(whichBuild(root, entry), 'dist');
  const installed = tempDir('dpsr-which-installed-');
  mkdirSync(join(installed, 'dist/firmware/controller/cli'), { recursive: true });
  writeFileSync(join(installed, `dist/${entry}.js`), '');
  assert.is(whichBuild(installed, entry), 'dist', 'an installed tree has no sources');
});

test('deploy/install.sh stages the compiled code, dpsr and dpsrd on the PATH, man pages and completion; the staged bins run with plain node', () => {
  if (!requireEnv('install staging test', { tools: ['git', 'tar'] })) return;
  const root = tempDir('dpsr-install-');
  execFileSync('bash', [join(repo, 'deploy/install.sh')], { env: { ...process.env, DESTDIR: root }, stdio: 'pipe' });
  const opt = join(root, 'opt/dpsr');
  for (const f of ['dist/firmware/controller/cli/main.js', 'dist/firmware/controller/dpsrd.js', 'dist/.build-stamp', 'LICENSE', 'package-lock.json', 'firmware/flows/appliance/settings.js']) assert.ok(existsSync(join(opt, f)), `${f} staged`);
  assert.not.ok(existsSync(join(opt, 'src/sync/engine.ts')), 'no TypeScript sources');
  assert.not.ok(existsSync(join(opt, 'firmware/controller/cli/main.ts')));
  assert.ok(existsSync(join(opt, 'dist/firmware/flows/appliance/settings.js')), 'the flows link resolves inside the installed tree');
  assert.not.ok(existsSync(join(repo, 'dist')) && readFileSync(join(repo, 'dist/.build-stamp'), 'utf8') === readFileSync(join(opt, 'dist/.build-stamp'), 'utf8'), 'the checkout\'s own dist/ was not touched');
  assert.is(readlinkSync(join(root, 'usr/local/bin/dpsr')), '/opt/dpsr/bin/dpsr.js');
  assert.is(readlinkSync(join(root, 'usr/local/bin/dpsrd')), '/opt/dpsr/bin/dpsrd.js');
  assert.ok(existsSync(join(root, 'usr/local/share/man/man1/dpsr.1')));
  assert.ok(existsSync(join(root, 'usr/local/share/man/man8/dpsrd.8')));
  assert.ok(existsSync(join(root, 'usr/local/share/bash-completion/completions/dpsr')));
  // On the board `npm ci --omit=dev` fills node_modules; here the checkout's stands in.
  symlinkSync(join(repo, 'node_modules'), join(opt, 'node_modules'));
  const version = spawnSync(process.execPath, [join(opt, 'bin/dpsr.js'), '--version'], { encoding: 'utf8' });
  assert.is(version.status, 0, version.stderr);
  assert.is(version.stdout.trim(), packageVersion());
  const help = spawnSync(process.execPath, [join(opt, 'bin/dpsr.js'), 'sync', '--help'], { encoding: 'utf8' });
  assert.match(help.stdout, /^Usage: dpsr sync/);
  const check = spawnSync(process.execPath, [join(opt, 'bin/dpsrd.js'), '--help'], { encoding: 'utf8' });
  assert.is(check.status, 0, check.stderr);
  // A command that loads the whole engine, compiled.
  const status = spawnSync(process.execPath, [join(opt, 'bin/dpsr.js'), 'status', '--json', '--state-dir', tempDir('dpsr-empty-state-')], { encoding: 'utf8' });
  assert.is(status.status, 0, status.stderr);
  assert.equal(JSON.parse(status.stdout).pairs, []);
});

test('the man page and the bash completion are generated from the parser and current (npm run docs:cli)', () => {
  assert.is(readFileSync(MAN_PATH, 'utf8'), manPage(packageVersion()), 'man/dpsr.1 is stale: npm run docs:cli');
  assert.is(readFileSync(COMPLETION_PATH, 'utf8'), bashCompletion(), 'completions/dpsr.bash is stale: npm run docs:cli');
  const dpsrd = spawnSync(process.execPath, [join(repo, 'bin/dpsrd.js'), '--help'], { encoding: 'utf8' }).stdout;
  const page = readFileSync(join(repo, 'man/dpsrd.8'), 'utf8').replace(/\\-/g, '-');
  for (const option of new Set(dpsrd.match(/--[a-z][a-z-]+/g) ?? [])) assert.ok(page.includes(option), `man/dpsrd.8 documents ${option}`);
  for (const line of dpsrd.split('\n')) assert.ok(line.length <= 80, `dpsrd --help fits 80 columns: ${line}`);
  const version = spawnSync(process.execPath, [join(repo, 'bin/dpsrd.js'), '--version'], { encoding: 'utf8' });
  assert.is(version.status, 0, version.stderr);
  assert.is(version.stdout.trim(), packageVersion());
});

test('bash completes commands, a command\'s options and option values', () => {
  if (!requireEnv('completion test', { tools: ['bash'] })) return;
  const complete = (line: string) => {
    const words = line.split(' ');
    const script = `source ${COMPLETION_PATH}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _dpsr; printf '%s\\n' "\${COMPREPLY[@]}"`;
    return execFileSync('bash', ['-c', script], { encoding: 'utf8' }).trim().split('\n');
  };
  assert.ok(complete('dpsr sy').includes('sync'));
  const syncOpts = complete('dpsr sync --');
  for (const o of ['--partition', '--mode', '--journal-budget', '--url', '--no-wait', '--help']) assert.ok(syncOpts.includes(o), o);
  assert.not.ok(complete('dpsr drives --').includes('--partition'));
  assert.equal(complete('dpsr sync --mode '), ['compare', 'manifest']);
});

test.run();
