/**
 * How fast the console's login may be guessed at, as one decision over
 * plain state (no clock or network of its own; `now` is given).
 *
 * - Per client (its address; IPv6 by its /64, which one host can hop
 *   within): the first `freeFailures` wrong passwords cost nothing, then
 *   each makes that client wait twice as long as the last, up to
 *   `maxDelayMs`. A right password clears it.
 * - Globally, for a guess spread over many addresses: wrong passwords take
 *   a token from one bucket (`burst` tokens, one back every `refillMs`);
 *   with none left, a login from an unknown browser is refused before the
 *   password is looked at. This caps guessing from the whole network at
 *   about 60 000 / refillMs a minute, however many addresses it uses.
 * - Not locking the operator out: the global bucket is a rate, never a lock
 *   that grows, and a browser that has logged in before (a device cookie,
 *   signed by the daemon) is outside it and outside its address's delay;
 *   it has its own counter instead, so a stolen device cookie cannot guess
 *   fast either. An attacker can thus slow down only browsers that never
 *   logged in, and only while the attack lasts. Scripts and Node-RED use the
 *   bearer token, which no login limit touches.
 */

export interface LoginLimits {
  /** Wrong passwords a client (or a known device) may make before it waits. */
  readonly freeFailures: number;
  /** The first wait after them (ms); each further wrong password doubles it. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** The global bucket of wrong passwords from unknown browsers. */
  readonly burst: number;
  readonly refillMs: number;
  /** A client's failures are forgotten after this long without one (ms). */
  readonly forgetMs: number;
  /** Clients tracked at once (the least recently failed go first). */
  readonly maxClients: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = {
  freeFailures: 3,
  baseDelayMs: 1_000,
  maxDelayMs: 15 * 60_000,
  burst: 20,
  refillMs: 3_000,
  forgetMs: 3_600_000,
  maxClients: 10_000,
};

/** Who is logging in: the address, and the device id of a valid device cookie (null: an unknown browser). */
export interface LoginClient {
  readonly address: string;
  readonly device: string | null;
}

export type LoginGate = { ok: true } | { ok: false; why: 'client' | 'device' | 'global'; retryAfterMs: number };

interface Failures {
  count: number;
  last: number;
  until: number;
}

/** The key a client's address is counted under: IPv6 by its /64, IPv4 (also IPv4-mapped) as is. */
export function clientKey(address: string): string {
  const a = address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  if (!a.includes(':')) return a;
  // Expand "::" to the missing zero groups, then keep the first four.
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

export class LoginLimiter {
  readonly #clients = new Map<string, Failures>();
  readonly #devices = new Map<string, Failures>();
  #tokens: number;
  #refilledAt: number;

  constructor(
    readonly limits: LoginLimits = DEFAULT_LOGIN_LIMITS,
    now = 0,
  ) {
    this.#tokens = limits.burst;
    this.#refilledAt = now;
  }

  #refill(now: number): void {
    const n = Math.floor((now - this.#refilledAt) / this.limits.refillMs);
    if (n <= 0) return;
    this.#tokens = Math.min(this.limits.burst, this.#tokens + n);
    this.#refilledAt = this.#tokens === this.limits.burst ? now : this.#refilledAt + n * this.limits.refillMs;
  }

  #waitOf(map: Map<string, Failures>, key: string, now: number): number {
    const f = map.get(key);
    if (!f) return 0;
    if (now - f.last > this.limits.forgetMs) {
      map.delete(key);
      return 0;
    }
    return Math.max(0, f.until - now);
  }

  /** Whether a login attempt may have its password checked now. */
  gate(client: LoginClient, now: number): LoginGate {
    if (client.device !== null) {
      const wait = this.#waitOf(this.#devices, client.device, now);
      return wait > 0 ? { ok: false, why: 'device', retryAfterMs: wait } : { ok: true };
    }
    const wait = this.#waitOf(this.#clients, clientKey(client.address), now);
    if (wait > 0) return { ok: false, why: 'client', retryAfterMs: wait };
    this.#refill(now);
    if (this.#tokens < 1) return { ok: false, why: 'global', retryAfterMs: Math.max(1, this.#refilledAt + this.limits.refillMs - now) };
    return { ok: true };
  }

  /** A wrong password was given (after `gate` let it through). */
  failed(client: LoginClient, now: number): void {
    const [map, key] = client.device !== null ? [this.#devices, client.device] : [this.#clients, clientKey(client.address)];
    const prev = map.get(key);
    const count = (prev && now - prev.last <= this.limits.forgetMs ? prev.count : 0) + 1;
    const over = count - this.limits.freeFailures;
    const until = over > 0 ? now + Math.min(this.limits.maxDelayMs, this.limits.baseDelayMs * 2 ** Math.min(over - 1, 30)) : 0;
    map.delete(key);
    map.set(key, { count, last: now, until });
    while (map.size > this.limits.maxClients) map.delete(map.keys().next().value!);
    if (client.device === null) {
      this.#refill(now);
      this.#tokens = Math.max(0, this.#tokens - 1);
    }
  }

  /** The right password: the client's (and device's) count starts again. */
  succeeded(client: LoginClient): void {
    this.#clients.delete(clientKey(client.address));
    if (client.device !== null) this.#devices.delete(client.device);
  }

  /** Tokens left in the global bucket (for tests and the log). */
  tokens(now: number): number {
    this.#refill(now);
    return this.#tokens;
  }
}
