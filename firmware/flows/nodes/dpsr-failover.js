'use strict';
const { errorBadge, isPlainObject, fitBadge } = require('../lib/util');

/** The exact value msg.confirm must carry: a boolean could come from any upstream mistake, this word cannot. */
const CONFIRM = 'failover';

module.exports = function (RED) {
  function DpsrFailoverNode(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const controller = RED.nodes.getNode(config.controller);
    node.status(fitBadge(controller ? {} : { fill: 'red', shape: 'ring', text: 'no controller configured' }));

    node.on('input', async (msg, send, done) => {
      const refuse = (why, status) => {
        node.status(fitBadge({ fill: 'red', shape: 'ring', text: `refused: ${why}` }));
        msg.topic = 'refused';
        msg.payload = { event: 'refused', reason: why, status };
        msg.error = { message: why, source: { id: node.id, type: node.type, name: node.name } };
        send([null, msg]);
        done();
      };
      if (msg.confirm !== CONFIRM) {
        refuse(`msg.confirm must be the string "${CONFIRM}" to fail over (got ${msg.confirm === undefined ? 'nothing' : JSON.stringify(msg.confirm)})`);
        return;
      }
      if (!controller) {
        refuse('no dpsr controller configured');
        return;
      }
      // Only the daemon's own failover options go into the body (it rejects unknown keys); the daemon asks for the same phrase.
      const body = { confirm: CONFIRM, ...(isPlainObject(msg.payload) && typeof msg.payload.hardOff === 'boolean' ? { hardOff: msg.payload.hardOff } : {}) };
      node.status(fitBadge({ fill: 'blue', shape: 'dot', text: 'failing over' }));
      try {
        // Power sequencing (shutdown, switch, boot) takes a while; allow for it.
        const pair = (typeof msg.pair === 'string' && msg.pair ? msg.pair : typeof config.pair === 'string' ? config.pair.trim() : '') || undefined;
        const res = await controller.client().failover(body, { timeoutMs: Math.max(60_000, (Number(config.timeout) || 0) * 1000) }, pair);
        node.status(fitBadge({ fill: 'green', shape: 'dot', text: `failing over${res?.to ? ` to bay ${res.to}` : ''}` }));
        msg.topic = 'failover';
        msg.payload = res ?? {};
        send([msg, null]);
        done();
      } catch (e) {
        if (e.status) refuse(e.message, e.status);
        else {
          node.status(fitBadge(errorBadge(e)));
          msg.topic = 'failed';
          msg.payload = { event: 'failed', reason: e.message };
          msg.error = { message: e.message, source: { id: node.id, type: node.type, name: node.name } };
          send([null, msg]);
          done();
        }
      }
    });
    node.on('close', () => node.status({}));
  }
  RED.nodes.registerType('dpsr-failover', DpsrFailoverNode);
};
