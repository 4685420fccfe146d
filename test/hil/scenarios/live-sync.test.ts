/**
 * Inline mode, live syncs under load. The guest agent's own load writer
 * (image/agent.sh) appends numbered, checksummed records with an fsync each
 * and rewrites four 64 KiB files in place, from the first boot to the end,
 * and never stops; the rig hears every fsynced write announced on the serial
 * console. Three live syncs run while it writes:
 *
 * 1. crash-consistent (the freeze hook answers 503): a copy of the standby
 *    boots in a second QEMU, its kernel recovers the data filesystem's
 *    journal, e2fsck -fn then finds it clean; its records are an unbroken
 *    prefix of whole, checksummed records holding every record announced
 *    before the snapshot instant (from the job's log) and none written after
 *    it; every in-place file's 4 KiB blocks are each one whole version, all
 *    of one version except in at most one file (the rewrite in flight at the
 *    instant: its last fsynced version and the next), no version older than
 *    the last one announced before the instant or newer than the writes
 *    around it allow.
 * 2. application-consistent: the controller's pre/post hooks reach the
 *    agent's fsfreeze (support/freeze-relay.ts); the freeze is answered
 *    before the instant, the thaw asked for after it; the standby needs no
 *    journal recovery (e2fsck -fn clean as copied) and every in-place file is
 *    a single version; the same record checks.
 * 3. a snapshot cache (16 MiB, the smallest allowed) too small for the write
 *    rate (a 16 MiB file rewritten in place pass after pass): the snapshot
 *    breaks, the sync fails, the standby is byte for byte what it was before
 *    the sync, the `snapshot-broken` alert is raised, and the guest's writes
 *    all went on without an error (its writers and its kernel log say so).
 *
 * Each case reports the longest write (with its fsync) the guest timed
 * during the sync.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { rigAvailable, scenario, type ScenarioCase } from '../support/scenario.ts';
import { seconds, type SimulatedRig } from '../rig.ts';
import { requireEnv } from '../../support/require.ts';
import { sleep } from '../controller.ts';
import type { SerialLine } from '../qemu-host.ts';
import { LoadLog, checkRecords, inplaceBlockVersions, INPLACE_FILES } from '../support/load.ts';
import { FreezeRelay } from '../support/freeze-relay.ts';
import { bootStandbyCopy, type StandbyBoot } from '../support/standby.ts';

const onRealRig = (process.env.DPSR_HIL_RIG ?? 'sim') === 'real';
if (onRealRig) console.log('SKIP: the live-sync scenario runs on the simulated rig only (the real rig has no inline wiring yet)');

/** The smallest budget the config allows; the churn below overwrites more than that during the copy. */
const CACHE_BUDGET_MIB = 16;
const CHURN_MIB = 16;
/**
 * The standby's simulated bridge: slow enough that case 3's whole-drive copy
 * (64 MiB of the standby read at this rate) outlasts the churn's first pass,
 * fast enough for the first clone.
 */
const BRIDGE_MIBPS = 12;
/** How long a host write may wait for its old block to reach the cache before the snapshot breaks instead. */
const CBW_TIMEOUT_S = 5;
/** An announcement leaves the guest right after its fsync; this covers its way over the serial console and the event loop. */
const SERIAL_MARGIN_MS = 1000;

async function until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > end) throw new Error(`${what}: not within ${seconds(timeoutMs)}`);
    await sleep(50);
  }
}

const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

interface LiveSyncRun {
  job: any;
  log: string;
  /** Date.now() around the POST and when the job was seen finished. */
  start: number;
  end: number;
  /** The snapshot instant lies in [from, to] (the controller's clock, from the job's log). */
  from: number;
  to: number;
}

