'use strict';
const { percentOf, jobBadge, errorBadge, fitBadge } = require('../lib/util');

module.exports = function (RED) {
  function DpsrStatusNode(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const controller = RED.nodes.getNode(config.controller);
    const intervalS = Number(config.interval) > 0 ? Number(config.interval) : 0;
    const onlyChanges = config.onlyChanges === true || config.onlyChanges === 'true';
    /** One pair's status (GET /api/pairs/{id}/status), or '' for the whole status. */
    const pairOf = (msg) => (msg && typeof msg.pair === 'string' && msg.pair ? msg.pair : typeof config.pair === 'string' ? config.pair.trim() : '') || undefined;
    let lastSent = '';
    let timer;
    let inFlight = false;

    /** The badge tells the appliance's state at a glance: syncing 42 %, idle, error. */
    function badge(st) {
      if (st.job) return st.job.state === 'queued' ? { fill: 'grey', shape: 'ring', text: `${st.job.kind} queued` } : jobBadge(st.job.kind, percentOf(st.job));
      if (st.standbyState && st.standbyState !== 'consistent') return { fill: 'yellow', shape: 'ring', text: `standby ${st.standbyState}` };
      return { fill: 'green', shape: 'dot', text: `idle${st.active ? ` · ${st.active} active` : ''}` };
    }

    async function poll(msg, send, done) {
      if (!controller) {
        node.status(fitBadge({ fill: 'red', shape: 'ring', text: 'no controller configured' }));
        done?.(new Error('no dpsr controller configured'));
        return;
      }
      if (!msg && inFlight) return; // a slow daemon: skip a tick rather than pile requests up
      inFlight = true;
      try {
        const pair = pairOf(msg);
        const st = await controller.client().status(undefined, pair);
        node.status(fitBadge(badge(st)));
        // The timestamp-free part decides "changed": a heartbeat alone is not news.
        const key = JSON.stringify({ ...st, host: st.host ? { ...st.host, lastHeartbeat: undefined, lastHeartbeatAt: undefined } : st.host, at: undefined, uptimeSeconds: undefined });
        if (!msg && onlyChanges && key === lastSent) return done?.();
        lastSent = key;
        const m = msg ?? {};
        m.topic = m.topic || (pair ? `dpsr/status/${pair}` : 'dpsr/status');
        m.payload = st;
        send([m, null]);
        done?.();
      } catch (e) {
        node.status(fitBadge(errorBadge(e)));
        const m = msg ?? {};
        m.topic = m.topic || 'dpsr/status';
        m.payload = { error: { message: e.message, status: e.status } };
        m.error = { message: e.message, source: { id: node.id, type: node.type, name: node.name } };
        lastSent = '';
        send([null, m]);
        done?.();
      } finally {
        inFlight = false;
      }
    }

    node.on('input', (msg, send, done) => poll(msg, send, done));
    if (intervalS > 0) {
      const tick = () => poll(undefined, (msgs) => node.send(msgs));
      // First poll shortly after deploy, so the badge is not blank for a whole interval.
      const first = setTimeout(tick, 500);
      timer = setInterval(tick, intervalS * 1000);
      node.on('close', () => clearTimeout(first));
    }
    node.on('close', () => {
      clearInterval(timer);
      node.status({});
    });
  }
  RED.nodes.registerType('dpsr-status', DpsrStatusNode);
};
