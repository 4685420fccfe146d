/**
 * Actions: sync and verify start at a click; the ones that move the host to
 * another drive or overwrite one (failover, re-protect, restore) run only
 * after the operator types the phrase the form names, which the daemon
 * checks too. The daemon's own
 * refusals (a standby that is not consistent, a job that runs) show with
 * their reason and what to do.
 */
import { useState } from 'preact/hooks';
import { api } from '../api.ts';
import { useSnapshot } from '../store.ts';
import { ErrorBox, PairPicker, go, pairApi, pairOf, useAction, type Route } from '../ui.tsx';

function Started({ result }: { result: any }) {
  if (!result) return null;
  return (
    <p class="ok" role="status">
      {result.id ? (
        <>
          Started <a href={`#/jobs?id=${encodeURIComponent(result.id)}`}>job {result.id}</a>.
        </>
      ) : (
        'Done.'
      )}
    </p>
  );
}

/**
 * A form that sends what the operator typed as the request's `confirm`: the
 * daemon checks it against the phrase (`word`) and refuses (400, naming the
 * phrase) anything else, so the page is not the only guard.
 */
function Confirmed(props: { id: string; title: string; word: string; what: string; button: string; action: (confirm: string) => Promise<unknown>; children?: preact.ComponentChildren }) {
  const [typed, setTyped] = useState('');
  const act = useAction<any>();
  const submit = (e: Event) => {
    e.preventDefault();
    const confirm = typed.trim();
    if (confirm === '') {
      act.setError({ message: `Not started: type ${props.word} to confirm.`, hint: props.what });
      return;
    }
    setTyped('');
    void act.run(() => props.action(confirm));
  };
  return (
    <section class="card" aria-labelledby={`${props.id}-h`}>
      <h2 id={`${props.id}-h`}>{props.title}</h2>
      <p>{props.what}</p>
      <form onSubmit={submit}>
        {props.children}
        <label for={`${props.id}-confirm`}>
          Type <strong>{props.word}</strong> to confirm
        </label>
        <input id={`${props.id}-confirm`} autocomplete="off" autocapitalize="characters" spellcheck={false} value={typed} onInput={(e) => setTyped((e.target as HTMLInputElement).value)} />
        <button type="submit" class="danger" disabled={act.busy}>
          {props.button}
        </button>
      </form>
      {act.error && <ErrorBox error={act.error} />}
      <Started result={act.result} />
    </section>
  );
}

