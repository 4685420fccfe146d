'use strict';
// Small helpers shared by the nodes: reading progress out of the daemon's
// job objects, the status badges, and option parsing.

/** Percent done (0–100, one decimal) of a job or its progress object, or undefined when unknown. */
function percentOf(job) {
  if (!job || typeof job !== 'object') return undefined;
  const p = job.progress && typeof job.progress === 'object' ? job.progress : job;
  const clamp = (n) => Math.max(0, Math.min(100, Math.round(n * 10) / 10));
  if (typeof p.percent === 'number' && Number.isFinite(p.percent)) return clamp(p.percent);
  if (typeof p.fraction === 'number' && Number.isFinite(p.fraction)) return clamp(p.fraction * 100);
  const pairs = [
    ['bytesDone', 'bytesTotal'],
    ['doneBytes', 'totalBytes'],
    ['bytesCopied', 'bytesTotal'],
    ['done', 'total'],
  ];
  for (const [d, t] of pairs) {
    if (typeof p[d] === 'number' && typeof p[t] === 'number') return p[t] > 0 ? clamp((p[d] / p[t]) * 100) : 0;
  }
  if (typeof job.progress === 'number' && Number.isFinite(job.progress)) return clamp(job.progress <= 1 ? job.progress * 100 : job.progress);
  return undefined;
}

const TERMINAL = new Set(['done', 'failed', 'cancelled']);

/** Badge for a running job: "syncing 42 %", "verifying 7 %". */
function jobBadge(kind, percent) {
  const verb = { sync: 'syncing', verify: 'verifying', clone: 'cloning', recover: 'recovering', reprotect: 're-protecting', 're-protect': 're-protecting' }[kind] ?? `${kind || 'job'}`;
  return { fill: 'blue', shape: 'dot', text: percent === undefined ? verb : `${verb} ${Math.floor(percent)} %` };
}

function errorBadge(err) {
  const text = String(err?.message ?? err).replace(/\s+/g, ' ');
  return { fill: 'red', shape: 'ring', text: `error: ${text.length > 60 ? text.slice(0, 57) + '…' : text}` };
}

/** "1, 2,data" → ["1", "2", "data"]; numbers stay numbers so the daemon's schema sees what the user meant. */
function parseList(v) {
  if (Array.isArray(v)) return v;
  if (typeof v === 'number') return [v];
  if (typeof v !== 'string' || v.trim() === '') return undefined;
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
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

module.exports = { percentOf, jobBadge, errorBadge, parseList, isPlainObject, delay, TERMINAL };
