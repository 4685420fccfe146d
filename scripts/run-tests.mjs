#!/usr/bin/env node
// Runs every uvu test file below the given folders, each in its own process
// (through tsx), and ends with the plain line "N passed, N failed, N skipped".
// Usage: node scripts/run-tests.mjs [--exclude DIR]... [--finally FILE]... DIR|FILE...
// A --finally file runs after all the others, whatever they gave (a tier's
// summary of what its files reported), and counts like them.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const args = process.argv.slice(2);
const excludes = [];
const roots = [];
const finals = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--exclude') excludes.push(args[++i]);
  else if (args[i] === '--finally') finals.push(args[++i]);
  else roots.push(args[i]);
}
if (roots.length === 0) roots.push('test');

function collect(path, out) {
  if (excludes.some((e) => relative(e, path) === '' || !relative(e, path).startsWith('..'))) return out;
  const st = statSync(path);
  if (st.isDirectory()) {
    for (const name of readdirSync(path).sort()) {
      if (name === 'node_modules' || name === 'support' || name === 'fixtures') continue;
      collect(join(path, name), out);
    }
  } else if (/\.test\.ts$/.test(path)) out.push(path);
  return out;
}

const files = [...roots.flatMap((r) => collect(r, [])), ...finals];
const strip = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');
let passed = 0, failed = 0, skipped = 0;
const failedFiles = [];

for (const file of files) {
  const started = Date.now();
  process.stdout.write(`\n# ${file}\n`);
  const { code, output } = await new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let output = '';
    child.stdout.on('data', (d) => { output += d; process.stdout.write(d); });
    child.stderr.on('data', (d) => { output += d; process.stderr.write(d); });
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), output }));
  });
  const text = strip(output);
  const total = Number(/Total:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const ok = Number(/Passed:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const skip = Number(/Skipped:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const loudSkips = (text.match(/^SKIP: /gm) ?? []).length;
  passed += ok;
  skipped += skip + loudSkips;
  let bad = total - ok - skip;
  if (code !== 0 && bad === 0) bad = 1; // crashed before or after its report
  failed += bad;
  if (bad > 0) failedFiles.push(file);
  process.stdout.write(`# ${file}: ${code === 0 ? 'ok' : 'FAILED'} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

if (failedFiles.length) console.log(`\nFailed files:\n${failedFiles.map((f) => `  ${f}`).join('\n')}`);
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 || files.length === 0 ? 1 : 0);
