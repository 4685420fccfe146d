'use strict';
// Runs Node-RED with the appliance settings as a child process and restarts it
// when it dies. Node-RED lives in its own process so that a flow that throws,
// leaks or spins cannot stop dpsrd; dpsrd's start-up calls this (or runs this
// file) beside the daemon.
//
//   node firmware/flows/appliance/supervisor.js       (settings from the environment, see settings.js)
const { spawn } = require('node:child_process');
const { EventEmitter } = require('node:events');
const path = require('node:path');

const SETTINGS = path.join(__dirname, 'settings.js');

/**
 * @param {{
 *   stateDir: string,
 *   url?: string,
 *   tokenFile?: string,
 *   listen?: string,
 *   env?: Record<string, string | undefined>,
 *   log?: (level: 'info' | 'warn' | 'error', message: string, extra?: object) => void,
 *   output?: (line: string) => void,
 *   minDelayMs?: number,
 *   maxDelayMs?: number,
 *   stableMs?: number,
 * }} opts
 */
function superviseNodeRed(opts) {
  if (!opts || !opts.stateDir) throw new Error('superviseNodeRed: stateDir is required (Node-RED keeps its flows and secrets there)');
  const events = new EventEmitter();
  const log = opts.log ?? ((level, message, extra) => console[level === 'info' ? 'log' : level](`[node-red supervisor] ${message}`, extra ?? ''));
  const output = opts.output ?? ((line) => process.stdout.write(`[node-red] ${line}\n`));
  const minDelay = opts.minDelayMs ?? 1000;
  const maxDelay = opts.maxDelayMs ?? 60_000;
  // A child that ran this long was healthy: the next crash starts the backoff over.
  const stableMs = opts.stableMs ?? 60_000;
  const red = require.resolve('node-red/red.js');
  const env = {
    ...process.env,
    ...opts.env,
    DPSR_STATE_DIR: path.resolve(opts.stateDir),
    ...(opts.url ? { DPSR_URL: opts.url } : {}),
    ...(opts.tokenFile ? { DPSR_TOKEN_FILE: opts.tokenFile } : {}),
    ...(opts.listen ? { DPSR_NODE_RED_LISTEN: opts.listen } : {}),
  };

  let child = null;
  let stopping = false;
  let failures = 0;
  let restartTimer = null;
  let restarts = 0;

  function start() {
    const started = Date.now();
    // The IPC channel lets the child notice when this process dies without stopping it (settings.js exits on 'disconnect').
    const c = spawn(process.execPath, [red, '--settings', SETTINGS], { env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    child = c;
    let url;
    const lines = (stream) => {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          output(line);
          const m = /Server now running at (\S+)/.exec(line);
          if (m) {
            url = m[1].replace(/\/$/, '');
            events.emit('ready', { url, pid: c.pid });
          }
          if (/Started flows/.test(line)) events.emit('flows-started', { url, pid: c.pid });
        }
      });
    };
    lines(c.stdout);
    lines(c.stderr);
    c.on('error', (e) => log('error', `cannot start Node-RED: ${e.message}`));
    c.on('exit', (code, signal) => {
      child = null;
      events.emit('exit', { code, signal, pid: c.pid });
      if (stopping) return;
      failures = Date.now() - started > stableMs ? 1 : failures + 1;
      const delay = Math.min(maxDelay, minDelay * 2 ** (failures - 1));
      log('warn', `Node-RED (pid ${c.pid}) exited with ${signal ?? `code ${code}`}; restarting in ${delay} ms`, { failures });
      restartTimer = setTimeout(() => {
        restartTimer = null;
        restarts++;
        start();
      }, delay);
    });
    events.emit('spawn', { pid: c.pid });
    log('info', `Node-RED started (pid ${c.pid}) with ${SETTINGS}`);
  }
  start();

  // defineProperties, not Object.assign: assign would copy the getters' values once.
  Object.defineProperties(events, {
    pid: { get: () => child?.pid, enumerable: true },
    restarts: { get: () => restarts, enumerable: true },
    /** Stops Node-RED for good: SIGTERM, then SIGKILL after `graceMs`. */
    stop: {
      value(graceMs = 10_000) {
        stopping = true;
        if (restartTimer) clearTimeout(restartTimer);
        const c = child;
        if (!c) return Promise.resolve();
        return new Promise((resolve) => {
          const kill = setTimeout(() => c.kill('SIGKILL'), graceMs);
          c.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          c.kill('SIGTERM');
        });
      },
    },
  });
  return events;
}

module.exports = { superviseNodeRed, SETTINGS };

if (require.main === module) {
  const stateDir = process.env.DPSR_STATE_DIR;
  if (!stateDir) {
    console.error('DPSR_STATE_DIR is not set: point it at the dpsrd state directory');
    process.exit(2);
  }
  const sup = superviseNodeRed({ stateDir });
  const end = () => sup.stop().then(() => process.exit(0));
  process.once('SIGTERM', end);
  process.once('SIGINT', end);
}
