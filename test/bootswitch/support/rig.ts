/** A simulated rig for tests: sim board + host on a manual clock, state in a temp dir. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BootSwitchEmitter, ManualClock, SimBoard, SimHost, openBootSwitch, simConfig, type BootSwitchSystem, type AlertEvent, type TimingConfig, type FailoverConfig } from '../../../src/bootswitch/index.ts';

export interface Rig {
  clock: ManualClock;
  sim: SimBoard;
  host: SimHost;
  dir: string;
  sys: BootSwitchSystem;
  alerts: AlertEvent[];
  wall: { now: number };
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function makeRig(opts: { timing?: Partial<TimingConfig>; failover?: Partial<FailoverConfig>; hostBootMs?: number } = {}): Promise<Rig> {
  const clock = new ManualClock();
  const sim = new SimBoard(clock);
  const host = new SimHost(sim, clock, { bootMs: opts.hostBootMs ?? 2000, shutdownMs: 1000, heartbeatMs: 1000 });
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-bootswitch-'));
  const alerts: AlertEvent[] = [];
  const wall = { now: 1_700_000_000_000 };
  const config = simConfig({ timing: { settleMs: 100, powerOffMs: 200, powerOnMs: 200, shutdownTimeoutMs: 5000, ...opts.timing }, failover: { confirmTimeoutMs: 10_000, ...opts.failover } });
  const open = async () => {
    const events = new BootSwitchEmitter();
    events.on('alert', (a) => alerts.push(a));
    return openBootSwitch({ config, stateDir: dir, clock, sim, events, wallNow: () => wall.now + clock.now() });
  };
  const onBeat = () => void rig.sys.failover.heartbeat();
  host.on('heartbeat', onBeat);
  const rig: Rig = {
    clock, sim, host, dir, alerts, wall,
    sys: await open(),
    async restart() {
      await rig.sys.close();
      rig.sys = await open();
    },
    async close() {
      host.off('heartbeat', onBeat);
      await rig.sys.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return rig;
}
