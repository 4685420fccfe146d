/**
 * The console's login on a running daemon: the session cookie's flags, what
 * is refused without it, cross-site and without the CSRF token, the bearer
 * token beside it, HTTPS with the self-signed certificate made at first
 * start; and the session rules (lockout, expiry) on the class itself.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { call, makeDaemon, idle, waitJob, type TestDaemon } from './support/harness.ts';
import { ConsoleSessions, parseCookies } from '../../firmware/controller/console-auth.ts';
import { redactSecrets } from '../../firmware/controller/console-server.ts';
import { requireEnv } from '../support/require.ts';

let d: TestDaemon;
let password: string;

test.before(async () => {
  d = await makeDaemon();
  await idle(d);
  password = readFileSync(join(d.dir, 'admin-password'), 'utf8').trim();
});
test.after(async () => {
  await d?.stop();
});

/** Logs in; the cookie pair to send back and the CSRF token. */
async function login(): Promise<{ cookie: string; csrf: string; setCookie: string }> {
  const r = await d.api('POST', '/api/session', { password }, { token: null });
  assert.is(r.status, 200, JSON.stringify(r.body));
  const setCookie = String((r.headers['set-cookie'] as string[])[0]);
  return { cookie: setCookie.split(';')[0]!, csrf: r.body.csrfToken, setCookie };
}

const own = () => new URL(d.url).origin;

test('the admin password is made at first start, 0600, and named in the log', () => {
  const st = statSync(join(d.dir, 'admin-password'));
  assert.is(st.mode & 0o777, 0o600);
  assert.ok(password.length >= 20, 'a long random password');
  assert.is(d.adminPasswordFile, join(d.dir, 'admin-password'));
  assert.ok(d.logs.some((l) => l.includes('admin-password')), 'the start log says where it is');
});

test('the page and its assets need no login and may run only our own script', async () => {
  const page = await d.api('GET', '/', undefined, { token: null });
  assert.is(page.status, 200);
  assert.match(String(page.body), /<script type="module" src="\/console\/app.js">/);
  const csp = String(page.headers['content-security-policy']);
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.is(page.headers['x-frame-options'], 'DENY');
  const js = await d.api('GET', '/console/app.js', undefined, { token: null });
  assert.is(js.status, 200);
  assert.match(String(js.headers['content-type']), /javascript/);
  assert.ok(String(js.body).length > 1000, 'the bundle');
  const css = await d.api('GET', '/console/app.css', undefined, { token: null });
  assert.match(String(css.headers['content-type']), /text\/css/);
  const again = await d.api('GET', '/console/app.js', undefined, { token: null, headers: { 'if-none-match': String(js.headers.etag) } });
  assert.is(again.status, 304);
  assert.is((await d.api('GET', '/console/../api-token', undefined, { token: null })).status, 401, 'no way out of the console folder');
  assert.is((await d.api('GET', '/console/secret.txt', undefined, { token: null })).status, 404);
});

test('a wrong password is 401 and sets no cookie; the right one gives an HttpOnly, SameSite=Strict cookie', async () => {
  const wrong = await d.api('POST', '/api/session', { password: 'guess' }, { token: null });
  assert.is(wrong.status, 401);
  assert.is(wrong.headers['set-cookie'], undefined);
  assert.match(wrong.body.error.hint, /admin-password/);
  const { setCookie, csrf } = await login();
  assert.match(setCookie, /^dpsr_session=[A-Za-z0-9_-]{40,};/);
  const flags = setCookie.split(';').map((s) => s.trim());
  assert.ok(flags.includes('HttpOnly'), setCookie);
  assert.ok(flags.includes('SameSite=Strict'), setCookie);
  assert.ok(flags.includes('Path=/'), setCookie);
  assert.not.ok(flags.includes('Secure'), 'not Secure over plain HTTP: the browser would drop it');
  assert.ok(csrf.length >= 40);
});

test('without a session or token everything but the page, the login and health is refused', async () => {
  for (const [method, path] of [['GET', '/api/status'], ['GET', '/api/session'], ['GET', '/api/settings'], ['GET', '/api/events'], ['POST', '/api/sync'], ['POST', '/api/session/logout']] as const) {
    assert.is((await d.api(method, path, method === 'POST' ? {} : undefined, { token: null })).status, 401, `${method} ${path}`);
    const forged = await d.api(method, path, method === 'POST' ? {} : undefined, { token: null, headers: { cookie: 'dpsr_session=not-a-session' } });
    assert.is(forged.status, 401, `${method} ${path} with a made-up session`);
  }
});

