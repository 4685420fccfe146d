/**
 * Serving the operator console (firmware/console): its page and bundle, and
 * the login routes of console-auth.ts. The console is plain TypeScript with
 * Preact, bundled by esbuild into one script and one style sheet with
 * nothing fetched from elsewhere (the appliance may have no internet).
 * `npm run build` writes the bundle to dist/firmware/console; run from the
 * sources, the daemon bundles them in memory on the first request instead
 * (esbuild is a devDependency, there whenever the sources are), so
 * `npm start` serves the console without a build step.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { DeviceError, NotFoundError } from '../../src/errors.ts';
import { ConsoleSessions, crossSiteProblem, isSecure } from './console-auth.ts';
import type { Reply, Route } from './http-server.ts';
import { obj, str } from './schema.ts';

/** The console's folder beside this module: the sources in a checkout, the bundle in dist/. */
export const CONSOLE_DIR = fileURLToPath(new URL('../console/', import.meta.url));

export interface Asset {
  type: string;
  body: Buffer;
  etag: string;
}

const TYPES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

function asset(name: string, body: Buffer): Asset {
  return { type: TYPES[name]!, body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
}

type Esbuild = typeof import('esbuild');

/**
 * Bundles the console's sources in `sourceDir` (main.tsx, its imports and
 * style.css; index.html copied): the files index.html, app.js and app.css.
 * `esbuild` is the bundler's module when the caller has it (a build writing
 * outside the checkout, where this module cannot find it by itself).
 * @throws DeviceError esbuild is not installed or the sources do not build.
 */
export async function bundleConsole(sourceDir: string, esbuildModule?: Esbuild): Promise<Map<string, Asset>> {
  let esbuild: Esbuild;
  try {
    esbuild = esbuildModule ?? (await import('esbuild'));
  } catch {
    throw new DeviceError('the console is not built and esbuild, which bundles it, is not installed', { hint: 'run `npm ci` and `npm run build` in the checkout' });
  }
  const result = await esbuild.build({
    entryPoints: { app: join(sourceDir, 'main.tsx') },
    bundle: true,
    write: false,
    outdir: '/',
    format: 'esm',
    target: ['es2020'],
    minify: true,
    jsx: 'automatic',
    jsxImportSource: 'preact',
    legalComments: 'none',
    logLevel: 'silent',
  });
  const out = new Map<string, Asset>();
  out.set('index.html', asset('index.html', readFileSync(join(sourceDir, 'index.html'))));
  for (const f of result.outputFiles) {
    const name = f.path.split('/').pop()!;
    if (TYPES[name]) out.set(name, asset(name, Buffer.from(f.contents)));
  }
  if (!out.has('app.js') || !out.has('app.css')) throw new DeviceError(`bundling ${sourceDir} gave ${[...out.keys()].join(', ')}; expected index.html, app.js and app.css`);
  return out;
}

/** `npm run build`: the bundle written to `outDir`. */
export async function writeConsoleBundle(sourceDir: string, outDir: string, esbuild?: Esbuild): Promise<void> {
  const files = await bundleConsole(sourceDir, esbuild);
  mkdirSync(outDir, { recursive: true });
  for (const [name, a] of files) writeFileSync(join(outDir, name), a.body);
}

/** The built bundle in `dir` when there is one, else `dir`'s sources bundled now. */
export async function loadConsole(dir = CONSOLE_DIR): Promise<Map<string, Asset>> {
  if (existsSync(join(dir, 'app.js'))) return new Map(Object.keys(TYPES).map((n) => [n, asset(n, readFileSync(join(dir, n)))]));
  return bundleConsole(dir);
}

/**
 * The page may run only our own script and style and talk only to us; no
 * other site may frame it (clickjacking a failover button).
 */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** What the settings page shows besides the config: where the secrets are kept, and the addresses of the API and Node-RED. */
export interface ConsoleInfo {
  config: unknown;
  files: { stateDir: string; apiToken: string; adminPassword: string; nodeRedPassword: string };
  urls: { http: string; https: string | null; nodeRed: string | null };
}

/** The config with the values of secret-looking keys (psk, secret, password, token, key) replaced, should a config ever hold one. */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, /psk|secret|password|token|(^|[a-z])key$/i.test(k) && typeof v === 'string' ? '(hidden)' : redactSecrets(v)]));
}

export const loginBody = obj({ password: str({ maxLength: 256, description: "the appliance's admin password (the file admin-password in the daemon's state directory)" }) });

