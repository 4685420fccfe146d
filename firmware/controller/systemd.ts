/**
 * The service manager's notification protocol (sd_notify(3)): READY=1 once
 * the API listens, WATCHDOG=1 fed from the event loop, STOPPING=1 on the way
 * out. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
 *
 * Node has no unix datagram sockets in core, and the npm bindings that add
 * them are native modules to compile on the board. systemd's own
 * `systemd-notify` is on every machine that runs the unit, so the messages go
 * through it: `--pid=` names dpsrd as the sender (root may send another
 * process's credentials), so systemd credits dpsrd's main process even once
 * the short-lived helper has exited; the unit also sets NotifyAccess=all.
 * One helper per watchdog tick (every WatchdogSec/2) costs a few milliseconds.
 */
import { execFile } from 'node:child_process';

export interface ServiceNotifier {
  /** Whether a service manager listens (NOTIFY_SOCKET was set). */
  readonly active: boolean;
  /** Milliseconds between watchdog pings, or null without a watchdog. */
  readonly watchdogIntervalMs: number | null;
  ready(status?: string): void;
  status(text: string): void;
  stopping(): void;
  close(): void;
}

export interface NotifierOptions {
  env?: NodeJS.ProcessEnv;
  pid?: number;
  /** The helper binary; tests may point elsewhere. */
  command?: string;
  warn?: (message: string, extra?: object) => void;
}

/**
 * Takes NOTIFY_SOCKET (and WATCHDOG_USEC/WATCHDOG_PID) out of `env`, as
 * sd_notify's unset_environment does, so that children (Node-RED) cannot
 * speak for the daemon, and starts the watchdog timer when one is asked for.
 */
export function serviceNotifier(opts: NotifierOptions = {}): ServiceNotifier {
  const env = opts.env ?? process.env;
  const pid = opts.pid ?? process.pid;
  const socket = env.NOTIFY_SOCKET;
  const watchdogUsec = Number(env.WATCHDOG_USEC);
  const watchdogPid = env.WATCHDOG_PID === undefined ? pid : Number(env.WATCHDOG_PID);
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
  if (!socket) {
    const none = () => {};
    return { active: false, watchdogIntervalMs: null, ready: none, status: none, stopping: none, close: none };
  }
  const command = opts.command ?? 'systemd-notify';
  let warned = false;
  let inFlight = 0;
  const send = (...assignments: string[]) => {
    inFlight++;
    execFile(command, [`--pid=${pid}`, ...assignments], { env: { ...env, NOTIFY_SOCKET: socket }, timeout: 10_000 }, (err) => {
      inFlight--;
      if (err && !warned) {
        warned = true;
        opts.warn?.(`cannot notify the service manager through ${command}: ${err.message}`, { socket });
      }
    });
  };
  const intervalMs = Number.isFinite(watchdogUsec) && watchdogUsec > 0 && watchdogPid === pid ? Math.max(50, Math.floor(watchdogUsec / 2000)) : null;
  // The timer runs on the event loop: a loop that hangs stops the pings, and systemd restarts the daemon.
  // A ping is skipped while the previous helper still runs, so a slow machine does not pile them up.
  const timer = intervalMs === null ? null : setInterval(() => inFlight === 0 && send('WATCHDOG=1'), intervalMs);
  timer?.unref();
  return {
    active: true,
    watchdogIntervalMs: intervalMs,
    ready: (status) => send('READY=1', ...(status ? [`STATUS=${status}`] : [])),
    status: (text) => send(`STATUS=${text}`),
    stopping: () => send('STOPPING=1'),
    close: () => timer && clearInterval(timer),
  };
}
