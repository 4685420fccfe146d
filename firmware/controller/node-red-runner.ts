/**
 * Node-RED beside dpsrd: a child process with the appliance settings and
 * default flows of firmware/flows, restarted when it dies. It is a separate
 * process so that a broken flow cannot take the controller down; this file
 * only starts and stops it (the flows reach the daemon over its HTTP API).
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Daemon } from './daemon.ts';

export interface NodeRedHandle {
  stop(graceMs?: number): Promise<void>;
}

interface Supervisor extends NodeRedHandle {
  on(event: 'ready', fn: (info: { url: string; pid: number }) => void): void;
}

const require = createRequire(import.meta.url);

export function startNodeRed(daemon: Daemon, opts: { listen?: string; banner?: (line: string) => void } = {}): NodeRedHandle {
  const { superviseNodeRed } = require('../flows/appliance/supervisor.js') as { superviseNodeRed(o: object): Supervisor };
  const log = daemon.log.child({ component: 'node-red' });
  const sup = superviseNodeRed({
    stateDir: daemon.stateDir,
    url: daemon.url,
    tokenFile: daemon.tokenFile,
    listen: opts.listen ?? process.env.DPSR_NODE_RED_LISTEN,
    log: (level: 'info' | 'warn' | 'error', message: string, extra?: object) => log[level](extra ?? {}, message),
    // Node-RED's own lines, at their level, so journald filters them like the daemon's.
    output: (line: string) => {
      if (!line.trim()) return;
      const level = /- \[(error|warn)\]/.exec(line)?.[1] as 'error' | 'warn' | undefined;
      log[level ?? 'info']({ child: true }, line);
    },
  });
  sup.on('ready', ({ url }) =>
    opts.banner?.(`Node-RED editor at ${url} (user admin, password in ${join(daemon.stateDir, 'node-red', 'admin-password')})`),
  );
  return sup;
}
