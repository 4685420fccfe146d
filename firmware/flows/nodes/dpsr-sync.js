'use strict';
const { percentOf, jobBadge, errorBadge, parseList, isPlainObject, delay, TERMINAL, fitBadge } = require('../lib/util');

const ACTIONS = ['sync', 'verify'];
/** Option keys the node forwards to POST /api/sync or /api/verify; the daemon validates the values (unknown keys are a 400). */
const OPTION_KEYS = { sync: ['partitions', 'mode', 'forceGeneration', 'window'], verify: ['partitions', 'window'] };

module.exports = function (RED) {
  function DpsrSyncNode(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const controller = RED.nodes.getNode(config.controller);
    const defaults = {
      action: ACTIONS.includes(config.action) ? config.action : 'sync',
      partitions: parseList(config.partitions),
      mode: config.mode || undefined,
      whenBusy: config.whenBusy === 'wait' ? 'wait' : 'fail',
      waitIdle: config.waitIdle === true || config.waitIdle === 'true',
      waitTimeoutMs: (Number(config.waitTimeout) > 0 ? Number(config.waitTimeout) : 60) * 60_000,
      pollMs: Math.max(200, (Number(config.poll) > 0 ? Number(config.poll) : 1) * 1000),
      /** The drive pair ('' = the daemon's only pair). */
      pair: typeof config.pair === 'string' ? config.pair.trim() : '',
    };
    /** Redeploying or stopping Node-RED stops watching; the daemon's job keeps running. */
    const closing = new AbortController();
    /** Jobs this node is watching, for msg.cancel. */
    const running = new Set();

    if (!controller) {
      node.status(fitBadge({ fill: 'red', shape: 'ring', text: 'no controller configured' }));
    } else {
      node.status({});
    }

    node.on('input', async (msg, send, done) => {
      if (!controller) {
        done(new Error('no dpsr controller configured'));
        return;
      }
      let client;
      try {
        client = controller.client();
      } catch (e) {
        node.status(fitBadge(errorBadge(e)));
        done(e);
        return;
      }

      if (msg.cancel === true || msg.topic === 'cancel') {
        try {
          const ids = msg.jobId ? [String(msg.jobId)] : [...running];
          for (const id of ids) await client.cancel(id);
          node.status(fitBadge({ fill: 'yellow', shape: 'ring', text: ids.length ? 'cancelling' : 'nothing to cancel' }));
          done();
        } catch (e) {
          node.status(fitBadge(errorBadge(e)));
          done(e);
        }
        return;
      }

      // Options: the node's, then msg.payload (when an object), then msg.options.
      const opts = { ...defaults };
      const given = { ...(isPlainObject(msg.payload) ? msg.payload : {}), ...(isPlainObject(msg.options) ? msg.options : {}) };
      const action = msg.action ?? given.action ?? opts.action;
      const body = {};
      if (opts.partitions) body.partitions = opts.partitions;
      if (opts.mode && action === 'sync') body.mode = opts.mode;
      for (const k of OPTION_KEYS[action] ?? []) if (given[k] !== undefined) body[k] = k === 'partitions' ? parseList(given[k]) ?? given[k] : given[k];
      if (given.whenBusy !== undefined) opts.whenBusy = given.whenBusy === 'wait' ? 'wait' : 'fail';
      if (given.waitIdle !== undefined) opts.waitIdle = given.waitIdle === true;
      const pair = typeof msg.pair === 'string' && msg.pair ? msg.pair : typeof given.pair === 'string' && given.pair ? given.pair : opts.pair || undefined;

      const fail = (error, job) => {
        const m = RED.util.cloneMessage(msg);
        m.topic = 'failed';
        m.payload = { event: 'failed', action, pair: job?.pair ?? pair, id: job?.id, kind: job?.kind ?? action, state: job?.state ?? 'failed', percent: percentOf(job), error: job?.error ?? { kind: error?.body?.error?.kind, message: String(error?.message ?? error), status: error?.status, hint: error?.body?.error?.hint } };
        if (job) m.job = job;
        m.error = { message: String(job?.error?.message ?? error?.message ?? error), source: { id: node.id, type: node.type, name: node.name } };
        node.status(fitBadge(job?.state === 'cancelled' ? { fill: 'yellow', shape: 'ring', text: 'cancelled' } : errorBadge(m.error.message)));
        send([null, null, m]);
        done();
      };

      if (!ACTIONS.includes(action)) {
        fail(new Error(`action ${JSON.stringify(action)} is not one of ${ACTIONS.join(', ')}`));
        return;
      }
      const deadline = Date.now() + opts.waitTimeoutMs;

      try {
        if (opts.waitIdle) {
          node.status(fitBadge({ fill: 'grey', shape: 'ring', text: 'waiting for idle host' }));
          for (;;) {
            const st = await client.status({ signal: closing.signal });
            // With a pair, only that pair's job keeps it busy; another pair's copy waits in the daemon's queue anyway.
            if (pair && st.job && st.job.pair && st.job.pair !== pair) st.job = null;
            const why = busyReason(st);
            if (!why) break;
            if (Date.now() > deadline) throw new Error(`gave up waiting for an idle host after ${Math.round(opts.waitTimeoutMs / 60_000)} min: ${why}`);
            node.status(fitBadge({ fill: 'grey', shape: 'ring', text: `waiting: ${why}` }));
            if (!(await delay(Math.max(opts.pollMs, 2000), closing.signal))) return done();
          }
        }

        let started;
        for (;;) {
          try {
            started = await client.start(action, body, { signal: closing.signal }, pair);
            break;
          } catch (e) {
            // 409 is also a refusal to protect data (kind "refused"): only "busy" is worth waiting for.
            const busy = e.status === 409 && (e.body?.error?.kind ?? 'busy') === 'busy';
            if (!busy || opts.whenBusy !== 'wait') throw e;
            if (Date.now() > deadline) throw new Error(`gave up waiting for the controller: ${e.message}`);
            node.status(fitBadge({ fill: 'grey', shape: 'ring', text: 'waiting: controller busy' }));
            if (!(await delay(Math.max(opts.pollMs, 2000), closing.signal))) return done();
          }
        }
        const job = started && typeof started === 'object' && 'job' in started && isPlainObject(started.job) ? { ...started.job, ...started } : started;
        const id = String(job?.id ?? '');
        if (!id) throw new Error(`POST ${pair ? `/api/pairs/${pair}/${action}` : `/api/${action}`} answered without a job id: ${JSON.stringify(started).slice(0, 200)}`);
        running.add(id);
        const kind = job.kind ?? action;

        const out = (event, j) => {
          const m = RED.util.cloneMessage(msg);
          m.topic = event;
          m.payload = { event, action, pair: j?.pair ?? pair, id, kind, state: j?.state ?? 'running', percent: percentOf(j) ?? (event === 'start' ? 0 : undefined), progress: j?.progress ?? null };
          if (event === 'done') m.payload.result = j?.result ?? null;
          m.job = j;
          return m;
        };
        send([out('start', job), null, null]);
        node.status(fitBadge(jobBadge(kind, 0)));

        let last = '';
        let lastOk = Date.now();
        try {
          for (;;) {
            if (!(await delay(opts.pollMs, closing.signal))) return done();
            let j;
            try {
              j = await client.job(id, { signal: closing.signal });
              lastOk = Date.now();
            } catch (e) {
              if (closing.signal.aborted) return done();
              // A daemon restart mid-job is survivable: it resumes or rolls back
              // the sync and keeps the job's record, so keep asking for a while.
              if (e.status === 404 || Date.now() - lastOk > 120_000) throw e;
              node.status(fitBadge({ fill: 'yellow', shape: 'ring', text: `controller unreachable, retrying` }));
              continue;
            }
            if (TERMINAL.has(j.state)) {
              if (j.state === 'done') {
                node.status(fitBadge({ fill: 'green', shape: 'dot', text: `${action} done ${new Date().toLocaleTimeString()}` }));
                send([null, out('done', j), null]);
                done();
              } else {
                fail(new Error(j.error?.message ?? `job ${id} ${j.state}`), j);
              }
              return;
            }
            const p = percentOf(j);
            const key = `${j.state}:${j.progress?.phase ?? ''}:${p}`;
            if (key !== last) {
              last = key;
              node.status(fitBadge(jobBadge(kind, p)));
              if (j.progress) send([out('progress', j), null, null]);
            }
          }
        } finally {
          running.delete(id);
        }
      } catch (e) {
        if (closing.signal.aborted) return done();
        fail(e);
      }
    });

    node.on('close', (removed, done) => {
      closing.abort();
      node.status({});
      done();
    });
  }

  /**
   * Why the appliance is not idle now, from GET /api/status, or null when a
   * sync may start: no job, no failover or boot-selection move, the host not
   * in the middle of booting or shutting down. Host I/O is not visible to the
   * controller in switched mode; a host-side signal belongs in the flow.
   */
  function busyReason(st) {
    if (!st || typeof st !== 'object') return 'no status';
    if (st.job) return `${st.job.kind} job ${st.job.id} runs`;
    if (st.failover?.switching) return 'a failover is moving the drives';
    if (st.relays?.moving) return 'the boot selection is moving';
    const sim = st.host?.simState;
    if (typeof sim === 'string' && /boot|shutting|starting|stopping/i.test(sim)) return `host is ${sim}`;
    if (st.host?.idle === false) return 'host busy';
    return null;
  }

  RED.nodes.registerType('dpsr-sync', DpsrSyncNode);
};
