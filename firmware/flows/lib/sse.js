'use strict';
// Server-sent events over fetch. A small parser (the WHATWG event-stream
// rules) instead of an EventSource package: the token goes in a header, the
// reconnect policy (backoff, idle timeout, Last-Event-ID) is ours to test, and
// the node package keeps zero runtime dependencies.

/** Incremental event-stream parser: feed text chunks, get complete events. */
class SseParser {
  constructor() {
    this.buf = '';
    this.data = [];
    this.event = '';
    this.id = undefined;
    /** Last id seen, kept across events as the spec says (sent back as Last-Event-ID). */
    this.lastId = '';
    /** @type {number | undefined} server's reconnection delay hint */
    this.retry = undefined;
  }

  /**
   * @param {string} chunk
   * @returns {{ event: string, data: string, id: string }[]}
   */
  feed(chunk) {
    this.buf += chunk;
    const out = [];
    let start = 0;
    for (;;) {
      // A line ends at CRLF, LF or CR; a lone CR at the end of the buffer may
      // be the first half of a CRLF, so it waits for the next chunk.
      let i = start;
      while (i < this.buf.length && this.buf[i] !== '\n' && this.buf[i] !== '\r') i++;
      if (i >= this.buf.length) break;
      if (this.buf[i] === '\r' && i + 1 >= this.buf.length) break;
      const line = this.buf.slice(start, i);
      start = this.buf[i] === '\r' && this.buf[i + 1] === '\n' ? i + 2 : i + 1;
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    this.buf = this.buf.slice(start);
    return out;
  }

  /** @param {string} line */
  line(line) {
    if (line === '') {
      if (this.id !== undefined) this.lastId = this.id;
      this.id = undefined;
      if (this.data.length === 0) {
        this.event = '';
        return undefined;
      }
      const ev = { event: this.event || 'message', data: this.data.join('\n'), id: this.lastId };
      this.data = [];
      this.event = '';
      return ev;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id') {
      if (!value.includes('\0')) this.id = value;
    } else if (field === 'retry') {
      if (/^\d+$/.test(value)) this.retry = Number(value);
    }
    return undefined;
  }
}

/**
 * Holds one event-stream subscription open, reconnecting with exponential
 * backoff. Returns a handle whose close() ends it for good.
 *
 * @param {import('./client').DpsrClient} client
 * @param {{
 *   path?: string,
 *   onEvent: (ev: { event: string, data: string, id: string }) => void,
 *   onState?: (state: { state: 'connecting' | 'connected' | 'waiting' | 'closed', attempt: number, delayMs?: number, error?: string }) => void,
 *   minDelayMs?: number, maxDelayMs?: number, idleTimeoutMs?: number,
 * }} opts
 */
function subscribe(client, opts) {
  const path = opts.path ?? '/api/events';
  const minDelay = opts.minDelayMs ?? 500;
  const maxDelay = opts.maxDelayMs ?? 30_000;
  const idleTimeout = opts.idleTimeoutMs ?? 60_000;
  const onState = opts.onState ?? (() => {});
  const stop = new AbortController();
  let lastId = '';
  let attempt = 0;
  let wake;

  const sleep = (ms) =>
    new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(t);
        resolve(undefined);
      };
    });

  async function once() {
    const conn = new AbortController();
    const signal = AbortSignal.any([stop.signal, conn.signal]);
    let idle;
    const touch = () => {
      clearTimeout(idle);
      // No byte at all (not even the daemon's keep-alive comment) for this
      // long means a dead peer that never closed the socket.
      idle = setTimeout(() => conn.abort(new Error(`no data for ${idleTimeout} ms`)), idleTimeout);
    };
    touch();
    try {
      const headers = await client.headers({ accept: 'text/event-stream', 'cache-control': 'no-cache', ...(lastId ? { 'last-event-id': lastId } : {}) }, attempt > 0);
      const res = await fetch(client.base + path, { headers, signal });
      if (!res.ok || !res.body) {
        const text = await res.text().catch(() => '');
        throw new Error(`GET ${path} → ${res.status} ${text.slice(0, 200)}`);
      }
      const type = res.headers.get('content-type') ?? '';
      if (!type.startsWith('text/event-stream')) throw new Error(`GET ${path} answered ${type || 'no content type'}, not text/event-stream`);
      attempt = 0;
      onState({ state: 'connected', attempt });
      const parser = new SseParser();
      const decoder = new TextDecoder();
      for await (const chunk of res.body) {
        touch();
        for (const ev of parser.feed(decoder.decode(chunk, { stream: true }))) {
          lastId = ev.id;
          try {
            opts.onEvent(ev);
          } catch {
            // A handler's failure is the handler's; the stream goes on.
          }
        }
      }
      return 'the stream ended';
    } finally {
      clearTimeout(idle);
    }
  }

  (async () => {
    while (!stop.signal.aborted) {
      onState({ state: 'connecting', attempt });
      let why;
      try {
        why = await once();
      } catch (e) {
        const err = /** @type {any} */ (e);
        why = err.cause?.code ?? err.cause?.message ?? err.message;
      }
      if (stop.signal.aborted) break;
      attempt++;
      // The node's own backoff rules, not the server's retry hint: the hint is
      // one fixed delay for browsers, while a flow wants to back off from a
      // daemon that stays down and to come back quickly after a restart.
      const delay = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt - 1, 16));
      // ±20 % jitter so many flows do not reconnect in lockstep after a daemon restart.
      const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
      onState({ state: 'waiting', attempt, delayMs: jittered, error: why });
      await sleep(jittered);
    }
    onState({ state: 'closed', attempt });
  })();

  return {
    close() {
      stop.abort();
      wake?.();
    },
    get lastEventId() {
      return lastId;
    },
  };
}

module.exports = { SseParser, subscribe };
