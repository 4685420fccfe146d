/**
 * The HTTP server on node:http: it dispatches a route table (method, path,
 * body schema, handler), which the OpenAPI document is also built from.
 * Bearer-token auth (or the console's login session, console-auth.ts) on
 * everything but routes marked `auth: false`; bodies
 * are size-limited JSON checked against their schema; errors map to statuses
 * through httpStatusFor, in one place.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { timingSafeEqual, createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { BadInputError, errorData, httpStatusFor, DpsrError } from '../../src/errors.ts';
import { check, duplicateKey, maxBodyBytes, show, type Schema } from './schema.ts';
import type { Metrics } from './metrics.ts';
import type { ConsoleSessions, Session } from './console-auth.ts';

export class PayloadTooLargeError extends DpsrError {
  readonly kind = 'bad-input' as const;
}

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
  /** The console session the request came with; null for the bearer token and public routes. */
  session: Session | null;
}

export interface Reply {
  status: number;
  body: unknown;
  /** Already written (event stream, metrics text). */
  raw?: boolean;
  /** The body already serialized. */
  json?: string;
  /** More response headers (Set-Cookie). */
  headers?: Record<string, string | string[]>;
}

export interface Route {
  method: 'GET' | 'POST';
  path: string;
  summary: string;
  tag: string;
  /** False for the health check, the login and the console's page and assets. */
  auth?: boolean;
  body?: Schema<unknown>;
  query?: Record<string, string>;
  responses: Record<number, string>;
  handler(ctx: RequestContext): Promise<Reply> | Reply;
}

interface Compiled {
  route: Route;
  re: RegExp;
  names: string[];
  /** Bytes (bodyLimitFor). */
  bodyLimit: number;
}

function compile(routes: Route[], bodyLimitBytes: number): Compiled[] {
  return routes.map((route) => {
    const names: string[] = [];
    const re = new RegExp(`^${route.path.replace(/:([a-z]+)/g, (_m, n: string) => (names.push(n), '([^/]+)'))}$`);
    return { route, re, names, bodyLimit: bodyLimitFor(route, bodyLimitBytes) };
  });
}

/**
 * What is wrong with a request's query for an API route that lists
 * `declared` (name → meaning), or null: a name the route does not list, or
 * one given more than once (which value was meant cannot be told). The
 * console's page and assets and /metrics are not held to this: browsers
 * and scrapers add parameters of their own.
 */
export function queryProblem(declared: Record<string, string> | undefined, query: URLSearchParams): string | null {
  const known = Object.keys(declared ?? {});
  const seen = new Map<string, number>();
  for (const name of query.keys()) seen.set(name, (seen.get(name) ?? 0) + 1);
  for (const [name, count] of seen) {
    if (!known.includes(name)) return `query parameter ${show(name)} is not known here; ${known.length ? `allowed: ${known.join(', ')}` : 'this route takes none'}`;
    if (count > 1) return `query parameter ${name} is given ${count} times; allowed: once`;
  }
  return null;
}

/** A route's body limit: the configured one, raised to the largest body its schema admits, so a valid body never gets 413. */
export function bodyLimitFor(route: Route, configured: number): number {
  return Math.max(configured, route.body ? maxBodyBytes(route.body.json) : 0);
}

export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m) return false;
  // Hashing both sides gives equal lengths, which timingSafeEqual needs.
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

/**
 * The request body as text, at most `limit` bytes. A larger body, declared
 * (Content-Length) or streamed (chunked), rejects with PayloadTooLargeError;
 * the rest of it is read and dropped so that the 413 reaches the client.
 */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const hint = 'send a smaller body (GET /api/openapi.json gives the bounds of each body; a long list goes in several requests); nothing was changed';
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      reject(new PayloadTooLargeError(`request body of ${declared} bytes is larger than this route's limit of ${limit} bytes`, { hint }));
      req.resume();
      return;
    }
    let size = 0;
    let over = false;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        reject(new PayloadTooLargeError(`request body is larger than this route's limit of ${limit} bytes`, { hint }));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    // The client went away mid-body: its request is incomplete, not our failure.
    req.on('error', (e) => reject(new BadInputError(`the request body was cut short: ${e.message}`, { hint: 'send the whole body; nothing was changed' })));
  });
}

/** Deepest nesting a request body may have; ours have two levels. Deeper JSON would overflow the stack of whatever walks it. */
export const MAX_JSON_DEPTH = 32;

