/** Small parts every page uses: the route, errors, a confirmation by typing a word. */
import { useState } from 'preact/hooks';
import { ApiError } from './api.ts';

export interface Route {
  page: string;
  query: URLSearchParams;
}

/** Moves to a page (and query), keeping history so Back works. */
export function go(page: string, query: Record<string, string | number> = {}): void {
  const q = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
  location.hash = `#/${page}${q ? `?${q}` : ''}`;
}

export function ErrorBox({ error }: { error: { message: string; hint?: string } | string }) {
  const e = typeof error === 'string' ? { message: error } : error;
  return (
    <div class="error" role="alert">
      <strong>{e.message}</strong>
      {e.hint && <div class="hint">{e.hint}</div>}
    </div>
  );
}

/** An error of any kind as what ErrorBox shows. */
export function asError(e: unknown): { message: string; hint?: string } {
  return e instanceof ApiError ? e : { message: (e as Error).message ?? String(e) };
}

/**
 * Runs an API call for a button: busy while it runs, then the answer or the
 * error to show.
 */
export function useAction<T>() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<{ message: string; hint?: string } | null>(null);
  const [result, setResult] = useState<T | null>(null);
  const run = async (fn: () => Promise<T>) => {
    setBusy(true);
    setError(null);
    setResult(null);
    try {
      const r = await fn();
      setResult(r);
      return r;
    } catch (e) {
      setError(asError(e));
      return null;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, result, run, setError };
}

/** A drive pair as the status lists it. */
export interface PairInfo {
  id: string;
  label?: string;
  role: 'boot' | 'data';
  active: string;
  standby: string;
  standbyState: string;
  fileRestore?: any;
  job?: { id: string; kind: string; state: string } | null;
}

/** The pair a page acts on: `pair` of its query, else the boot pair. */
export function pairOf(route: Route, status: any): PairInfo | null {
  const pairs: PairInfo[] = status?.pairs ?? [];
  const want = route.query.get('pair');
  return pairs.find((p) => p.id === want) ?? pairs.find((p) => p.role === 'boot') ?? pairs[0] ?? null;
}

/** A route of the pair (`/api/pairs/{id}/…`); the old place when the status has not named the pairs yet. */
export function pairApi(pair: PairInfo | null, rest: string): string {
  return pair ? `/api/pairs/${encodeURIComponent(pair.id)}${rest}` : `/api${rest}`;
}

/** Picks the pair a page acts on (shown only when there are several); the choice goes into the page's query. */
export function PairPicker({ route, status, keep = {} }: { route: Route; status: any; keep?: Record<string, string | number> }) {
  const pairs: PairInfo[] = status?.pairs ?? [];
  const current = pairOf(route, status);
  if (pairs.length < 2 || !current) return null;
  return (
    <label class="pair-picker">
      Drive pair{' '}
      <select value={current.id} onChange={(e) => go(route.page, { ...keep, pair: (e.target as HTMLSelectElement).value })}>
        {pairs.map((p) => (
          <option value={p.id}>
            {p.label ?? p.id} (bays {p.active}/{p.standby})
          </option>
        ))}
      </select>
    </label>
  );
}