export function Actions({ route }: { route: Route }) {
  const snap = useSnapshot();
  const s = snap.status;
  const pair = pairOf(route, s);
  const several = (s?.pairs?.length ?? 0) > 1;
  const named = pair && several ? ` of pair ${pair.label ?? pair.id}` : '';
  const bays = { active: pair?.active ?? s?.active, standby: pair?.standby ?? s?.standby };
  const [mode, setMode] = useState('');
  const [syncWindow, setSyncWindow] = useState(false);
  const [hardOff, setHardOff] = useState(false);
  const [partition, setPartition] = useState(1);
  const sync = useAction<any>();
  const verify = useAction<any>();
  const shutdown = useAction<any>();
  const running = !!s?.job;
  return (
    <div class="actions">
      {several && (
        <p>
          <PairPicker route={route} status={s} />
        </p>
      )}
      {running && (
        <p class="muted" role="status">
          A {s.job.kind} job runs: <a href={`#/jobs?id=${encodeURIComponent(s.job.id)}`}>watch or cancel it</a>. Another job waits until it ends.
        </p>
      )}
      <section class="card" aria-labelledby="sync-h">
        <h2 id="sync-h">Sync</h2>
        <p>Copy the active drive{named}{bays.active ? ` (bay ${bays.active})` : ''} onto the standby{bays.standby ? ` (bay ${bays.standby})` : ''}: afterwards the standby is a complete, bootable backup.</p>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void sync.run(() => api('POST', pairApi(pair, '/sync'), { ...(mode ? { mode } : {}), ...(syncWindow ? { window: true } : {}) })).then((r) => r && go('overview'));
          }}
        >
          <label for="sync-mode">Mode</label>
          <select id="sync-mode" value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value)}>
            <option value="">default</option>
            <option value="compare">compare (read both, write what differs)</option>
            <option value="manifest">manifest (hash records)</option>
          </select>
          <label>
            <input type="checkbox" checked={syncWindow} onChange={(e) => setSyncWindow((e.target as HTMLInputElement).checked)} /> in a sync window (shut the host down, copy, boot it again)
          </label>
          <button type="submit" class="primary" disabled={sync.busy}>
            Start sync
          </button>
        </form>
        {sync.error && <ErrorBox error={sync.error} />}
        <Started result={sync.result} />
      </section>
      <section class="card" aria-labelledby="verify-h">
        <h2 id="verify-h">Verify</h2>
        <p>Compare both drives{named} sector by sector and report the ranges that differ. Nothing is written.</p>
        <button type="button" disabled={verify.busy} onClick={() => void verify.run(() => api('POST', pairApi(pair, '/verify'), {}))}>
          Start verify
        </button>
        {verify.error && <ErrorBox error={verify.error} />}
        <Started result={verify.result} />
      </section>
      <Confirmed
        id="failover"
        title="Failover"
        word="failover"
        button="Fail over to the standby"
        what={`The host is shut down, its ${pair?.role === 'data' ? 'data disk' : 'boot port'} is switched to the standby${named}${bays.standby ? ` (bay ${bays.standby})` : ''}, and it ${pair?.role === 'data' ? 'starts with the backup as its data disk' : 'boots from the backup'}. The roles swap.`}
        action={(confirm) => api('POST', pairApi(pair, '/failover'), { confirm, hardOff })}
      >
        <label>
          <input type="checkbox" checked={hardOff} onChange={(e) => setHardOff((e.target as HTMLInputElement).checked)} /> force the host off if it ignores the shutdown
        </label>
      </Confirmed>
      <Confirmed
        id="reprotect"
        title="Re-protect"
        word="reprotect"
        button="Re-protect"
        what={`The drive in the standby bay${named}${bays.standby ? ` (bay ${bays.standby})` : ''} is overwritten with a copy of the active drive: after a failover or a drive replacement it becomes a backup again.`}
        action={(confirm) => api('POST', pairApi(pair, '/reprotect'), { confirm })}
      />
      <Confirmed
        id="restore"
        title="Restore the whole drive"
        word="restore"
        button="Restore the active drive from the backup"
        what={`The ACTIVE drive${named}${bays.active ? ` (bay ${bays.active})` : ''} is overwritten with the backup on the standby (journaled; the host must be off, or it runs in a sync window). Single files and folders restore from the Explorer.`}
        action={(confirm) => api('POST', pairApi(pair, '/restore'), { confirm, window: s?.host?.power === 'on' ? true : undefined })}
      />
      <Confirmed
        id="restore-partition"
        title="Restore one partition"
        word={`restore partition ${partition}`}
        button={`Restore partition ${partition} from the backup`}
        what={`Partition ${partition} of the ACTIVE drive${named}${bays.active ? ` (bay ${bays.active})` : ''} is overwritten with the same partition of the backup (journaled, with the generation guards of a whole-drive restore), in a sync window when the host runs.`}
        action={(confirm) => api('POST', pairApi(pair, '/restore/partition'), { partition, confirm, window: s?.host?.power === 'on' ? true : undefined })}
      >
        <label for="restore-partition-n">Partition</label>
        <input id="restore-partition-n" type="number" min={1} max={128} value={partition} onInput={(e) => setPartition(Number((e.target as HTMLInputElement).value) || 1)} />
      </Confirmed>
      <section class="card" aria-labelledby="host-h">
        <h2 id="host-h">Host</h2>
        <p>The host is {s?.host?.power ?? '…'}. With it off, the explorer also reads the active drive.</p>
        <button type="button" disabled={shutdown.busy || s?.host?.power !== 'on'} onClick={() => confirm('Shut the host down (ACPI power button)?') && void shutdown.run(() => api('POST', '/api/host/shutdown', {}))}>
          Shut the host down
        </button>
        {shutdown.error && <ErrorBox error={shutdown.error} />}
        {shutdown.result && <p class="ok" role="status">Host shut down ({shutdown.result.how}).</p>}
      </section>
    </div>
  );
}
