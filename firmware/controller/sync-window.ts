/**
 * Sync windows (switched mode): the host is shut down and both drives of a
 * pair are taken onto the controller for a copy, then the active bay goes
 * back to the host, which is powered on again if it was running. Whether it
 * was is persisted, so a daemon restarted inside the window still knows.
 * A data pair's window is the same: its drives are the host's data disk,
 * which a running host writes, so a consistent copy needs the host off too.
 * Windows of several pairs (parallel copies) share the host: it is powered
 * on again only when the last of them closes.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Bay, BootSwitch } from '../../src/bootswitch/index.ts';
import { readJsonChecked, writeJsonDurably } from '../../src/durable-file.ts';
import { BadInputError, BusyError } from '../../src/errors.ts';
import type { DaemonConfig } from './config.ts';
import type { EventBus } from './events.ts';
import type { JobContext } from './jobs.ts';
import type { Roles } from './roles.ts';

/** How long a drive may take to appear on its bridge after the relays connect and power it. */
const DRIVE_APPEAR_MS = 30_000;
/** How long a window waits for another port's move (a host shutdown takes up to timing.shutdownTimeoutMs). */
const GATE_WAIT_MS = 10 * 60_000;

interface WindowFile {
  hostWasOn: boolean;
  openedAt: string;
}

/** The pairs whose windows hold the host off now, each with whether the host ran before its window. */
export class HostHolds {
  #held = new Map<string, boolean>();

  hold(pair: string, hostWasOn: boolean): void {
    this.#held.set(pair, hostWasOn);
  }

