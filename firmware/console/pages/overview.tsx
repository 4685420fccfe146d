/** The overview: both bays, the standby's state, the last sync, the running job live, alerts, drive health and relays. */
import { useSnapshot, useTick } from '../store.ts';
import { age, bytes, seconds, when } from '../format.ts';
import { api } from '../api.ts';
import { ErrorBox, useAction, type Route } from '../ui.tsx';

const STATE_TEXT: Record<string, string> = {
  consistent: 'consistent: a complete backup',
  inconsistent: 'inconsistent: a copy was interrupted',
  unpaired: 'not paired yet',
};

export function JobProgress({ job, progress }: { job: any; progress: any }) {
  const pct = Math.max(0, Math.min(100, progress?.percent ?? 0));
  return (
    <div class="job-progress">
      <div>
        <strong>{job.kind}</strong> job {job.id} · {progress?.phase ?? job.state} · started {age(job.startedAt)}
      </div>
      <div class="bar" role="progressbar" aria-label={`${job.kind} progress`} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.floor(pct)}>
        <span style={{ width: `${pct}%` }} />
      </div>
      <div class="muted">
        {pct.toFixed(1)} % · {bytes(progress?.bytesDone)} of {bytes(progress?.bytesTotal)}
        {progress?.rate ? ` · ${bytes(progress.rate)}/s` : ''}
        {progress?.etaSeconds ? ` · ${seconds(progress.etaSeconds)} left` : ''}
      </div>
      <a href={`#/jobs?id=${encodeURIComponent(job.id)}`}>Details, log and cancel</a>
    </div>
  );
}

/** The standby state of the pair whose standby sits in `bay` (several pairs: each has its own). */
function standbyStateOf(s: any, bay: string): string {
  const pair = (s.pairs ?? []).find((p: any) => p.standby === bay);
  return pair?.standbyState ?? s.standbyState;
}

function Bay({ bay, s }: { bay: string; s: any }) {
  const d = s.drives?.[bay] ?? {};
  const role: string = d.role ?? (bay === s.active ? 'active' : 'standby');
  const state = standbyStateOf(s, bay);
  const smart = d.health?.smart;
  // A failed-over-from standby holds the copy of its generation; the host's writes since are only on the active drive.
  const failedOver = role === 'standby' && s.failover?.failed?.[bay] === true;
  return (
    <section class={`card bay ${role}`} aria-labelledby={`bay-${bay}`}>
      <h2 id={`bay-${bay}`}>
        Bay {bay} <span class={`role ${role}`}>{role === 'active' ? 'active (system drive)' : 'standby (backup)'}</span>
      </h2>
      <dl>
        <dt>Drive</dt>
        <dd>{d.present ? (smart?.model ?? 'present') : <span class="bad">missing</span>}</dd>
        {role === 'standby' && (
          <>
            <dt>Backup</dt>
            <dd class={failedOver ? 'bad' : state === 'consistent' ? 'good' : state === 'syncing' ? 'busy' : 'bad'}>
              {STATE_TEXT[state] ?? state}
              {failedOver ? `, as of the failover (bay ${bay} is marked failed)` : ''}
            </dd>
          </>
        )}
        <dt>Generation</dt>
        <dd>{d.generation ?? '—'}</dd>
        <dt>Health</dt>
        <dd class={d.health?.status === 'ok' ? 'good' : 'bad'}>
          {d.health?.status ?? 'unknown'}
          {smart?.temperatureC !== undefined && smart?.temperatureC !== null ? ` · ${smart.temperatureC} °C` : ''}
          {d.health?.problems?.length ? ` · ${d.health.problems.join('; ')}` : ''}
        </dd>
        <dt>Host port</dt>
        <dd>{s.bootBay === bay ? 'connected to the host' : 'on the controller'}</dd>
      </dl>
    </section>
  );
}

/**
 * A restore of files a crash cut short: the active drive holds some of the
 * backup's files and not others, and the standby the only copy of the rest,
 * so syncs wait. Finishing it (the same paths again) or dismissing it lets
 * them go on.
 */
