/** Resuming: the sync map records finished chunks while a sync runs, and a resumed sync skips them. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { clone, sync, PairStore } from '../../src/sync/index.ts';
import { CancelledError } from '../../src/errors.ts';
import { randomImage, sha256File, sparseImage, tempDir } from '../support/images.ts';

const dir = tempDir();
const MiB = 1024 * 1024;

test('a sync whose every chunk changed checkpoints progress, and the same sync resumes where it stopped', async () => {
  const stateDir = join(dir, 'state');
  const a = randomImage(join(dir, 'a.img'), 32 * MiB, 1);
  const b = sparseImage(join(dir, 'b.img'), 32 * MiB);
  await clone({ stateDir, source: a, target: b });
  randomImage(a, 32 * MiB, 2); // every block changed
  const controller = new AbortController();
  let chunks = 0;
  const err = await sync({ stateDir, source: a, target: b, chunkSize: MiB, checkpointMs: 0, signal: controller.signal, onChunkDone: () => ++chunks === 12 && controller.abort() }).catch((e: unknown) => e);
  assert.instance(err, CancelledError);
  const pair = new PairStore(stateDir).pairs()[0]!;
  const map = JSON.parse(readFileSync(join(stateDir, 'pairs', pair.id, 'sync-map.json'), 'utf8').split('\n').slice(1).join('\n'));
  const done = [...Buffer.from(map.done, 'base64')].reduce((n, byte) => n + byte.toString(2).split('1').length - 1, 0);
  assert.ok(done >= 10, `${done} chunks recorded as done`);
  const resumed = await sync({ stateDir, source: a, target: b, chunkSize: MiB });
  assert.ok(resumed.bytesResumed >= 10 * MiB, `resumed ${resumed.bytesResumed} bytes`);
  assert.is(sha256File(a), sha256File(b));
});

test('a standby that disappears during a checkpoint ends the sync with an error, not a crash', async () => {
  const { openLocated, FaultyDevice } = await import('../../src/sata-bridge/index.ts');
  const stateDir = join(dir, 'state-pull');
  const a = randomImage(join(dir, 'pa.img'), 16 * MiB, 3);
  const b = sparseImage(join(dir, 'pb.img'), 16 * MiB);
  await clone({ stateDir, source: a, target: b });
  randomImage(a, 16 * MiB, 4);
  let faulty: InstanceType<typeof FaultyDevice> | undefined;
  let chunks = 0;
  const err = await sync({
    stateDir,
    source: a,
    target: b,
    chunkSize: MiB,
    checkpointMs: 0,
    openDevice: async (loc, options) => {
      const dev = await openLocated(loc, options);
      if (!options.write) return dev;
      faulty = new FaultyDevice(dev);
      return faulty;
    },
    onChunkDone: () => ++chunks === 4 && faulty!.pull(),
  }).catch((e: unknown) => e);
  assert.instance(err, Error);
  assert.match((err as Error).message, /gone|pulled/);
});

test.run();
