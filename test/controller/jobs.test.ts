import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventBus } from '../../firmware/controller/events.ts';
import { JobRunner, type JobContext } from '../../firmware/controller/jobs.ts';

async function withRunner(fn: (r: JobRunner, events: string[]) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-jobs-'));
  try {
    const bus = new EventBus(null, { replay: 0, logMaxBytes: 1 << 20 });
    const events: string[] = [];
    bus.subscribe((e) => events.push(e.type));
    await fn(new JobRunner(dir, { history: 50, logLines: 50 }, bus), events);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A run that waits for `gate`, then does `finish` with its context. */
function gated(finish: (ctx: JobContext) => unknown): { run: (ctx: JobContext) => Promise<unknown>; open: () => void } {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  return { run: async (ctx) => { await gate; return finish(ctx); }, open };
}

test('a cancel that comes after the work completed: the job is done, with a note that the cancel came too late', async () => {
  await withRunner(async (r, events) => {
    const g = gated(() => ({ copied: 'all' }));
    const job = r.start('sync', {}, 'api', g.run);
    r.cancel(job.id, true);
    g.open(); // the work ignores the signal: it was past its last step
    await r.idle();
    const j = r.get(job.id);
    assert.is(j.state, 'done');
    assert.equal(j.result, { copied: 'all' });
    assert.is(j.cancel?.late, true);
    assert.ok(j.log.some((l) => /cancel came too late: the sync had already completed \(nothing was rolled back\)/.test(l.message)), JSON.stringify(j.log));
    assert.ok(events.includes('job.done') && !events.includes('job.cancelled'), events.join());
  });
});

test('a run that stops short on a cancel and returns a partial result says so: cancelled', async () => {
  await withRunner(async (r, events) => {
    const g = gated((ctx) => {
      if (ctx.signal.aborted) ctx.stoppedEarly();
      return { written: 1, of: 3 };
    });
    const job = r.start('restore-files', {}, 'api', g.run);
    r.cancel(job.id, false);
    g.open();
    await r.idle();
    const j = r.get(job.id);
    assert.is(j.state, 'cancelled');
    assert.equal(j.result, { written: 1, of: 3 }, 'the partial result is kept');
    assert.is(j.cancel?.late, undefined);
    assert.ok(events.includes('job.cancelled'), events.join());
  });
});

test('a run that throws on a cancel is cancelled; one with no cancel is done', async () => {
  await withRunner(async (r) => {
    const g = gated((ctx) => {
      ctx.signal.throwIfAborted();
      return 'whole';
    });
    const job = r.start('sync', {}, 'api', g.run);
    r.cancel(job.id, false);
    g.open();
    await r.idle();
    assert.is(r.get(job.id).state, 'cancelled');

    const plain = r.start('verify', {}, 'api', async () => 'whole');
    await r.idle();
    assert.is(r.get(plain.id).state, 'done');
    assert.is(r.get(plain.id).cancel, undefined);
  });
});

test.run();
