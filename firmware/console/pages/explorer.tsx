/**
 * The explorer: one folder of a partition on both drives side by side, the
 * active drive on the left and the standby (the backup) on the right. A red
 * ≠ marks a file that differs; a file deleted since the last backup shows in
 * the standby panel only, one new since then in the active panel only.
 * Files and folders download from either side; Restore brings the standby's
 * version back onto the active drive. While the host runs, the active drive
 * cannot be read: the standby's panel is shown alone, and the active panel
 * says why and what to do. With several drive pairs, a picker chooses the
 * pair (`pair` in the page's query).
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api, url } from '../api.ts';
import { useSnapshot } from '../store.ts';
import { bytes, when } from '../format.ts';
import { ErrorBox, PairPicker, asError, go, pairApi, pairOf, useAction, type PairInfo, type Route } from '../ui.tsx';
import { JobProgress } from './overview.tsx';

interface Entry {
  name: string;
  type: string;
  size: number;
  mtime: number;
  linkTarget?: string;
  deleted?: boolean;
}

interface Row {
  name: string;
  /** `unknown`: the active side was not read (the standby listed alone). */
  state: 'same' | 'changed' | 'only-active' | 'only-standby' | 'unknown';
  active?: Entry;
  standby?: Entry;
  hashed?: boolean;
  /** A folder on both drives: whether what it holds differs, from the newest current difference walk. */
  contents?: 'differ' | 'same' | 'not-compared';
}

interface Page {
  path: string;
  rows: Row[];
  total: number;
  offset: number;
  limit: number;
  counts: Record<Row['state'], number> | null;
  /** Set when the standby is listed alone: why the active drive is not read, and what to do. */
  activeUnavailable?: { message: string; hint?: string } | null;
  /** The difference walk the folder marks come from, or null. */
  walk?: { job: string; path: string; finishedAt: string; hashed: boolean } | null;
}

const PAGE_ROWS = 200;

const MARK: Record<Row['state'], { sign: string; label: string }> = {
  same: { sign: '', label: 'same on both drives' },
  changed: { sign: '≠', label: 'differs between the drives' },
  'only-active': { sign: '+', label: 'new on the active drive since the last backup' },
  'only-standby': { sign: '−', label: 'deleted from the active drive since the last backup' },
  unknown: { sign: '', label: 'not compared: the active drive is not read now' },
};

/** The query every link of the explorer keeps: the chosen pair. */
type Keep = Record<string, string>;

function explorerHref(keep: Keep, partition: number, path: string): string {
  return `#/explorer?${new URLSearchParams({ ...keep, partition: String(partition), path })}`;
}

/**
 * A row's mark: its own state, except for a folder whose own entry matches,
 * which shows what is known of its contents — ≠ when a walk found differences
 * below it, ? when no current walk compared them (never a "same" the listing
 * cannot know).
 */
function markOf(r: Row, walk: Page['walk']): { cls: string; sign: string; label: string } {
  if (r.state === 'same' && r.contents === 'differ') {
    const when = walk ? ` (difference walk of ${new Date(walk.finishedAt).toLocaleString()})` : '';
    return { cls: 'changed contents', sign: '≠', label: `something inside this folder differs between the drives${when}` };
  }
  if (r.state === 'same' && r.contents === 'not-compared') return { cls: 'not-compared', sign: '?', label: 'what this folder holds is not compared yet: "Find all differences" compares it' };
  return { cls: r.state, ...MARK[r.state] };
}

/** A row to keep when only differences are shown: folders not compared yet may hold some. */
const mayDiffer = (r: Row) => r.state !== 'same' || r.contents === 'differ' || r.contents === 'not-compared';

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

function Crumbs({ partition, path, keep }: { partition: number; path: string; keep: Keep }) {
  const parts = path.split('/').filter(Boolean);
  return (
    <nav class="crumbs" aria-label="Folder">
      <a href={explorerHref(keep, partition, '/')}>partition {partition}</a>
      {parts.map((p, i) => (
        <>
          {' / '}
          <a href={explorerHref(keep, partition, `/${parts.slice(0, i + 1).join('/')}`)}>{p}</a>
        </>
      ))}
    </nav>
  );
}

