/** The nodes read a job's percent from the shapes the daemon sends: job records and job.progress events. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { percentOf } = require('../../firmware/flows/lib/util.js') as { percentOf(job: unknown): number | undefined };

const progress = { phase: 'copy', bytesDone: 421, bytesTotal: 1000, bytesWritten: 100, rate: 5, etaSeconds: 3, percent: 42.14 };

test('percent of a job record, of a job.progress event, and of neither', () => {
  const table: [string, unknown, number | undefined][] = [
    ['job record', { id: '1', kind: 'sync', state: 'running', progress }, 42.1],
    ['job.progress event', { id: '1', kind: 'sync', progress }, 42.1],
    ['job without progress yet', { id: '1', kind: 'sync', state: 'running', progress: null }, undefined],
    ['a progress object itself', progress, 42.1],
    ['past the end, clamped', { progress: { ...progress, percent: 100.4 } }, 100],
    ['not a number', { progress: { ...progress, percent: 'soon' } }, undefined],
    ['nothing', undefined, undefined],
  ];
  for (const [what, job, want] of table) assert.is(percentOf(job), want, what);
});

test.run();
