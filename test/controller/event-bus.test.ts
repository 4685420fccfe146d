/**
 * The event bus's typed subscription: only the asked-for types, their data,
 * until unsubscribed; its persisted log on a state directory that fills up.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventBus } from '../../firmware/controller/events.ts';
import { requireEnv } from '../support/require.ts';

test('on() hears the asked-for types with their data, and nothing once unsubscribed', () => {
  const bus = new EventBus(null, { replay: 0, logMaxBytes: 1 << 20 });
  const heard: string[] = [];
  const off = bus.on(['alert', 'drive'], (data, type) => heard.push(`${type}:${'code' in data ? data.code : data.action}`));
  bus.publish('alert', { level: 'warning', code: 'verify-differs', message: 'm' });
  bus.publish('relay', { channel: 'muxA', on: true });
  bus.publish('drive', { bay: 'A', action: 'pulled' });
  off();
  bus.publish('alert', { level: 'info', code: 'later', message: 'm' });
  assert.equal(heard, ['alert:verify-differs', 'drive:pulled']);
  assert.is(bus.listenerCount, 0);
});

test('an event the full state directory cannot take is left out whole: no torn line stays in the log to swallow the events written after space came back', async () => {
  if (!requireEnv('the full event log test', { root: true, tools: ['mount', 'umount'] })) return;
  const mnt = mkdtempSync(join(tmpdir(), 'dpsr-events-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
  try {
    const file = join(mnt, 'events.jsonl');
    const errors: string[] = [];
    const bus = new EventBus(file, { replay: 10, logMaxBytes: 1 << 20 }, (e) => errors.push((e as Error).message));
    bus.publish('alert', { level: 'info', code: 'before', message: 'm' });
    try {
      writeFileSync(join(mnt, 'filler'), Buffer.alloc(1 << 20));
    } catch {
      /* ENOSPC: the filesystem is full, a few KiB of the filler written */
    }
    // Larger than what is left: a part of it fits, the rest does not.
    bus.publish('alert', { level: 'info', code: 'too-large', message: 'x'.repeat(20_000) });
    assert.is(errors.length, 1, 'the failed write is reported');
    rmSync(join(mnt, 'filler'));
    bus.publish('alert', { level: 'info', code: 'after', message: 'm' });
    const codes = (await bus.readLog(10)).map((e) => (e.data as { code: string }).code);
    assert.equal(codes, ['before', 'after']);
    for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) JSON.parse(line);
  } finally {
    execFileSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test.run();
