/**
 * The API under bad input: every malformed request target, path parameter,
 * body and body size is a 4xx naming what is wrong, never a 500 or a dropped
 * connection; authentication comes before route matching; the event log's
 * tail is read from the end whatever the log's size.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, mkdtempSync, openSync, closeSync, ftruncateSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { request } from 'node:http';
import { makeDaemon, idle, type TestDaemon } from './support/harness.ts';
import { linesBackwards } from '../../firmware/controller/events.ts';
import { bodyFormatProblem, jsonNestsDeeper, parseTarget, queryProblem, REQUEST_TIMEOUT_MS } from '../../firmware/controller/http-server.ts';
import { gzipSync } from 'node:zlib';
import { duplicateKey, maxBodyBytes } from '../../firmware/controller/schema.ts';

let d: TestDaemon;

test.before(async () => {
  d = await makeDaemon({});
  await idle(d);
});
test.after(async () => {
  await d?.stop();
});

/** One raw HTTP/1.1 exchange, for request targets no client library would send. */
function rawRequest(port: number, head: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(head));
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (text += c));
    s.on('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
    s.on('error', reject);
  });
}

const port = () => Number(new URL(d.url).port);

test('malformed percent-escapes in a path parameter are 400 naming the parameter', async () => {
  const get = await d.api('GET', '/api/jobs/%E0%A4%A');
  assert.is(get.status, 400);
  assert.match(get.body.error.message, /path parameter id is "%E0%A4%A", which holds a malformed percent-escape/);
  const post = await d.api('POST', '/api/jobs/%zz/cancel', {});
  assert.is(post.status, 400);
  const bay = await d.api('POST', '/api/sim/drive/%/pull', {});
  assert.is(bay.status, 400);
});

test('a deeply nested JSON body is 400, before anything walks it', async () => {
  const deep = '['.repeat(20000) + ']'.repeat(20000);
  const r = await d.api('POST', '/api/sync', undefined, { raw: deep });
  assert.is(r.status, 400);
  assert.match(r.body.error.message, /nests arrays or objects deeper than 32 levels/);
  const inObject = await d.api('POST', '/api/bootselect', undefined, { raw: `{"bay":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}` });
  assert.is(inObject.status, 400);
  assert.is((await d.api('GET', '/api/status')).body.job, null, 'nothing started');
  // Brackets inside strings do not count; escaped quotes do not end a string.
  assert.is(jsonNestsDeeper(`{"a":"${'['.repeat(100)}\\"${'{'.repeat(100)}"}`, 2), false);
  assert.is(jsonNestsDeeper('[[[]]]', 2), true);
  assert.is(jsonNestsDeeper('[[]]', 2), false);
});

