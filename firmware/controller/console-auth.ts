/**
 * The operator console's login. The appliance's admin password is made at
 * first start (`<state>/admin-password`, mode 0600, like the API token); a
 * right password gives a session: a random id in an HttpOnly,
 * SameSite=Strict cookie (Secure over HTTPS) and a CSRF token the page sends
 * back in the `X-CSRF-Token` header of every state-changing request. Such a
 * request is also refused when its Origin (or Sec-Fetch-Site) says it came
 * from another site. Scripts keep using the bearer token, which no browser
 * sends on its own and so needs neither check.
 *
 * Sessions live in memory: a daemon restart logs the console out, which is
 * the safe way round for an appliance that switches boot drives.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { DEFAULT_LOGIN_LIMITS, LoginLimiter, type LoginClient, type LoginLimits } from './login-limit.ts';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';

export const SESSION_COOKIE = 'dpsr_session';
/** A browser that has logged in before: it is outside the global login back-off (login-limit.ts). */
export const DEVICE_COOKIE = 'dpsr_device';
export const CSRF_HEADER = 'x-csrf-token';

export interface Session {
  readonly id: string;
  readonly csrfToken: string;
  readonly createdAt: number;
  lastSeen: number;
}

export interface SessionOptions {
  /** A session unused this long ends (ms). */
  idleMs?: number;
  /** A session ends this long after the login whatever its use (ms). */
  maxAgeMs?: number;
  /** Sessions kept at once; the least recently used goes first. */
  maxSessions?: number;
  /** How fast wrong passwords may come, per client, per known browser and from the whole network (login-limit.ts). */
  limits?: Partial<LoginLimits>;
  /** The key that signs device cookies (kept in the state directory, so known browsers stay known across restarts); absent: one per process. */
  deviceKey?: string;
  now?: () => number;
}

/** Equal-length digests, so the comparison takes the same time whatever the input. */
function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/** The cookies of a request by name (RFC 6265 section 5.4); the first of a repeated name wins. */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

/** Whether the request reached us over TLS. */
export function isSecure(req: IncomingMessage): boolean {
  return (req.socket as TLSSocket).encrypted === true;
}

/**
 * Why a browser request looks cross-site, or null. The Origin a browser sets
 * must be this server's own (scheme, host and port as the Host header
 * names them); Sec-Fetch-Site, where sent, must be same-origin. A request
 * with neither header is not from a modern browser's page and passes this
 * check (the CSRF token still applies to cookie sessions).
 */
export function crossSiteProblem(req: IncomingMessage): string | null {
  const site = req.headers['sec-fetch-site'];
  if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') return `the request came from another site (Sec-Fetch-Site: ${site})`;
  const origin = req.headers.origin;
  if (origin === undefined) return null;
  const own = `${isSecure(req) ? 'https' : 'http'}://${req.headers.host ?? ''}`;
  if (origin.toLowerCase() !== own.toLowerCase()) return `the request came from ${JSON.stringify(origin)}, not from this console (${own})`;
  return null;
}

export type LoginResult =
  | { ok: true; session: Session; /** The device cookie's value to (re)set: this browser is known from now on. */ device: string }
  | { ok: false; reason: 'wrong-password' }
  | { ok: false; reason: 'locked'; why: 'client' | 'device' | 'global'; retryAfterMs: number };

/** Where a login comes from: the peer's address and the request's Cookie header. */
export interface LoginOrigin {
  readonly address: string;
  readonly cookie?: string;
}

export class ConsoleSessions {
  readonly #sessions = new Map<string, Session>();
  readonly #password: string;
  readonly #idleMs: number;
  readonly #maxAgeMs: number;
  readonly #max: number;
  readonly #limiter: LoginLimiter;
  readonly #deviceKey: string;
  readonly #now: () => number;

  constructor(password: string, opts: SessionOptions = {}) {
    this.#password = password;
    this.#idleMs = opts.idleMs ?? 8 * 3600_000;
    this.#maxAgeMs = opts.maxAgeMs ?? 7 * 24 * 3600_000;
    this.#max = opts.maxSessions ?? 64;
    this.#now = opts.now ?? Date.now;
    this.#limiter = new LoginLimiter({ ...DEFAULT_LOGIN_LIMITS, ...opts.limits }, this.#now());
    this.#deviceKey = opts.deviceKey ?? randomBytes(32).toString('base64url');
  }

  get size(): number {
    return this.#sessions.size;
  }

