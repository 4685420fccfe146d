/**
 * The operator console: a login, then five pages (overview, explorer, jobs,
 * actions, settings) chosen by the URL's fragment (#/explorer?partition=2),
 * so a reload or a bookmark comes back to the same place and the server
 * serves one page only.
 */
import { render } from 'preact';
import { useEffect, useErrorBoundary, useState } from 'preact/hooks';
import { ApiError, currentSession, login, logout, onUnauthorized } from './api.ts';
import * as store from './store.ts';
import { ErrorBox, type Route } from './ui.tsx';
import { Overview } from './pages/overview.tsx';
import { Explorer } from './pages/explorer.tsx';
import { Jobs } from './pages/jobs.tsx';
import { Actions } from './pages/actions.tsx';
import { Settings } from './pages/settings.tsx';
import './style.css';

const PAGES = [
  { id: 'overview', title: 'Overview', view: Overview },
  { id: 'explorer', title: 'Explorer', view: Explorer },
  { id: 'jobs', title: 'Jobs', view: Jobs },
  { id: 'actions', title: 'Actions', view: Actions },
  { id: 'settings', title: 'Settings', view: Settings },
] as const;

function parseHash(hash: string): Route {
  const h = hash.replace(/^#\/?/, '');
  const q = h.indexOf('?');
  return { page: (q < 0 ? h : h.slice(0, q)) || 'overview', query: new URLSearchParams(q < 0 ? '' : h.slice(q + 1)) };
}

function useRoute(): Route {
  const [route, setRoute] = useState(parseHash(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

function Login({ onDone }: { onDone: () => void }) {
  const [password, setPassword] = useState('');
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await login(password);
      onDone();
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, 'internal', (err as Error).message));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">dpsr console</h1>
        <input type="text" name="username" value="admin" autocomplete="username" hidden />
        <label for="password">Admin password</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required autofocus value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} />
        <button type="submit" class="primary" disabled={busy}>{busy ? 'Logging in…' : 'Log in'}</button>
        {error && <ErrorBox error={error} />}
        <p class="muted">The password is in the file <code>admin-password</code> of the daemon's state directory (<code>/var/lib/dpsr</code> on the appliance); dpsrd prints where at start.</p>
      </form>
    </main>
  );
}

/** A page that fails to render says so and leaves the rest of the console working. */
function Guarded({ view: View, route }: { view: (p: { route: Route }) => preact.JSX.Element; route: Route }) {
  const [error, reset] = useErrorBoundary((e) => console.error(e));
  if (error) {
    return (
      <div>
        <ErrorBox error={{ message: `This page failed: ${(error as Error).message ?? String(error)}`, hint: 'the other pages still work; reload to try again' }} />
        <button type="button" onClick={reset}>
          Try again
        </button>
      </div>
    );
  }
  return <View route={route} />;
}

function Shell({ onLogout }: { onLogout: () => void }) {
  const route = useRoute();
  const snap = store.useSnapshot();
  const page = PAGES.find((p) => p.id === route.page) ?? PAGES[0];
  const View = page.view;
  useEffect(() => {
    document.title = `${page.title} · dpsr`;
  }, [page]);
  const job = snap.status?.job;
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById('main')?.focus())}>Skip to content</a>
      <header class="top">
        <span class="brand">dpsr</span>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a href={`#/${p.id}`} aria-current={p.id === page.id ? 'page' : undefined}>{p.title}</a>
          ))}
        </nav>
        <span class="conn" title={snap.connected ? 'live: the event stream is connected' : 'the event stream is not connected'}>
          <span class={`dot ${snap.connected ? 'ok' : 'bad'}`} aria-hidden="true" />
          {job ? `${job.kind} ${Math.floor(snap.progress?.percent ?? 0)} %` : snap.connected ? 'live' : 'offline'}
        </span>
        <button type="button" class="link" onClick={onLogout}>Log out</button>
      </header>
      <main id="main" tabIndex={-1}>
        <h1>{page.title}</h1>
        {snap.error && <ErrorBox error={snap.error} />}
        <Guarded key={page.id} view={View} route={route} />
      </main>
    </>
  );
}

function App() {
  const [state, setState] = useState<'loading' | 'login' | 'in'>('loading');
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    currentSession().then(
      (s) => setState(s ? 'in' : 'login'),
      (e: Error) => setError(e.message),
    );
    return onUnauthorized(() => {
      store.reset();
      setState('login');
    });
  }, []);
  useEffect(() => {
    if (state === 'in') store.start();
  }, [state]);
  if (error) return <main><ErrorBox error={`The daemon does not answer: ${error}`} /></main>;
  if (state === 'loading') return <main aria-busy="true">Loading…</main>;
  if (state === 'login') return <Login onDone={() => setState('in')} />;
  return (
    <Shell
      onLogout={() => {
        store.reset();
        void logout().finally(() => setState('login'));
      }}
    />
  );
}

render(<App />, document.getElementById('app')!);
