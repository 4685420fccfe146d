/**
 * Geometry decided before writing: a target a few sectors short, a source
 * whose partition table describes a larger disk than it reports, a drive that
 * shows up with another size than at pairing, a GPT seen through a bridge that
 * translates sector sizes. Each is refused (exit 3) with the sizes in bytes,
 * and the target hashes the same before and after.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { copyFileSync, truncateSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dpsr } from '../support/cli.ts';
import { randomImage, sha256File, sparseImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { clone, sync, verify, recover, PairStore } from '../../src/sync/index.ts';
import { RefusedError } from '../../src/errors.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

function gptImage(path: string, sizeMiB: number, script = 'label: gpt\nstart=2048, size=16MiB\nsize=+\n'): string {
  sparseImage(path, sizeMiB * MiB);
  execFileSync('sfdisk', ['-q', path], { input: script });
  return path;
}

/** A standby from an earlier life: recognisable bytes at its start. */
function oldStandby(path: string, size: number): string {
  randomImage(path, size, 77);
  return path;
}

function refusedCli(args: string[], target: string, env: Record<string, string>, pattern: RegExp): string {
  const before = sha256File(target);
  const r = dpsr(args, env);
  assert.is(r.code, 3, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.is(sha256File(target), before, 'the target is unchanged');
  return r.stderr;
}

test('a standby 88 sectors short is refused with the exact shortfall (f06)', () => {
  if (!requireEnv('sfdisk images', { tools: ['sfdisk'] })) return;
  const a = join(dir, 'f06-a.img');
  sparseImage(a, 64 * MiB);
  execFileSync('sfdisk', ['-q', a], { input: 'label: dos\n,16M,c\n,40M,83\n' });
  const b = oldStandby(join(dir, 'f06-b.img'), 64 * MiB - 88 * 512);
  refusedCli(['clone', a, b, '--yes'], b, { DPSR_STATE_DIR: join(dir, 'f06-state') }, /smaller than the source .* by 45,056 bytes \(88 sectors\): it has 67,063,808 bytes, the source .* needs 67,108,864 bytes/);
});

test('a source whose GPT describes a larger disk than it reports is refused before the first write (f11)', () => {
  if (!requireEnv('sfdisk images', { tools: ['sfdisk'] })) return;
  const full = gptImage(join(dir, 'f11-full.img'), 96, 'label: gpt\nstart=2048, size=16MiB\nsize=40MiB\nsize=+\n');
  const a = join(dir, 'f11-a.img');
  copyFileSync(full, a);
  truncateSync(a, 64 * MiB); // the drive as it shows up now
  const b = oldStandby(join(dir, 'f11-b.img'), 80 * MiB);
  const env = { DPSR_STATE_DIR: join(dir, 'f11-state') };
  const said = refusedCli(['clone', a, b, '--yes'], b, env, /partition table \(GPT\) describes a disk of 100,663,296 bytes .* but the drive reports 67,108,864 bytes/);
  assert.match(said, /host protected area|caps the capacity|truncated/);
  // The hint's rerun ends the same way, and still writes nothing.
  refusedCli(['clone', a, b, '--yes'], b, env, /describes a disk of/);
});

test('an active drive that shows up smaller than at pairing is refused, naming both sizes and the causes (f12)', async () => {
  if (!requireEnv('sfdisk images', { tools: ['sfdisk'] })) return;
  const stateDir = join(dir, 'f12-state');
  const a = gptImage(join(dir, 'f12-a.img'), 16);
  const b = sparseImage(join(dir, 'f12-b.img'), 16 * MiB);
  await clone({ stateDir, source: a, target: b });
  // Seen 2 MiB smaller now; an image file names its own cause (a drive's HPA and bridge: test/sync/copy-plan.test.ts).
  truncateSync(a, 14 * MiB);
  const before = sha256File(b);
  const err = await sync({ stateDir, source: a, target: b }).catch((e: unknown) => e);
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, /active drive .* now reports 14,680,064 bytes .* had 16,777,216 bytes .*2,097,152 bytes \(4,096 sectors\) less \(likely causes: the image file was truncated\)/);
  assert.match((err as RefusedError).hint ?? '', /paired length of 16,777,216 bytes .*dpsr forget/);
  assert.is(sha256File(b), before);
  assert.is(new PairStore(stateDir).pairs()[0]!.standbyState, 'consistent', 'the standby keeps its state: nothing was written');
  // Verify cannot vouch for a drive that hides part of itself: no "identical" over what it still shows.
  const v = await verify({ stateDir, source: a, target: b }).catch((e: unknown) => e);
  assert.instance(v, RefusedError);
  assert.match((v as Error).message, /now reports 14,680,064 bytes/);
});

