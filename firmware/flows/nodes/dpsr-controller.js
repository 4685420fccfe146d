'use strict';
const { DpsrClient } = require('../lib/client');

module.exports = function (RED) {
  function DpsrControllerNode(config) {
    RED.nodes.createNode(this, config);
    this.name = config.name;
    this.url = config.url;
    this.tokenFile = config.tokenFile;
    this.timeoutMs = Number(config.timeout) > 0 ? Number(config.timeout) * 1000 : 10_000;
    /** @type {DpsrClient | undefined} */
    let client;
    /** A bad URL surfaces on the node that uses it, not as a crash at deploy. */
    this.client = () => {
      client ??= new DpsrClient({ url: this.url, token: this.credentials?.token, tokenFile: this.tokenFile, timeoutMs: this.timeoutMs });
      return client;
    };
  }
  RED.nodes.registerType('dpsr-controller', DpsrControllerNode, {
    credentials: { token: { type: 'password' } },
  });
};
