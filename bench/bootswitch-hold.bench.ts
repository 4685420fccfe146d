/**
 * Simulated rig, real clock: time from the button's hold threshold to the
 * relays switched (host already off), minus the configured waits inside the
 * move (power-off, settle ×2, power-on). What remains is our own overhead:
 * state persistence (fsync), read-backs, event plumbing.
 * Usage: npx tsx bench/bootswitch-hold.ts [rounds]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BootSwitchEmitter, SimBoard, openBootSwitch, simConfig, systemClock } from '../src/bootswitch/index.ts';

const rounds = Number(process.argv[2] ?? 6);
const dir = mkdtempSync(join(tmpdir(), 'dpsr-bench-'));
const config = simConfig({ timing: { settleMs: 200, powerOffMs: 300, powerOnMs: 300, holdMs: 3000 } });
const sim = new SimBoard(systemClock);
const events = new BootSwitchEmitter();
const sys = await openBootSwitch({ config, stateDir: dir, sim, events });
const rows: { round: number; move: string; holdToSwitchedMs: number; waitsMs: number; overheadMs: number }[] = [];
try {
  for (let i = 0; i < rounds; i++) {
    await sys.failover.dispatch({ type: 'reset' });
    await sys.failover.dispatch({ type: 'consistency', bay: sys.failover.state.standby, consistent: true });
    const from = sys.bootSwitch.bay;
    let heldAt = 0;
    const done = new Promise<{ at: number; waited: number }>((resolve) => {
      events.once('button', function onHold(b) {
        if (b.kind === 'hold') heldAt = performance.now();
        else events.once('button', onHold);
      });
      const onSwitched = (s: { changed: boolean }) => {
        if (!s.changed) return;
        events.off('switched', onSwitched);
        resolve({ at: performance.now(), waited: config.timing.powerOffMs + 2 * config.timing.settleMs + config.timing.powerOnMs });
      };
      events.on('switched', onSwitched);
    });
    sim.holdButton(config.timing.holdMs + 500);
    const r = await done;
    await sys.failover.idle();
    await new Promise((res) => setTimeout(res, 700)); // let go of the button
    // The rig's host never powers on (no SimHost): the power-on pulse is ignored.
    const total = r.at - heldAt;
    rows.push({ round: i + 1, move: `${from} -> ${sys.bootSwitch.bay}`, holdToSwitchedMs: +total.toFixed(1), waitsMs: r.waited, overheadMs: +(total - r.waited).toFixed(1) });
  }
} finally {
  await sys.close();
  rmSync(dir, { recursive: true, force: true });
}
console.table(rows);
const o = rows.map((r) => r.overheadMs).sort((a, b) => a - b);
console.log(`overhead besides configured waits: median ${o[Math.floor(o.length / 2)]} ms, max ${o[o.length - 1]} ms (target < 200 ms)`);