function InterruptedRestore({ pair, several, hostOn }: { pair: any; several: boolean; hostOn: boolean }) {
  const r = pair.fileRestore;
  const again = useAction<{ id: string }>();
  const dismiss = useAction<unknown>();
  const base = `/api/pairs/${encodeURIComponent(pair.id)}/restore/files`;
  const fsck = r.cleanup?.fsck;
  return (
    <section class="card notice" aria-labelledby={`fr-${pair.id}-h`}>
      <h2 id={`fr-${pair.id}-h`}>Interrupted restore of files{several ? ` (pair ${pair.label ?? pair.id})` : ''}</h2>
      <p>
        The restore into partition {r.partition} of the active drive (bay {pair.active}, job {r.jobId}, started {age(r.startedAt)}) stopped half-way when the controller went down. Some of its files may be the backup's and others not; the standby still holds all of them, so syncs onto it wait until the restore is finished or dismissed.
      </p>
      <p>
        Paths: {r.paths.slice(0, 10).map((x: string) => <code>{x} </code>)}
        {r.paths.length > 10 ? `… (${r.paths.length})` : ''}
      </p>
      <p>
        Clean-up at start: {r.cleanup ? `${r.cleanup.unmounted.length} unmounted, ${r.cleanup.detached.length} loop device(s) detached; ` : ''}
        {fsck ? <span class={fsck.clean ? 'good' : 'bad'}>{fsck.tool}: {fsck.clean ? 'clean' : `problems (exit ${fsck.exitCode})`}</span> : <span class="bad">not checked{r.cleanup?.fsckSkipped ? `: ${r.cleanup.fsckSkipped}` : ''}</span>}
      </p>
      <button type="button" class="primary" disabled={again.busy} onClick={() => void again.run(() => api<{ id: string }>('POST', base, { partition: r.partition, paths: r.paths, ...(hostOn ? { window: true } : {}) }))}>
        Finish the restore
      </button>{' '}
      <button type="button" disabled={dismiss.busy} onClick={() => window.confirm('Keep the active drive as it is now and let syncs overwrite the standby?') && void dismiss.run(() => api('POST', `${base}/dismiss`, {}))}>
        Dismiss
      </button>
      {again.error && <ErrorBox error={again.error} />}
      {dismiss.error && <ErrorBox error={dismiss.error} />}
      {again.result && (
        <p class="ok" role="status">
          Started <a href={`#/jobs?id=${encodeURIComponent(again.result.id)}`}>job {again.result.id}</a>.
        </p>
      )}
    </section>
  );
}

/**
 * After a failover the bay the host left is marked failed: no failover goes
 * back to it until a re-protect copies the active drive onto it.
 */
function FailedOver({ s }: { s: any }) {
  const failed = Object.entries(s.failover?.failed ?? {})
    .filter(([, f]) => f === true)
    .map(([bay]) => bay)
    .sort();
  if (failed.length === 0) return null;
  return (
    <section class="card notice" aria-labelledby="failed-over-h">
      <h2 id="failed-over-h">After a failover</h2>
      {failed.map((bay) => (
        <p data-bay={bay}>
          Bay {bay} is marked failed after a failover away from it; the host runs from {bay === s.active ? 'it' : `bay ${s.active}`} now and no failover goes back to it. Its copy dates from the failover: the host's writes since are only on bay {s.active}. Check or replace its drive, then <a href="#/actions">Re-protect</a> copies the active drive onto it and makes it the standby again (a drill's mark is cleared by POST /api/failover/reset).
        </p>
      ))}
    </section>
  );
}

