'use strict';
// HTTP client for the dpsrd API. Node 20's global fetch; no other dependency,
// so the package installs into any Node-RED 4 without pulling an HTTP stack.
const { readFile } = require('node:fs/promises');

class ApiError extends Error {
  /**
   * @param {string} message
   * @param {{ status?: number, body?: unknown, code?: string }} [info]
   */
  constructor(message, info = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = info.status;
    this.body = info.body;
    this.code = info.code;
  }
}

/** Keeps the daemon's own wording: its errors name what was wrong and why. */
function errorMessage(status, body, text) {
  if (body && typeof body === 'object') {
    const b = /** @type {any} */ (body);
    const msg = b.error?.message ?? b.message ?? (typeof b.error === 'string' ? b.error : undefined);
    if (msg) return `${status}: ${msg}${b.hint ? ` (${b.hint})` : b.error?.hint ? ` (${b.error.hint})` : ''}`;
  }
  return `${status}: ${(text || '').slice(0, 300) || 'no body'}`;
}

class DpsrClient {
  /**
   * @param {{ url: string, token?: string, tokenFile?: string, timeoutMs?: number }} opts
   */
  constructor(opts) {
    if (!opts || typeof opts.url !== 'string' || !/^https?:\/\/[^/]/.test(opts.url)) {
      throw new ApiError(`controller URL ${JSON.stringify(opts?.url)} is not an http:// or https:// URL`, { code: 'BAD_CONFIG' });
    }
    this.base = opts.url.replace(/\/+$/, '');
    this.token = opts.token || '';
    this.tokenFile = opts.tokenFile || '';
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    /** @type {string | undefined} */
    this.fileToken = undefined;
  }

  /** The token from the credential, else from the file (re-read after a 401, so a rotated token is picked up). */
  async authToken(reload = false) {
    if (this.token) return this.token;
    if (!this.tokenFile) return '';
    if (this.fileToken === undefined || reload) {
      try {
        this.fileToken = (await readFile(this.tokenFile, 'utf8')).trim();
      } catch (e) {
        throw new ApiError(`cannot read the token file ${this.tokenFile}: ${/** @type {Error} */ (e).message}`, { code: 'TOKEN_FILE' });
      }
    }
    return this.fileToken;
  }

  async headers(extra = {}, reload = false) {
    const token = await this.authToken(reload);
    return { ...(token ? { authorization: `Bearer ${token}` } : {}), ...extra };
  }

  /**
   * @param {string} method
   * @param {string} path under the base URL, e.g. /api/status
   * @param {unknown} [body]
   * @param {{ signal?: AbortSignal, timeoutMs?: number }} [opts]
   */
  async request(method, path, body, opts = {}) {
    for (let attempt = 0; ; attempt++) {
      const timeout = AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs);
      const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
      const init = {
        method,
        headers: await this.headers(body === undefined ? {} : { 'content-type': 'application/json' }, attempt > 0),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      };
      let res;
      try {
        res = await fetch(this.base + path, init);
      } catch (e) {
        const err = /** @type {any} */ (e);
        if (timeout.aborted) throw new ApiError(`${method} ${path}: no answer from ${this.base} within ${opts.timeoutMs ?? this.timeoutMs} ms`, { code: 'TIMEOUT' });
        if (err.name === 'AbortError') throw new ApiError(`${method} ${path}: aborted`, { code: 'ABORTED' });
        throw new ApiError(`${method} ${path}: cannot reach ${this.base}: ${err.cause?.code ?? err.cause?.message ?? err.message}`, { code: 'UNREACHABLE' });
      }
      const text = await res.text();
      let parsed;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = undefined;
      }
      if (res.status === 401 && attempt === 0 && !this.token && this.tokenFile) continue;
      if (!res.ok) throw new ApiError(`${method} ${path} → ${errorMessage(res.status, parsed, text)}`, { status: res.status, body: parsed ?? text });
      return parsed;
    }
  }

  /**
   * The whole status, or with `pair` that pair's (GET /api/pairs/{id}/status).
   * @param {object} [opts]
   * @param {string} [pair] a pair id as the daemon's config names it
   */
  status(opts, pair) {
    return this.request('GET', pair ? `/api/pairs/${encodeURIComponent(pair)}/status` : '/api/status', undefined, opts);
  }
  /**
   * Starts a job: of `pair`, or of the daemon's only pair when none is given
   * (a daemon with several pairs answers 400 naming them).
   * @param {'sync' | 'verify'} kind
   */
  start(kind, options, opts, pair) {
    return this.request('POST', pair ? `/api/pairs/${encodeURIComponent(pair)}/${kind}` : `/api/${kind}`, options ?? {}, opts);
  }
  job(id, opts) {
    return this.request('GET', `/api/jobs/${encodeURIComponent(id)}`, undefined, opts);
  }
  cancel(id, opts) {
    return this.request('POST', `/api/jobs/${encodeURIComponent(id)}/cancel`, {}, opts);
  }
  failover(body, opts, pair) {
    return this.request('POST', pair ? `/api/pairs/${encodeURIComponent(pair)}/failover` : '/api/failover', body ?? {}, opts);
  }
}

module.exports = { DpsrClient, ApiError };
