/**
 * Quiescence: before a live sync, wait until the active drive has seen no
 * writes for a quiet time, within a maximum wait. Past the maximum the run
 * either proceeds with a crash-consistent snapshot or is skipped, per config.
 *
 * The decision is a pure function of the policy and what was observed
 * (`decideQuiescence`); `waitForQuiescence` is the thin shell that observes
 * the drive and sleeps.
 *
 * How writes are seen: qemu-storage-daemon 7.2's `query-blockstats` carries
 * no write counters for the host export (an export's BlockBackend is
 * anonymous and not listed; node-level stats carry only `wr_highest_offset`,
 * which a write below the highest offset so far leaves unchanged). So two
 * dirty bitmaps on the "top" node take turns: each poll, one `transaction`
 * clears and enables one and disables the other, whose count then says
 * whether any write landed since the previous poll. No write falls between
 * the two, and a rewrite of the same block counts as much as a new one.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BadInputError, CancelledError } from '../errors.ts';
import { TOP_NODE, type StorageDaemon } from '../export/index.ts';

/** What to do when the drive never went quiet within the maximum wait. */
export type QuiescenceFallback = 'crash-consistent' | 'skip';

export interface QuiescencePolicy {
  /** Milliseconds without a write that count as quiet (default 5000). */
  readonly quietMs: number;
  /** Longest wait for quiet, in milliseconds (default 60000); at least `quietMs`. */
  readonly maxWaitMs: number;
  readonly fallback: QuiescenceFallback;
  /** Milliseconds between two looks at the drive (default 250). */
  readonly pollMs?: number;
}

export const DEFAULT_QUIESCENCE: QuiescencePolicy = { quietMs: 5000, maxWaitMs: 60_000, fallback: 'crash-consistent', pollMs: 250 };

/** What was observed so far, in milliseconds on one monotonic clock. */
export interface QuiescenceObservation {
  readonly startedAt: number;
  /** When a poll last saw that writes had landed (null: none since `startedAt`). */
  readonly lastWriteAt: number | null;
  readonly now: number;
}

export type QuiescenceDecision =
  | { readonly action: 'wait'; readonly delayMs: number }
  | { readonly action: 'proceed'; readonly consistency: 'quiet' | 'crash-consistent'; readonly waitedMs: number }
  | { readonly action: 'skip'; readonly waitedMs: number };

/** Checks a policy; throws BadInputError naming the wrong field. */
export function checkQuiescencePolicy(p: QuiescencePolicy): QuiescencePolicy {
  const ms = (v: number, name: string) => {
    if (!Number.isFinite(v) || v < 0) throw new BadInputError(`quiescence ${name} ${v} is not a duration`, { hint: `give ${name} in milliseconds, 0 or more` });
  };
  ms(p.quietMs, 'quietMs');
  ms(p.maxWaitMs, 'maxWaitMs');
  if (p.pollMs !== undefined && !(p.pollMs > 0)) throw new BadInputError(`quiescence pollMs ${p.pollMs} must be more than 0`);
  if (p.maxWaitMs < p.quietMs) throw new BadInputError(`quiescence maxWaitMs (${p.maxWaitMs}) is shorter than quietMs (${p.quietMs}): the drive could never be found quiet`, { hint: 'make maxWaitMs at least quietMs' });
  if (p.fallback !== 'crash-consistent' && p.fallback !== 'skip') throw new BadInputError(`quiescence fallback "${String(p.fallback)}" is not crash-consistent or skip`);
  return p;
}

/**
 * Quiet since the last write seen (or since the wait began: writes before it
 * are unknown); proceed once quiet for `quietMs`; past `maxWaitMs` fall back.
 * Otherwise wait until the next poll, or sooner if quiet or the maximum comes
 * first.
 */
export function decideQuiescence(policy: QuiescencePolicy, o: QuiescenceObservation): QuiescenceDecision {
  const waitedMs = o.now - o.startedAt;
  const quietFor = o.now - (o.lastWriteAt ?? o.startedAt);
  if (quietFor >= policy.quietMs) return { action: 'proceed', consistency: 'quiet', waitedMs };
  if (waitedMs >= policy.maxWaitMs) return policy.fallback === 'skip' ? { action: 'skip', waitedMs } : { action: 'proceed', consistency: 'crash-consistent', waitedMs };
  const delayMs = Math.min(policy.pollMs ?? DEFAULT_QUIESCENCE.pollMs!, policy.quietMs - quietFor, policy.maxWaitMs - waitedMs);
  return { action: 'wait', delayMs: Math.max(1, delayMs) };
}

