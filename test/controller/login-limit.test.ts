/**
 * The console's login limits as a decision over plain state: per-address
 * back-off, the global bucket for guesses spread over many addresses, and
 * known browsers (device cookies) outside both.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LoginLimiter, clientKey, type LoginLimits } from '../../firmware/controller/login-limit.ts';

const LIMITS: LoginLimits = { freeFailures: 3, baseDelayMs: 1000, maxDelayMs: 60_000, burst: 4, refillMs: 5000, forgetMs: 3_600_000, maxClients: 100 };
const ip = (address: string) => ({ address, device: null });

test('client keys: IPv4 and IPv4-mapped as is, IPv6 by its /64', () => {
  const table: [string, string][] = [
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['2001:db8:1:2:aaaa::1', '2001:db8:1:2::/64'],
    ['2001:db8:1:2:bbbb:cccc:dddd:eeee', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['2001:0DB8:0001:0002::9', '2001:db8:1:2::/64'],
  ];
  for (const [a, want] of table) assert.is(clientKey(a), want, a);
});

test('one address: three free wrong passwords, then waits that double up to the cap; the right password clears it', () => {
  // A large bucket: only the address's own back-off shows.
  const l = new LoginLimiter({ ...LIMITS, burst: 1000 }, 0);
  const c = ip('198.51.100.1');
  const waits: number[] = [];
  let now = 0;
  for (let i = 0; i < 11; i++) {
    const g = l.gate(c, now);
    if (!g.ok) {
      waits.push(g.retryAfterMs);
      now += g.retryAfterMs;
    }
    assert.ok(l.gate(c, now).ok);
    l.failed(c, now);
  }
  assert.equal(waits, [1000, 2000, 4000, 8000, 16000, 32000, 60000], 'doubling from the fourth failure, capped');
  l.succeeded(c);
  assert.ok(l.gate(c, now).ok, 'cleared');
  assert.ok(l.gate(ip('198.51.100.2'), now).ok, 'other addresses never waited for this one');
});

test('a guess spread over many addresses runs at the bucket\'s rate at most; known browsers are outside it', () => {
  const l = new LoginLimiter(LIMITS, 0);
  let checked = 0;
  // 1000 addresses, each guessing once a second for a minute.
  for (let t = 0; t < 60_000; t += 1000) {
    for (let a = 0; a < 1000; a++) {
      const c = ip(`203.0.113.${a % 250}-${a}`);
      if (l.gate(c, t).ok) {
        checked++;
        l.failed(c, t);
      }
    }
  }
  assert.is(checked, 4 + 60_000 / 5000 - 1, 'the burst, then one guess per refill');
  const operator = { address: '203.0.113.9', device: 'dev-operator-1234567' };
  assert.ok(l.gate(operator, 59_999).ok, 'the operator\'s known browser is not held back');
  const g = l.gate(ip('192.0.2.1'), 59_999);
  assert.equal(g.ok ? null : [g.why, g.retryAfterMs > 0 && g.retryAfterMs <= 5000], ['global', true], 'an unknown browser waits at most one refill');
});

test('a stolen device cookie cannot guess fast either: its own back-off, and it never touches the global bucket', () => {
  const l = new LoginLimiter(LIMITS, 0);
  const d = { address: '192.0.2.50', device: 'dev-stolen-123456789' };
  for (let i = 0; i < 3; i++) l.failed(d, 0);
  assert.is(l.tokens(0), 4, 'the bucket is for unknown browsers');
  l.failed(d, 0);
  const g = l.gate(d, 0);
  assert.equal(g, { ok: false, why: 'device', retryAfterMs: 1000 });
  assert.ok(l.gate(ip('192.0.2.50'), 0).ok, 'the address itself is not held (the device is)');
});

test('failures are forgotten after forgetMs, and the table of clients stays bounded', () => {
  const l = new LoginLimiter({ ...LIMITS, maxClients: 10 }, 0);
  const c = ip('198.51.100.7');
  for (let i = 0; i < 5; i++) l.failed(c, 0);
  assert.is(l.gate(c, 1000).ok, false);
  assert.ok(l.gate(c, 3_600_001).ok, 'forgotten');
  for (let i = 0; i < 50; i++) l.failed(ip(`10.0.0.${i}`), 3_600_002);
  for (let i = 0; i < 5; i++) l.failed(c, 3_600_003);
  assert.is(l.gate(c, 3_600_004).ok, false, 'the newest failures are kept');
});

test.run();
