/**
 * The copy rules tried as sequences: random operations (clone, whole and
 * partition syncs in each mode, restore, verify, recover, failover, host
 * writes, also between an interrupted copy and its resume, writes to the
 * standby by another tool while a copy onto it is interrupted, a drive that
 * changes size and back), some killed at a random target
 * write or flush (sometimes with a torn journal tail), run in-process on two
 * small GPT images and checked after every step against a model of what each
 * drive must hold.
 *
 * A kill is simulated faithfully enough for the rules: at the chosen write the
 * state directory is captured as it is on disk, every later write and flush of
 * the dead copy fails, and once the operation has unwound the state directory
 * is put back as captured (what the operation wrote after its "death" is
 * undone; a lock of the dead process is gone, as the kernel would free it).
 *
 * Invariants: a standby recorded consistent holds exactly what the model says
 * its last completed copy (or rollback) left; a completed copy, resumed or
 * not, leaves the target equal to the source as it is at the end (over the
 * copied ranges); recover after an interrupted copy gives the previous
 * content byte for byte, but for blocks another writer changed since; a
 * refusal changes no byte of
 * either drive; verify says identical exactly when the drives are.
 */
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, appendFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { driveKeyOf, locateDrive, openLocated, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { clone, sync, restore, verify, recover, recordFailover, effectiveStandbyState, PairStore, type CopyReport } from '../../src/sync/index.ts';
import { readLayout, regionsToCopy } from '../../src/disk-layout/index.ts';
import { isDpsrError } from '../../src/errors.ts';
import { openDrive } from '../../src/sata-bridge/index.ts';
import { xorshift32 } from './xorshift.ts';

/*
 * State files are written temp file + rename: a kill "mid-state-write" is one
 * between writing the temp file and renaming it (or before the second copy).
 * Renames pass through this hook, which the kill of a copy arms.
 */
const realRename = fs.renameSync;
let renameHook: ((to: string) => void) | null = null;
fs.renameSync = ((from: fs.PathLike, to: fs.PathLike) => {
  renameHook?.(String(to));
  return realRename(from, to);
}) as typeof fs.renameSync;
syncBuiltinESMExports();

const KiB = 1024;
const SIZE = 2048 * KiB;
const CHUNK = 128 * KiB;

export interface Crash {
  /** A target write, a target flush, or a state file's rename (mid-state-write). */
  readonly at: 'write' | 'flush' | 'state-write';
  readonly n: number;
  readonly tornJournal: boolean;
}

export type Op =
  | { readonly t: 'host-write'; readonly blocks: number; readonly seed: number }
  | { readonly t: 'standby-write'; readonly blocks: number; readonly seed: number }
  | { readonly t: 'clone'; readonly force: boolean; readonly crash?: Crash }
  | { readonly t: 'sync'; readonly partitions: readonly number[]; readonly mode: 'compare' | 'manifest'; readonly crash?: Crash; readonly intruder?: Intruder }
  | { readonly t: 'restore'; readonly crash?: Crash }
  | { readonly t: 'verify' }
  | { readonly t: 'recover'; readonly crash?: Crash }
  | { readonly t: 'failover' }
  | { readonly t: 'grow'; readonly which: 'active' | 'standby' }
  | { readonly t: 'size-back' };

const crashArb: fc.Arbitrary<Crash | undefined> = fc.option(
  fc.record({ at: fc.constantFrom<Crash['at']>('write', 'write', 'flush', 'state-write'), n: fc.integer({ min: 0, max: 24 }), tornJournal: fc.boolean() }),
  { freq: 2 },
);

/**
 * A second process while the sync writes: another sync or a recovery of the pair from the same state
 * directory, or a clone of a third drive onto the standby, or onto the active drive the sync reads, from
 * another state directory. Each must be refused as busy without touching a byte; the sync then
 * completes as if alone.
 */
export type Intruder = 'sync' | 'recover' | 'clone-from-another-state-dir' | 'clone-onto-the-source';
const intruderArb = fc.option(fc.constantFrom<Intruder>('sync', 'recover', 'clone-from-another-state-dir', 'clone-onto-the-source'), { freq: 4, nil: undefined });

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('host-write' as const), blocks: fc.integer({ min: 1, max: 40 }), seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('standby-write' as const), blocks: fc.integer({ min: 1, max: 10 }), seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('clone' as const), force: fc.boolean(), crash: crashArb }, { requiredKeys: ['t', 'force'] }) },
  {
    weight: 5,
    arbitrary: fc.record(
      { t: fc.constant('sync' as const), partitions: fc.constantFrom<number[]>([], [], [1], [2], [1, 2]), mode: fc.constantFrom<'compare' | 'manifest'>('compare', 'manifest'), crash: crashArb, intruder: intruderArb },
      { requiredKeys: ['t', 'partitions', 'mode'] },
    ),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('restore' as const), crash: crashArb }, { requiredKeys: ['t'] }) },
  { weight: 1, arbitrary: fc.constant({ t: 'verify' as const }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('recover' as const), crash: crashArb }, { requiredKeys: ['t'] }) },
  { weight: 1, arbitrary: fc.constant({ t: 'failover' as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('grow' as const), which: fc.constantFrom<'active' | 'standby'>('active', 'standby') }) },
  { weight: 1, arbitrary: fc.constant({ t: 'size-back' as const }) },
);