export function Overview(_props: { route: Route }) {
  const snap = useSnapshot();
  useTick(5000);
  const s = snap.status;
  if (!s) return <p aria-busy="true">Loading the status…</p>;
  const last = s.lastSync;
  return (
    <div class="overview">
      <div class="bays">
        {Object.keys(s.drives ?? { A: 0, B: 0 })
          .sort()
          .map((bay) => (
            <Bay bay={bay} s={s} />
          ))}
      </div>
      {(s.pairs?.length ?? 0) > 1 && (
        <section class="card" aria-labelledby="pairs-h">
          <h2 id="pairs-h">Drive pairs</h2>
          <ul class="pairs">
            {s.pairs.map((p: any) => (
              <li data-pair={p.id}>
                <strong>{p.label ?? p.id}</strong>
                {p.role === 'boot' ? ' (boot)' : ' (data)'}: bay {p.active} → bay {p.standby} · <span class={p.standbyState === 'consistent' ? 'good' : 'bad'}>{p.standbyState}</span> · last sync {age(p.lastSync?.at)}
                {p.job ? ` · ${p.job.kind} ${p.job.state}` : ''} · <a href={`#/explorer?pair=${encodeURIComponent(p.id)}`}>explore</a> · <a href={`#/actions?pair=${encodeURIComponent(p.id)}`}>actions</a>
              </li>
            ))}
          </ul>
        </section>
      )}
      <FailedOver s={s} />
      {(s.pairs ?? []).filter((p: any) => p.fileRestore?.state === 'interrupted').map((p: any) => (
        <InterruptedRestore pair={p} several={(s.pairs?.length ?? 0) > 1} hostOn={s.host?.power === 'on'} />
      ))}
      <section class="card" aria-labelledby="sync-h">
        <h2 id="sync-h">Backup</h2>
        <dl>
          <dt>Last sync</dt>
          <dd data-testid="last-sync">
            {last ? (
              <>
                {last.kind} {last.result} {age(last.at)} <span class="muted">({when(last.at)}, {bytes(last.bytesWritten)} written in {seconds(last.seconds)})</span>
              </>
            ) : (
              'never'
            )}
          </dd>
          <dt>Last success</dt>
          <dd>{s.lastSuccess ? `${age(s.lastSuccess)} (${when(s.lastSuccess)})` : 'never'}</dd>
          {(s.standbys?.length ?? 0) > 1 && (
            <>
              <dt>Standbys</dt>
              <dd>
                <ul class="standbys">
                  {s.standbys.map((b: any) => (
                    <li>
                      generation {b.generation ?? '—'}, synced {age(b.lastSyncedAt)} · {b.present ? 'in a bay' : 'on the shelf'}
                    </li>
                  ))}
                </ul>
              </dd>
            </>
          )}
          {s.pendingCopy && !s.job && (
            <>
              <dt>Interrupted copy</dt>
              <dd class="bad">
                a {s.pendingCopy.kind ?? 'copy'} started {age(s.pendingCopy.startedAt)} did not finish: the daemon resumes or rolls it back (config recovery.interrupted); <a href="#/jobs">Jobs</a> shows what happened
              </dd>
            </>
          )}
        </dl>
        {s.job ? <JobProgress job={s.job} progress={snap.progress ?? s.job.progress} /> : <p class="muted">No job runs. <a href="#/actions">Start a sync</a>.</p>}
      </section>
      <section class="card" aria-labelledby="host-h">
        <h2 id="host-h">Host</h2>
        <dl>
          <dt>Power</dt>
          <dd>{s.host?.power}</dd>
          <dt>Boots from</dt>
          <dd>bay {s.bootBay}</dd>
          <dt>Last heartbeat</dt>
          <dd>{s.host?.lastHeartbeat ? `${age(s.host.lastHeartbeat.at)} from bay ${s.host.lastHeartbeat.bay ?? '?'}` : 'none'}</dd>
          <dt>Failover</dt>
          <dd>
            {s.failover?.halted ? (
              <span class="bad">halted: {String(s.failover.halted)}</span>
            ) : s.failover?.switching ? (
              'switching'
            ) : s.failover?.failed?.[s.standby] ? (
              <span class="bad">no target: bay {s.standby} is marked failed until re-protect</span>
            ) : s.standbyState !== 'consistent' ? (
              <span class="bad">no target: the standby is {s.standbyState}</span>
            ) : (
              'ready'
            )}{' '}
            · {s.failover?.failovers ?? 0} so far
          </dd>
        </dl>
      </section>
      <section class="card" aria-labelledby="alerts-h">
        <h2 id="alerts-h">Alerts</h2>
        {snap.alerts.length === 0 && (s.problems?.length ?? 0) === 0 ? (
          <p class="muted">None.</p>
        ) : (
          <ul class="alerts">
            {(s.problems ?? []).map((p: unknown) => (
              <li class="warning">{typeof p === 'string' ? p : JSON.stringify(p)}</li>
            ))}
            {snap.alerts.map((a) => (
              <li class={a.level}>
                <span class="muted">{age(a.at)}</span> {a.message}
              </li>
            ))}
          </ul>
        )}
      </section>
      <section class="card" aria-labelledby="relays-h">
        <h2 id="relays-h">Relays</h2>
        <ul class="relays">
          {Object.entries(s.relays ?? {})
            .filter(([k, v]) => typeof v === 'boolean' && k !== 'moving')
            .map(([k, v]) => (
              <li class={v ? 'on' : 'off'}>
                <span class="dot" aria-hidden="true" /> {k} {v ? 'energised' : 'de-energised'}
              </li>
            ))}
        </ul>
        {s.relays?.fault && <p class="bad">Relay fault: {String(s.relays.fault)}</p>}
      </section>
    </div>
  );
}