test('with the cookie, reads work; state changes need the CSRF token and our own origin', async () => {
  const { cookie, csrf } = await login();
  const status = await d.api('GET', '/api/status', undefined, { token: null, headers: { cookie } });
  assert.is(status.status, 200);
  const who = await d.api('GET', '/api/session', undefined, { token: null, headers: { cookie } });
  assert.equal(who.body, { user: 'admin', csrfToken: csrf });
  const jobsBefore = (await d.api('GET', '/api/jobs')).body.jobs.length;

  const noToken = await d.api('POST', '/api/sync', {}, { token: null, headers: { cookie, origin: own() } });
  assert.is(noToken.status, 403);
  assert.match(noToken.body.error.message, /x-csrf-token/);
  const wrongToken = await d.api('POST', '/api/sync', {}, { token: null, headers: { cookie, origin: own(), 'x-csrf-token': 'x'.repeat(43) } });
  assert.is(wrongToken.status, 403);
  const otherSite = await d.api('POST', '/api/sync', {}, { token: null, headers: { cookie, origin: 'http://evil.example', 'x-csrf-token': csrf } });
  assert.is(otherSite.status, 403);
  assert.match(otherSite.body.error.message, /evil\.example/);
  const otherPort = await d.api('POST', '/api/sync', {}, { token: null, headers: { cookie, origin: 'http://127.0.0.1:1', 'x-csrf-token': csrf } });
  assert.is(otherPort.status, 403, 'another port of the same host is another origin (and the same site: SameSite does not stop it)');
  const fetchSite = await d.api('POST', '/api/sync', {}, { token: null, headers: { cookie, 'sec-fetch-site': 'cross-site', 'x-csrf-token': csrf } });
  assert.is(fetchSite.status, 403);
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobsBefore, 'nothing was started by the refused requests');

  const ok = await d.api('POST', '/api/sync', {}, { token: null, headers: { cookie, origin: own(), 'sec-fetch-site': 'same-origin', 'x-csrf-token': csrf } });
  assert.is(ok.status, 202, JSON.stringify(ok.body));
  await waitJob(d, ok.body.id);
});

test('the bearer token keeps working for scripts, with no CSRF token; a wrong one is not rescued by a cookie', async () => {
  const r = await d.api('POST', '/api/verify', {});
  assert.is(r.status, 202);
  await waitJob(d, r.body.id);
  const who = await d.api('GET', '/api/session');
  assert.equal(who.body, { user: 'token' });
  const { cookie } = await login();
  const wrong = await d.api('GET', '/api/status', undefined, { token: 'wrong-token', headers: { cookie } });
  assert.is(wrong.status, 401);
  assert.match(wrong.body.error.message, /wrong/);
});

test('a login from another site is refused before the password is looked at', async () => {
  const r = await d.api('POST', '/api/session', { password }, { token: null, headers: { origin: 'http://evil.example' } });
  assert.is(r.status, 403);
  assert.is(r.headers['set-cookie'], undefined);
});

test('logout ends the session and clears the cookie', async () => {
  const { cookie, csrf } = await login();
  const out = await d.api('POST', '/api/session/logout', {}, { token: null, headers: { cookie, 'x-csrf-token': csrf } });
  assert.is(out.status, 200);
  assert.match(String((out.headers['set-cookie'] as string[])[0]), /^dpsr_session=; .*Max-Age=0/);
  assert.is((await d.api('GET', '/api/status', undefined, { token: null, headers: { cookie } })).status, 401);
});

test('the settings show the config and where the secrets are, never a secret', async () => {
  const s = (await d.api('GET', '/api/settings')).body;
  assert.is(s.config.rig, 'sim');
  assert.is(s.files.adminPassword, join(d.dir, 'admin-password'));
  assert.is(s.urls.http, d.url);
  assert.not.ok(JSON.stringify(s).includes(password));
  assert.not.ok(JSON.stringify(s).includes(d.token));
  assert.equal(redactSecrets({ nbd: { pskFile: '/x', tlsKey: 'abc', port: 1 }, list: [{ password: 'p' }] }), { nbd: { pskFile: '(hidden)', tlsKey: '(hidden)', port: 1 }, list: [{ password: '(hidden)' }] });
});

test('the OpenAPI document names the session scheme and the console routes', async () => {
  const doc = (await d.api('GET', '/api/openapi.json')).body;
  assert.ok(doc.components.securitySchemes.session);
  assert.ok(doc.paths['/api/session'].post);
  assert.equal(doc.paths['/api/session'].post.security, []);
  assert.ok(doc.paths['/api/sync'].post.responses['403']);
});