/** Sequences start with a (possibly killed) first clone, so most of them have a pair to work on. */
export const sequenceArb: fc.Arbitrary<Op[]> = fc
  .tuple(crashArb, fc.array(opArb, { minLength: 3, maxLength: 14 }))
  .map(([crash, ops]) => [{ t: 'clone', force: false, ...(crash ? { crash } : {}) } as Op, ...ops]);

export interface Template {
  readonly path: string;
  /** Byte ranges a partition sync copies, by its partition list (as text). */
  readonly ranges: Map<string, { start: number; length: number }[]>;
  /** Partition interiors, where the host writes. */
  readonly partitions: { start: number; length: number }[];
}

/** A 2 MiB GPT drive with two partitions, made once and copied for each sequence. */
export async function makeTemplate(dir: string): Promise<Template> {
  const path = join(dir, 'template.img');
  writeFileSync(path, Buffer.alloc(0));
  truncateSync(path, SIZE);
  execFileSync('sfdisk', ['-q', path], { input: 'label: gpt\nstart=64, size=1024\nstart=1088, size=2900\n' });
  const dev = await openDrive(path);
  try {
    const layout = await readLayout(dev, { sniff: false });
    const ranges = new Map<string, { start: number; length: number }[]>();
    for (const parts of [[1], [2], [1, 2]]) ranges.set(String(parts), regionsToCopy(layout, parts, SIZE).ranges.map((r) => ({ start: r.start, length: r.length })));
    ranges.set('', [{ start: 0, length: SIZE }]);
    return { path, ranges, partitions: layout.partitions.map((p) => ({ start: p.startByte, length: p.sizeBytes })) };
  } finally {
    await dev.close();
  }
}

class SimulatedKill extends Error {}

type Drive = 'X' | 'Y';

interface Pending {
  readonly kind: 'clone' | 'sync' | 'restore';
  readonly target: Drive;
  /** What the target held when the copy started: what recover must give back (none for a first clone). */
  readonly before: Buffer | null;
  /** What the target holds once the copy completes. */
  readonly expected: Buffer;
  /** The request that started it: only the same one resumes it. */
  readonly request: string;
  /** Blocks of the target another writer changed while the copy was interrupted: a rollback cannot know their old content. */
  readonly tampered: { start: number; length: number }[];
}

export interface SequenceResult {
  /** "sync[2]/manifest: done", "recover: refused", … one per operation. */
  readonly steps: string[];
  readonly violations: string[];
}