function Cell({ e, side, partition, path, onOpen, pair, keep }: { e?: Entry; side: 'active' | 'standby'; partition: number; path: string; onOpen: (p: string) => void; pair: PairInfo | null; keep: Keep }) {
  if (!e) return <div class={`cell empty ${side}`} aria-hidden="true" />;
  const full = join(path, e.name);
  const isDir = e.type === 'directory';
  return (
    <div class={`cell ${side}`}>
      <span class="name">
        {isDir ? (
          <a href={explorerHref(keep, partition, full)} onClick={(ev) => (ev.preventDefault(), onOpen(full))}>
            <span class="folder" aria-hidden="true" />
            {e.name}/
          </a>
        ) : (
          <span>{e.type === 'symlink' ? `↪ ${e.name} → ${e.linkTarget ?? ''}` : e.name}</span>
        )}
      </span>
      <span class="meta">{isDir ? '' : bytes(e.size)}</span>
      <span class="meta time">{when(e.mtime)}</span>
      <span class="dl">
        {e.type === 'file' && (
          <a href={url(pairApi(pair, '/browse/file'), { side, partition, path: full })} download={e.name} aria-label={`download ${e.name} from the ${side} drive`} title="Download">
            ⤓
          </a>
        )}
        {isDir && (
          <a href={url(pairApi(pair, '/browse/archive'), { side, partition, path: full, format: 'tar' })} download={`${e.name}.tar`} aria-label={`download the folder ${e.name} from the ${side} drive as tar`} title="Download as tar">
            ⤓
          </a>
        )}
      </span>
    </div>
  );
}

interface WalkRow {
  path: string;
  state: Row['state'];
}

/**
 * The whole-tree "only differences" walk below a folder: a job on the
 * daemon (POST /api/browse/diff) with progress, whose differences are read
 * page by page when it is done.
 */