test('the same through loop devices, as the field case has it (f12)', () => {
  if (!requireEnv('loop devices', { tools: ['losetup', 'sfdisk'], root: true })) return;
  const a = gptImage(join(dir, 'f12l-a.img'), 16);
  const b = sparseImage(join(dir, 'f12l-b.img'), 16 * MiB);
  const env = { DPSR_STATE_DIR: join(dir, 'f12l-state') };
  const loops: string[] = [];
  const attach = (...args: string[]) => {
    const dev = execFileSync('losetup', ['-f', '--show', ...args]).toString().trim();
    loops.push(dev);
    return dev;
  };
  try {
    const la = attach(a);
    const lb = attach(b);
    assert.is(dpsr(['clone', la, lb, '--yes', '--quiet'], env).code, 0);
    execFileSync('losetup', ['-d', la]);
    const small = attach('--sizelimit', String(14 * MiB), a);
    refusedCli(['sync', small, lb, '--yes'], b, env, /now reports 14,680,064 bytes/);
  } finally {
    for (const l of loops) {
      try {
        execFileSync('losetup', ['-d', l], { stdio: 'ignore' });
      } catch {
        /* already detached */
      }
    }
  }
});

test('a 512-byte GPT seen through a 4K-translating bridge is refused onto a larger standby, with a message about the source', () => {
  if (!requireEnv('sfdisk images', { tools: ['sfdisk'] })) return;
  // The drive was partitioned with 512-byte sectors; the bridge now shows 4096-byte ones (an image named .4k).
  const a = gptImage(join(dir, 'bridge-a.4k.img'), 16);
  const b = oldStandby(join(dir, 'bridge-b.4k.img'), 24 * MiB);
  const said = refusedCli(['clone', a, b, '--yes', '--sector-size', '4096'], b, { DPSR_STATE_DIR: join(dir, 'bridge-state') }, /source's GPT was written for 512-byte sectors.* reports 4096-byte sectors/);
  assert.not.match(said, /gdisk|sgdisk/);
});

test('a clone onto an equal-size standby needs no table rewritten and copies a foreign-sector GPT as it is', async () => {
  if (!requireEnv('sfdisk images', { tools: ['sfdisk'] })) return;
  const a = gptImage(join(dir, 'same-a.img'), 16);
  const b = oldStandby(join(dir, 'same-b.img'), 16 * MiB);
  const r = await clone({ stateDir: join(dir, 'same-state'), source: a, target: b, imageSectorSize: 4096 });
  assert.is(r.gptRelocated, false);
  assert.is(sha256File(b), sha256File(a));
});

/** A pair whose sync stopped part-way: the standby is half written, its undo journal kept. */
async function interruptedSync(name: string) {
  const stateDir = join(dir, `${name}-state`);
  const a = randomImage(join(dir, `${name}-a.img`), 16 * MiB, 81);
  const b = sparseImage(join(dir, `${name}-b.img`), 16 * MiB);
  await clone({ stateDir, source: a, target: b });
  const previous = sha256File(b);
  randomImage(a, 16 * MiB, 82);
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, batchBytes: MiB, journalBudget: 6 * MiB }).catch((e: unknown) => e);
  assert.instance(err, Error);
  assert.is.not(sha256File(b), previous);
  return { stateDir, a, b, previous };
}

