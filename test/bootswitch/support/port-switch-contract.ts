/**
 * The contract of a data port's switch (the boot switch's interlocked
 * sequence on the relays of bays C and D), written once and run against
 * each relay hardware that may carry a data port: the simulated board, and
 * an MCP23017 expander (the real driver over the simulated I2C bus) with
 * active-low relay modules. The host (power LED, ATX relays) stays on the
 * simulated board in both, as it is wired to the main board.
 *
 * What every run must show: fail-safe start (bay C on the data port, both
 * powered), a move only with the host off (shut down first, powered on
 * again when asked), never both drives on the port and never a mux moving
 * under the powered host, read-back, persistence across a restart without
 * a relay moving, the window (both off the port), and a board that stops
 * answering mid-move leaving both drives off the port or the old one on it.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BootSwitchEmitter, ManualClock, SimBoard, SimHost, openBootSwitch, simConfig, type BootSwitchSystem, type DataPortSwitch } from '../../../src/bootswitch/index.ts';
import { DeviceError } from '../../../src/errors.ts';

export interface PortHardware {
  /** Board entries and channels of muxC, muxD, pwrC, pwrD (and optional sense) on this hardware. */
  boards: Record<string, unknown>;
  channels: Record<string, unknown>;
  /** Whether each relay's contact is energised now, from the hardware's own outputs. */
  energised(relay: 'muxC' | 'muxD' | 'pwrC' | 'pwrD'): boolean;
  /** The hardware stops answering (USB pulled, bus hung). */
  disconnect(): void;
  reconnect(): void;
  /** The I2C bus the hardware hangs on, when it does. */
  openBus?: (bus: number) => Promise<unknown>;
  /** Hands a hardware on the simulated board that board. */
  bindSim?(board: SimBoard): void;
}

interface Bench {
  clock: ManualClock;
  sim: SimBoard;
  host: SimHost;
  dir: string;
  hw: PortHardware;
  sys: BootSwitchSystem;
  port: DataPortSwitch;
  /** Bays the port's relays give the host, checked after every relay change. */
  onPort(): string[];
  broken: string[];
  open(): Promise<void>;
  close(): Promise<void>;
}

async function bench(hardware: () => PortHardware): Promise<Bench> {
  const clock = new ManualClock();
  const sim = new SimBoard(clock);
  const host = new SimHost(sim, clock, { bootMs: 500, shutdownMs: 300, heartbeatMs: 200 });
  const hw = hardware();
  hw.bindSim?.(sim);
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-port-'));
  const base = simConfig({ timing: { settleMs: 50, powerOffMs: 100, powerOnMs: 100, shutdownTimeoutMs: 3000 } });
  // The boot port and host lines on the simulated board, the data port C/D on the hardware under test.
  const keep = Object.fromEntries(Object.entries(base.channels).filter(([k]) => /[AB]$/.test(k) || !/^(mux|pwr|senseMux|ledBay)/.test(k)));
  const config = { boards: { ...base.boards, ...hw.boards }, channels: { ...keep, ...hw.channels }, timing: base.timing, failover: base.failover };
  const b: Bench = {
    clock, sim, host, dir, hw,
    sys: undefined as never,
    port: undefined as never,
    broken: [],
    onPort() {
      const out: string[] = [];
      if (!hw.energised('muxC')) out.push('C');
      if (hw.energised('muxD')) out.push('D');
      return out;
    },
    async open() {
      const events = new BootSwitchEmitter();
      events.on('relay', ({ channel }) => {
        if (!/^(mux|pwr)[CD]$/.test(channel)) return;
        if (b.onPort().length > 1) b.broken.push(`both drives on the data port after ${channel} moved`);
        if (/^mux/.test(channel) && host.powered) b.broken.push(`${channel} moved while the host was powered`);
      });
      b.sys = await openBootSwitch({ config, stateDir: dir, clock, sim, events, openI2c: hw.openBus as never });
      const port = b.sys.ports.find((p) => p.bays[0] === 'C');
      assert.ok(port, 'the data port C/D is built from its channels');
      b.port = port!;
    },
    async close() {
      await b.sys.close();
    },
  };
  await b.open();
  return b;
}

