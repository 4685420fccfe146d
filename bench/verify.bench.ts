/**
 * Verify benchmarks: comparing two identical drives against `cmp` (both read
 * both drives whole), and two drives where every 4 KiB block differs in one
 * sector, the worst case for reporting in logical sectors, against `cmp -s`
 * on the same files (which stops at the first difference, so it is only a
 * floor). Also the cost of finding the tail's end-anchored signatures on a
 * larger standby against reading its whole tail with dd. Every figure is the
 * median of DPSR_BENCH_RUNS runs (default 3) with the page cache dropped
 * before each. Size with DPSR_BENCH_GIB (default 1).
 */
import { copyFileSync, openSync, closeSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { verify } from '../src/sync/index.ts';
import { openDrive } from '../src/sata-bridge/index.ts';
import { findEndSignatures } from '../src/disk-layout/index.ts';
import { randomImage, sparseImage } from '../test/support/images.ts';
import { GiB, MiB, benchDir, dropCaches, printTable, rate, secs, timedCommand, type Row, benchRuns, measure, median } from './lib.ts';

const size = Number(process.env.DPSR_BENCH_GIB ?? 1) * GiB;
const runs = benchRuns;
const dir = benchDir('verify');
const A = join(dir, 'a.img');
const B = join(dir, 'b.img');
const C = join(dir, 'c.img');
const T = join(dir, 'tail.img');
const stateDir = join(dir, 'state');



/** Cmp exits 1 on a difference; only its time counts here. */
function cmpSeconds(a: string, b: string): number {
  try {
    return timedCommand(`cmp -s ${a} ${b}; test $? -le 1`, [], { shell: true });
  } catch {
    return NaN;
  }
}

async function main(): Promise<void> {
  console.log(`verify benchmarks on ${size / GiB} GiB images in ${dir}; ${runs} runs each, median; page cache ${dropCaches() ? 'dropped before each run' : 'NOT dropped (needs root)'}`);
  randomImage(A, size, 7);
  copyFileSync(A, B);
  copyFileSync(A, C);
  // One sector changed in every 4 KiB block of C.
  const fd = openSync(C, 'r+');
  const junk = Buffer.alloc(512, 0x5a);
  for (let off = 1024; off < size; off += 4096) writeSync(fd, junk, 0, 512, off);
  closeSync(fd);

  let sameRanges = -1;
  const same = await measure(() => undefined, async () => {
    sameRanges = (await verify({ stateDir, source: A, target: B })).differenceCount;
  });
  const cmpSame = median(Array.from({ length: runs }, () => (dropCaches(), cmpSeconds(A, B))));
  let diffRanges = -1;
  const diff = await measure(() => undefined, async () => {
    diffRanges = (await verify({ stateDir, source: A, target: C })).differenceCount;
  });
  const cmpDiff = median(Array.from({ length: runs }, () => (dropCaches(), cmpSeconds(A, C))));
  if (sameRanges !== 0 || diffRanges !== size / 4096) console.log(`warning: ranges found ${sameRanges} and ${diffRanges}, expected 0 and ${size / 4096}`);

  // A 1 GiB-larger standby's tail: the signature scan reads 2 MiB of it, dd would read it all.
  sparseImage(T, size * 2);
  const scan = await measure(() => undefined, async () => {
    const dev = await openDrive(T);
    try {
      await findEndSignatures(dev);
    } finally {
      await dev.close();
    }
  });
  const ddTail = median(Array.from({ length: runs }, () => (dropCaches(), timedCommand('dd', [`if=${T}`, 'of=/dev/null', 'bs=4M', `skip=${size / (4 * MiB)}`, 'status=none']))));

  const rows: Row[] = [
    { what: `verify ${size / GiB} GiB, identical`, ours: rate(2 * size, same), referenceName: 'cmp -s (reads both)', reference: rate(2 * size, cmpSame), ratio: cmpSame / same, target: '≥ 0.8 × cmp', ok: cmpSame / same >= 0.8 },
    { what: `verify ${size / GiB} GiB, a sector differs in every 4 KiB`, ours: secs(diff), referenceName: 'cmp -s (stops at the first)', reference: secs(cmpDiff), ratio: null, target: '≤ 2 × identical', ok: diff <= 2 * same },
    { what: 'end-signature scan of a 1 GiB tail', ours: secs(scan), referenceName: 'dd of the whole tail', reference: secs(ddTail), ratio: ddTail / scan, target: '≥ 10 × faster', ok: ddTail / scan >= 10 },
  ];
  printTable('verify and tail scan', rows);
}

await main();