/** Runs one sequence in `dir` (emptied first). */
export async function runSequence(dir: string, template: Template, ops: readonly Op[]): Promise<SequenceResult> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const stateDir = join(dir, 'state');
  const path: Record<Drive, string> = { X: join(dir, 'x.img'), Y: join(dir, 'y.img') };
  copyFileSync(template.path, path.X);
  // The standby starts as another drive's old content: its own bytes, same size.
  copyFileSync(template.path, path.Y);
  scribble(path.Y, template.partitions, 50, 7);

  const m = {
    paired: false,
    active: 'X' as Drive,
    standby: 'Y' as Drive,
    /** What the standby holds as a whole copy, once it is consistent. */
    backup: null as Buffer | null,
    pending: null as Pending | null,
    grown: null as Drive | null,
    failoversSinceCopy: 0,
  };
  const steps: string[] = [];
  const violations: string[] = [];
  const read = (d: Drive) => readFileSync(path[d]);
  const fail = (what: string) => violations.push(`step ${steps.length} (${steps[steps.length - 1]}): ${what}`);

  const common = { stateDir, chunkSize: CHUNK, checkpointMs: 0, batchBytes: 32 * KiB };

  for (const op of ops) {
    const label = describe(op);
    steps.push(label);
    const before = { X: read('X'), Y: read('Y') };
    const expectRefusal = (why: string | null) => why;
    let refusal: string | null = null;
    let run: (() => Promise<unknown>) | null = null;
    let onDone: ((r: unknown) => void) | null = null;
    let startPending: Pending | null = null;
    let recoverPending: Pending | null = null;

    switch (op.t) {
      case 'host-write': {
        // Copies run with the host off, but between an interrupted copy and its resume the host may have booted.
        if (m.grown === m.active) {
          steps[steps.length - 1] += ': skipped';
          continue;
        }
        const written = scribble(path[m.active], template.partitions, op.blocks, op.seed);
        // An interrupted restore was writing the active drive.
        if (m.pending?.target === m.active) m.pending.tampered.push(...written);
        steps[steps.length - 1] += ': done';
        continue;
      }
      case 'standby-write': {
        // Another tool writes to a standby the records call inconsistent (a copy onto it was interrupted).
        if (!m.pending || m.pending.target !== m.standby || m.grown === m.standby) {
          steps[steps.length - 1] += ': skipped';
          continue;
        }
        m.pending.tampered.push(...scribble(path[m.standby], template.partitions, op.blocks, op.seed));
        steps[steps.length - 1] += ': done';
        continue;
      }
      case 'grow': {
        const d = op.which === 'active' ? m.active : m.standby;
        // Also while a copy is interrupted: a resume or a rollback must then be refused.
        if (!m.paired || m.grown) {
          steps[steps.length - 1] += ': skipped';
          continue;
        }
        truncateSync(path[d], SIZE + 8 * 512);
        m.grown = d;
        steps[steps.length - 1] += ': done';
        continue;
      }
      case 'size-back': {
        if (!m.grown) {
          steps[steps.length - 1] += ': skipped';
          continue;
        }
        truncateSync(path[m.grown], SIZE);
        // A failover may have made the grown drive the standby, its backup taken at the grown size.
        if (m.grown === m.standby && m.backup && m.backup.length > SIZE) m.backup = m.backup.subarray(0, SIZE);
        m.grown = null;
        steps[steps.length - 1] += ': done';
        continue;
      }
      case 'clone':
      case 'sync':
      case 'restore': {
        const source = op.t === 'restore' ? m.standby : m.active;
        const target = op.t === 'restore' ? m.active : m.standby;
        // What the request asks for, once a clone onto a consistent backup is known to run as a sync.
        let kind: 'clone' | 'sync' | 'restore' = op.t;
        let partitions = op.t === 'sync' ? op.partitions : [];
        const mode = op.t === 'sync' ? op.mode : 'compare';
        if (op.t === 'clone' && m.paired && !m.pending && m.backup && !op.force) kind = 'sync';
        if (op.t === 'clone' && kind === 'sync') partitions = [];
        const request = `${kind}:${source}>${target}:${partitions.join(',')}:${kind === 'clone' ? 'clone' : mode}`;
        if (op.t === 'clone') {
          if (m.pending && m.pending.kind !== 'clone') refusal = expectRefusal('an interrupted copy other than a clone is pending');
          else if (m.grown) refusal = 'a drive changed size';
          else if (kind === 'sync' && m.failoversSinceCopy > 1) refusal = 'split brain';
        } else if (!m.paired) refusal = 'not paired';
        else if (m.grown) refusal = 'a drive changed size';
        else if (m.pending) {
          if (m.pending.request !== request) refusal = 'another copy is pending';
        } else if (op.t === 'restore' && !m.backup) refusal = 'the standby is not consistent';
        else if (op.t === 'sync' && m.failoversSinceCopy > 1) refusal = 'split brain';
        if (refusal) break;
        const content = read(source);
        const old = read(target);
        const ranges = kind === 'sync' ? template.ranges.get(partitions.join(','))! : [{ start: 0, length: SIZE }];
        const expected = Buffer.from(old);
        for (const r of ranges) content.copy(expected, r.start, r.start, r.start + r.length);
        // A resume ends with the source as it is now, whatever either drive went through since the interruption.
        startPending = m.pending ? { ...m.pending, expected } : { kind, target, before: kind === 'clone' ? null : old, expected, request, tampered: [] };
        const args = { ...common, source: path[source], target: path[target] };
        run = () =>
          op.t === 'clone'
            ? clone({ ...args, forceClone: op.force, openDevice: killer(op.crash, stateDir) })
            : op.t === 'sync' && op.intruder
              ? withIntruder(op.intruder, (openDevice) => sync({ ...args, partitions: op.partitions, mode: op.mode, openDevice }), target)
              : op.t === 'sync'
                ? sync({ ...args, partitions: op.partitions, mode: op.mode, openDevice: killer(op.crash, stateDir) })
                : restore({ ...args, openDevice: killer(op.crash, stateDir) });
        onDone = (r) => {
          const report = r as CopyReport;
          if (report.kind !== kind) fail(`ran as a ${report.kind}, the model expected a ${kind}`);
          const got = read(target);
          if (!got.equals(startPending!.expected)) fail(`the completed ${kind} left the target different from what it must hold (${diffSummary(got, startPending!.expected)})`);
          if (kind === 'restore') {
            // A restore writes the active drive; the standby stays the backup it was.
          } else m.backup = startPending!.expected;
          m.paired = true;
          m.pending = null;
          m.failoversSinceCopy = 0;
        };
        break;
      }
      case 'verify': {
        if (!m.paired) {
          steps[steps.length - 1] += ': skipped';
          continue;
        }
        if (m.grown) {
          refusal = 'a drive changed size';
          break;
        }
        run = () => verify({ ...common, source: path[m.active], target: path[m.standby] });
        onDone = (r) => {
          const same = read(m.active).equals(read(m.standby));
          if ((r as { identical: boolean }).identical !== same) fail(`verify said identical=${(r as { identical: boolean }).identical}, the drives are ${same ? '' : 'not '}identical`);
        };
        break;
      }
      case 'recover': {
        if (!m.paired && !m.pending) {
          steps[steps.length - 1] += ': skipped';
          continue;
        }
        const target = m.pending?.target ?? m.standby;
        if (m.pending?.kind === 'clone') refusal = 'an interrupted first clone has nothing to roll back to';
        else if (m.pending && m.grown === target) refusal = 'the drive to roll back changed size';
        if (refusal) break;
        run = () => recover({ ...common, target: path[target], openDevice: killer(op.crash, stateDir) });
        recoverPending = m.pending;
        onDone = () => {
          if (m.pending) {
            const got = read(target);
            const want = untampered(m.pending, got);
            if (!got.equals(want)) fail(`recover left ${target} different from its content before the interrupted ${m.pending.kind} (${diffSummary(got, want)})`);
            // The rolled-back drive is whole again; when it is the standby (also after a failover during a restore) it is the backup.
            if (target === m.standby) m.backup = want;
            m.pending = null;
          } else if (!read(target).equals(before[target])) fail('recover with nothing to recover changed the drive');
        };
        break;
      }
      case 'failover': {
        if (!m.paired) {
          steps[steps.length - 1] += ': skipped';
          continue;
        }
        if (!m.backup || (m.pending && m.pending.kind !== 'restore')) {
          refusal = 'the standby is not consistent';
          break;
        }
        run = async () => recordFailover(stateDir);
        onDone = () => {
          [m.active, m.standby] = [m.standby, m.active];
          // The old active drive is the standby now: whatever it holds is what it holds.
          m.backup = m.pending?.target === m.standby ? null : read(m.standby);
          m.failoversSinceCopy++;
        };
        break;
      }
    }

    if (refusal) {
      steps[steps.length - 1] += ': refused';
      const attempt = op.t === 'verify' ? () => verify({ ...common, source: path[m.active], target: path[m.standby] }) : null;
      const err = await (attempt ? attempt() : attemptOp(op, m, path, common, stateDir)).then(
        () => undefined,
        (e: unknown) => e,
      );
      if (!isDpsrError(err) || err.kind !== 'refused') fail(`expected a refusal (${refusal}), got ${err === undefined ? 'success' : (err as Error).message}`);
      if (!read('X').equals(before.X) || !read('Y').equals(before.Y)) fail(`the refusal (${refusal}) changed a drive`);
      checkRecords();
      continue;
    }

    killedAt = null;
    const lastAt = existsSync(join(stateDir, 'pairs.json')) ? new PairStore(stateDir).pairs()[0]?.lastSync?.at : undefined;
    const outcome = await run!().then(
      (r) => ({ ok: true as const, r }),
      (e: unknown) => ({ ok: false as const, e }),
    );
    renameHook = null;
    if (outcome.ok) {
      steps[steps.length - 1] += ': done';
      onDone!(outcome.r);
    } else if (killedAt as Killed | null) {
      const k = killedAt as unknown as Killed;
      steps[steps.length - 1] += ': killed';
      restoreState(stateDir, k.snapshot);
      if (k.tornJournal) tearJournal(stateDir);
      // What the dead process managed to record decides what the model expects now.
      const rec = existsSync(join(stateDir, 'pairs.json')) ? new PairStore(stateDir).pairs()[0] : undefined;
      if (op.t === 'recover') {
        // A rollback killed before its record: still pending, and recover runs again; killed after it: done.
        if (recoverPending && !rec?.pendingCopy) {
          const target = recoverPending.target;
          const want = untampered(recoverPending, read(target));
          if (!read(target).equals(want)) fail('a rollback recorded as done left the drive different from its previous content');
          if (target === m.standby) m.backup = want;
          m.pending = null;
        }
      } else if (startPending && rec?.pendingCopy) {
        m.pending = startPending;
        m.paired = true;
      } else if (startPending && rec && !rec.pendingCopy && rec.lastSync?.result === 'done' && rec.lastSync.at !== lastAt) {
        // Killed after recording its completion: it is done.
        onDone!({ kind: startPending.kind });
      } else {
        // Killed before the copy recorded itself: nothing may have been written.
        if (!read('X').equals(before.X) || !read('Y').equals(before.Y)) fail('a copy killed before recording itself pending changed a drive');
        if (m.pending) fail('a resumed copy lost its pending record');
      }
    } else {
      steps[steps.length - 1] += `: FAILED`;
      fail(`the model expected this to run, it failed: ${(outcome.e as Error).message}`);
      break;
    }
    checkRecords();
  }
  return { steps, violations };

  /**
   * Runs `copy` with its first target write held back; while it waits (holding its locks, as a
   * running copy does) the intruder tries its operation, which must be refused as busy and change
   * nothing. Then the copy goes on.
   */
  async function withIntruder(intruder: Intruder, copy: (openDevice: (loc: DriveLocation, o: OpenDriveOptions) => Promise<BlockDevice>) => Promise<CopyReport>, target: Drive): Promise<CopyReport> {
    let letGo!: () => void;
    const gate = new Promise<void>((r) => (letGo = r));
    let reached!: () => void;
    const writing = new Promise<void>((r) => (reached = r));
    const openDevice = async (loc: DriveLocation, options: OpenDriveOptions): Promise<BlockDevice> => {
      const dev = await openLocated(loc, options);
      if (!options.write) return dev;
      return new Proxy(dev, {
        get(obj, prop, receiver) {
          if (prop === 'write') {
            return async (buf: Uint8Array, position: number, length?: number) => {
              reached();
              await gate;
              return obj.write(buf, position, length);
            };
          }
          const v = Reflect.get(obj, prop, receiver);
          return typeof v === 'function' ? v.bind(obj) : v;
        },
      });
    };
    const running = copy(openDevice);
    // A copy with nothing to write never reaches the gate: then there is nothing to intrude on.
    const first = await Promise.race([writing.then(() => 'writing' as const), running.then(() => 'done' as const, () => 'done' as const)]);
    if (first === 'writing') {
      const held = { X: read('X'), Y: read('Y') };
      const other = join(dir, 'other-state');
      const third = join(dir, 'z.img');
      if (!existsSync(third)) copyFileSync(template.path, third);
      const attempt =
        intruder === 'sync'
          ? sync({ ...common, source: path[m.active], target: path[m.standby] })
          : intruder === 'recover'
            ? recover({ ...common, target: path[target] })
            : intruder === 'clone-onto-the-source'
              ? clone({ ...common, stateDir: other, source: third, target: path[m.active] })
              : clone({ ...common, stateDir: other, source: third, target: path[target] });
      const err = await attempt.then(
        () => undefined,
        (e: unknown) => e,
      );
      if (!isDpsrError(err) || err.kind !== 'busy') fail(`a second writer (${intruder}) during the sync was not refused as busy: ${err === undefined ? 'it ran' : (err as Error).message}`);
      if (!read('X').equals(held.X) || !read('Y').equals(held.Y)) fail(`the refused second writer (${intruder}) changed a drive`);
    }
    letGo();
    return running;
  }

  /** The records against the model: the standby's state, and a consistent standby's bytes. */
  function checkRecords() {
    if (!existsSync(join(stateDir, 'pairs.json'))) return;
    const store = new PairStore(stateDir);
    const pair = store.pairs()[0];
    if (!pair) return;
    const state = effectiveStandbyState(store, pair);
    const standbyKey = driveKeyOf(locateDrive(path[m.standby]));
    if (pair.standbyKey !== standbyKey) fail(`the records have ${pair.standbyKey} as the standby, the model ${standbyKey}`);
    const modelConsistent = !!m.backup && !(m.pending && m.pending.kind !== 'restore');
    if ((state === 'consistent') !== modelConsistent) fail(`the records say the standby is ${state}, the model ${modelConsistent ? 'consistent' : 'not consistent'}`);
    if (state === 'consistent' && m.backup && m.grown !== m.standby) {
      const got = read(m.standby);
      if (!got.equals(m.backup)) fail(`the standby is recorded consistent but is not its last completed copy (${diffSummary(got, m.backup)})`);
    }
  }
}

