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
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';

export const SESSION_COOKIE = 'dpsr_session';
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
  /** Wrong passwords in a row after which logins pause for `lockMs`. */
  maxFailures?: number;
  lockMs?: number;
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

export type LoginResult = { ok: true; session: Session } | { ok: false; reason: 'wrong-password' | 'locked'; retryAfterMs?: number };

export class ConsoleSessions {
  readonly #sessions = new Map<string, Session>();
  readonly #password: string;
  readonly #idleMs: number;
  readonly #maxAgeMs: number;
  readonly #max: number;
  readonly #maxFailures: number;
  readonly #lockMs: number;
  readonly #now: () => number;
  #failures = 0;
  #lockedUntil = 0;

  constructor(password: string, opts: SessionOptions = {}) {
    this.#password = password;
    this.#idleMs = opts.idleMs ?? 8 * 3600_000;
    this.#maxAgeMs = opts.maxAgeMs ?? 7 * 24 * 3600_000;
    this.#max = opts.maxSessions ?? 64;
    this.#maxFailures = opts.maxFailures ?? 5;
    this.#lockMs = opts.lockMs ?? 30_000;
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /**
   * A new session for the right password. After `maxFailures` wrong ones in
   * a row logins pause for `lockMs` (even the right password waits), which
   * makes guessing a 144-bit password over the network hopeless.
   */
  login(password: string): LoginResult {
    const now = this.#now();
    if (now < this.#lockedUntil) return { ok: false, reason: 'locked', retryAfterMs: this.#lockedUntil - now };
    if (!sameSecret(password, this.#password)) {
      if (++this.#failures >= this.#maxFailures) {
        this.#failures = 0;
        this.#lockedUntil = now + this.#lockMs;
      }
      return { ok: false, reason: 'wrong-password' };
    }
    this.#failures = 0;
    this.#expire(now);
    while (this.#sessions.size >= this.#max) this.#sessions.delete(this.#sessions.keys().next().value!);
    const session: Session = { id: randomBytes(32).toString('base64url'), csrfToken: randomBytes(32).toString('base64url'), createdAt: now, lastSeen: now };
    this.#sessions.set(session.id, session);
    return { ok: true, session };
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

  /** The Set-Cookie value that removes the session cookie. */
  clearCookie(secure: boolean): string {
    return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure ? '; Secure' : ''}`;
  }

  #expire(now: number): void {
    for (const [id, s] of this.#sessions) if (now - s.lastSeen > this.#idleMs || now - s.createdAt > this.#maxAgeMs) this.#sessions.delete(id);
  }
}
