// The event-stream parser of the node package, fed the way a socket delivers
// bytes: split anywhere, with every line ending the spec allows.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { SseParser } = require('../../firmware/flows/lib/sse.js') as {
  SseParser: new () => { feed(s: string): { event: string; data: string; id: string }[]; retry?: number; lastId: string };
};

const stream = 'retry: 2000\n: hello\n\nid: b:1\nevent: job.progress\ndata: {"a":1}\n\nid: b:2\r\nevent: alert\r\ndata: line one\r\ndata: line two\r\n\r\ndata:no-space\rdata:  two spaces\r\r\n';

test('whole stream at once: events, ids, retry, comments skipped', () => {
  const p = new SseParser();
  const evs = p.feed(stream);
  assert.equal(evs, [
    { event: 'job.progress', data: '{"a":1}', id: 'b:1' },
    { event: 'alert', data: 'line one\nline two', id: 'b:2' },
    { event: 'message', data: 'no-space\n two spaces', id: 'b:2' },
  ]);
  assert.is(p.retry, 2000);
});

test('split at every position gives the same events', () => {
  const whole = new SseParser().feed(stream);
  for (let i = 0; i <= stream.length; i++) {
    const p = new SseParser();
    const evs = [...p.feed(stream.slice(0, i)), ...p.feed(stream.slice(i))];
    assert.equal(evs, whole, `split at ${i}`);
  }
});

test('one character at a time, CRLF split between chunks', () => {
  const p = new SseParser();
  const evs = [...stream].flatMap((c) => p.feed(c));
  assert.equal(evs, new SseParser().feed(stream));
});

test('an event without data is dropped, an unfinished one waits', () => {
  const p = new SseParser();
  assert.equal(p.feed('event: x\n\ndata: partial'), []);
  assert.equal(p.feed('\n'), []);
  assert.equal(p.feed('\n'), [{ event: 'message', data: 'partial', id: '' }]);
});

test.run();
