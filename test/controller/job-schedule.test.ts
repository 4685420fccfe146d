/** The scheduling decision of the job queue, as a table: waiting and running jobs in, the ones to start out. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { conflicts, startable, type JobSlot } from '../../firmware/controller/job-schedule.ts';

const sys = (id: string): JobSlot => ({ id, pair: 'system', bays: ['A', 'B'], bridge: 'usb' });
const data = (id: string, bridge = 'usb'): JobSlot => ({ id, pair: 'data', bays: ['C', 'D'], bridge });
const other = (id: string, bridge = 'usb2'): JobSlot => ({ id, pair: 'archive', bays: ['E', 'F'], bridge });
const alone = (id: string): JobSlot => ({ id, pair: null, bays: [], bridge: null });
/** A misconfigured overlap the config refuses, still held apart here. */
const sharesC = (id: string): JobSlot => ({ id, pair: 'odd', bays: ['C', 'G'], bridge: 'usb9' });

const serial = { parallel: false };
const parallel = { parallel: true };

test('serial (the default): one job at a time, the oldest waiting first', () => {
  const table: [JobSlot[], JobSlot[], string[]][] = [
    [[], [], []],
    [[sys('1')], [], ['1']],
    [[sys('1'), data('2')], [], ['1']],
    [[data('2')], [sys('1')], []],
    [[data('2', 'usb2')], [sys('1')], [], ],
    [[other('3')], [data('2', 'own')], []],
  ];
  for (const [waiting, running, want] of table) assert.equal(startable(waiting, running, serial), want, JSON.stringify({ waiting, running }));
});

test('parallel: different pairs on different bridges run together; a shared bridge, bay or pair waits', () => {
  const table: [string, JobSlot[], JobSlot[], string[]][] = [
    ['same bridge budget waits', [data('2')], [sys('1')], []],
    ['own bridge runs', [data('2', 'usb2')], [sys('1')], ['2']],
    ['two waiting on own bridges both start', [data('2', 'usb2'), other('3', 'usb3')], [sys('1')], ['2', '3']],
    ['same pair waits', [data('3', 'usb2')], [data('2', 'usb2')], []],
    ['a shared bay waits', [sharesC('3')], [data('2', 'usb2')], []],
    ['a job that runs alone waits for the others', [alone('2')], [sys('1')], []],
    ['nothing starts beside a job that runs alone', [data('2', 'usb2')], [alone('1')], []],
    ['a job that runs alone starts when nothing runs', [alone('1'), data('2', 'usb2')], [], ['1']],
    ['no overtaking a conflicting earlier job', [data('2'), data('3', 'usb2')], [sys('1')], []],
    ['overtaking an earlier job it does not conflict with', [data('2'), other('3', 'usb3')], [sys('1')], ['3']],
    ['in order when nothing runs', [sys('1'), data('2', 'usb2'), other('3', 'usb2')], [], ['1', '2']],
  ];
  for (const [what, waiting, running, want] of table) assert.equal(startable(waiting, running, parallel), want, what);
});

test('conflicts is symmetric', () => {
  const slots = [sys('1'), data('2'), data('3', 'usb2'), other('4'), alone('5'), sharesC('6')];
  for (const a of slots) for (const b of slots) assert.is(conflicts(a, b), conflicts(b, a), `${a.id} ${b.id}`);
});

test.run();