function DifferenceWalk({ partition, path, hash, pair, keep }: { partition: number; path: string; hash: boolean; pair: PairInfo | null; keep: Keep }) {
  const snap = useSnapshot();
  const start = useAction<{ id: string }>();
  const [walk, setWalk] = useState<{ id: string; state: string; rows: WalkRow[]; total: number } | null>(null);
  const [error, setError] = useState<{ message: string; hint?: string } | null>(null);
  const id = start.result?.id;
  const running = id !== undefined && snap.status?.job?.id === id;
  useEffect(() => {
    if (!id || running) return;
    api<{ state: string; rows: WalkRow[]; total: number }>('GET', url(pairApi(pair, `/browse/diff/${encodeURIComponent(id)}`), { limit: 1000 })).then(
      (r) => (setWalk({ id, ...r }), setError(null)),
      (e) => setError(asError(e)),
    );
  }, [id, running, snap.jobsVersion]);
  const folderOf = (p: string) => p.replace(/\/[^/]*$/, '') || '/';
  return (
    <section class="card walk" aria-labelledby="walk-h">
      <h2 id="walk-h">All differences below {path}</h2>
      <button type="button" disabled={start.busy || running} onClick={() => void start.run(() => api<{ id: string }>('POST', pairApi(pair, '/browse/diff'), { partition, path, hash }))}>
        {running ? 'Walking…' : 'Find all differences'}
      </button>
      {running && <JobProgress job={snap.status.job} progress={snap.progress} />}
      {start.error && <ErrorBox error={start.error} />}
      {error && <ErrorBox error={error} />}
      {walk && !running && (
        <>
          <p role="status">
            {walk.total} differences{walk.total > walk.rows.length ? ` (the first ${walk.rows.length} shown; job ${walk.id} has them all)` : ''}.
          </p>
          <ul class="walk-rows">
            {walk.rows.map((r) => (
              <li data-state={r.state}>
                <span class={`mark ${r.state}`} title={MARK[r.state]?.label}>
                  {MARK[r.state]?.sign || '·'}
                </span>{' '}
                <a href={explorerHref(keep, partition, folderOf(r.path))}>{r.path}</a>
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}

export function Explorer({ route }: { route: Route }) {
  const snap = useSnapshot();
  const partition = Number(route.query.get('partition') ?? '1') || 1;
  const path = route.query.get('path') ?? '/';
  const hash = route.query.get('hash') === 'true';
  const [page, setPage] = useState<Page | null>(null);
  const [rows, setRows] = useState<Row[]>([]);
  const [error, setError] = useState<{ message: string; hint?: string } | null>(null);
  const [loading, setLoading] = useState(false);
  const [onlyDiff, setOnlyDiff] = useState(false);
  const [confirm, setConfirm] = useState<string[] | null>(null);
  const restore = useAction<{ id: string }>();
  const shutdown = useAction<unknown>();
  const s = snap.status;
  const pair = pairOf(route, s);
  const keep: Keep = route.query.get('pair') ? { pair: route.query.get('pair')! } : {};

  const latest = useRef(0);
  const load = async (offset: number) => {
    // Only the newest request's answer is shown: an older one may finish after it.
    const seq = ++latest.current;
    setLoading(true);
    setError(null);
    try {
      let p: Page;
      try {
        p = await api<Page>('GET', url(pairApi(pair, '/browse'), { partition, path, offset, limit: PAGE_ROWS, hash: hash || undefined }));
      } catch (e) {
        // The active drive cannot be read now (the host runs): the standby alone, which always can.
        if (!(e instanceof ApiError && e.status === 409 && /side=standby/.test(e.hint ?? ''))) throw e;
        const one = await api<Page & { rows: { name: string; standby: Entry }[] }>('GET', url(pairApi(pair, '/browse'), { partition, path, offset, limit: PAGE_ROWS, side: 'standby' }));
        p = { ...one, counts: null, activeUnavailable: one.activeUnavailable ?? { message: e.message, hint: e.hint }, rows: one.rows.map((r) => ({ name: r.name, state: 'unknown' as const, standby: r.standby })) };
      }
      if (seq !== latest.current) return;
      setPage(p);
      setRows((old) => (offset === 0 ? p.rows : [...old, ...p.rows]));
    } catch (e) {
      if (seq !== latest.current) return;
      setError(asError(e));
      setPage(null);
      setRows([]);
    } finally {
      if (seq === latest.current) setLoading(false);
    }
  };
  // Read again when the host goes on or off and when a job starts or ends (a restore or a sync changes what is listed).
  useEffect(() => {
    void load(0);
  }, [partition, path, hash, pair?.id, s?.host?.power, snap.jobsVersion]);

  const open = (p: string) => go('explorer', { ...keep, partition, path: p, ...(hash ? { hash: 'true' } : {}) });
  const standbyOnly = !!page?.activeUnavailable;
  const shown = onlyDiff ? rows.filter(mayDiffer) : rows;
  const parent = path === '/' ? null : path.replace(/\/[^/]+$/, '') || '/';

  return (
    <div class="explorer">
      <form class="toolbar" onSubmit={(e) => e.preventDefault()}>
        <PairPicker route={route} status={s} keep={{ partition: 1, path: '/' }} />
        <label>
          Partition{' '}
          <input type="number" min={1} max={128} value={partition} onChange={(e) => go('explorer', { ...keep, partition: Number((e.target as HTMLInputElement).value) || 1, path: '/' })} />
        </label>
        <label>
          <input type="checkbox" checked={hash} onChange={(e) => go('explorer', { ...keep, partition, path, ...((e.target as HTMLInputElement).checked ? { hash: 'true' } : {}) })} /> compare content
        </label>
        <label>
          <input type="checkbox" checked={onlyDiff} onChange={(e) => setOnlyDiff((e.target as HTMLInputElement).checked)} /> only differences
        </label>
        <button type="button" onClick={() => void load(0)} disabled={loading}>
          Reload
        </button>
      </form>
      <Crumbs partition={partition} path={path} keep={keep} />
      {error && <ErrorBox error={error} />}
      {(error || standbyOnly) && s?.host?.power === 'on' && (
        <p>
          <button type="button" disabled={shutdown.busy} onClick={() => window.confirm('Shut the host down (ACPI power button)? The explorer then reads both drives.') && void shutdown.run(() => api('POST', '/api/host/shutdown', {}))}>
            Shut the host down
          </button>{' '}
          <span class="muted">or run a sync in a window from <a href="#/actions">Actions</a>.</span>
        </p>
      )}
      {shutdown.error && <ErrorBox error={shutdown.error} />}
      {restore.error && <ErrorBox error={restore.error} />}
      {restore.result && (
        <p class="ok" role="status">
          Restore started: <a href={`#/jobs?id=${encodeURIComponent(restore.result.id)}`}>job {restore.result.id}</a>.
        </p>
      )}
      {confirm && <div class="backdrop" onClick={() => setConfirm(null)} />}
      {confirm && (
        <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="restore-h" onKeyDown={(e) => e.key === 'Escape' && setConfirm(null)}>
          <h2 id="restore-h">Restore onto the active drive?</h2>
          <p>The standby's version of these overwrites the active drive's (bay {pair?.active ?? s?.active}{pair && (s?.pairs?.length ?? 0) > 1 ? `, pair ${pair.label ?? pair.id}` : ''}), partition {partition}{s?.host?.power === 'on' ? ', in a sync window: the host is shut down first and booted again afterwards' : ''}:</p>
          <ul>
            {confirm.map((p) => (
              <li>
                <code>{p}</code>
              </li>
            ))}
          </ul>
          <div class="buttons">
            <button
              type="button"
              class="danger"
              autofocus
              onClick={() => {
                const paths = confirm;
                setConfirm(null);
                void restore.run(() => api<{ id: string }>('POST', pairApi(pair, '/restore/files'), { partition, paths, ...(s?.host?.power === 'on' ? { window: true } : {}) }));
              }}
            >
              Restore
            </button>
            <button type="button" onClick={() => setConfirm(null)}>
              Cancel
            </button>
          </div>
        </div>
      )}
      {page && (
        <>
          <p class="counts" role="status">
            {page.counts ? (
              <>
                {page.total} entries · <span class="mark changed">≠</span> {page.counts.changed} changed · <span class="mark only-active">+</span> {page.counts['only-active']} new · <span class="mark only-standby">−</span> {page.counts['only-standby']} deleted since the last backup
                {rows.some((r) => r.state === 'same' && r.contents === 'differ') && (
                  <>
                    {' · '}
                    <span class="mark changed">≠</span> {rows.filter((r) => r.state === 'same' && r.contents === 'differ').length} folders with differences inside
                  </>
                )}
                {rows.some((r) => r.contents === 'not-compared') && (
                  <>
                    {' · '}
                    <span class="mark not-compared">?</span> folder contents not compared (Find all differences, below)
                  </>
                )}
                {page.walk && <> · folder marks from the difference walk of {new Date(page.walk.finishedAt).toLocaleString()}</>}
              </>
            ) : (
              <>{page.total} entries on the standby (not compared)</>
            )}
            {path !== '/' && (
              <>
                {' · '}
                <button type="button" class="link" onClick={() => setConfirm([path])}>
                  Restore this folder
                </button>
              </>
            )}
          </p>
          <div class="panes" role="table" aria-label={`Folder ${path} on both drives`}>
            <div class="row head" role="row">
              <div class="cell active" role="columnheader">
                Active drive{pair ? ` (bay ${pair.active})` : ''}
              </div>
              <div class="mark" role="columnheader">
                <span class="sr">difference</span>
              </div>
              <div class="cell standby" role="columnheader">
                Standby{pair ? ` (bay ${pair.standby})` : ''} — the backup
              </div>
              <div class="act" role="columnheader">
                <span class="sr">restore</span>
              </div>
            </div>
            {page.activeUnavailable && (
              <div class="row" role="row">
                <div class="cell active unavailable" role="cell" data-testid="active-unavailable">
                  <strong>Not shown: {page.activeUnavailable.message}.</strong>
                  {page.activeUnavailable.hint && <div class="hint">What to do: {page.activeUnavailable.hint}.</div>}
                </div>
              </div>
            )}
            {parent !== null && (
              <div class="row" role="row">
                <div class="cell active" role="cell">
                  <a href={explorerHref(keep, partition, parent)}>↑ ..</a>
                </div>
                <div class="mark" role="cell" />
                <div class="cell standby" role="cell" />
                <div class="act" role="cell" />
              </div>
            )}
            {shown.map((r) => {
              const mark = markOf(r, page.walk);
              return (
                <div class={`row ${r.state}`} role="row" data-name={r.name} data-state={r.state} data-contents={r.contents}>
                  <div role="cell" class="wrap">
                    <Cell e={r.active} side="active" partition={partition} path={path} onOpen={open} pair={pair} keep={keep} />
                  </div>
                  <div class={`mark ${mark.cls}`} role="cell" title={mark.label} aria-label={mark.label}>
                    {mark.sign}
                  </div>
                  <div role="cell" class="wrap">
                    <Cell e={r.standby} side="standby" partition={partition} path={path} onOpen={open} pair={pair} keep={keep} />
                  </div>
                  <div class="act" role="cell">
                    {r.standby && (r.state !== 'same' || r.contents === 'differ') && (
                      <button type="button" class="small" onClick={() => setConfirm([join(path, r.name)])} aria-label={`restore ${r.name} from the standby`}>
                        Restore
                      </button>
                    )}
                  </div>
                </div>
              );
            })}
          </div>
          {rows.length < page.total && (
            <button type="button" onClick={() => void load(rows.length)} disabled={loading}>
              Show more ({page.total - rows.length} left)
            </button>
          )}
        </>
      )}
      {loading && <p aria-busy="true">{standbyOnly ? 'Reading the standby…' : 'Reading both drives…'}</p>}
      {page && !standbyOnly && <DifferenceWalk key={`${pair?.id}:${partition}:${path}:${hash}`} partition={partition} path={path} hash={hash} pair={pair} keep={keep} />}
    </div>
  );
}