/** Runs an operation the model expects refused. */
function attemptOp(op: Op, m: { active: Drive; standby: Drive; pending: Pending | null }, path: Record<Drive, string>, common: object, stateDir: string): Promise<unknown> {
  const a = { ...common, stateDir, source: path[m.active], target: path[m.standby] };
  switch (op.t) {
    case 'clone':
      return clone({ ...a, forceClone: op.force });
    case 'sync':
      return sync({ ...a, partitions: op.partitions, mode: op.mode });
    case 'restore':
      return restore({ ...a, source: path[m.standby], target: path[m.active] });
    case 'recover':
      return recover({ ...common, stateDir, target: path[m.pending?.target ?? m.standby] });
    case 'failover':
      return (async () => recordFailover(stateDir))();
    default:
      return Promise.resolve();
  }
}

interface Killed {
  readonly snapshot: Map<string, Buffer>;
  readonly tornJournal: boolean;
}
let killedAt: Killed | null = null;

/** Opens drives as the operations do; the written one dies at the chosen write or flush. */
function killer(crash: Crash | undefined, stateDir: string) {
  return async (loc: DriveLocation, options: OpenDriveOptions): Promise<BlockDevice> => {
    const dev = await openLocated(loc, options);
    if (!options.write || !crash) return dev;
    let writes = 0;
    let flushes = 0;
    let renames = 0;
    const die = () => {
      killedAt ??= { snapshot: snapshotState(stateDir), tornJournal: crash.tornJournal };
      throw new SimulatedKill('killed');
    };
    // Armed once the target is opened for writing: the copy has planned and recorded nothing yet.
    renameHook = (to) => {
      if (!to.startsWith(stateDir)) return;
      if (killedAt || (crash.at === 'state-write' && renames++ === crash.n)) die();
    };
    return new Proxy(dev, {
      get(obj, prop, receiver) {
        if (prop === 'write') {
          return async (buf: Uint8Array, position: number, length?: number) => {
            if (killedAt || (crash.at === 'write' && writes++ === crash.n)) die();
            return obj.write(buf, position, length);
          };
        }
        if (prop === 'flush') {
          return async () => {
            if (killedAt || (crash.at === 'flush' && flushes++ === crash.n)) die();
            return obj.flush();
          };
        }
        const v = Reflect.get(obj, prop, receiver);
        return typeof v === 'function' ? v.bind(obj) : v;
      },
    });
  };
}