  /** Whether the host ran before the windows of the other pairs that hold it off now (false when none does). */
  othersHostWasOn(pair: string): boolean | null {
    const others = [...this.#held].filter(([p]) => p !== pair);
    return others.length ? others.some(([, on]) => on) : null;
  }

  /** Ends `pair`'s hold; true when another pair's window still holds the host off. */
  release(pair: string): boolean {
    this.#held.delete(pair);
    return this.#held.size > 0;
  }

  /** The pairs whose windows hold the host off. */
  get pairs(): string[] {
    return [...this.#held.keys()];
  }
}

export class SyncWindow {
  readonly file: string;

  constructor(
    private readonly config: DaemonConfig,
    stateDir: string,
    /** The switch of the pair's host port (the boot switch, or a data port's). */
    private readonly sw: BootSwitch,
    private readonly roles: Roles,
    private readonly bus: EventBus,
    private readonly holds: HostHolds,
    /** The pair's id; the boot pair keeps the file name it had before pairs existed. */
    private readonly pair: string,
    bootPair: boolean,
  ) {
    this.file = join(stateDir, bootPair ? 'sync-window.json' : `sync-window-${pair}.json`);
    // A window a previous process left open holds the host off until it is closed.
    const saved = sw.isolated ? readJsonChecked<WindowFile>(this.file) : undefined;
    if (saved) holds.hold(pair, saved.hostWasOn);
  }

  /** Whether a copy runs in a window: as asked, else as config sync.window says; never in inline mode. */
  wanted(requested: boolean | undefined): boolean {
    if (this.config.mode === 'inline') {
      if (requested === true) throw new BadInputError('inline mode copies while the host runs: there is no sync window', { hint: 'leave out --window ("window": true); for a restore, shut the host down first' });
      return false;
    }
    const w = this.config.sync.window;
    return requested ?? (w === 'always' || (w === 'auto' && this.config.rig === 'hardware'));
  }

  /** RefusedError (409) naming why while start-up left the relays of this pair's switch in an unknown state (BootSwitch.requireKnown). */
  requireKnown(what: string): void {
    this.sw.requireKnown(what);
  }

  /** Both drives are on the controller now (a window is open, or was left open by a previous process). */
  get open(): boolean {
    return this.sw.isolated;
  }

  /**
   * Runs `fn` with both drives on the controller (when `use`): a refusal to
   * shut the host down leaves everything as it was. Without a window, a job
   * that `usesActive` (writes it, or reads it with the host off) keeps the
   * host off until it ends (BootSwitch.keepHostOff): RefusedError when a
   * job that writes finds the host on or being powered on.
   */
  async run<T>(ctx: JobContext, use: boolean, fn: () => Promise<T>, usesActive: 'writes' | 'reads' | false = 'writes'): Promise<T> {
    if (!use) {
      // Without a window the active drive is used with the host off (switched mode): it stays off until the job ends.
      // A job that only reads may run beside the simulated host (its writes are refused while the drive is read).
      if (!usesActive || this.config.mode === 'inline') return fn();
      const who = `job ${ctx.job.id} (${ctx.job.kind} on pair ${this.pair})`;
      const release = usesActive === 'writes' ? await this.sw.keepHostOff(who) : await this.sw.keepHostOff(who).catch(() => null);
      if (!release) return fn();
      try {
        return await fn();
      } finally {
        release();
      }
    }
    const bsw = this.sw;
    let hostWasOn: boolean;
    const saved = bsw.isolated ? readJsonChecked<WindowFile>(this.file) : undefined;
    if (saved) hostWasOn = saved.hostWasOn;
    else {
      // Another pair's window may hold the host off already: what counts is whether it ran before that one.
      hostWasOn = this.holds.othersHostWasOn(this.pair) ?? (await bsw.hostPowered());
      writeJsonDurably(this.file, { hostWasOn, openedAt: new Date().toISOString() } satisfies WindowFile);
    }
    this.holds.hold(this.pair, hostWasOn);
    ctx.log('info', `sync window: ${hostWasOn ? 'shutting the host down and ' : ''}taking both drives onto the controller`);
    try {
      const r = await this.#inTurn(() => bsw.isolate({ signal: ctx.signal }), ctx.signal);
      if (r.changed) ctx.log('info', `both drives on the controller after ${r.totalMs} ms (host: ${r.host})`);
    } catch (e) {
      rmSync(this.file, { force: true });
      this.holds.release(this.pair);
      throw e;
    }
    // The drives are the job's until the window closes: no move of this switch (the failover button's, an automatic
    // failover's) may hand one to the host or cut its power under the job. Released just before the window's own move.
    let release: (() => void) | null = null;
    try {
      release = bsw.gate.keepOff(`job ${ctx.job.id} (${ctx.job.kind} on pair ${this.pair}) in its sync window`, bsw.naming.name);
      return await fn();
    } finally {
      release?.();
      await this.close(hostWasOn, (m) => ctx.log('info', m));
    }
  }

  /** Gives the active bay back to the host; powers the host on when it was on before the window. */
  async close(hostWasOn: boolean, note: (m: string) => void): Promise<void> {
    const { active } = this.roles.current();
    const bay = this.roles.name(active);
    // The host stays off while another pair's window still has its drives on the controller.
    const othersHold = this.holds.pairs.some((p) => p !== this.pair);
    // A job of another pair using its active drive with no window needs the host off as well.
    const keptOffBy = this.sw.gate.keptOffBy();
    const powerOn = hostWasOn && !othersHold && !keptOffBy;
    // The job's claim ends without powering anything on: the power-on is owed to the host when it does.
    if (hostWasOn && !othersHold && keptOffBy) this.sw.gate.deferPowerOn(`the power-on after the sync window of pair ${this.pair}`);
    try {
      await this.#inTurn(() => this.sw.moveTo(active, { powerOn }));
      rmSync(this.file, { force: true });
      // Windows closing at once each saw the other's hold before their moves:
      // the last to release (known here, with no await between) powers the host on.
      const othersStill = this.holds.release(this.pair);
      // A power-on owed since a job kept the host off (pendingPowerOn) is made by the last window too, once nothing holds the host.
      let lastPowersOn = (hostWasOn || this.sw.gate.pendingPowerOn !== null) && !powerOn && !othersStill && this.sw.gate.hostHeldBy() === null;
      if (lastPowersOn) {
        await this.sw.powerOnHost().catch((e: Error) => {
          lastPowersOn = false;
          this.bus.publish('alert', { level: 'critical', code: 'host-power-on-failed', pair: this.pair, message: `the sync windows closed but the host could not be powered on: ${e.message}` });
        });
      }
      note(`sync window closed: bay ${bay} back on the host${powerOn || lastPowersOn ? ', host powered on' : othersStill && hostWasOn ? `; the host stays off until the window of pair ${this.holds.pairs.join(', ')} closes` : keptOffBy && hostWasOn ? `; the host stays off: ${keptOffBy} needs it off` : ''}`);
    } catch (e) {
      this.bus.publish('alert', { level: 'critical', code: 'window-not-closed', pair: this.pair, message: `after the copy the relays could not give bay ${bay} back to the host: ${(e as Error).message}` });
      throw e;
    }
  }

  /**
   * Runs a move of this pair's switch once no other port's move holds the
   * host gate (windows of parallel copies open and close in turn): a move of
   * another port is waited for, never a reason to fail the copy or leave
   * the drives on the controller.
   */
  async #inTurn<T>(move: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const deadline = Date.now() + GATE_WAIT_MS;
    for (;;) {
      try {
        return await move();
      } catch (e) {
        const otherPort = e instanceof BusyError && this.sw.gate.holder !== null && !this.sw.moving;
        if (!otherPort || Date.now() > deadline || signal?.aborted) throw e;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Closes a window a previous process left open, with the host power it recorded. */
  async closeLeftOpen(note: (m: string) => void): Promise<void> {
    const saved = readJsonChecked<WindowFile>(this.file);
    await this.close(saved?.hostWasOn ?? false, note);
  }

  /** A drive's path once it has appeared on its bridge (after a window connects it). */
  async drivePath(bay: Bay, role: string, signal: AbortSignal): Promise<string> {
    const deadline = Date.now() + DRIVE_APPEAR_MS;
    for (;;) {
      const p = this.roles.bays.path(bay);
      if (p) return p;
      if (Date.now() > deadline || signal.aborted) return this.roles.require(bay, role);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
