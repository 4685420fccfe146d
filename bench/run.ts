/**
 * `npm run bench [-- NAME...]`: every benchmark in bench/ (or those whose file
 * name contains one of the NAMEs), one after the other (they share the disk
 * and two cores). `--help` lists them; a NAME that matches none is exit 2.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const all = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .sort();
const nameOf = (f: string) => f.replace(/\.bench\.ts$/, '');
/** What a benchmark measures: its leading docstring up to the first colon or full stop, cut to fit 80 columns. */
function summaryOf(f: string): string {
  const doc = /^\/\*\*([\s\S]*?)\*\//.exec(readFileSync(join(here, f), 'utf8'))?.[1] ?? '';
  const text = doc.replace(/^\s*\*\s?/gm, '').replace(/\s+/g, ' ').trim();
  const first = /^(.*?)(?:[.:](?:\s|$)|$)/.exec(text)![1]!;
  return first.length > 58 ? `${first.slice(0, 57)}…` : first;
}
const usage = () =>
  [
    'Usage: npm run bench [-- NAME...]',
    '',
    'Runs every benchmark, or those whose name contains one of the NAMEs; each',
    "prints a table (dpsr's figure, the reference tool's figure from the same run,",
    'the ratio).',
    'DPSR_BENCH_GIB sets the image size of the copy benchmarks (default 2).',
    '',
    'Benchmarks:',
    ...all.map((f) => `  ${nameOf(f).padEnd(18)} ${summaryOf(f)}`),
  ].join('\n');

const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  console.log(usage());
  process.exit(0);
}
const option = args.find((a) => a.startsWith('-'));
if (option) {
  process.stderr.write(`bench: unknown option ${option}\n  run \`npm run bench -- --help\`\n`);
  process.exit(2);
}
const unmatched = args.filter((o) => !all.some((f) => f.includes(o)));
if (unmatched.length) {
  process.stderr.write(`bench: no benchmark named ${unmatched.join(', ')}\n  known: ${all.map(nameOf).join(', ')}\n`);
  process.exit(2);
}
const files = all.filter((f) => args.length === 0 || args.some((o) => f.includes(o)));
let failed = 0;
for (const f of files) {
  console.log(`\n## ${f}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, f)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
