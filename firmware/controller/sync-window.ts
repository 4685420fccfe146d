/**
 * Sync windows (switched mode): the host is shut down and both drives are
 * taken onto the controller for a copy, then the active bay goes back to the
 * host, which is powered on again if it was running. Whether it was is
 * persisted, so a daemon restarted inside the window still knows.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Bay, BootSwitchSystem } from '../../src/bootswitch/index.ts';
import { readJsonChecked, writeJsonDurably } from '../../src/durable-file.ts';
import { BadInputError, RefusedError } from '../../src/errors.ts';
import type { DaemonConfig } from './config.ts';
import type { EventBus } from './events.ts';
import type { JobContext } from './jobs.ts';
import type { Roles } from './roles.ts';

/** How long a drive may take to appear on its bridge after the relays connect and power it. */
const DRIVE_APPEAR_MS = 30_000;

interface WindowFile {
  hostWasOn: boolean;
  openedAt: string;
}

export class SyncWindow {
  readonly file: string;

  constructor(
    private readonly config: DaemonConfig,
    stateDir: string,
    private readonly bs: BootSwitchSystem,
    private readonly roles: Roles,
    private readonly bus: EventBus,
    /** A data pair without relays of its own: no window can be opened for it (its name, for the refusal). */
    private readonly noWindowFor: string | null = null,
  ) {
    this.file = join(stateDir, 'sync-window.json');
  }

  /** Whether a copy runs in a window: as asked, else as config sync.window says; never in inline mode. */
  wanted(requested: boolean | undefined): boolean {
    if (this.config.mode === 'inline') {
      if (requested === true) throw new BadInputError('inline mode copies while the host runs: there is no sync window', { hint: 'leave out --window ("window": true); for a restore, shut the host down first' });
      return false;
    }
    const w = this.config.sync.window;
    const want = requested ?? (w === 'always' || (w === 'auto' && this.config.rig === 'hardware'));
    if (want && this.noWindowFor) {
      throw new RefusedError(`a sync window for pair ${this.noWindowFor} needs relays that take its drives off the host, which this controller does not drive for data pairs`, {
        hint: 'shut the host down first and ask for "window": false (a copy of a drive the host writes is no consistent backup)',
      });
    }
    return want;
  }

  /** Both drives are on the controller now (a window is open, or was left open by a previous process). */
  get open(): boolean {
    return this.bs.bootSwitch.isolated;
  }

  /**
   * Runs `fn` with both drives on the controller (when `use`): a refusal to
   * shut the host down leaves everything as it was.
   */
  async run<T>(ctx: JobContext, use: boolean, fn: () => Promise<T>): Promise<T> {
    if (!use) return fn();
    const bsw = this.bs.bootSwitch;
    let hostWasOn: boolean;
    const saved = bsw.isolated ? readJsonChecked<WindowFile>(this.file) : undefined;
    if (saved) hostWasOn = saved.hostWasOn;
    else {
      hostWasOn = await bsw.hostPowered();
      writeJsonDurably(this.file, { hostWasOn, openedAt: new Date().toISOString() } satisfies WindowFile);
    }
    ctx.log('info', `sync window: ${hostWasOn ? 'shutting the host down and ' : ''}taking both drives onto the controller`);
    try {
      const r = await bsw.isolate({ signal: ctx.signal });
      if (r.changed) ctx.log('info', `both drives on the controller after ${r.totalMs} ms (host: ${r.host})`);
    } catch (e) {
      rmSync(this.file, { force: true });
      throw e;
    }
    try {
      return await fn();
    } finally {
      await this.close(hostWasOn, (m) => ctx.log('info', m));
    }
  }

  /** Gives the active bay back to the host; powers the host on when it was on before the window. */
  async close(hostWasOn: boolean, note: (m: string) => void): Promise<void> {
    const { active } = this.roles.current();
    try {
      await this.bs.bootSwitch.moveTo(active, { powerOn: hostWasOn });
      rmSync(this.file, { force: true });
      note(`sync window closed: bay ${active} back on the host${hostWasOn ? ', host powered on' : ''}`);
    } catch (e) {
      this.bus.publish('alert', { level: 'critical', code: 'window-not-closed', message: `after the copy the relays could not give bay ${active} back to the host: ${(e as Error).message}` });
      throw e;
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
