/**
 * Standby rotation tried as sequences: three drives, one active and two
 * standbys of it (each its own pair), one standby in the bay and the other
 * off-site. Random host writes, syncs (compare or manifest mode, sometimes
 * with --force-generation) to whichever standby is in the bay, syncs
 * interrupted after a random chunk, swaps of the standbys, recoveries and
 * failovers, run on small image files and checked after every step against a
 * model of what each drive must hold.
 *
 * The model: each drive's content as the operations must leave it; per
 * standby the interrupted copy (its source, mode and the source's generation,
 * which make the plan) and its content before it; the generations as rule 3
 * states them (a completed copy from S gives S and the target a new
 * generation, S's history passes to the target; a drive that becomes active
 * gets a new one; a copy onto T is allowed when S's history holds T's
 * generation); and whether a standby's manifest still describes it.
 *
 * Invariants: the active drive changes only by host writes; a standby with
 * no interrupted copy holds exactly what its last completed copy (or
 * rollback) left; the off-site standby is never written; a refusal changes
 * no byte; a sync the generations forbid is refused and one they allow runs;
 * a completed sync leaves the target equal to the active drive; recover gives
 * back the content before the interrupted sync; a manifest-mode sync reads
 * only the active drive exactly when the standby's manifest is not stale.
 */
import fc from 'fast-check';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { clone, sync, recover, recordFailover, PairStore, pairOfDrives, type CopyReport } from '../../src/sync/index.ts';
import { driveKeyOf, locateDrive } from '../../src/sata-bridge/index.ts';
import { isDpsrError } from '../../src/errors.ts';
import { xorshift32 } from './xorshift.ts';

const KiB = 1024;
const SIZE = 1024 * KiB;
const CHUNK = 64 * KiB;

export type Drive = 'A' | 'B' | 'C';

export type RotationOp =
  | { readonly t: 'host-write'; readonly blocks: number; readonly seed: number }
  | { readonly t: 'sync'; readonly mode: 'compare' | 'manifest'; readonly force: boolean; readonly crashAfter?: number }
  | { readonly t: 'swap' }
  | { readonly t: 'recover' }
  | { readonly t: 'failover' };

export const rotationOpArb: fc.Arbitrary<RotationOp> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('host-write' as const), blocks: fc.integer({ min: 1, max: 20 }), seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }) }) },
  {
    weight: 5,
    arbitrary: fc.record(
      { t: fc.constant('sync' as const), mode: fc.constantFrom<'compare' | 'manifest'>('compare', 'manifest'), force: fc.constantFrom(false, false, false, true), crashAfter: fc.option(fc.integer({ min: 1, max: 14 }), { nil: undefined, freq: 3 }) },
      { requiredKeys: ['t', 'mode', 'force'] },
    ),
  },
  { weight: 3, arbitrary: fc.constant({ t: 'swap' as const }) },
  { weight: 2, arbitrary: fc.constant({ t: 'recover' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'failover' as const }) },
);

export const rotationSequenceArb = fc.array(rotationOpArb, { minLength: 4, maxLength: 18 });

interface Interrupted {
  readonly source: Drive;
  readonly mode: 'compare' | 'manifest';
  readonly sourceGeneration: number;
  /** The standby's content before the interrupted sync: what recover gives back. */
  readonly before: Buffer;
}

class Crash extends Error {}

export function describeRotationOp(op: RotationOp): string {
  switch (op.t) {
    case 'sync':
      return `sync/${op.mode}${op.force ? '+force' : ''}${op.crashAfter ? ` crash@${op.crashAfter}` : ''}`;
    case 'host-write':
      return `host-write(${op.blocks})`;
    default:
      return op.t;
  }
}