test('a key given twice in a JSON body is 400 naming it, at any depth and however it is escaped; nothing is started', async () => {
  const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
  for (const [path, raw, key] of [
    ['/api/sync', '{"mode":"compare","mode":"manifest"}', 'mode'],
    ['/api/sync', '{"partitions":[1],"window":false,"partitions":[2]}', 'partitions'],
    ['/api/verify', '{"partitions":[1],"p\\u0061rtitions":[2]}', 'partitions'],
    ['/api/jobs/1/cancel', '{"rollback":false,"rollback":true}', 'rollback'],
    ['/api/bootselect', '{"bay":"A","x":{"y":1,"y":2}}', 'x.y'],
  ] as const) {
    const r = await d.api('POST', path, undefined, { raw });
    assert.is(r.status, 400, `${path} ${raw}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.error.message, `key ${key} is given twice`);
  }
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'nothing started');
  // The same name in two objects, or inside strings, is no repetition.
  assert.is(duplicateKey('{"a":"{\\"a\\":1,\\"a\\":2}","b":[{"a":1},{"a":2}],"c":{"a":{"a":1}}}'), null);
  assert.is(duplicateKey('{"a":1,"b":{"c":1},"a":2}'), 'a');
  assert.is(duplicateKey('[{"a":[{"b":1,"b":2}]}]'), '[0].a[0].b');
});

test('a body error names what was sent and what is allowed in plain words: no null for 1e400, no "a integer"', async () => {
  const huge = await d.api('POST', '/api/sync', undefined, { raw: '{"partitions":[1e400]}' });
  assert.is(huge.status, 400);
  assert.match(huge.body.error.message, /partitions\[0\] is a number too large to hold; allowed: an integer from 1 to 128/);
  const missing = await d.api('POST', '/api/restore/files', {});
  assert.is(missing.status, 400);
  assert.match(missing.body.error.message, /partition is missing; allowed: an integer from 1 to 128 \(this key is required\)/);
});

test('every POST route refuses a body it does not take with 400, before anything changes: also one with no body schema (logout took a list, a string, any key)', async () => {
  const doc = (await d.api('GET', '/api/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
  const posts = Object.keys(doc.paths).filter((p) => doc.paths[p]!.post);
  assert.ok(posts.includes('/api/session/logout'));
  for (const path of posts) {
    const concrete = path.replace('{id}', 'system').replace('{bay}', 'A').replace('{job}', '1');
    for (const raw of ['[]', '"x"', '5', '{"notAKeyOfAnyRoute":1}']) {
      const r = await d.api('POST', concrete, undefined, { raw });
      assert.ok(r.status === 400 || r.status === 404, `POST ${concrete} with ${raw}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    }
  }
  const wrong = await d.api('POST', '/api/session/logout', undefined, { raw: '{"all":true}' });
  assert.match(wrong.body.error.message, /request body is \{"all":true\}; this route takes none/);
  assert.is((await d.api('POST', '/api/session/logout', {})).status, 200);
  assert.is((await d.api('POST', '/api/session/logout')).status, 200);
});

test('bodyFormatProblem: only uncompressed UTF-8 JSON is read; the encoding, the media type or the charset is named', () => {
  assert.is(bodyFormatProblem('application/json', undefined, false), null);
  assert.is(bodyFormatProblem('Application/JSON; charset="UTF-8"', 'identity', false), null);
  assert.is(bodyFormatProblem('', undefined, false), null);
  assert.match(bodyFormatProblem('application/json', 'gzip', false)!, /content-encoding "gzip"; allowed: none/);
  assert.match(bodyFormatProblem('application/json', 'gzip', true)!, /content-encoding "gzip"/);
  assert.match(bodyFormatProblem('application/json-seq', undefined, false)!, /content-type "application\/json-seq"; allowed: application\/json/);
  assert.match(bodyFormatProblem('application/json; charset=latin1', undefined, false)!, /charset "latin1"; allowed: utf-8/);
  assert.match(bodyFormatProblem('text/plain', undefined, false)!, /content-type "text\/plain"/);
  assert.is(bodyFormatProblem('text/plain', undefined, true), null);
});

