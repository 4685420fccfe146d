/** `npm run bench`'s runner: --help lists the benchmarks; a name or option it does not know is exit 2 and runs nothing. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { cwd: root, encoding: 'utf8' });
const names = readdirSync(new URL('../../bench/', import.meta.url))
  .filter((f) => f.endsWith('.bench.ts'))
  .map((f) => f.replace(/\.bench\.ts$/, ''));

test('--help lists every benchmark by the name that selects it, in 80 columns', () => {
  const r = run('--help');
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Usage: npm run bench \[-- NAME\.\.\.\]/);
  for (const n of names) assert.match(r.stdout, new RegExp(`^  ${n} `, 'm'), n);
  for (const line of r.stdout.split('\n')) assert.ok(line.length <= 80, line);
  assert.not.match(r.stdout, /^## /m, 'no benchmark ran');
});

test('a name that matches no benchmark: exit 2 naming it and the known ones, nothing run', () => {
  const r = run('cli-startp');
  assert.is(r.status, 2);
  assert.match(r.stderr, /no benchmark named cli-startp/);
  assert.match(r.stderr, /known: .*cli-startup/);
  assert.is(r.stdout, '');
});

test('an unknown option: exit 2, nothing run', () => {
  const r = run('--fast');
  assert.is(r.status, 2);
  assert.match(r.stderr, /unknown option --fast/);
  assert.is(r.stdout, '');
});

test.run();