export function consoleRoutes(sessions: ConsoleSessions, log: Logger, info: ConsoleInfo, dir = CONSOLE_DIR): Route[] {
  let loading: Promise<Map<string, Asset>> | null = null;
  const assets = () => {
    loading ??= loadConsole(dir).catch((e: unknown) => {
      loading = null; // tried again on the next request, after the sources are fixed
      throw e;
    });
    return loading;
  };
  const serve = async (name: string, ctx: { req: IncomingMessage; res: ServerResponse }): Promise<Reply> => {
    let files: Map<string, Asset>;
    try {
      files = await assets();
    } catch (e) {
      log.error({ err: e }, 'the console cannot be served');
      throw e;
    }
    const a = files.get(name);
    if (!a) throw new NotFoundError(`the console has no file ${JSON.stringify(name)}`, { hint: 'open / for the console' });
    const headers = { ...PAGE_HEADERS, 'content-type': a.type, etag: a.etag, 'cache-control': 'no-cache' };
    if (ctx.req.headers['if-none-match'] === a.etag) ctx.res.writeHead(304, headers).end();
    else ctx.res.writeHead(200, { ...headers, 'content-length': String(a.body.length) }).end(a.body);
    return { status: 200, body: null, raw: true };
  };
  return [
    {
      method: 'GET', path: '/', tag: 'console', auth: false, summary: "The operator console's page (it logs in with POST /api/session)",
      responses: { 200: 'text/html' },
      handler: (ctx) => serve('index.html', ctx),
    },
    {
      method: 'GET', path: '/console/:file', tag: 'console', auth: false, summary: "The console's script (app.js) and style sheet (app.css)",
      responses: { 200: 'the file', 404: 'no such file' },
      handler: (ctx) => serve(ctx.params.file!, ctx),
    },
    {
      method: 'POST', path: '/api/session', tag: 'console', auth: false, body: loginBody,
      summary: "Log in to the console with the appliance's admin password: an HttpOnly, SameSite=Strict session cookie and the CSRF token to send as X-CSRF-Token with state-changing requests",
      responses: { 200: '{ user, csrfToken } and the dpsr_session cookie', 401: 'the password is wrong', 403: 'the request came from another site', 429: 'too many wrong passwords from this address or browser (it waits twice as long after each), or from the network as a whole (browsers that never logged in here wait; those with the dpsr_device cookie of an earlier login do not): wait retryAfterSeconds' },
      handler: ({ req, body }): Reply => {
        const secure = isSecure(req);
        const cross = crossSiteProblem(req);
        if (cross) return { status: 403, body: { error: { kind: 'forbidden', message: `refused: ${cross}`, hint: 'log in from the console page itself' } } };
        const remote = req.socket.remoteAddress ?? 'unknown';
        const r = sessions.login((body as { password: string }).password, { address: remote, cookie: req.headers.cookie });
        if (!r.ok) {
          if (r.reason === 'locked') {
            const s = Math.ceil(r.retryAfterMs / 1000);
            const message = r.why === 'global'
              ? `too many wrong passwords from the network: logins from browsers that never logged in here pause for ${s} s`
              : `too many wrong passwords from this ${r.why === 'device' ? 'browser' : 'address'}: its logins pause for ${s} s`;
            if (r.why === 'global') log.warn({ remote }, 'console login held back: the network as a whole guesses too fast');
            return { status: 429, body: { error: { kind: 'busy', message, hint: `the password is in the file admin-password of the daemon's state directory; a browser that logged in here before is not held back by other addresses' guesses${r.why === 'global' ? ', and scripts keep the bearer token' : ''}` }, retryAfterSeconds: s }, headers: { 'retry-after': String(s) } };
          }
          log.warn({ remote }, 'console login with a wrong password');
          return { status: 401, body: { error: { kind: 'unauthorized', message: 'the password is wrong', hint: "the password is in the file admin-password of the daemon's state directory" } } };
        }
        log.info({ remote }, 'console login');
        return { status: 200, body: { user: 'admin', csrfToken: r.session.csrfToken }, headers: { 'set-cookie': [sessions.cookie(r.session, secure), sessions.deviceCookie(r.device, secure)] } };
      },
    },
    {
      method: 'GET', path: '/api/session', tag: 'console', summary: 'Who is asking: the console session (with its CSRF token, for a reloaded page) or the bearer token',
      responses: { 200: '{ user: admin|token, csrfToken? }' },
      handler: ({ session }) => ({ status: 200, body: session ? { user: 'admin', csrfToken: session.csrfToken } : { user: 'token' } }),
    },
    {
      method: 'GET', path: '/api/settings', tag: 'console', summary: "The config in force (values of secret-looking keys hidden), where the token and passwords are kept, and the addresses of the API, its HTTPS side and the Node-RED editor",
      responses: { 200: '{ config, files, urls }' },
      handler: () => ({ status: 200, body: { ...info, config: redactSecrets(info.config) } }),
    },
    {
      method: 'POST', path: '/api/session/logout', tag: 'console', summary: 'End the console session and clear its cookie',
      responses: { 200: 'logged out' },
      handler: ({ req, session }) => {
        if (session) sessions.logout(session);
        return { status: 200, body: { ok: true }, headers: { 'set-cookie': sessions.clearCookie(isSecure(req)) } };
      },
    },
  ];
}
