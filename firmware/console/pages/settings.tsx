/** The settings in force (the daemon's validated config, read-only here) and the way to the other tools: the Node-RED editor, metrics, the API description. */
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.ts';
import { ErrorBox, asError, type Route } from '../ui.tsx';

interface Settings {
  config: any;
  files: Record<string, string>;
  urls: { http: string; https: string | null; nodeRed: string | null };
}

function Row({ k, v }: { k: string; v: unknown }) {
  if (v === undefined || v === null) return null;
  return (
    <>
      <dt>{k}</dt>
      <dd>
        <code>{typeof v === 'object' ? Object.entries(v as object).map(([key, x]) => `${key}: ${typeof x === 'string' ? x : JSON.stringify(x)}`).join(' · ') : String(v)}</code>
      </dd>
    </>
  );
}

export function Settings(_props: { route: Route }) {
  const [s, setS] = useState<Settings | null>(null);
  const [error, setError] = useState<{ message: string; hint?: string } | null>(null);
  useEffect(() => {
    api<Settings>('GET', '/api/settings').then(setS, (e) => setError(asError(e)));
  }, []);
  if (error) return <ErrorBox error={error} />;
  if (!s) return <p aria-busy="true">Loading…</p>;
  const c = s.config;
  return (
    <div class="settings">
      <section class="card" aria-labelledby="tools-h">
        <h2 id="tools-h">Tools</h2>
        <ul class="links">
          <li>
            {s.urls.nodeRed ? (
              <a href={s.urls.nodeRed} target="_blank" rel="noopener">Node-RED editor</a>
            ) : (
              <span>Node-RED editor: not running (start dpsrd with --node-red)</span>
            )}{' '}
            — schedules, alerts and flows (user <code>admin</code>, password in <code>{s.files.nodeRedPassword}</code>)
          </li>
          <li>
            <a href="/metrics" target="_blank" rel="noopener">Metrics</a> — Prometheus text format
          </li>
          <li>
            <a href="/api/openapi.json" target="_blank" rel="noopener">API description</a> — OpenAPI 3.1, for scripts (bearer token in <code>{s.files.apiToken}</code>)
          </li>
        </ul>
      </section>
      <section class="card" aria-labelledby="summary-h">
        <h2 id="summary-h">Summary</h2>
        <dl>
          <Row k="Rig" v={c.rig} />
          <Row k="Mode" v={c.mode ?? 'switched'} />
          <Row k="Config file" v={c.source} />
          <Row k="HTTP" v={s.urls.http} />
          <Row k="HTTPS" v={s.urls.https ?? 'off (api.httpsListen)'} />
          <Row k="Sync" v={c.sync} />
          <Row k="Drive health" v={c.health} />
          <Row k="Recovery" v={c.recovery} />
          <Row k="Jobs kept" v={c.jobs?.history} />
          <Row k="Console password" v={s.files.adminPassword} />
          <Row k="State directory" v={s.files.stateDir} />
        </dl>
        <p class="muted">
          Settings change in the config file (see <code>docs/config.md</code>); <code>dpsrd --check-config FILE</code> checks it, and dpsrd reads it at start.
        </p>
      </section>
      <details class="card">
        <summary>The whole config in force</summary>
        <pre>{JSON.stringify(c, null, 2)}</pre>
      </details>
    </div>
  );
}