if (!onRealRig && rigAvailable('live-sync scenario') && requireEnv('the live-sync scenario', { tools: ['qemu-storage-daemon', 'qemu-img', 'e2fsck', 'dumpe2fs', 'debugfs'] })) {
  const relay = await FreezeRelay.listen();
  const hook = (phase: 'freeze' | 'thaw') => ({ url: relay.url(phase), timeoutSeconds: 20 });
  test(
    'live syncs under a continuous guest writer: crash-consistent and frozen pictures boot clean with every fsynced record, a too-small cache breaks the snapshot without failing a host write',
    scenario(
      'live-sync',
      {
        inline: true,
        bridgeMiBps: BRIDGE_MIBPS,
        config: {
          // The guest never goes quiet: a short wait, then the snapshot anyway.
          sync: { quiescence: { quietSeconds: 0.5, maxWaitSeconds: 1, fallback: 'crash-consistent' } },
          inline: { snapshot: { cacheBudgetMiB: CACHE_BUDGET_MIB, cbwTimeoutSeconds: CBW_TIMEOUT_S, preHook: hook('freeze'), postHook: hook('thaw') } },
        },
      },
      async ({ rig, note, recordCase }) => {
        const sim = rig as SimulatedRig;
        const load = new LoadLog();
        sim.qemu.on('line', (l: SerialLine) => load.offer(l.text));
        relay.attach(sim.qemu);
        const work = mkdtempSync(join(tmpdir(), 'dpsr-hil-live-sync-standby-'));
        try {
          await rig.transition('booted:A');
          const standbyDrive = (await rig.dpsrd.status()).drives.B.path as string;
          await sim.qemu.command('load', ['start']);
          await until(() => load.recordsBefore(Infinity) >= 20, 30_000, "the load writer's first 20 records");

          const liveSync = async (body: Record<string, unknown>): Promise<LiveSyncRun> => {
            const start = Date.now();
            const { id } = await rig.dpsrd.ok('POST', '/api/sync', body);
            const job = await rig.dpsrd.waitJob(id);
            const end = Date.now();
            const log = job.log.map((l: { message: string }) => l.message).join('\n');
            const m = /snapshot taken between (\S+) and (\S+);/.exec(log);
            assert.ok(m, `the job's log names the snapshot instant:\n${log}`);
            const from = Date.parse(m[1]!);
            const to = Date.parse(m[2]!);
            assert.ok(start <= from && from <= to && to <= end, `the instant ${m[1]}…${m[2]} lies within the sync`);
            return { job, log, start, end, from, to };
          };

          /** Runs a case; its table row is recorded whether it passes or not. */
          const runCase = async (name: string, body: (row: ScenarioCase) => Promise<void>): Promise<void> => {
            const row: ScenarioCase = { name, result: 'failed', stallMs: null, recordsChecked: null };
            try {
              await body(row);
              row.result = 'passed';
            } finally {
              recordCase(row);
            }
          };

          /** The writer went on through the sync: announcements after the instant, before the job was seen finished. */
          const wroteThrough = (s: LiveSyncRun, what: string): void => {
            const after = load.between(s.to, s.end).length;
            assert.ok(after > 0, `${what}: the guest's writes went on after the snapshot instant (${after} announced before the sync ended)`);
          };

          /** The record and in-place checks on a standby booted after sync `s`; returns the records checked and the mixed in-place files. */
          const checkFiles = (sb: StandbyBoot, s: LiveSyncRun, what: string): { records: number; mixed: number[]; versions: string } => {
            const recs = sb.files.get('load-records');
            assert.ok(recs, `${what}: the standby has /data/load-records`);
            const count = checkRecords(recs);
            const mustHave = load.recordsBefore(s.from);
            const mayHave = load.recordsBefore(s.to + SERIAL_MARGIN_MS) + 1;
            assert.ok(count >= mustHave, `${what}: every record fsynced before the snapshot instant is there (${count} ≥ ${mustHave})`);
            assert.ok(count <= mayHave, `${what}: no record written after the instant (${count} ≤ ${mayHave})`);
            const mixed: number[] = [];
            const versions: string[] = [];
            for (let f = 0; f < INPLACE_FILES; f++) {
              const buf = sb.files.get(`inplace-${f}`);
              assert.ok(buf, `${what}: the standby has /data/inplace-${f}`);
              const vs = [...new Set(inplaceBlockVersions(f, buf))].sort((a, b) => a - b);
              const lo = load.versionBefore(f, s.from);
              const hi = load.versionBefore(f, s.to + SERIAL_MARGIN_MS) + 1;
              assert.ok(vs[0]! >= lo && vs[vs.length - 1]! <= hi, `${what}: in-place file ${f} holds versions ${vs.join('+')}, within ${lo}…${hi} (fsynced before the instant … in flight at it)`);
              if (vs.length > 1) {
                mixed.push(f);
                assert.ok(vs.length === 2 && vs[1] === vs[0]! + 1, `${what}: in-place file ${f} mixes versions ${vs.join('+')}, not a rewrite in flight over its last version`);
              }
              versions.push(`${f}:v${vs.join('+')}`);
            }
            assert.ok(mixed.length <= 1, `${what}: only the rewrite in flight at the instant may be mixed, found files ${mixed.join(', ')}`);
            return { records: count, mixed, versions: versions.join(' ') };
          };

          const bootStandby = async (n: number): Promise<StandbyBoot> => {
            const sb = await bootStandbyCopy({ drive: standbyDrive, image: rig.image, dir: work, name: `live-sync-standby-${n}`, serial: 'BAY-B' });
            assert.is(sb.shutdown, 'clean', "the standby's agent unmounted and powered off");
            assert.is(sb.fsckAfter.status, 0, `e2fsck -fn after the standby's boot finds the data filesystem clean:\n${sb.fsckAfter.output}`);
            assert.not.ok(sb.needsRecoveryAfter, 'no journal left to recover after the boot');
            return sb;
          };

          await runCase('crash-consistent', async (row) => {
            relay.freezing = false;
            const s = await liveSync({ mode: 'changed' });
            assert.is(s.job.state, 'done', JSON.stringify(s.job.error));
            assert.match(s.log, /live sync from a crash-consistent snapshot/);
            row.stallMs = load.longestStall(s.start, s.end);
            assert.ok(row.stallMs < CBW_TIMEOUT_S * 1000, `no guest write waited as long as the cbw-timeout (${seconds(row.stallMs)})`);
            wroteThrough(s, 'crash-consistent');
            note(
              `crash-consistent live sync: ${(s.job.result.bytesTotal / 1024).toFixed(0)} KiB in ${seconds(s.end - s.start)}, instant ${s.to - s.from} ms wide; ${load.between(s.start, s.end).length} guest writes meanwhile, the longest ${seconds(row.stallMs)} (gap between announcements ${seconds(load.longestGap(s.start, s.end))})`,
            );
            const sb = await bootStandby(1);
            assert.ok(sb.needsRecoveryBefore, 'the crash-consistent picture has its journal in use');
            assert.ok(sb.kmsg.some((l) => /vda2\): recovery complete/.test(l)), `the standby's kernel recovered the journal:\n${sb.kmsg.join('\n')}`);
            const f = checkFiles(sb, s, 'crash-consistent');
            row.recordsChecked = f.records;
            note(
              `standby booted in a second QEMU in ${seconds(sb.bootMs)}: journal recovered, e2fsck -fn clean; records 1..${f.records} whole (≥ ${load.recordsBefore(s.from)} announced before the instant); in-place ${f.versions}${f.mixed.length ? ` (file ${f.mixed[0]} was being rewritten at the instant)` : ''}`,
            );
          });

          await runCase('frozen (pre/post hooks)', async (row) => {
            relay.freezing = true;
            const calls = relay.calls.length;
            const s = await liveSync({ mode: 'changed' });
            assert.is(s.job.state, 'done', JSON.stringify(s.job.error));
            assert.ok(/live sync from an? application snapshot/.test(s.log), `the sync says its snapshot is application-consistent:\n${s.log}`);
            const freeze = relay.calls.slice(calls).find((c) => c.phase === 'freeze');
            const thaw = relay.calls.slice(calls).find((c) => c.phase === 'thaw');
            assert.ok(freeze && freeze.status === 200, `the pre-snapshot hook froze the guest's filesystem: ${JSON.stringify(freeze)}`);
            assert.ok(thaw && thaw.status === 200 && /was=frozen/.test(thaw.detail), `the post-snapshot hook thawed it: ${JSON.stringify(thaw)}`);
            assert.ok(freeze.answered <= s.from, `frozen (${new Date(freeze.answered).toISOString()}) before the instant (${new Date(s.from).toISOString()})`);
            assert.ok(thaw.received >= s.to, `thawed (${new Date(thaw.received).toISOString()}) after the instant (${new Date(s.to).toISOString()})`);
            row.stallMs = load.longestStall(s.start, s.end);
            assert.ok(row.stallMs < CBW_TIMEOUT_S * 1000, `no guest write waited as long as the cbw-timeout (${seconds(row.stallMs)})`);
            wroteThrough(s, 'frozen');
            note(
              `frozen live sync: ${(s.job.result.bytesTotal / 1024).toFixed(0)} KiB in ${seconds(s.end - s.start)}; the guest's filesystem frozen for ${seconds(thaw.received - freeze.received)} around the instant; the longest guest write ${seconds(row.stallMs)}`,
            );
            const sb = await bootStandby(2);
            assert.not.ok(sb.needsRecoveryBefore, 'the frozen picture needs no journal recovery');
            assert.is(sb.fsckBefore?.status, 0, `e2fsck -fn finds the frozen picture clean as copied:\n${sb.fsckBefore?.output}`);
            assert.not.ok(sb.kmsg.some((l) => /vda2\): recovery complete/.test(l)), `the standby's boot replayed no journal:\n${sb.kmsg.join('\n')}`);
            const f = checkFiles(sb, s, 'frozen');
            assert.equal(f.mixed, [], 'with the filesystem frozen every in-place file is one version');
            row.recordsChecked = f.records;
            note(`frozen picture clean without recovery (e2fsck -fn before and after its boot); records 1..${f.records}; in-place ${f.versions}`);
          });

          await runCase('cache too small', async (row) => {
            relay.freezing = false;
            const before = sha256(standbyDrive);
            await sim.qemu.command('churn', ['big', CHURN_MIB], 60_000);
            const since = performance.now();
            // A whole-drive live sync: it reads the whole standby through its bridge, long enough for the churn to overflow the cache.
            const s = await liveSync({ mode: 'compare' });
            const { job, start, end } = s;
            const churnPasses = load.churn.filter((c) => c.at >= start && c.at <= end).length;
            assert.is(job.state, 'failed', `the sync fails once the snapshot broke (${churnPasses} churn passes of ${CHURN_MIB} MiB during it)`);
            assert.match(job.error.message, /snapshot broke/);
            const alert = await rig.dpsrd.events().wait((e) => e.type === 'alert' && e.data?.code === 'snapshot-broken', 10_000, 'snapshot-broken alert', since);
            assert.is(sha256(standbyDrive), before, 'the standby is rolled back: byte for byte what it was before the sync');
            row.stallMs = load.longestStall(start, end);
            assert.ok(row.stallMs < CBW_TIMEOUT_S * 1000, `no guest write waited as long as the cbw-timeout (${seconds(row.stallMs)})`);
            wroteThrough(s, 'cache too small');
            // The host's writes go on: more records after the broken sync, without an error.
            const n = load.recordsBefore(Infinity);
            await until(() => load.recordsBefore(Infinity) >= n + 10, 30_000, 'ten more records after the broken sync');
            await sim.qemu.command('churn', ['stop'], 60_000);
            assert.equal(load.errors, [], 'no write of the guest failed');
            const rolledBack = job.log.find((l: { message: string }) => /previous backup again/.test(l.message));
            note(
              `cache of ${CACHE_BUDGET_MIB} MiB under ${churnPasses} in-place passes over ${CHURN_MIB} MiB: the copy stopped and the standby was rolled back ${rolledBack ? seconds(Date.parse(rolledBack.at) - s.to) : '?'} after the instant (reading the 64 MiB standby alone takes ${seconds((64 / BRIDGE_MIBPS) * 1000)}): "${job.error.message}"; alert ${alert.data.code}; the standby's sha256 unchanged; the longest guest write meanwhile ${seconds(row.stallMs)}`,
            );
          });

          await sim.qemu.command('load', ['stop'], 60_000);
          assert.ok(load.end, 'the load writer reported its totals');
          assert.is(load.end.errors, 0, 'the load writer saw no failed write');
          const kmsg = (await sim.qemu.command('kmsg')).data;
          const bad = kmsg.filter((l) => /I\/O error|Buffer I\/O|blk_update_request|EXT4-fs error|EXT4-fs warning|JBD2.*abort/.test(l));
          assert.equal(bad, [], "the host's kernel logged no I/O or filesystem error");
          note(`the guest wrote ${load.end.records} records and ${load.end.rewrites} in-place rewrites without an error (kernel log clean); its longest write of the whole run ${seconds(load.end.maxcs * 10)}`);
          await rig.transition('off');
        } finally {
          relay.close();
          rmSync(work, { recursive: true, force: true });
        }
      },
    ),
  );
}

test.run();