/** Runs one sequence in `dir` (emptied first). Returns the steps and what broke the invariants. */
export async function runRotation(dir: string, ops: readonly RotationOp[]): Promise<{ steps: string[]; violations: string[] }> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const stateDir = join(dir, 'state');
  const path: Record<Drive, string> = { A: join(dir, 'a.img'), B: join(dir, 'b.img'), C: join(dir, 'c.img') };
  for (const d of ['A', 'B', 'C'] as const) writeFileSync(path[d], noise(SIZE, d.charCodeAt(0)));
  const key = Object.fromEntries((['A', 'B', 'C'] as const).map((d) => [d, driveKeyOf(locateDrive(path[d]))])) as Record<Drive, string>;
  const read = (d: Drive) => readFileSync(path[d]);
  const common = { stateDir, chunkSize: CHUNK, checkpointMs: 0, batchBytes: 32 * KiB };
  const steps: string[] = [];
  const violations: string[] = [];
  const fail = (what: string) => violations.push(`step ${steps.length} (${steps[steps.length - 1]}): ${what}`);

  // The model.
  let next = 1;
  const gen: Record<Drive, number> = { A: next, B: 0, C: 0 };
  const history: Record<Drive, Set<number>> = { A: new Set([next]), B: new Set([0]), C: new Set([0]) };
  let active: Drive = 'A';
  let bay: Drive = 'B';
  let offsite: Drive = 'C';
  const content: Record<Drive, Buffer> = { A: read('A'), B: read('B'), C: read('C') };
  const pending: Partial<Record<Drive, Interrupted>> = {};
  const manifestFresh: Record<Drive, boolean> = { A: false, B: false, C: false };
  const completed = (s: Drive, t: Drive) => {
    const g = ++next;
    history[s].add(g);
    gen[s] = g;
    history[t] = new Set(history[s]);
    gen[t] = g;
  };

  // Two standbys of A: the second clone needs the operator's confirmation.
  steps.push('clone A→B');
  await clone({ ...common, source: path.A, target: path.B });
  completed('A', 'B');
  content.B = read('A');
  manifestFresh.B = true;
  steps.push('clone A→C unconfirmed');
  const unconfirmed = await clone({ ...common, source: path.A, target: path.C }).then(() => null, (e: unknown) => e);
  if (!isDpsrError(unconfirmed) || unconfirmed.kind !== 'refused') fail(`a clone onto a second standby without confirmation was not refused: ${String(unconfirmed)}`);
  if (!read('C').equals(content.C)) fail('the refused clone wrote to C');
  steps.push('clone A→C --add-standby');
  await clone({ ...common, source: path.A, target: path.C, addStandby: true });
  completed('A', 'C');
  content.C = read('A');
  manifestFresh.C = true;

  for (const op of ops) {
    steps.push(describeRotationOp(op));
    const before: Record<Drive, Buffer> = { A: read('A'), B: read('B'), C: read('C') };
    let expectRefused: string | null = null;
    let run: (() => Promise<unknown>) | null = null;
    let onDone: ((r: unknown) => void) | null = null;
    let onCrash: (() => void) | null = null;

    switch (op.t) {
      case 'host-write': {
        scribble(path[active], op.blocks, op.seed);
        content[active] = read(active);
        steps[steps.length - 1] += ': done';
        continue;
      }
      case 'swap': {
        [bay, offsite] = [offsite, bay];
        steps[steps.length - 1] += `: ${bay} in the bay`;
        continue;
      }
      case 'sync': {
        const target = bay;
        const p = pending[target];
        if (p) {
          if (p.source !== active || p.mode !== op.mode || p.sourceGeneration !== gen[active]) expectRefused = 'another copy is pending on the standby';
        } else if (!history[active].has(gen[target]) && !op.force) expectRefused = 'the active drive does not descend from the standby';
        if (expectRefused) {
          run = () => sync({ ...common, source: path[active], target: path[target], mode: op.mode, forceGeneration: op.force });
          break;
        }
        const resumed = !!p;
        let chunks = 0;
        run = () =>
          sync({
            ...common,
            source: path[active],
            target: path[target],
            mode: op.mode,
            forceGeneration: op.force,
            onChunkDone: () => {
              if (op.crashAfter !== undefined && ++chunks === op.crashAfter) throw new Crash('crash');
            },
          });
        onDone = (r) => {
          const report = r as CopyReport;
          if (!read(target).equals(content[active])) fail(`the completed sync left ${target} different from the active drive ${active}`);
          if (op.mode === 'manifest') {
            const want = manifestFresh[target] && !resumed ? 'manifest' : 'compare';
            if (report.mode !== want) fail(`a manifest-mode sync onto ${target} ran in ${report.mode} mode, the model expected ${want} (manifest ${manifestFresh[target] ? 'fresh' : 'stale'}${resumed ? ', resumed' : ''})`);
          }
          completed(active, target);
          content[target] = read(target);
          manifestFresh[target] = true;
          delete pending[target];
        };
        onCrash = () => {
          pending[target] ??= { source: active, mode: op.mode, sourceGeneration: gen[active], before: content[target] };
          manifestFresh[target] = false;
        };
        break;
      }
      case 'recover': {
        const target = bay;
        run = () => recover({ ...common, target: path[target] });
        onDone = (r) => {
          const action = (r as { action: string }).action;
          const p = pending[target];
          if (action !== (p ? 'rolled-back' : 'nothing-to-do')) fail(`recover of ${target} did ${action}, the model expected ${p ? 'a rollback' : 'nothing'}`);
          if (p) {
            if (!read(target).equals(p.before)) fail(`recover left ${target} different from its content before the interrupted sync`);
            content[target] = p.before;
            delete pending[target];
          }
        };
        break;
      }
      case 'failover': {
        const to = bay;
        if (pending[to]) expectRefused = 'the standby in the bay is not consistent';
        const pair = pairOfDrives(new PairStore(stateDir).pairs(), key[active], key[to]);
        if (!pair) {
          fail(`no pair of ${active} and ${to} is recorded`);
          continue;
        }
        run = async () => recordFailover(stateDir, pair.id);
        onDone = () => {
          const g = ++next;
          history[to].add(g);
          gen[to] = g;
          manifestFresh[to] = false;
          // The old active drive sits in the other bay now, as the standby; the off-site one stays off-site.
          bay = active;
          active = to;
        };
        break;
      }
    }

    let outcome: 'done' | 'refused' | 'crashed';
    let result: unknown;
    try {
      result = await run!();
      outcome = 'done';
    } catch (e) {
      if (e instanceof Crash) outcome = 'crashed';
      else if (isDpsrError(e) && (e.kind === 'refused' || e.kind === 'busy' || e.kind === 'bad-input')) {
        outcome = 'refused';
        result = e;
      } else {
        fail(`failed: ${e instanceof Error ? e.message : String(e)}`);
        break;
      }
    }
    steps[steps.length - 1] += `: ${outcome}`;
    if (outcome === 'refused') {
      if (!expectRefused) fail(`refused, the model expected it to run: ${(result as Error).message}`);
      for (const d of ['A', 'B', 'C'] as const) if (!read(d).equals(before[d])) fail(`the refused operation changed ${d}`);
    } else if (expectRefused) fail(`ran, the model expected a refusal (${expectRefused})`);
    else if (outcome === 'done') onDone?.(result);
    else onCrash?.();

    // Invariants after every step.
    if (!read(active).equals(content[active])) fail(`the active drive ${active} changed other than by host writes`);
    for (const d of [bay, offsite]) {
      if (!pending[d] && !read(d).equals(content[d])) fail(`the standby ${d} (${d === bay ? 'in the bay' : 'off-site'}) is not what its last completed copy or rollback left`);
    }
    if (!read(offsite).equals(before[offsite])) fail(`the off-site standby ${offsite} was written`);
    if (violations.length) break;
  }
  return { steps, violations };
}

function noise(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  const next = xorshift32(seed);
  for (let i = 0; i < size; i += 4) b.writeUInt32LE(next(), i);
  return b;
}

/** Random 4 KiB-aligned writes. */
function scribble(file: string, blocks: number, seed: number): void {
  const data = readFileSync(file);
  const nextRand = xorshift32(seed);
  for (let i = 0; i < blocks; i++) {
    const at = (nextRand() % (SIZE / 4096)) * 4096;
    for (let b = 0; b < 4096; b += 4) data.writeUInt32LE(nextRand(), at + b);
  }
  writeFileSync(file, data);
}