/** Every file of the state directory but locks, which the kernel frees at a process's death. */
function snapshotState(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && !/lock/.test(e.name)) out.set(relative(dir, p), readFileSync(p));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

function restoreState(dir: string, snap: Map<string, Buffer>) {
  const now = snapshotState(dir);
  for (const p of now.keys()) if (!snap.has(p)) rmSync(join(dir, p), { force: true });
  for (const [p, data] of snap) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), data);
  }
  // A lock left by the dead copy is free now.
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/lock/.test(e.name) && e.isFile()) rmSync(p, { force: true });
    }
  };
  walk(dir);
}

/** A record half appended when the process died: a valid header promising more data than arrived. */
function tearJournal(dir: string) {
  const pairs = join(dir, 'pairs');
  if (!existsSync(pairs)) return;
  for (const id of readdirSync(pairs)) {
    const j = join(pairs, id, 'undo.journal');
    if (!existsSync(j)) continue;
    const header = Buffer.alloc(24);
    header.writeUInt32LE(0x4c4e524a, 0);
    header.writeUInt32LE(4096, 4);
    header.writeBigUInt64LE(BigInt(statSync(j).size % SIZE), 8);
    appendFileSync(j, Buffer.concat([header, Buffer.alloc(100, 0xa5)]));
  }
}

