// Which code the bins run: the compiled build in dist/ (plain node, fast start) when it is
// at least as new as every source file, else the TypeScript sources through tsx. An
// installed tree (deploy/install.sh) has no sources, so it always runs dist/; a checkout
// with no build, or with sources edited since the build, runs the sources, so a stale
// build never runs by mistake. DPSR_FROM_SOURCE=1 forces the sources.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SOURCE_DIRS = ['src', 'firmware/controller', 'firmware/console'];
const SOURCE_FILE = /\.(ts|tsx|css|html)$/;

/** Newest modification time (ms) of the source files (.ts, and the console's .tsx, .css, .html) and folders below dir (a deletion changes its folder's time). */
function newest(dir) {
  let max = statSync(dir).mtimeMs;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) max = Math.max(max, newest(p));
    else if (SOURCE_FILE.test(e.name)) max = Math.max(max, statSync(p).mtimeMs);
  }
  return max;
}

/**
 * 'dist' or 'source' for the module `entry` (a path below the package root without
 * extension, e.g. 'firmware/controller/cli/main'); `root` is the package's folder.
 */
export function whichBuild(root, entry, env = process.env) {
  const dist = join(root, 'dist', `${entry}.js`);
  const source = join(root, `${entry}.ts`);
  if (!existsSync(dist)) return 'source';
  if (!existsSync(source)) return 'dist';
  if (env.DPSR_FROM_SOURCE === '1') return 'source';
  let stamp;
  try {
    stamp = Number(readFileSync(join(root, 'dist', '.build-stamp'), 'utf8'));
  } catch {
    return 'source';
  }
  for (const d of SOURCE_DIRS) if (existsSync(join(root, d)) && newest(join(root, d)) > stamp) return 'source';
  return 'dist';
}

/** Imports the entry module from the build or the sources (see whichBuild). */
export async function run(entry) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  if (whichBuild(root, entry) === 'dist') return import(join(root, 'dist', `${entry}.js`));
  try {
    const { register } = await import('tsx/esm/api');
    register();
  } catch {
    process.stderr.write(`${entry.split('/').pop()}: no build in ${join(root, 'dist')} and no tsx to run the sources: run \`npm ci && npm run build\`\n`);
    process.exit(1);
  }
  return import(join(root, `${entry}.ts`));
}