/** Whether JSON text nests arrays and objects deeper than `max` (strings are skipped; the text need not be valid). */
export function jsonNestsDeeper(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * The path and query of a request target: origin-form ("/api/x?y") or
 * absolute-form ("http://host/api/x", RFC 9112 section 3.2.2). Anything else
 * (asterisk-form, an unparsable URL) is bad input.
 */
export function parseTarget(target: string | undefined): { pathname: string; query: URLSearchParams } {
  let rest = target ?? '';
  if (!rest.startsWith('/')) {
    let u: URL | null = null;
    try {
      u = new URL(rest);
    } catch {
      /* reported below */
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) {
      throw new BadInputError(`the request target ${show(rest)} is neither a path nor an http URL`, { hint: 'request a path such as /api/status' });
    }
    rest = u.pathname + u.search;
  }
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  return { pathname: q < 0 ? rest : rest.slice(0, q), query: new URLSearchParams(q < 0 ? '' : rest.slice(q + 1)) };
}

/**
 * Why a request body in this form cannot be read, or null: a content
 * encoding other than identity (a gzip body is not unpacked: RFC 9110
 * section 8.4 answers 415), a media type other than application/json (such
 * as application/json-seq), or a charset other than UTF-8. An empty body
 * is held only to the encoding.
 */
export function bodyFormatProblem(contentType: string, contentEncoding: string | undefined, empty: boolean): string | null {
  if (contentEncoding !== undefined && !/^\s*identity\s*$/i.test(contentEncoding)) return `request body has content-encoding ${show(contentEncoding)}; allowed: none (identity)`;
  if (empty || contentType === '') return null;
  const [type, ...params] = contentType.split(';');
  if (type!.trim().toLowerCase() !== 'application/json') return `request body has content-type ${show(contentType)}; allowed: application/json`;
  for (const p of params) {
    const m = /^\s*charset\s*=\s*"?([^";\s]*)"?\s*$/i.exec(p);
    if (m && !/^utf-?8$/i.test(m[1]!)) return `request body has charset ${show(m[1])}; allowed: utf-8`;
  }
  return null;
}

/** A percent-decoded path parameter; a malformed escape is bad input, not a server error. */
function decodeParam(name: string, raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new BadInputError(`path parameter ${name} is ${show(raw)}, which holds a malformed percent-escape`, { hint: 'encode the value with encodeURIComponent' });
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  sendText(res, status, JSON.stringify(body), headers);
}

function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export function errorBody(e: unknown) {
  return { error: errorData(e) };
}

export interface ServerOptions {
  token: string;
  bodyLimitBytes: number;
  /** Says why a path has no route when it knows better than "no route" (the simulator's controls on hardware). */
  missing?: (path: string) => string | null;
  metrics: Metrics;
  log: Logger;
  /** The console's login sessions; absent: the bearer token only. */
  sessions?: ConsoleSessions;
}

/**
 * Longest a client may take to send a whole request, headers and body (the
 * largest body is a few hundred KiB): a body shorter than its Content-Length,
 * an endless chunk or a trickle then gets 408 instead of holding the
 * connection for Node's default of five minutes. Responses (the event stream,
 * downloads) are not bounded by it. Milliseconds.
 */
export const REQUEST_TIMEOUT_MS = 20_000;
/** The headers alone (slow-loris). Milliseconds. */
const HEADERS_TIMEOUT_MS = 15_000;

export interface ApiServer {
  readonly server: Server;
  /** Hands the server its route table: from then on it answers requests with it. */
  serve(routes: Route[], opts: ServerOptions): void;
}

/**
 * The server, plain HTTP or HTTPS when `tls` (PEM key and certificate) is
 * given, made before the controller starts: the daemon binds its address
 * first, so a taken port refuses the start before the controller resumes a
 * job or moves a relay. Until `serve` gives it the routes it answers 503
 * with Retry-After.
 */
export function createApiServer(tls?: { key: string; cert: string }): ApiServer {
  let handler = (req: IncomingMessage, res: ServerResponse): void => {
    req.resume();
    send(res, 503, { error: { kind: 'busy', message: 'dpsrd is starting: its controller is not up yet', hint: 'try again in a moment' } }, { 'retry-after': '1' });
  };
  const listener = (req: IncomingMessage, res: ServerResponse) => handler(req, res);
  // An https.Server is a tls.Server, which the callers use only as a net.Server (listen, address, close).
  // Node checks the deadlines every connectionsCheckingInterval: once a second keeps them close to their value.
  const limits = { requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS, connectionsCheckingInterval: 1000 };
  const server = tls ? (createTlsServer({ ...tls, ...limits }, listener) as unknown as Server) : createServer(limits, listener);
  return {
    server,
    serve(routes, opts) {
      const h = apiHandler(routes, opts);
      handler = (req, res) => void h(req, res);
    },
  };
}

