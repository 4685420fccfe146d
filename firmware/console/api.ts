/**
 * The console's only way to the appliance: dpsrd's HTTP API, with the login
 * session's cookie (sent by the browser) and its CSRF token (sent by us in
 * X-CSRF-Token on every POST), and its event stream.
 */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly kind: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

let csrfToken: string | null = null;
const unauthorizedListeners = new Set<() => void>();

/** Called when the session ended (401): the app shows the login again. */
export function onUnauthorized(fn: () => void): () => void {
  unauthorizedListeners.add(fn);
  return () => unauthorizedListeners.delete(fn);
}

async function errorOf(res: Response): Promise<ApiError> {
  let body: { error?: { kind?: string; message?: string; hint?: string } } = {};
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  return new ApiError(res.status, body.error?.kind ?? 'internal', body.error?.message ?? `${res.status} ${res.statusText}`, body.error?.hint);
}

/** A JSON request; throws ApiError with the daemon's message and hint. */
export async function api<T = unknown>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method === 'POST') {
    headers['content-type'] = 'application/json';
    if (csrfToken) headers['x-csrf-token'] = csrfToken;
  }
  const res = await fetch(path, { method, headers, credentials: 'same-origin', body: method === 'POST' ? JSON.stringify(body ?? {}) : undefined });
  if (!res.ok) {
    const err = await errorOf(res);
    if (res.status === 401 && path !== '/api/session') for (const fn of unauthorizedListeners) fn();
    throw err;
  }
  return (await res.json()) as T;
}

/** The current session, or null when logged out. */
export async function currentSession(): Promise<{ user: string } | null> {
  try {
    const s = await api<{ user: string; csrfToken?: string }>('GET', '/api/session');
    csrfToken = s.csrfToken ?? null;
    return s;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

export async function login(password: string): Promise<void> {
  const s = await api<{ user: string; csrfToken: string }>('POST', '/api/session', { password });
  csrfToken = s.csrfToken;
}

export async function logout(): Promise<void> {
  try {
    await api('POST', '/api/session/logout');
  } finally {
    csrfToken = null;
  }
}

export interface DaemonEvent {
  id: string;
  type: string;
  at?: string;
  data: any;
}

/**
 * Listens to the event stream (EventSource reconnects by itself and resumes
 * with Last-Event-ID). Returns the function that closes it.
 */
export function subscribe(types: string[], onEvent: (e: DaemonEvent) => void, onState?: (open: boolean) => void): () => void {
  const es = new EventSource(`/api/events?types=${encodeURIComponent(types.join(','))}`);
  const handle = (ev: MessageEvent) => {
    // The data is { seq, at, type, data }.
    let parsed: { at?: string; data?: unknown } = {};
    try {
      parsed = JSON.parse(ev.data);
    } catch {
      /* a torn line: its data stays empty */
    }
    onEvent({ id: ev.lastEventId, type: ev.type, at: parsed.at, data: parsed.data ?? null });
  };
  // Named events reach only listeners of their own name: one per known type.
  for (const t of EVENT_NAMES) es.addEventListener(t, handle as EventListener);
  es.onopen = () => onState?.(true);
  es.onerror = () => onState?.(false);
  return () => es.close();
}

/** The event names dpsrd sends (GET /api/openapi.json, x-event-types); unknown ones are ignored. */
export const EVENT_NAMES = [
  'daemon.started', 'daemon.stopping', 'job.started', 'job.progress', 'job.note', 'job.done', 'job.failed', 'job.cancelled',
  'status.changed', 'failover', 'failover.state', 'switch.step', 'switched', 'relay', 'button', 'host.power', 'host.heartbeat',
  'boot', 'health', 'drive', 'rail', 'alert',
];

/** A URL of the API with query parameters. */
export function url(path: string, query: Record<string, string | number | boolean | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
  return `${path}?${q}`;
}
