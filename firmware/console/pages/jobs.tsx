/**
 * The jobs: the kept history, one job's pair, options, result and log, and
 * cancel for the running one. With several drive pairs each job names its
 * pair (a job of the boot pair recorded before pairs existed carries none).
 */
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.ts';
import { useSnapshot } from '../store.ts';
import { seconds, when } from '../format.ts';
import { ErrorBox, asError, go, useAction, type Route } from '../ui.tsx';
import { JobProgress } from './overview.tsx';

/** The pair a job ran on, as the overview names it: its label and bays; null with one pair only (nothing to tell apart). */
export function jobPair(status: any, job: { pair?: string }): { id: string; name: string; bays: string } | null {
  const pairs: any[] = status?.pairs ?? [];
  if (pairs.length < 2) return null;
  const p = pairs.find((x) => x.id === job.pair) ?? (job.pair === undefined ? pairs.find((x) => x.role === 'boot') : undefined);
  if (!p) return { id: job.pair ?? '?', name: job.pair ?? '?', bays: '' };
  return { id: p.id, name: p.label ?? p.id, bays: `bay ${p.active} → bay ${p.standby}` };
}

function JobDetail({ id, version }: { id: string; version: number }) {
  const snap = useSnapshot();
  const [job, setJob] = useState<any>(null);
  const [error, setError] = useState<{ message: string; hint?: string } | null>(null);
  const [rollback, setRollback] = useState(false);
  const cancel = useAction<unknown>();
  useEffect(() => {
    api<any>('GET', `/api/jobs/${encodeURIComponent(id)}`).then(
      (j) => (setJob(j), setError(null)),
      (e) => setError(asError(e)),
    );
  }, [id, version]);
  if (error) return <ErrorBox error={error} />;
  if (!job) return <p aria-busy="true">Loading job {id}…</p>;
  const running = job.state === 'running' || job.state === 'queued';
  const pair = jobPair(snap.status, job);
  return (
    <section class="card" aria-labelledby="job-h">
      <h2 id="job-h">
        Job {job.id}: {job.kind} <span class={`state ${job.state}`}>{job.state}</span>
      </h2>
      {running && <JobProgress job={job} progress={snap.status?.job?.id === job.id ? (snap.progress ?? job.progress) : job.progress} />}
      {running && (
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            void cancel.run(() => api('POST', `/api/jobs/${encodeURIComponent(job.id)}/cancel`, { rollback }));
          }}
        >
          <label>
            <input type="checkbox" checked={rollback} onChange={(e) => setRollback((e.target as HTMLInputElement).checked)} /> roll the standby back to the previous backup
          </label>
          <button type="submit" class="danger" disabled={cancel.busy}>
            Cancel job
          </button>
        </form>
      )}
      {cancel.error && <ErrorBox error={cancel.error} />}
      <dl>
        {pair && (
          <>
            <dt>Pair</dt>
            <dd data-testid="job-pair">
              {pair.name} ({pair.id}{pair.bays ? `, ${pair.bays} now` : ''}) · <a href={`#/explorer?pair=${encodeURIComponent(pair.id)}`}>explore</a>
            </dd>
          </>
        )}
        <dt>Trigger</dt>
        <dd>{job.trigger}</dd>
        <dt>Started</dt>
        <dd>{when(job.startedAt)}</dd>
        <dt>Took</dt>
        <dd>{seconds(job.seconds)}</dd>
        <dt>Options</dt>
        <dd>
          <code>{JSON.stringify(job.options)}</code>
        </dd>
      </dl>
      {job.error && <ErrorBox error={job.error} />}
      {Array.isArray(job.result?.overwritten) && (
        <>
          <h3>Overwritten on the active drive ({job.result.overwrittenCount ?? job.result.overwritten.length})</h3>
          <ul class="overwritten">
            {job.result.overwritten.map((o: { path: string; size?: number }) => (
              <li>
                <code>{o.path}</code>
              </li>
            ))}
          </ul>
        </>
      )}
      {job.result && (
        <details>
          <summary>Result</summary>
          <pre>{JSON.stringify(job.result, null, 2)}</pre>
        </details>
      )}
      <h3>Log</h3>
      <ol class="log">
        {(job.log ?? []).map((l: { at: string; level: string; message: string }) => (
          <li class={l.level}>
            <time>{when(l.at)}</time> {l.message}
          </li>
        ))}
      </ol>
    </section>
  );
}

export function Jobs({ route }: { route: Route }) {
  const snap = useSnapshot();
  const [jobs, setJobs] = useState<any[] | null>(null);
  const [error, setError] = useState<{ message: string; hint?: string } | null>(null);
  const id = route.query.get('id');
  const several = (snap.status?.pairs?.length ?? 0) > 1;
  useEffect(() => {
    api<{ jobs: any[] }>('GET', '/api/jobs').then(
      (r) => (setJobs(r.jobs), setError(null)),
      (e) => setError(asError(e)),
    );
  }, [snap.jobsVersion]);
  return (
    <div class="jobs">
      {id && <JobDetail id={id} version={snap.jobsVersion} />}
      {error && <ErrorBox error={error} />}
      <section class="card" aria-labelledby="history-h">
        <h2 id="history-h">History</h2>
        {jobs && jobs.length === 0 && <p class="muted">No jobs yet.</p>}
        {jobs && jobs.length > 0 && (
          <div class="scroll">
            <table class="list">
              <thead>
                <tr>
                  <th scope="col">Job</th>
                  {several && <th scope="col">Pair</th>}
                  <th scope="col">Kind</th>
                  <th scope="col">State</th>
                  <th scope="col">Trigger</th>
                  <th scope="col">Started</th>
                  <th scope="col">Took</th>
                </tr>
              </thead>
              <tbody>
                {jobs.map((j) => (
                  <tr class={j.id === id ? 'selected' : ''} data-job={j.id}>
                    <td>
                      <a href={`#/jobs?id=${encodeURIComponent(j.id)}`} onClick={(e) => (e.preventDefault(), go('jobs', { id: j.id }))}>
                        {j.id}
                      </a>
                    </td>
                    {several && <td data-testid="pair">{jobPair(snap.status, j)?.name}</td>}
                    <td>{j.kind}</td>
                    <td>
                      <span class={`state ${j.state}`}>{j.state}</span>
                    </td>
                    <td>{j.trigger}</td>
                    <td>{when(j.startedAt)}</td>
                    <td>{seconds(j.seconds)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </div>
  );
}
