/**
 * Pre- and post-snapshot hooks: a command or an HTTP call, with a timeout;
 * their checks; and their place in a live sync (freeze before the snapshot
 * instant, thaw right after it, thaw also when the freeze failed; a failed
 * freeze skips the run or goes on crash-consistent, per the fallback).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type IncomingMessage } from 'node:http';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkHook, runHook, liveSync, ChangedBlockTracker, type HookSpec, type Epoch } from '../../src/snapshot/index.ts';
import { StorageDaemon } from '../../src/export/index.ts';
import { readFlaggedRanges, STATE_DIRTY } from '../../src/sata-bridge/index.ts';
import { BadInputError, DeviceError } from '../../src/errors.ts';
import { randomImage, tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { rejection } from '../support/assert-async.ts';
import { probeSector, readExport } from './support/host-writer.ts';

const dir = tempDir('dpsr-hooks-');

test('hook specs are checked', () => {
  const bad: [unknown, RegExp][] = [
    [{ command: [] }, /command must be a non-empty list/],
    [{ command: 'fsfreeze -f /' }, /command must be a non-empty list/],
    [{ url: 'not a url' }, /is not a URL/],
    [{ url: 'ftp://host/x' }, /is not http or https/],
    [{ url: 'http://host/x', method: 'DELETE' }, /method DELETE/],
    [{ command: ['true'], timeoutMs: 0 }, /timeoutMs 0/],
  ];
  for (const [spec, msg] of bad) {
    const e = (() => {
      try {
        checkHook(spec as HookSpec, 'pre');
      } catch (x) {
        return x;
      }
    })();
    assert.instance(e, BadInputError, JSON.stringify(spec));
    assert.match((e as Error).message, msg);
  }
});

test('a command hook gets its phase; a failing one names its exit code and stderr; a hanging one is killed at its timeout', async () => {
  const log = join(dir, 'phases.log');
  writeFileSync(log, '');
  await runHook({ command: ['sh', '-c', `echo "$DPSR_SNAPSHOT_PHASE" >> ${log}`] }, 'pre');
  await runHook({ command: ['sh', '-c', `echo "$DPSR_SNAPSHOT_PHASE" >> ${log}`] }, 'post');
  assert.is(readFileSync(log, 'utf8'), 'pre\npost\n');
  const fail = await rejection(runHook({ command: ['sh', '-c', 'echo cannot freeze / >&2; exit 3'] }, 'pre'));
  assert.instance(fail, DeviceError);
  assert.match((fail as Error).message, /the pre-snapshot hook sh exited with 3: cannot freeze \//);
  const hang = await rejection(runHook({ command: ['sleep', '30'], timeoutMs: 200 }, 'pre'));
  assert.match((hang as Error).message, /did not finish within 0.2 s/);
});

test('an HTTP hook: the phase in a header and the body; a non-2xx answer and a silent server are errors', async () => {
  const seen: { phase: string | undefined; body: string }[] = [];
  const server = createServer(async (req: IncomingMessage, res) => {
    let body = '';
    for await (const c of req) body += c;
    if (req.url === '/hang') return; // never answers
    seen.push({ phase: req.headers['x-dpsr-snapshot-phase'] as string | undefined, body });
    res.statusCode = req.url === '/fail' ? 503 : 204;
    res.end(req.url === '/fail' ? 'VSS writer busy' : undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    await runHook({ url: `${base}/freeze` }, 'pre');
    assert.equal(seen, [{ phase: 'pre', body: '{"phase":"pre"}' }]);
    const fail = await rejection(runHook({ url: `${base}/fail` }, 'post'));
    assert.match((fail as Error).message, /the post-snapshot hook .*\/fail answered 503: VSS writer busy/);
    const hang = await rejection(runHook({ url: `${base}/hang`, timeoutMs: 200 }, 'pre'));
    assert.match((hang as Error).message, /did not answer within 0.2 s/);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

const haveQsd = requireEnv('snapshot hooks in a live sync', { tools: ['qemu-storage-daemon', 'qemu-img'] });
const MiB = 1024 * 1024;

async function withRig(name: string, body: (d: StorageDaemon, t: ChangedBlockTracker, stateDir: string) => Promise<void>): Promise<void> {
  const runDir = join(dir, name);
  const stateDir = join(runDir, 'state');
  mkdirSync(stateDir, { recursive: true });
  const daemon = new StorageDaemon({ drive: randomImage(join(runDir, 'drive.img'), 16 * MiB, 2), runDir, listen: { unix: join(runDir, 'nbd.sock') } });
  await daemon.start();
  try {
    await body(daemon, new ChangedBlockTracker({ daemon, stateFile: join(stateDir, 'cbt.json'), readRanges: (u, c) => readFlaggedRanges(u, c, STATE_DIRTY) }), stateDir);
  } finally {
    await daemon.stop();
  }
}

test('in a live sync: freeze before the snapshot, thaw right after it (before the copy), application-consistent', async () => {
  if (!haveQsd) return;
  await withRig('order', async (daemon, tracker, stateDir) => {
    const log = join(dir, 'order.log');
    writeFileSync(log, '');
    const hook = (): HookSpec => ({ command: ['sh', '-c', `echo "$DPSR_SNAPSHOT_PHASE" >> ${log}`] });
    const result = await liveSync({
      daemon,
      tracker,
      cacheDir: stateDir,
      cache: { budgetBytes: 32 * MiB },
      quiescence: { quietMs: 50, maxWaitMs: 1000, fallback: 'skip', pollMs: 20 },
      hooks: { pre: hook(), post: hook() },
      probe: probeSector,
      copy: async (uri: string, epoch: Epoch) => {
        writeFileSync(log, `${readFileSync(log, 'utf8')}copy\n`);
        return { size: (await readExport(uri)).length, trusted: epoch.trusted };
      },
      rollback: async () => assert.unreachable('no rollback after a copy that worked'),
    });
    assert.is(result.outcome, 'done');
    if (result.outcome !== 'done') return;
    assert.is(result.consistency, 'application');
    assert.equal(result.report, { size: 16 * MiB, trusted: false });
    assert.is(readFileSync(log, 'utf8'), 'pre\npost\ncopy\n');
  });
});

test('a failing freeze: thawed anyway; fallback skip skips the run, crash-consistent goes on without it', async () => {
  if (!haveQsd) return;
  await withRig('failing', async (daemon, tracker, stateDir) => {
    const log = join(dir, 'failing.log');
    writeFileSync(log, '');
    const base = {
      daemon,
      tracker,
      cacheDir: stateDir,
      cache: { budgetBytes: 32 * MiB },
      hooks: { pre: { command: ['sh', '-c', 'exit 1'] }, post: { command: ['sh', '-c', `echo thaw >> ${log}`] } },
      probe: probeSector,
      copy: async () => 'copied',
      rollback: async () => undefined,
    };
    const skipped = await liveSync({ ...base, quiescence: { quietMs: 50, maxWaitMs: 1000, fallback: 'skip', pollMs: 20 } });
    assert.is(skipped.outcome, 'skipped');
    if (skipped.outcome === 'skipped') assert.match(skipped.reason, /pre-snapshot hook sh exited with 1: this run is skipped/);
    const went = await liveSync({ ...base, quiescence: { quietMs: 50, maxWaitMs: 1000, fallback: 'crash-consistent', pollMs: 20 } });
    assert.is(went.outcome, 'done');
    if (went.outcome === 'done') {
      assert.is(went.consistency, 'quiet');
      assert.match(went.notes.join('\n'), /without the application's help/);
    }
    assert.is(readFileSync(log, 'utf8'), 'thaw\nthaw\n', 'thawed after each failed freeze');
  });
});

test.run();