test('rule 8 for a drive of another pair: a new standby (rotation) is not cloned from an active drive that shows another size than at pairing', () => {
  const env = { DPSR_STATE_DIR: join(dir, 'state-rotation-geometry') };
  const active = randomImage(join(dir, 'rot-active.img'), 8 * MiB, 41);
  const first = sparseImage(join(dir, 'rot-first.img'), 8 * MiB);
  assert.is(dpsr(['clone', active, first, '--yes', '--quiet'], env).code, 0);
  // The active drive now shows 1 MiB less (an HPA, a capping bridge; here the image was cut).
  truncateSync(active, 7 * MiB);
  const second = oldStandby(join(dir, 'rot-second.img'), 8 * MiB);
  refusedCli(['clone', active, second, '--yes', '--add-standby'], second, env, /when the pair was made/);
  // At its paired size again, the rotation goes ahead.
  truncateSync(active, 8 * MiB);
  const ok = dpsr(['clone', active, second, '--yes', '--add-standby', '--quiet'], env);
  assert.is(ok.code, 0, ok.stderr);
  assert.is(sha256File(second), sha256File(active));
});

test('status names a drive whose size changed since pairing and needs attention (f12), though the records say consistent', () => {
  const env = { DPSR_STATE_DIR: join(dir, 'state-status-geometry') };
  const a = randomImage(join(dir, 'st-a.img'), 8 * MiB, 51);
  const b = sparseImage(join(dir, 'st-b.img'), 8 * MiB);
  assert.is(dpsr(['clone', a, b, '--yes', '--quiet'], env).code, 0);
  assert.is(dpsr(['status'], env).code, 0);
  truncateSync(b, 8 * MiB - 8 * 512);
  const st = dpsr(['status'], env);
  assert.is(st.code, 1, st.stdout);
  assert.match(st.stdout, /NEEDS ATTENTION: the standby drive \S+st-b\.img now reports 8,384,512 bytes .*4,096 bytes \(8 sectors\) less/);
  assert.match(dpsr(['status', '--json'], env).json().pairs[0].geometryChanged[0], /8 sectors\) less/);
  truncateSync(b, 8 * MiB);
  assert.is(dpsr(['status'], env).code, 0);
});

test('recover onto a standby that shows another size than at pairing is refused before it writes; at its size again it rolls back', async () => {
  const { stateDir, b, previous } = await interruptedSync('recover-resized');
  truncateSync(b, 16 * MiB + 8 * 512);
  const before = sha256File(b);
  const err = await recover({ stateDir, target: b }).catch((e: unknown) => e);
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, /the standby drive .* now reports 16,781,312 bytes .* but had 16,777,216 bytes .* when the pair was made/);
  assert.is(sha256File(b), before, 'nothing was written');
  truncateSync(b, 16 * MiB);
  await recover({ stateDir, target: b });
  assert.is(sha256File(b), previous);
});

test('recover with another --sector-size than the standby was paired with is refused (exit 3) and writes nothing', async () => {
  const { stateDir, b } = await interruptedSync('recover-sector');
  refusedCli(['recover', b, '--yes', '--sector-size', '4096'], b, { DPSR_STATE_DIR: stateDir }, /4096-byte logical sectors instead of 512-byte ones/);
});

test('a verify or a recovery refused for a size change says what it would have done and to run it again, not a copy (f12 wording)', async () => {
  const { stateDir, b } = await interruptedSync('wording');
  const env = { DPSR_STATE_DIR: stateDir };
  truncateSync(b, 16 * MiB - 8 * 512);
  const a = join(dir, 'wording-a.img');
  for (const [args, noun] of [
    [['verify', a, b], 'verify'],
    [['recover', b, '--yes'], 'recovery'],
  ] as const) {
    const r = dpsr([...args], env);
    assert.is(r.code, 3, r.stdout + r.stderr);
    assert.match(r.stderr, /the standby drive \S+ now reports 16,773,120 bytes in 512-byte sectors, but had 16,777,216 bytes/);
    assert.match(r.stderr, /4,096 bytes \(8 sectors\) less/);
    assert.match(r.stderr, new RegExp(`a ${noun} now would`), r.stderr);
    assert.match(r.stderr, new RegExp(`run the ${noun} again`), r.stderr);
    assert.not.match(r.stderr, /a copy now|run the copy again/);
  }
});

test.run();