/** What a rollback must give back: the content before the copy, but where another writer changed a block since, what is there now. */
function untampered(pending: Pending, now: Buffer): Buffer {
  const want = Buffer.from(pending.before!);
  for (const t of pending.tampered) now.copy(want, t.start, t.start, t.start + t.length);
  return want;
}

/** Random 4 KiB-aligned writes inside the partitions; returns the blocks written. */
function scribble(file: string, partitions: readonly { start: number; length: number }[], blocks: number, seed: number): { start: number; length: number }[] {
  const written: { start: number; length: number }[] = [];
  const data = readFileSync(file);
  const next = xorshift32(seed);
  for (let i = 0; i < blocks; i++) {
    const p = partitions[next() % partitions.length]!;
    const slots = Math.floor(p.length / 4096);
    const at = p.start + (next() % slots) * 4096;
    for (let b = 0; b < 4096; b += 4) data.writeUInt32LE(next(), at + b);
    written.push({ start: at, length: 4096 });
  }
  writeFileSync(file, data);
  return written;
}

function diffSummary(a: Buffer, b: Buffer): string {
  let first = -1;
  let count = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i += 512) {
    if (!a.subarray(i, i + 512).equals(b.subarray(i, i + 512))) {
      if (first < 0) first = i / 512;
      count++;
    }
  }
  return `${count} sectors differ, the first at LBA ${first}${a.length !== b.length ? `, sizes ${a.length} and ${b.length}` : ''}`;
}

export function describe(op: Op): string {
  const crash = 'crash' in op && op.crash ? ` killed@${op.crash.at}${op.crash.n}${op.crash.tornJournal ? '+torn' : ''}` : '';
  if (op.t === 'recover') return `recover${crash}`;
  switch (op.t) {
    case 'sync':
      return op.intruder ? `sync[${op.partitions.join(',')}]/${op.mode} with a second writer (${op.intruder})` : `sync[${op.partitions.join(',')}]/${op.mode}${crash}`;
    case 'clone':
      return `clone${op.force ? ' --force' : ''}${crash}`;
    case 'restore':
      return `restore${crash}`;
    case 'grow':
      return `grow ${op.which}`;
    case 'host-write':
      return `host writes ${op.blocks} blocks`;
    case 'standby-write':
      return `another tool writes ${op.blocks} blocks to the standby`;
    default:
      return op.t;
  }
}