test('a gzip body, a JSON-like media type or another charset gets 415 naming it, and starts nothing (an empty gzip body started a verify)', async () => {
  const before = (await d.api('GET', '/api/jobs')).body.jobs.length;
  const gz = await d.api('POST', '/api/verify', undefined, { raw: '', headers: { 'content-encoding': 'gzip' } });
  assert.is(gz.status, 415, JSON.stringify(gz.body));
  assert.match(gz.body.error.message, /content-encoding "gzip"/);
  const packed = await new Promise<number>((resolve, reject) => {
    const body = gzipSync('{}');
    const req = request(new URL('/api/verify', d.url), { method: 'POST', headers: { authorization: `Bearer ${d.token}`, 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end(body);
  });
  assert.is(packed, 415);
  for (const ctype of ['application/json-seq', 'application/json; charset=iso-8859-1']) {
    const r = await d.api('POST', '/api/verify', undefined, { raw: '{}', headers: { 'content-type': ctype } });
    assert.is(r.status, 415, `${ctype}: ${JSON.stringify(r.body)}`);
  }
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, before);
});

test('queryProblem: a name the route does not list, or one given twice, is named; listed names once each pass', () => {
  const declared = { limit: 'rows', types: 'event types' };
  const table: [Record<string, string> | undefined, string, RegExp | null][] = [
    [declared, '', null],
    [declared, 'limit=5&types=job.', null],
    [declared, 'limit=5&limit=6', /query parameter limit is given 2 times; allowed: once/],
    [declared, 'types=a&limit=1&types=b&types=c', /types is given 3 times/],
    [declared, 'limt=5', /query parameter "limt" is not known here; allowed: limit, types/],
    [undefined, 'x=1', /"x" is not known here; this route takes none/],
    [undefined, '', null],
  ];
  for (const [d, q, want] of table) {
    const got = queryProblem(d, new URLSearchParams(q));
    if (want === null) assert.is(got, null, q);
    else assert.match(got ?? '', want, q);
  }
});

test('an unknown or repeated query parameter is 400 naming it; an empty partitions list is 400; nothing is started', async () => {
  const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
  const twice = await d.api('GET', '/api/events/log?limit=5&limit=10000');
  assert.is(twice.status, 400, JSON.stringify(twice.body));
  assert.match(twice.body.error.message, /query parameter limit is given 2 times; allowed: once/);
  const unknown = await d.api('GET', '/api/status?verbose=1');
  assert.is(unknown.status, 400);
  assert.match(unknown.body.error.message, /query parameter "verbose" is not known here; this route takes none/);
  const onPost = await d.api('POST', '/api/sync?partitions=1', {});
  assert.is(onPost.status, 400, 'a query on a POST is refused before its body is read');
  for (const path of ['/api/sync', '/api/verify', '/api/pairs/system/sync']) {
    const empty = await d.api('POST', path, { partitions: [] });
    assert.is(empty.status, 400, `${path}: ${JSON.stringify(empty.body)}`);
    assert.match(empty.body.error.message, /partitions is \[\]; allowed: a list of 1 to 128 items/);
  }
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'nothing started');
  // What the route lists, once each, still works.
  assert.is((await d.api('GET', '/api/events/log?limit=5&types=job.')).status, 200);
  const spec = (await d.api('GET', '/api/openapi.json')).body;
  assert.is(spec.paths['/api/sync'].post.requestBody.content['application/json'].schema.properties.partitions.minItems, 1);
  assert.match(spec.paths['/api/status'].get.responses['400'].description, /query parameter the route does not list, or one given more than once/);
});

test('unparsable request targets are 400; absolute-form targets are served', async () => {
  const head = (target: string) => `GET ${target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.token}\r\nConnection: close\r\n\r\n`;
  const broken = await rawRequest(port(), head('http://[/api/status'));
  assert.is(broken.status, 400);
  assert.match(broken.text, /neither a path nor an http URL/);
  const ftp = await rawRequest(port(), head('ftp://x/api/status'));
  assert.is(ftp.status, 400);
  const absolute = await rawRequest(port(), head(`http://127.0.0.1:${port()}/api/status`));
  assert.is(absolute.status, 200);
  assert.equal(parseTarget('/api/events/log?limit=5&types=job.').pathname, '/api/events/log');
  assert.is(parseTarget('/api/events/log?limit=5&types=job.').query.get('limit'), '5');
  // A path starting with "//" is a path, not a host.
  assert.is(parseTarget('//api/status').pathname, '//api/status');
});

test('a body shorter than its Content-Length, an endless chunk or a request sent byte by byte gets 408 in bounded time, and starts nothing', async () => {
  const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
  const post = `POST /api/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.token}\r\nContent-Type: application/json\r\n`;
  const started = Date.now();
  const [lying, endless, trickle] = await Promise.all([
    rawRequest(port(), `${post}Content-Length: 100\r\n\r\n{}`),
    rawRequest(port(), `${post}Transfer-Encoding: chunked\r\n\r\nffffffff\r\n{}`),
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      // A header line a byte every 200 ms: the request never completes.
      const s = connect(port(), '127.0.0.1', () => {
        s.write('GET /api/status HTTP/1.1\r\nX-Slow: ');
        const t = setInterval(() => s.writable && s.write('a'), 200);
        s.on('close', () => clearInterval(t));
      });
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (c: string) => (text += c));
      s.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
      s.on('error', reject);
    }),
  ]);
  const took = Date.now() - started;
  assert.is(lying.status, 408, lying.text);
  assert.is(endless.status, 408, endless.text);
  assert.is(trickle.status, 408, trickle.text);
  assert.ok(took < REQUEST_TIMEOUT_MS + 5000, `answered after ${took} ms`);
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'nothing started');
  assert.is((await d.api('GET', '/api/health')).status, 200);
});