/** Runs a move on the manual clock until it settles. */
async function drive<T>(b: Bench, p: Promise<T>): Promise<T> {
  let done = false;
  const settled = p.finally(() => (done = true));
  settled.catch(() => {});
  for (let i = 0; i < 4000 && !done; i++) await b.clock.advance(20);
  return settled;
}

export function portSwitchContract(name: string, hardware: () => PortHardware): void {
  const s = suite(`data port switch contract: ${name}`);
  let b: Bench;
  s.before.each(async () => {
    b = await bench(hardware);
  });
  s.after.each(async () => {
    b.hw.reconnect();
    await b.close().catch(() => {});
    rmSync(b.dir, { recursive: true, force: true });
  });

  s('starts fail-safe: bay C on the data port, both drives powered, the boot port on bay A', async () => {
    assert.equal(b.onPort(), ['C']);
    assert.is(b.hw.energised('pwrC') || b.hw.energised('pwrD'), false);
    assert.is(b.port.sw.bay, 'A');
    assert.equal(b.sim.drivesOnHost(), ['A']);
  });

  s('a move under a running host shuts it down first, breaks before it makes, reads back and powers it on again', async () => {
    b.host.powerOn();
    await b.clock.advance(1000);
    assert.is(b.host.state, 'running');
    const r = await drive(b, b.port.sw.moveTo('B', { powerOn: true }));
    assert.is(r.changed, true);
    assert.equal(r.steps.map((x) => x.step).slice(0, 1), ['host off (acpi)']);
    assert.ok(r.steps.findIndex((x) => x.step === 'old connection broken') < r.steps.findIndex((x) => x.step === 'new connection made'));
    assert.equal(b.onPort(), ['D']);
    assert.is(b.hw.energised('pwrC') || b.hw.energised('pwrD'), false, 'both drives powered again');
    assert.is(b.port.sw.bay, 'B');
    await b.clock.advance(1000);
    assert.is(b.host.state, 'running', 'the host was powered on again');
    assert.equal(b.sim.drivesOnHost(), ['A'], 'the boot port did not move');
    assert.equal(b.broken, []);
    assert.equal(b.sim.violations, []);
  });

  s('the state survives a restart under the running host without a relay moving', async () => {
    await drive(b, b.port.sw.moveTo('B'));
    b.host.powerOn();
    await b.clock.advance(1000);
    await b.close();
    await b.open();
    assert.is(b.port.sw.bay, 'B');
    assert.equal(b.onPort(), ['D']);
    assert.equal(b.broken, []);
  });

  s('the window takes both drives off the data port; moving back ends it', async () => {
    await drive(b, b.port.sw.isolate());
    assert.equal(b.onPort(), []);
    assert.is(b.port.sw.isolated, true);
    await drive(b, b.port.sw.moveTo('A'));
    assert.equal(b.onPort(), ['C']);
    assert.equal(b.broken, []);
  });

  s('a board that stops answering mid-move: a device error, never both drives on the port', async () => {
    const off = (step: { step: string }) => {
      if (step.step === 'drives powered down') b.hw.disconnect();
    };
    b.port.events.on('switch-step', off);
    try {
      await drive(b, b.port.sw.moveTo('B'));
      assert.unreachable('the move should fail');
    } catch (e) {
      assert.instance(e, DeviceError);
    }
    assert.ok(b.onPort().length <= 1);
    assert.ok(b.port.sw.record.fault, 'the fault is recorded');
    assert.equal(b.broken, []);
    b.hw.reconnect();
  });

  s('one move at a time across the host: the boot switch is busy while the data port moves', async () => {
    const p = b.port.sw.moveTo('B');
    p.catch(() => {});
    await b.clock.advance(10);
    const busy = await b.sys.bootSwitch.moveTo('B').then(() => null, (e: Error) => e);
    assert.match(String(busy?.message), /data port C\/D/);
    await drive(b, p);
    assert.equal(b.sim.drivesOnHost(), ['A']);
  });

  s.run();
}
