/**
 * What every page shows from the appliance: the status (fetched, then
 * fetched again when an event says it changed), the running job's progress
 * (straight from job.progress events), recent alerts and whether the event
 * stream is connected.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, subscribe, type DaemonEvent } from './api.ts';

export interface Progress {
  phase?: string;
  bytesDone?: number;
  bytesTotal?: number;
  rate?: number;
  etaSeconds?: number | null;
  percent?: number;
}

export interface Alert {
  at?: string;
  level: string;
  code?: string;
  message: string;
}

export interface Snapshot {
  status: any | null;
  error: string | null;
  progress: Progress | null;
  alerts: Alert[];
  connected: boolean;
  /** Bumped by every job event: pages showing jobs fetch again. */
  jobsVersion: number;
}

let snapshot: Snapshot = { status: null, error: null, progress: null, alerts: [], connected: false, jobsVersion: 0 };
const listeners = new Set<(s: Snapshot) => void>();
let started = false;
let stop: (() => void) | null = null;
let refetch: ReturnType<typeof setTimeout> | null = null;

function set(patch: Partial<Snapshot>): void {
  snapshot = { ...snapshot, ...patch };
  for (const l of listeners) l(snapshot);
}

async function loadStatus(): Promise<void> {
  try {
    const status = await api<any>('GET', '/api/status');
    set({ status, error: null, progress: status.job?.progress ?? (status.job ? snapshot.progress : null) });
  } catch (e) {
    set({ error: (e as Error).message });
  }
}

function soon(): void {
  if (refetch) return;
  refetch = setTimeout(() => {
    refetch = null;
    void loadStatus();
  }, 150);
}

function onEvent(e: DaemonEvent): void {
  if (e.type === 'job.progress') {
    set({ progress: e.data?.progress ?? null });
    return;
  }
  if (e.type === 'alert') set({ alerts: [{ at: e.at, ...(e.data as Alert) }, ...snapshot.alerts].slice(0, 20) });
  if (e.type.startsWith('job.')) set({ jobsVersion: snapshot.jobsVersion + 1 });
  soon();
}

/** Starts fetching and listening (once, after login). */
export function start(): void {
  if (started) return;
  started = true;
  void loadStatus();
  api<{ events: { at: string; data: Alert }[] }>('GET', '/api/events/log?types=alert&limit=20')
    .then((r) => set({ alerts: [...r.events.reverse().map((e) => ({ at: e.at, ...e.data })), ...snapshot.alerts].slice(0, 20) }))
    .catch(() => {});
  stop = subscribe(['job.', 'status.changed', 'failover', 'failover.state', 'switched', 'relay', 'host.power', 'health', 'drive', 'alert', 'boot', 'daemon.started'], onEvent, (connected) => {
    set({ connected });
    if (connected) soon();
  });
}

/** Stops listening (logout). */
export function reset(): void {
  stop?.();
  stop = null;
  started = false;
  snapshot = { status: null, error: null, progress: null, alerts: [], connected: false, jobsVersion: 0 };
}

export function useSnapshot(): Snapshot {
  const [s, setS] = useState(snapshot);
  useEffect(() => {
    listeners.add(setS);
    setS(snapshot);
    return () => void listeners.delete(setS);
  }, []);
  return s;
}

/** Re-renders every `ms` (ages such as "3 min ago"). */
export function useTick(ms = 5000): number {
  const [n, setN] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setN((x) => x + 1), ms);
    return () => clearInterval(t);
  }, [ms]);
  return n;
}