  #sign(id: string): string {
    return createHmac('sha256', this.#deviceKey).update(id).digest('base64url');
  }

  /** The device id of a valid device cookie in `cookieHeader`, or null. */
  deviceOf(cookieHeader: string | undefined): string | null {
    const v = parseCookies(cookieHeader).get(DEVICE_COOKIE);
    const dot = v?.lastIndexOf('.') ?? -1;
    if (!v || dot <= 0) return null;
    const id = v.slice(0, dot);
    return /^[A-Za-z0-9_-]{16,64}$/.test(id) && sameSecret(v.slice(dot + 1), this.#sign(id)) ? id : null;
  }

  /**
   * A new session for the right password, within the limits of
   * login-limit.ts: a client that guessed wrong too often, or any unknown
   * browser while the network as a whole guesses too fast, is refused
   * (`locked`, with the wait) before the password is looked at. The right
   * password makes the browser known (`device`): it then stays outside the
   * global back-off, so an attacker cannot lock the operator out of a
   * browser that logged in before.
   */
  login(password: string, from: LoginOrigin = { address: 'local' }): LoginResult {
    const now = this.#now();
    const known = this.deviceOf(from.cookie);
    const client: LoginClient = { address: from.address, device: known };
    const gate = this.#limiter.gate(client, now);
    if (!gate.ok) return { ok: false, reason: 'locked', why: gate.why, retryAfterMs: gate.retryAfterMs };
    if (!sameSecret(password, this.#password)) {
      this.#limiter.failed(client, now);
      return { ok: false, reason: 'wrong-password' };
    }
    this.#limiter.succeeded(client);
    this.#expire(now);
    while (this.#sessions.size >= this.#max) this.#sessions.delete(this.#sessions.keys().next().value!);
    const session: Session = { id: randomBytes(32).toString('base64url'), csrfToken: randomBytes(32).toString('base64url'), createdAt: now, lastSeen: now };
    this.#sessions.set(session.id, session);
    const id = known ?? randomBytes(18).toString('base64url');
    return { ok: true, session, device: `${id}.${this.#sign(id)}` };
  }

  /** The live session the request's cookie names, or null; using it keeps it alive. */
  fromRequest(req: IncomingMessage): Session | null {
    const id = parseCookies(req.headers.cookie).get(SESSION_COOKIE);
    if (!id) return null;
    const now = this.#now();
    const s = this.#sessions.get(id);
    if (!s) return null;
    if (now - s.lastSeen > this.#idleMs || now - s.createdAt > this.#maxAgeMs) {
      this.#sessions.delete(id);
      return null;
    }
    s.lastSeen = now;
    // Most recently used last, so the oldest unused one is dropped first when full.
    this.#sessions.delete(id);
    this.#sessions.set(id, s);
    return s;
  }

  logout(session: Session): void {
    this.#sessions.delete(session.id);
  }

  /** Why a state-changing request made with this session's cookie is refused, or null. */
  csrfProblem(req: IncomingMessage, session: Session): string | null {
    const site = crossSiteProblem(req);
    if (site) return site;
    const sent = req.headers[CSRF_HEADER];
    if (typeof sent !== 'string' || sent === '') return `the request has no ${CSRF_HEADER} header; the console sends the token it got at login`;
    if (!sameSecret(sent, session.csrfToken)) return `the ${CSRF_HEADER} header does not match this session's token`;
    return null;
  }

  /** The Set-Cookie value that hands a session to the browser. */
  cookie(session: Session, secure: boolean): string {
    return `${SESSION_COOKIE}=${session.id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(this.#maxAgeMs / 1000)}${secure ? '; Secure' : ''}`;
  }

  /** The Set-Cookie value of the device cookie (a year; it holds no power of its own, only the right to skip the global back-off). */
  deviceCookie(device: string, secure: boolean): string {
    return `${DEVICE_COOKIE}=${device}; Path=/api/session; HttpOnly; SameSite=Strict; Max-Age=${365 * 24 * 3600}${secure ? '; Secure' : ''}`;
  }

  /** The Set-Cookie value that removes the session cookie. */
  clearCookie(secure: boolean): string {
    return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure ? '; Secure' : ''}`;
  }

  #expire(now: number): void {
    for (const [id, s] of this.#sessions) if (now - s.lastSeen > this.#idleMs || now - s.createdAt > this.#maxAgeMs) this.#sessions.delete(id);
  }
}