/** The request handler of a route table. */
function apiHandler(routes: Route[], opts: ServerOptions): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const { token, metrics, log } = opts;
  const compiled = compile(routes, opts.bodyLimitBytes);
  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    let routeName = 'unmatched';
    let status = 500;
    try {
      let target: ReturnType<typeof parseTarget> | null = null;
      let targetError: unknown = null;
      try {
        target = parseTarget(req.url);
      } catch (e) {
        targetError = e;
      }
      // Authentication comes first: without the token nothing but the public routes is told apart, not even which routes exist.
      // HEAD of a public page (the health check, the console's files) answers as its GET without the body: monitors probe with HEAD.
      const asMethod = req.method === 'HEAD' && target !== null && compiled.some((c) => c.route.auth === false && c.route.method === 'GET' && c.re.test(target.pathname)) ? 'GET' : req.method;
      const isPublic = target !== null && compiled.some((c) => c.route.auth === false && c.route.method === asMethod && c.re.test(target.pathname));
      let session: Session | null = null;
      if (!isPublic && !tokenMatches(req.headers.authorization, token)) {
        // A wrong bearer token is not rescued by a cookie: a script should hear that its token is wrong.
        session = req.headers.authorization ? null : (opts.sessions?.fromRequest(req) ?? null);
        if (!session) {
          status = 401;
          req.resume();
          send(res, 401, { error: { kind: 'unauthorized', message: req.headers.authorization ? 'the bearer token is wrong' : 'this route needs "Authorization: Bearer <token>" or a console login', hint: "the token is in the file api-token of the daemon's state directory; the console's password in admin-password there" } }, { 'www-authenticate': 'Bearer realm="dpsr"' });
          return;
        }
        // A browser sends the cookie with any request to us, also one another site's page makes: state changes need proof that our page made it.
        const csrf = req.method === 'GET' || req.method === 'HEAD' ? null : opts.sessions!.csrfProblem(req, session);
        if (csrf) {
          status = 403;
          req.resume();
          send(res, 403, { error: { kind: 'forbidden', message: `refused: ${csrf}`, hint: 'reload the console and log in again; scripts use the bearer token' } });
          return;
        }
      }
      if (!target) throw targetError;
      const { pathname, query } = target;
      const matching = compiled.filter((c) => c.re.test(pathname));
      const hit = matching.find((c) => c.route.method === asMethod);
      if (!hit) {
        req.resume();
        if (matching.length) {
          status = 405;
          send(res, 405, { error: { kind: 'bad-input', message: `${req.method} is not allowed on ${pathname}; allowed: ${matching.map((m) => m.route.method).join(', ')}` } }, { allow: matching.map((m) => m.route.method).join(', ') });
        } else {
          status = 404;
          send(res, 404, { error: { kind: 'not-found', message: opts.missing?.(pathname) ?? `no route ${req.method} ${show(pathname)}`, hint: 'GET /api/openapi.json lists the routes' } });
        }
        return;
      }
      const { route } = hit;
      routeName = `${route.method} ${route.path}`;
      const params: Record<string, string> = {};
      const m = hit.re.exec(pathname)!;
      hit.names.forEach((n, i) => (params[n] = decodeParam(n, m[i + 1]!)));
      const badQuery = pathname.startsWith('/api/') ? queryProblem(route.query, query) : null;
      if (badQuery) throw new BadInputError(badQuery, { hint: 'GET /api/openapi.json lists the parameters of each route; nothing was changed' });
      let body: unknown = undefined;
      if (req.method === 'POST') {
        const text = await readBody(req, hit.bodyLimit);
        const unsupported = bodyFormatProblem(req.headers['content-type'] ?? '', req.headers['content-encoding'], text.trim() === '');
        if (unsupported) {
          status = 415;
          send(res, 415, { error: { kind: 'bad-input', message: unsupported, hint: 'send the body as uncompressed UTF-8 JSON with content-type application/json; nothing was changed' } });
          return;
        }
        if (text.trim() === '') body = {};
        else {
          if (jsonNestsDeeper(text, MAX_JSON_DEPTH)) throw new BadInputError(`request body nests arrays or objects deeper than ${MAX_JSON_DEPTH} levels`, { hint: 'send the flat JSON object the route describes (GET /api/openapi.json)' });
          try {
            body = JSON.parse(text);
          } catch (e) {
            throw new BadInputError(`request body is not valid JSON: ${(e as Error).message}`, { hint: 'send a JSON object, e.g. {}' });
          }
          const twice = duplicateKey(text);
          if (twice !== null) throw new BadInputError(`request body: key ${twice} is given twice; which value was meant cannot be told`, { hint: 'give each key once; nothing was changed' });
        }
        if (route.body) body = check(route.body, body, 'request body');
        // A route that takes no body still says so: whatever was sent was meant for something else.
        else if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).length > 0) {
          throw new BadInputError(`request body is ${show(body)}; this route takes none (or {})`, { hint: 'send no body; nothing was changed' });
        }
      }
      const reply = await route.handler({ req, res, params, query, body, session });
      status = reply.status;
      if (reply.json !== undefined) sendText(res, reply.status, reply.json, reply.headers);
      else if (!reply.raw) send(res, reply.status, reply.body, reply.headers);
    } catch (e) {
      const tooLarge = e instanceof PayloadTooLargeError;
      status = tooLarge ? 413 : httpStatusFor(e);
      if (status === 500) log.error({ err: e, url: req.url }, 'request failed');
      // A body cut short leaves bytes on the connection: the answer closes it.
      if (!res.headersSent) send(res, status, errorBody(e), tooLarge ? { connection: 'close' } : {});
      else res.end();
    } finally {
      metrics.httpRequests.inc({ route: routeName, status: String(status) });
      if (routeName !== 'GET /api/status' && routeName !== 'GET /metrics') log.debug({ route: routeName, status, ms: Math.round(performance.now() - started) }, 'request');
    }
  };
  return handler;
}