test('an oversized body gets 413 whether its size is declared or streamed chunked', async () => {
  const big = JSON.stringify({ a: 'x'.repeat(200_000) });
  const declared = await d.api('POST', '/api/sync', undefined, { raw: big });
  assert.is(declared.status, 413);
  const chunked = await new Promise<{ status: number; body: any }>((resolve, reject) => {
    const req = request(new URL('/api/sync', d.url), { method: 'POST', headers: { authorization: `Bearer ${d.token}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' } });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    for (let i = 0; i < big.length; i += 16_384) req.write(big.slice(i, i + 16_384));
    req.end();
  });
  assert.is(chunked.status, 413);
  assert.match(chunked.body.error.message, /larger than this route's limit of 65536 bytes/);
  assert.is((await d.api('GET', '/api/status')).body.job, null, 'nothing started');
});

test('a body its route\'s schema admits is never refused for its size: the largest restore of files gets past the limit and the schema', async () => {
  // 1000 paths whose JSON takes 60000 bytes in all: the most the schema admits, near the default limit of 65536.
  const paths = Array.from({ length: 1000 }, (_, i) => `/${String(i).padStart(4, '0')}${'x'.repeat(53)}`);
  assert.is(paths.reduce((n, p) => n + JSON.stringify(p).length, 0), 60_000);
  const largest = await d.api('POST', '/api/restore/files', { partition: 2, paths, window: false });
  assert.is.not(largest.status, 413, JSON.stringify(largest.body));
  assert.not.match(JSON.stringify(largest.body), /request body/, 'the schema accepted it');
  // One byte more is the schema's 400, naming the bound and what to do.
  const over = await d.api('POST', '/api/restore/files', { partition: 2, paths: [...paths.slice(1), `${paths[0]}y`], window: false });
  assert.is(over.status, 400, JSON.stringify(over.body));
  assert.match(over.body.error.message, /paths is .*60001 bytes.*at most 60000 bytes in all as JSON \(send the rest in another request\)/);
  // Paths of the longest length the items admit, without the total bound, would be megabytes: 413 naming the limit.
  const huge = await d.api('POST', '/api/restore/files', { partition: 2, paths: Array.from({ length: 100 }, (_, i) => `/${i}${'x'.repeat(4000)}`) });
  assert.is(huge.status, 413);
  assert.match(huge.body.error.message, /larger than this route's limit of \d+ bytes/);
  assert.match(huge.body.error.hint, /several requests/);
  assert.is((await d.api('GET', '/api/status')).body.job, null, 'nothing started');
});

test('every body schema of the API fits the body limit its route gets (the OpenAPI document states both)', async () => {
  const doc = (await d.api('GET', '/api/openapi.json')).body;
  let checked = 0;
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
    const schema = item.post?.requestBody?.content?.['application/json']?.schema;
    if (!schema) continue;
    checked++;
    // The server raises a route's limit to its schema's largest body; the default limit already holds every body but the simulator's.
    if (!path.startsWith('/api/sim/')) assert.ok(maxBodyBytes(schema) <= 65536, `${path}: its schema admits ${maxBodyBytes(schema)} bytes`);
  }
  assert.ok(checked > 20, `${checked} bodies checked`);
});

test('authentication comes before route matching, and a 401 names no file path', async () => {
  for (const [method, path] of [['GET', '/api/nothing'], ['GET', '/api/jobs/%zz'], ['DELETE', '/api/status'], ['POST', '/api/sync']] as const) {
    const r = await d.api(method, path, undefined, { token: null });
    assert.is(r.status, 401, `${method} ${path} without a token`);
    assert.not.ok(JSON.stringify(r.body).includes('/'), `401 body names a path: ${JSON.stringify(r.body)}`);
    assert.not.ok(JSON.stringify(r.body).includes(d.dir));
  }
  const broken = await rawRequest(port(), 'GET http://[/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.is(broken.status, 401, 'an unparsable target without a token');
  assert.is((await d.api('GET', '/api/health', undefined, { token: null })).status, 200);
  assert.is((await d.api('GET', '/api/nothing')).status, 404);
});

test('linesBackwards yields every line from the last, across chunk edges, skipping over-long ones', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-tail-'));
  try {
    const f = join(dir, 'log');
    const lines = Array.from({ length: 50 }, (_, i) => `line ${i} ${'x'.repeat(i % 13)}`);
    writeFileSync(f, lines.join('\n') + '\n');
    for (const chunk of [1, 7, 64, 1 << 16]) {
      const got: string[] = [];
      for await (const l of linesBackwards(f, chunk)) got.push(l);
      assert.equal(got, [...lines].reverse(), `chunk ${chunk}`);
    }
    // No newline at the end (a torn last write), an over-long line in the middle.
    writeFileSync(f, `first\n${'y'.repeat(300)}\nthird\ntorn`);
    const got: string[] = [];
    for await (const l of linesBackwards(f, 16, 100)) got.push(l);
    assert.equal(got, ['torn', 'third', 'first']);
    const none: string[] = [];
    for await (const l of linesBackwards(join(dir, 'missing'))) none.push(l);
    assert.equal(none, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the event log tail comes from the end of a rotated log larger than a string can hold', async () => {
  const log = join(d.dir, 'events.jsonl');
  // Alerts are rare on an idle rig, so no new one slips in between counting and asking.
  const current = readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"type":"alert"')).length;
  // A sparse 1 GiB rotated log whose last line is a real event: reading it whole cannot work (V8 strings end near 512 MiB).
  const rotated = `${log}.1`;
  const fd = openSync(rotated, 'w');
  ftruncateSync(fd, 1024 ** 3);
  closeSync(fd);
  const marker = { id: 'cafe0000:7', seq: 7, at: '2026-01-01T00:00:00.000Z', type: 'alert', data: { level: 'info', code: 'oldest-kept', message: 'before rotation' } };
  appendFileSync(rotated, `\n${JSON.stringify(marker)}\n`);
  try {
    const one = await d.api('GET', '/api/events/log?limit=1');
    assert.is(one.status, 200);
    assert.is(one.body.events.length, 1);
    const reach = await d.api('GET', `/api/events/log?limit=${current + 1}&types=alert`);
    assert.is(reach.status, 200);
    assert.equal(reach.body.events[0], marker, 'the newest line of the rotated log comes first, oldest first order');
    assert.is(reach.body.events.length, current + 1);
  } finally {
    rmSync(rotated, { force: true });
  }
});

test('a filtered event-log scan stops when its client goes away, not at the end of the log', async () => {
  // A sparse 1 GiB rotated log without one event of the asked-for type: the scan would walk all of it.
  const rotated = join(d.dir, 'events.jsonl.1');
  const fd = openSync(rotated, 'w');
  ftruncateSync(fd, 1024 ** 3);
  closeSync(fd);
  const counter = async (name: string) => {
    const text = (await d.api('GET', '/metrics')).body as unknown as string;
    return Number(new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  };
  const scans = async () => (await counter('dpsr_event_log_scans_total{result="done"}')) + (await counter('dpsr_event_log_scans_total{result="stopped"}'));
  try {
    const before = { scans: await scans(), stopped: await counter('dpsr_event_log_scans_total{result="stopped"}'), bytes: await counter('dpsr_event_log_read_bytes_total') };
    // The whole request, then the client hangs up before any answer.
    await new Promise<void>((resolve, reject) => {
      const s = connect(port(), '127.0.0.1', () => s.end(`GET /api/events/log?types=no.such.type HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.token}\r\n\r\n`));
      s.resume();
      s.on('close', () => resolve());
      s.on('error', reject);
    });
    // Waits for the scan to end, however long that takes; what it read is then counted.
    while ((await scans()) === before.scans) await new Promise((r) => setTimeout(r, 50));
    assert.is(await counter('dpsr_event_log_scans_total{result="stopped"}'), before.stopped + 1, 'the scan ended because its client went away');
    const read = (await counter('dpsr_event_log_read_bytes_total')) - before.bytes;
    assert.ok(read < 64 * 1024 ** 2, `the scan read ${read} bytes of a 1 GiB log after its client had gone`);
  } finally {
    rmSync(rotated, { force: true });
  }
});

test.run();
