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
