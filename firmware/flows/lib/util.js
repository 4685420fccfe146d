'use strict';
// Small helpers shared by the nodes: reading progress out of the daemon's
// job objects, the status badges, and option parsing.

/**
 * Percent done (0–100, one decimal) of a job record or a job.progress event
 * (both carry the engine's progress object, whose `percent` is what counts),
 * or undefined while the job has reported no progress.
 */
function percentOf(job) {
  if (!job || typeof job !== 'object') return undefined;
  const p = job.progress && typeof job.progress === 'object' ? job.progress : job;
  if (typeof p.percent !== 'number' || !Number.isFinite(p.percent)) return undefined;
  return Math.max(0, Math.min(100, Math.round(p.percent * 10) / 10));
}

const TERMINAL = new Set(['done', 'failed', 'cancelled']);

/** Badge for a running job: "syncing 42 %", "verifying 7 %". */
function jobBadge(kind, percent) {
  const verb = { sync: 'syncing', verify: 'verifying', clone: 'cloning', recover: 'recovering', reprotect: 're-protecting', 're-protect': 're-protecting' }[kind] ?? `${kind || 'job'}`;
  return { fill: 'blue', shape: 'dot', text: percent === undefined ? verb : `${verb} ${Math.floor(percent)} %` };
}

/**
 * Longest status text, in characters. The editor draws the badge under the
 * node in one line and lets longer text run over the nodes beside it; the
 * whole message goes to the debug sidebar and msg.payload anyway.
 */
const BADGE_MAX = 32;

/** A status whose text fits the badge: one line, at most BADGE_MAX characters (cut with "…"). */
function fitBadge(status) {
  if (!status || typeof status.text !== 'string') return status;
  const text = status.text.replace(/\s+/g, ' ').trim();
  return { ...status, text: text.length > BADGE_MAX ? `${text.slice(0, BADGE_MAX - 1).trimEnd()}…` : text };
}

/** "error 401: the bearer token is wr…": the HTTP status first, so it survives the cut. */
function errorBadge(err) {
  const daemonMessage = err?.body?.error?.message;
  const text = err?.status && typeof daemonMessage === 'string' ? `error ${err.status}: ${daemonMessage}` : `error: ${String(err?.message ?? err)}`;
  return fitBadge({ fill: 'red', shape: 'ring', text });
}

/** "1, 2,data" → ["1", "2", "data"]; numbers stay numbers so the daemon's schema sees what the user meant. */
function parseList(v) {
  if (Array.isArray(v)) return v;
  if (typeof v === 'number') return [v];
  if (typeof v !== 'string') return undefined;
  const items = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
  // A blank field (or only commas) means "the whole drive": the key is left out, never sent as [] (which the daemon refuses).
  return items.length ? items : undefined;
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v);
}

/** Sleeps, ending early (with false) when the signal aborts. */
function delay(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

module.exports = { percentOf, jobBadge, errorBadge, fitBadge, BADGE_MAX, parseList, isPlainObject, delay, TERMINAL };
