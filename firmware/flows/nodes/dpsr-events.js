'use strict';
const { subscribe } = require('../lib/sse');
const { percentOf, jobBadge, fitBadge } = require('../lib/util');

module.exports = function (RED) {
  function DpsrEventsNode(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const controller = RED.nodes.getNode(config.controller);
    // "job." matches every job.* event, as the daemon's own filter does.
    const types = String(config.types ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const want = (t) => types.length === 0 || types.some((x) => (x.endsWith('.') ? t.startsWith(x) : t === x));
    const minDelayMs = (Number(config.minDelay) > 0 ? Number(config.minDelay) : 0.5) * 1000;
    const maxDelayMs = (Number(config.maxDelay) > 0 ? Number(config.maxDelay) : 30) * 1000;
    let sub;

    if (!controller) {
      node.status(fitBadge({ fill: 'red', shape: 'ring', text: 'no controller configured' }));
      return;
    }
    let client;
    try {
      client = controller.client();
    } catch (e) {
      node.status(fitBadge({ fill: 'red', shape: 'ring', text: e.message }));
      return;
    }

    let connected = false;
    sub = subscribe(client, {
      path: types.length ? `/api/events?types=${encodeURIComponent(types.join(','))}` : '/api/events',
      minDelayMs,
      maxDelayMs,
      idleTimeoutMs: (Number(config.idleTimeout) > 0 ? Number(config.idleTimeout) : 60) * 1000,
      onState(s) {
        connected = s.state === 'connected';
        if (s.state === 'connected') node.status(fitBadge({ fill: 'green', shape: 'dot', text: 'connected' }));
        else if (s.state === 'connecting') node.status(fitBadge({ fill: 'yellow', shape: 'ring', text: s.attempt ? `connecting (attempt ${s.attempt + 1})` : 'connecting' }));
        else if (s.state === 'waiting') {
          node.status(fitBadge({ fill: 'red', shape: 'ring', text: `disconnected, retry in ${Math.max(1, Math.round(s.delayMs / 1000))} s` }));
          if (s.attempt === 1) node.warn(`event stream lost: ${s.error}`);
        }
        const m = { topic: 'dpsr/connection', payload: { state: s.state, attempt: s.attempt, delayMs: s.delayMs, error: s.error } };
        if (s.state !== 'closed') node.send([null, m]);
      },
      onEvent(ev) {
        let body;
        try {
          body = JSON.parse(ev.data);
        } catch {
          body = { type: ev.event, data: ev.data };
        }
        const type = body?.type ?? ev.event;
        if (!want(type)) return;
        if (connected && type === 'job.progress') node.status(fitBadge({ ...jobBadge(body.data?.kind, percentOf(body.data)), text: `connected · ${jobBadge(body.data?.kind, percentOf(body.data)).text}` }));
        else if (connected && /^job\.(done|failed|cancelled)$/.test(type)) node.status(fitBadge({ fill: 'green', shape: 'dot', text: `connected · ${type.slice(4)}` }));
        node.send([{ topic: type, payload: body?.data ?? body, event: { id: ev.id, seq: body?.seq, at: body?.at, type } }, null]);
      },
    });

    node.on('close', (removed, done) => {
      sub?.close();
      node.status({});
      done();
    });
  }
  RED.nodes.registerType('dpsr-events', DpsrEventsNode);
};
