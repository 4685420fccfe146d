#!/usr/bin/env node
// `npm run build`: compiles src/ and firmware/controller/ to JavaScript in dist/
// (tsconfig.build.json), so the installed dpsr and dpsrd start with plain node,
// and bundles the operator console (firmware/console) into dist/firmware/console.
// dist/.build-stamp holds the time the build started: bin/entry.js runs the
// sources instead whenever one of them is newer than that (a stale build is
// never run by mistake). Usage: node scripts/build.mjs [--out DIR]
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const outIndex = args.indexOf('--out');
const out = outIndex >= 0 ? resolve(args[outIndex + 1] ?? '') : join(root, 'dist');
if ((outIndex >= 0 && !args[outIndex + 1]) || args.length !== (outIndex >= 0 ? 2 : 0)) {
  console.error('usage: node scripts/build.mjs [--out DIR]');
  process.exit(2);
}

const started = Date.now();
let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  console.error('build: typescript is not installed: run `npm ci` (the build needs the devDependencies)');
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
try {
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', out], { stdio: 'inherit', cwd: root });
} catch {
  console.error('build: tsc failed; nothing usable in ' + out);
  rmSync(out, { recursive: true, force: true });
  process.exit(1);
}
// The controller starts Node-RED from firmware/flows (plain JavaScript, not compiled) by a path
// relative to itself; a link keeps that path valid in dist/ (which sits in the package's root).
mkdirSync(join(out, 'firmware'), { recursive: true });
symlinkSync('../../firmware/flows', join(out, 'firmware/flows'));
// The bundler is the daemon's own (console-server.ts), from the build just made.
try {
  const { writeConsoleBundle } = await import(pathToFileURL(join(out, 'firmware/controller/console-server.js')).href);
  const esbuild = await import(pathToFileURL(createRequire(join(root, 'package.json')).resolve('esbuild')).href);
  await writeConsoleBundle(join(root, 'firmware/console'), join(out, 'firmware/console'), esbuild.default ?? esbuild);
} catch (e) {
  console.error(`build: the console does not bundle: ${e.message}`);
  rmSync(out, { recursive: true, force: true });
  process.exit(1);
}
writeFileSync(join(out, '.build-stamp'), `${started}\n`);
console.log(`build: ${relative(process.cwd(), out) || '.'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
