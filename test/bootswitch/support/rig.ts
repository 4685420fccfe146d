/** A simulated rig for tests: sim board + host on a manual clock, state in a temp dir. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BootSwitchEmitter, ManualClock, SimBoard, SimHost, openBootSwitch, simConfig, type Bay, type BootSwitchSystem, type AlertEvent, type HostLink, type TimingConfig, type FailoverConfig } from '../../../src/bootswitch/index.ts';

export interface Rig {
  clock: ManualClock;
  sim: SimBoard;
  host: SimHost;
  dir: string;
  sys: BootSwitchSystem;
  alerts: AlertEvent[];
  wall: { now: number };
  /** Opens the boot switch again on the same board and state, as a restarted controller (in another mode with `hostLink`). */
  restart(opts?: { hostLink?: HostLink }): Promise<void>;
  close(): Promise<void>;
  /**
   * Export mode: the bay the controller's export serves (what the connect
   * hook last connected; null while none is, e.g. after a power loss), which
   * the simulated host boots from besides its SATA port. `connectFails`
   * makes the next connects throw.
   */
  exported: { bay: Bay | null; connects: Bay[]; connectFails: boolean };
}

export async function makeRig(opts: { timing?: Partial<TimingConfig>; failover?: Partial<FailoverConfig>; hostBootMs?: number; hostFirstHeartbeatMs?: number; hostLink?: HostLink } = {}): Promise<Rig> {
  const clock = new ManualClock();
  const sim = new SimBoard(clock);
  const host = new SimHost(sim, clock, { bootMs: opts.hostBootMs ?? 2000, shutdownMs: 1000, heartbeatMs: 1000, firstHeartbeatMs: opts.hostFirstHeartbeatMs ?? 0 });
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-bootswitch-'));
  const alerts: AlertEvent[] = [];
  const wall = { now: 1_700_000_000_000 };
  const config = simConfig({ timing: { settleMs: 100, powerOffMs: 200, powerOnMs: 200, shutdownTimeoutMs: 5000, ...opts.timing }, failover: { confirmTimeoutMs: 10_000, ...opts.failover } });
  const exported: Rig['exported'] = { bay: null, connects: [], connectFails: false };
  let hostLink = opts.hostLink ?? 'sata';
  const open = async () => {
    host.exportedDisk = () => (hostLink === 'export' ? exported.bay : null);
    const events = new BootSwitchEmitter();
    events.on('alert', (a) => alerts.push(a));
    const sys = await openBootSwitch({ config, stateDir: dir, clock, sim, events, wallNow: () => wall.now + clock.now(), hostLink });
    if (hostLink === 'export') {
      sys.bootSwitch.setConnectHook(async (to) => {
        exported.connects.push(to);
        if (exported.connectFails) throw new Error(`export of bay ${to} failed`);
        exported.bay = to;
      });
    }
    return sys;
  };
  const onBeat = () => void rig.sys.failover.heartbeat();
  host.on('heartbeat', onBeat);
  const stopNotices = host.onShuttingDown(() => void rig.sys.failover.hostShuttingDown());
  /**
   * Closes the system as a real controller does, while time passes: close
   * waits for the failover machine's actions under way (a power-on pulse, a
   * move waiting for the host to shut down), which sleep on the manual
   * clock. Throws when it has not closed after 300 s of clock time, rather
   * than leaving the test waiting on a clock nobody advances.
   */
  const closeSys = async () => {
    let closed = false;
    const closing = rig.sys.close().finally(() => (closed = true));
    await new Promise<void>((r) => setImmediate(r));
    for (let i = 0; i < 3000 && !closed; i++) await clock.advance(100);
    if (!closed) throw new Error(`the boot switch system did not close within 300 s of clock time (failover holder: ${rig.sys.gate.holder ?? 'none'})`);
    await closing;
  };
  const rig: Rig = {
    clock, sim, host, dir, alerts, wall, exported,
    sys: await open(),
    async restart(o = {}) {
      hostLink = o.hostLink ?? hostLink;
      await closeSys();
      rig.sys = await open();
    },
    async close() {
      host.off('heartbeat', onBeat);
      stopNotices();
      try {
        await closeSys();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  return rig;
}