export interface QuiescenceResult {
  readonly outcome: 'quiet' | 'crash-consistent' | 'skip';
  readonly waitedMs: number;
  /** For the job's result: what happened, in words. */
  readonly message: string;
}

/** Bitmaps of the write detector; not epochs, so the changed-block tracker ignores them. */
export const QUIET_BITMAPS = ['dpsr-quiet-a', 'dpsr-quiet-b'] as const;

/** Removes the write detector's bitmaps (a wait that was interrupted, or dpsr restarted mid-wait). Idempotent. */
export async function removeQuietBitmaps(daemon: StorageDaemon): Promise<void> {
  const nodes = await daemon.qmp.execute<{ 'node-name'?: string; 'dirty-bitmaps'?: { name: string }[] }[]>('query-named-block-nodes', { flat: true });
  for (const n of nodes) {
    for (const b of n['dirty-bitmaps'] ?? []) {
      if ((QUIET_BITMAPS as readonly string[]).includes(b.name)) await daemon.qmp.execute('block-dirty-bitmap-remove', { node: n['node-name'], name: b.name });
    }
  }
}

export interface WaitOptions {
  readonly signal?: AbortSignal;
  /** Monotonic milliseconds (tests may pass their own). */
  readonly now?: () => number;
}

/**
 * Waits for the active drive to go quiet through the host export's node.
 * Resolves with the outcome; throws CancelledError when `signal` aborts, and
 * DeviceError when the daemon stops answering. Leaves no bitmap behind.
 */
export async function waitForQuiescence(daemon: StorageDaemon, policy: QuiescencePolicy, options: WaitOptions = {}): Promise<QuiescenceResult> {
  checkQuiescencePolicy(policy);
  const now = options.now ?? (() => performance.now());
  const qmp = daemon.qmp;
  await removeQuietBitmaps(daemon);
  const [a, b] = QUIET_BITMAPS;
  await qmp.execute('transaction', {
    actions: [
      { type: 'block-dirty-bitmap-add', data: { node: TOP_NODE, name: a, persistent: false } },
      { type: 'block-dirty-bitmap-add', data: { node: TOP_NODE, name: b, persistent: false, disabled: true } },
    ],
  });
  let recording: string = a;
  const startedAt = now();
  let lastWriteAt: number | null = null;
  try {
    for (;;) {
      const d = decideQuiescence(policy, { startedAt, lastWriteAt, now: now() });
      if (d.action === 'proceed') {
        const s = (d.waitedMs / 1000).toFixed(1);
        return d.consistency === 'quiet'
          ? { outcome: 'quiet', waitedMs: d.waitedMs, message: `the active drive was quiet for ${policy.quietMs / 1000} s (waited ${s} s)` }
          : { outcome: 'crash-consistent', waitedMs: d.waitedMs, message: `the active drive was still being written after ${s} s: the snapshot is crash-consistent (as after a power loss), not taken at a quiet moment` };
      }
      if (d.action === 'skip') {
        return { outcome: 'skip', waitedMs: d.waitedMs, message: `the active drive was still being written after ${(d.waitedMs / 1000).toFixed(1)} s: this run is skipped (quiescence fallback: skip)` };
      }
      try {
        await sleep(d.delayMs, undefined, { signal: options.signal });
      } catch {
        throw new CancelledError('the wait for a quiet active drive was cancelled');
      }
      const frozen = recording;
      recording = frozen === a ? b : a;
      await qmp.execute('transaction', {
        actions: [
          { type: 'block-dirty-bitmap-clear', data: { node: TOP_NODE, name: recording } },
          { type: 'block-dirty-bitmap-enable', data: { node: TOP_NODE, name: recording } },
          { type: 'block-dirty-bitmap-disable', data: { node: TOP_NODE, name: frozen } },
        ],
      });
      // A write seen now landed at the latest when the switch returned: count quiet from there.
      const seenAt = now();
      if ((await bitmapCount(daemon, frozen)) > 0) lastWriteAt = seenAt;
    }
  } finally {
    if (daemon.running) await removeQuietBitmaps(daemon).catch(() => undefined);
  }
}

async function bitmapCount(daemon: StorageDaemon, name: string): Promise<number> {
  const nodes = await daemon.qmp.execute<{ 'node-name'?: string; 'dirty-bitmaps'?: { name: string; count: number }[] }[]>('query-named-block-nodes', { flat: true });
  const top = nodes.find((n) => n['node-name'] === TOP_NODE);
  return top?.['dirty-bitmaps']?.find((b) => b.name === name)?.count ?? 0;
}