test('sessions: wrong passwords from one address make it wait, also for the right one; a browser known from an earlier login is not held back by others; idle sessions end', () => {
  let now = 1_000_000;
  const s = new ConsoleSessions('the-password-1234', { now: () => now, idleMs: 60_000, limits: { freeFailures: 3, baseDelayMs: 1000, burst: 5, refillMs: 10_000 } });
  const first = s.login('the-password-1234', { address: '10.0.0.9' });
  assert.ok(first.ok);
  const device = first.ok ? first.device : '';
  assert.is(s.deviceOf(`dpsr_device=${device}`), device.split('.')[0]);
  assert.is(s.deviceOf(`dpsr_device=${device.split('.')[0]}.forged`), null, 'a forged signature is no known browser');
  const attacker = { address: '10.0.0.66' };
  for (let i = 0; i < 3; i++) assert.equal(s.login('nope', attacker), { ok: false, reason: 'wrong-password' });
  assert.equal(s.login('nope', attacker), { ok: false, reason: 'wrong-password' }, 'the fourth is still checked');
  const locked = s.login('the-password-1234', attacker);
  assert.equal(locked, { ok: false, reason: 'locked', why: 'client', retryAfterMs: 1000 });
  // A guess spread over addresses empties the global bucket: unknown browsers wait, the known one does not.
  s.login('nope', { address: '10.0.1.1' });
  assert.equal(s.login('the-password-1234', { address: '10.0.0.10' }), { ok: false, reason: 'locked', why: 'global', retryAfterMs: 10_000 });
  const known = s.login('the-password-1234', { address: '10.0.0.10', cookie: `x=1; dpsr_device=${device}` });
  assert.ok(known.ok, 'the operator\'s browser logs in during the attack');
  assert.is(known.ok && known.device, device, 'and keeps its device id');
  now += 10_000;
  assert.ok(s.login('the-password-1234', { address: '10.0.0.11' }).ok, 'a token came back: an unknown browser gets in');
  const ok = s.login('the-password-1234');
  assert.ok(ok.ok);
  const id = ok.ok ? ok.session.id : '';
  const req = (cookie: string) => ({ headers: { cookie } }) as never;
  assert.ok(s.fromRequest(req(`a=b; dpsr_session=${id}`)));
  now += 60_001;
  assert.is(s.fromRequest(req(`dpsr_session=${id}`)), null, 'idle too long');
  assert.equal([...parseCookies('a=1; b = 2;c=3; a=4').entries()], [['a', '1'], ['b', '2'], ['c', '3']]);
});

test('sessions: the oldest session goes when the table is full', () => {
  const s = new ConsoleSessions('pw-pw-pw-pw-pw-pw', { maxSessions: 2 });
  const ids = [1, 2, 3].map(() => {
    const r = s.login('pw-pw-pw-pw-pw-pw');
    return r.ok ? r.session.id : '';
  });
  assert.is(s.size, 2);
  assert.is(s.fromRequest({ headers: { cookie: `dpsr_session=${ids[0]}` } } as never), null);
  assert.ok(s.fromRequest({ headers: { cookie: `dpsr_session=${ids[2]}` } } as never));
});

/** A request over HTTPS that trusts only `ca`, without the bearer token. */
const tlsCall = (url: string, ca: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
  call(url, method, path, body, { token: null, headers, ca });

test('with api.httpsListen: a self-signed certificate made once at first start, and a Secure cookie over HTTPS', async () => {
  if (!requireEnv('the console over HTTPS', { tools: ['openssl'] })) return;
  const t = await makeDaemon({ api: { httpsListen: '127.0.0.1:0' } });
  let again: TestDaemon | null = null;
  try {
    assert.match(String(t.httpsUrl), /^https:\/\/127\.0\.0\.1:\d+$/);
    const certFile = join(t.dir, 'tls', 'cert.pem');
    assert.is(statSync(join(t.dir, 'tls', 'key.pem')).mode & 0o777, 0o600);
    const ca = readFileSync(certFile, 'utf8');
    const cert = new X509Certificate(ca);
    assert.match(String(cert.subjectAltName), /IP Address:127\.0\.0\.1/);
    // Trusting exactly this certificate, node checks the name too: the IP address is in it.
    const page = await tlsCall(t.httpsUrl!, ca, 'GET', '/');
    assert.is(page.status, 200);
    const pw = readFileSync(join(t.dir, 'admin-password'), 'utf8').trim();
    const r = await tlsCall(t.httpsUrl!, ca, 'POST', '/api/session', { password: pw }, { origin: new URL(t.httpsUrl!).origin });
    assert.is(r.status, 200, JSON.stringify(r.body));
    const setCookie = String((r.headers['set-cookie'] as string[])[0]);
    assert.ok(setCookie.split(';').map((x) => x.trim()).includes('Secure'), setCookie);
    const cookie = setCookie.split(';')[0]!;
    assert.is((await tlsCall(t.httpsUrl!, ca, 'GET', '/api/status', undefined, { cookie })).status, 200);
    assert.is((await tlsCall(t.httpsUrl!, ca, 'GET', '/api/status', undefined, { authorization: `Bearer ${t.token}` })).status, 200, 'the bearer token works over HTTPS too');
    assert.is((await t.api('GET', '/api/status')).status, 200, 'plain HTTP stays for local scripts and Node-RED');
    const fingerprint = cert.fingerprint256;
    const dir = t.dir;
    await t.close();
    again = await makeDaemon({ api: { httpsListen: '127.0.0.1:0' } }, dir);
    assert.is(new X509Certificate(readFileSync(certFile)).fingerprint256, fingerprint, 'the certificate is kept across restarts');
  } finally {
    if (again) await again.stop();
    else await t.stop();
  }
});

test.run();
