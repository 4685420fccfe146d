/**
 * Crash trials for atomic syncs: clone, change the source, sync in a child
 * process that is killed at a random moment, then either roll back or run the
 * same sync again. The standby must then be exactly the previous backup or
 * exactly the source: never a mix.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clone, sync, recover, PairStore } from '../../src/sync/index.ts';
import { randomImage, scatterWrites, sha256File, sparseImage } from './images.ts';

const CHILD = fileURLToPath(new URL('./crash-child.ts', import.meta.url));
const MiB = 1024 * 1024;

export interface TrialOutcome {
  readonly how: string;
  readonly afterward: 'recover' | 'resume';
  readonly result: 'previous-backup' | 'source' | 'MIXED';
  readonly killed: boolean;
  /** Bytes the sync run afterwards skipped because the sync map had them done. */
  readonly resumedBytes: number;
}

function runChild(args: string[], env: Record<string, string>, killAfterMs?: number): Promise<{ killed: boolean; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
      if (killAfterMs !== undefined && output.includes('started') && !(child as { timer?: NodeJS.Timeout }).timer) {
        (child as { timer?: NodeJS.Timeout }).timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      }
    });
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (_code, signal) => {
      clearTimeout((child as { timer?: NodeJS.Timeout }).timer);
      resolve({ killed: signal === 'SIGKILL', output });
    });
  });
}

export async function crashTrial(dir: string, trial: number, rng: () => number = Math.random): Promise<TrialOutcome> {
  const base = join(dir, `trial-${trial}`);
  mkdirSync(base, { recursive: true });
  const stateDir = join(base, 'state');
  const size = 4 * MiB;
  const src = randomImage(join(base, 'src.img'), size, trial + 1);
  const tgt = sparseImage(join(base, 'tgt.img'), size);
  await clone({ stateDir, source: src, target: tgt });
  const backup = sha256File(tgt);
  // Changes spread over every chunk, so a sync writes many times.
  scatterWrites(src, size, 100 + Math.floor(rng() * 100));
  const wanted = sha256File(src);
  const expectedWrites = 200;

  const pick = rng();
  let how: string;
  let env: Record<string, string> = { DPSR_CHUNK: String(256 * 1024) };
  let killAfter: number | undefined;
  if (pick < 0.5) {
    const at = Math.floor(rng() * expectedWrites);
    env = { ...env, DPSR_CRASH_AT_WRITE: String(at) };
    how = `SIGKILL before target write ${at}`;
  } else if (pick < 0.6) {
    env = { ...env, DPSR_CRASH_AT_FLUSH: '0' };
    how = "SIGKILL at the first flush of the standby (a checkpoint's or the final one)";
  } else if (pick < 0.7) {
    // The engine enters its flushing phase right before the final flush: the last moment before completion.
    env = { ...env, DPSR_CRASH_AT_PHASE: 'flushing' };
    how = 'SIGKILL just before completion (final flush)';
  } else {
    // Within the sync itself (it takes tens of milliseconds), so most kills land mid-sync.
    killAfter = Math.floor(rng() * 150);
    how = `SIGKILL ${killAfter} ms after start`;
  }
  const run = await runChild(['sync', stateDir, src, tgt], env, killAfter);
  if (!run.killed && !run.output.includes('finished')) throw new Error(`trial ${trial}: the sync failed on its own: ${run.output}`);

  const afterward = rng() < 0.5 ? 'recover' : 'resume';
  if (afterward === 'recover') {
    await recover({ stateDir, target: tgt });
    const pair = new PairStore(stateDir).pairs()[0]!;
    const completed = pair.lastSync?.kind === 'sync' && pair.lastSync.result === 'done';
    const got = sha256File(tgt);
    const result = got === backup && !completed ? 'previous-backup' : got === wanted && completed ? 'source' : 'MIXED';
    // Whatever recover left, the same sync then brings the source over.
    if (result !== 'MIXED') {
      await sync({ stateDir, source: src, target: tgt, chunkSize: 256 * 1024 });
      if (sha256File(tgt) !== wanted) return { how, afterward, result: 'MIXED', killed: run.killed, resumedBytes: 0 };
    }
    return { how, afterward, result, killed: run.killed, resumedBytes: 0 };
  }
  const again = await sync({ stateDir, source: src, target: tgt, chunkSize: 256 * 1024 });
  return { how, afterward, result: sha256File(tgt) === wanted ? 'source' : 'MIXED', killed: run.killed, resumedBytes: again.bytesResumed };
}

/** A copy of an image, for trials that reuse a prepared source. */
export function copyImage(from: string, to: string): string {
  copyFileSync(from, to);
  return to;
}
