/**
 * The failover state machine as a pure reducer: (state, event) → (state,
 * actions). It decides; failover-shell.ts carries the actions out and
 * persists the state. Times are wall-clock milliseconds carried in the
 * events, so the reducer never reads a clock and a persisted deadline still
 * means something after a controller restart.
 *
 * The rules it keeps: a boot uses up a try until the host confirms it with a
 * heartbeat; at zero tries the standby takes over, only when it holds a
 * consistent copy and has not failed itself; a bay that was failed away from
 * stays failed until an operator clears it, so the machine fails over at
 * most once per bay and never loops; with both bays failed it halts and
 * raises an alert.
 */
import { BadInputError } from '../errors.ts';
import type { Bay, FailoverConfig } from './config.ts';
import type { AlertLevel } from './events.ts';

export interface FailoverState {
  active: Bay;
  standby: Bay;
  triesLeft: Record<Bay, number>;
  failed: Record<Bay, boolean>;
  /** The drive in that bay holds a complete, consistent copy (reported by the sync engine). */
  consistent: Record<Bay, boolean>;
  /** A boot that has not been confirmed yet, with its wall-clock deadline. */
  pendingBoot: { bay: Bay; deadline: number } | null;
  /** A failover whose switch has been ordered but not reported back. */
  switching: { from: Bay; to: Bay; reason: string; hardOff: boolean } | null;
  /** Why automatic action stopped; null while running normally. */
  halted: string | null;
  failovers: number;
}

export type FailoverSource = 'button' | 'api' | 'policy';

export type FailoverEvent =
  | { type: 'startup'; at: number; buttonHeld: boolean; relayBay: Bay | null }
  /** `ours`: the controller itself shut the host down (a move or sync window of any port), named. */
  | { type: 'host-power'; at: number; on: boolean; ours?: string }
  /** The host was reset (reset line pulsed): a new boot starts without the power LED changing. */
  | { type: 'host-reset'; at: number }
  | { type: 'heartbeat'; at: number }
  /**
   * The host's agent says its OS is shutting down cleanly (a shutdown from
   * the OS menu or the case button: the agent's stop hook, or its SIGTERM).
   * A power cut sends none.
   */
  | { type: 'host-shutting-down'; at: number }
  | { type: 'tick'; at: number }
  | { type: 'failover-request'; at: number; source: FailoverSource; hardOff?: boolean }
  | { type: 'switch-result'; at: number; to: Bay; ok: boolean; bay: Bay | null; refused?: boolean; error?: string }
  | { type: 'consistency'; at: number; bay: Bay; consistent: boolean }
  | { type: 'drive-replaced'; at: number; bay: Bay }
  | { type: 'reset'; at: number }
  | { type: 'button-short'; at: number };

export type FailoverAction =
  | { type: 'switch'; to: Bay; hardOff: boolean; reason: string }
  | { type: 'power-on' }
  /** Retry the boot on the same bay: the host is hung or off. */
  | { type: 'retry-boot'; bay: Bay }
  | { type: 'alert'; level: AlertLevel; code: string; message: string }
  | { type: 'boot'; bay: Bay; status: 'pending' | 'confirmed' | 'unconfirmed' }
  | { type: 'failover'; from: Bay; to: Bay; reason: string }
  | { type: 'show-status' };

export interface Step {
  state: FailoverState;
  actions: FailoverAction[];
}

const other = (b: Bay): Bay => (b === 'A' ? 'B' : 'A');

export function initialFailoverState(cfg: Pick<FailoverConfig, 'bootTries'>, active: Bay = 'A'): FailoverState {
  return {
    active,
    standby: other(active),
    triesLeft: { A: cfg.bootTries, B: cfg.bootTries },
    failed: { A: false, B: false },
    // The active drive is what the host runs; the standby is unproven until a sync completes.
    consistent: { A: active === 'A', B: active === 'B' },
    pendingBoot: null,
    switching: null,
    halted: null,
    failovers: 0,
  };
}

export function reduce(cfg: FailoverConfig, state: FailoverState, event: FailoverEvent): Step {
  const s: FailoverState = structuredClone(state);
  const actions: FailoverAction[] = [];
  const alert = (level: AlertLevel, code: string, message: string) => actions.push({ type: 'alert', level, code, message });

  const attemptFailover = (reason: string, hardOff: boolean, automatic: boolean) => {
    if (s.switching) return;
    const from = s.active;
    const to = s.standby;
    if (s.halted) {
      alert('warning', 'failover-halted', `failover not started: automatic failover is halted (${s.halted}); clear it first`);
      return;
    }
    if (s.failed[to]) {
      const why = `both bays failed (bay ${from}: ${reason}; bay ${to} had failed before)`;
      if (automatic) {
        s.halted = why;
        alert('critical', 'both-bays-failed', `${why}: stopped, no further automatic switching`);
      } else alert('warning', 'failover-refused', `failover to bay ${to} refused: that bay has failed before`);
      return;
    }
    if (!s.consistent[to]) {
      const why = `standby bay ${to} holds no consistent copy`;
      if (automatic) {
        s.halted = why;
        alert('critical', 'standby-inconsistent', `bay ${from} failed (${reason}) and ${why}: stopped, not failing over`);
      } else alert('warning', 'failover-refused', `failover refused: ${why}; finish a sync first`);
      return;
    }
    s.switching = { from, to, reason, hardOff };
    s.pendingBoot = null;
    actions.push({ type: 'switch', to, hardOff, reason });
    alert('warning', 'failover-started', `failing over from bay ${from} to bay ${to}: ${reason}`);
  };

  const unconfirmed = (why: string) => {
    const bay = s.pendingBoot!.bay;
    s.pendingBoot = null;
    actions.push({ type: 'boot', bay, status: 'unconfirmed' });
    if (bay !== s.active) return;
    if (s.triesLeft[bay] > 0) {
      alert('warning', 'boot-unconfirmed', `boot from bay ${bay} not confirmed (${why}); ${s.triesLeft[bay]} tries left, retrying`);
      actions.push({ type: 'retry-boot', bay });
    } else {
      s.failed[bay] = true;
      // The OS never came up, so forcing the host off loses nothing.
      attemptFailover(`boot from bay ${bay} not confirmed after ${cfg.bootTries} tries (${why})`, true, true);
    }
  };

  switch (event.type) {
    case 'startup': {
      if (event.buttonHeld) {
        s.halted = null;
        s.failed = { A: false, B: false };
        s.triesLeft = { A: cfg.bootTries, B: cfg.bootTries };
        s.pendingBoot = null;
        alert('info', 'recovery-gesture', 'button held at start-up: failure marks and halt cleared, boot tries reset; boot selection unchanged');
      }
      if (s.switching) {
        if (event.relayBay === s.switching.to) {
          // The move finished but the controller stopped before hearing so.
          s.active = s.switching.to;
          s.standby = other(s.active);
          s.failed[s.switching.from] = true;
          s.triesLeft[s.active] = cfg.bootTries;
          s.failovers++;
          actions.push({ type: 'failover', from: s.switching.from, to: s.active, reason: s.switching.reason });
          s.switching = null;
        } else {
          actions.push({ type: 'switch', to: s.switching.to, hardOff: s.switching.hardOff, reason: `resumed after restart: ${s.switching.reason}` });
        }
      } else if (event.relayBay !== null && event.relayBay !== s.active) {
        alert('warning', 'active-adopted', `relays select bay ${event.relayBay} but bay ${s.active} was recorded active; following the relays`);
        s.active = event.relayBay;
        s.standby = other(event.relayBay);
        s.pendingBoot = null;
      } else if (event.relayBay === null) {
        s.halted = s.halted ?? 'relays select no bay after a switch fault';
        alert('critical', 'no-boot-bay', 'the relays select no bay: a switch failed; repair, then clear the halt');
      }
      break;
    }
    case 'host-reset':
    case 'host-power': {
      if (s.switching) break; // our own shutdown for the move
      if (event.type === 'host-power' && !event.on && event.ours && s.pendingBoot) {
        // The controller shut the host down (another port's move, a window): the boot it cut short failed nothing.
        const bay = s.pendingBoot.bay;
        s.pendingBoot = null;
        s.triesLeft[bay] = Math.min(cfg.bootTries, s.triesLeft[bay] + 1);
        break;
      }
      if (event.type === 'host-reset' || event.on) {
        if (s.halted) break;
        const bay = s.active;
        s.triesLeft[bay] = Math.max(0, s.triesLeft[bay] - 1);
        s.pendingBoot = { bay, deadline: event.at + cfg.confirmTimeoutMs };
        actions.push({ type: 'boot', bay, status: 'pending' });
      } else if (s.pendingBoot) {
        unconfirmed('host powered off before confirming its boot');
      }
      break;
    }
    case 'host-shutting-down': {
      // The OS came up far enough to shut itself down cleanly: the power-off that follows is no failed boot, and the try is given back.
      if (s.pendingBoot && !s.switching) {
        const bay = s.pendingBoot.bay;
        s.pendingBoot = null;
        s.triesLeft[bay] = Math.min(cfg.bootTries, s.triesLeft[bay] + 1);
        alert('info', 'boot-shut-down', `the host's OS shut down cleanly before confirming its boot from bay ${bay}: not counted as a failed boot`);
      }
      break;
    }
    case 'heartbeat': {
      if (s.pendingBoot && !s.switching) {
        const bay = s.pendingBoot.bay;
        s.pendingBoot = null;
        s.triesLeft[bay] = cfg.bootTries;
        actions.push({ type: 'boot', bay, status: 'confirmed' });
      }
      break;
    }
    case 'tick': {
      if (s.pendingBoot && !s.switching && event.at >= s.pendingBoot.deadline) {
        unconfirmed(`no heartbeat within ${cfg.confirmTimeoutMs} ms`);
      }
      break;
    }
    case 'failover-request': {
      const hardOff = event.hardOff ?? (event.source === 'button' ? cfg.hardOffOnButton : false);
      attemptFailover(`requested by ${event.source}`, hardOff, false);
      break;
    }
    case 'switch-result': {
      const sw = s.switching;
      if (!sw || sw.to !== event.to) break;
      s.switching = null;
      if (event.ok) {
        s.active = sw.to;
        s.standby = sw.from;
        s.failed[sw.from] = true;
        s.triesLeft[sw.to] = cfg.bootTries;
        s.failovers++;
        actions.push({ type: 'failover', from: sw.from, to: sw.to, reason: sw.reason });
        actions.push({ type: 'power-on' });
      } else if (event.refused) {
        alert('warning', 'failover-refused', `failover to bay ${sw.to} not done: ${event.error ?? 'refused'}`);
      } else {
        s.halted = `switch to bay ${sw.to} failed: ${event.error ?? 'device error'}`;
        if (event.bay !== null && event.bay !== s.active) {
          s.active = event.bay;
          s.standby = other(event.bay);
        }
        alert('critical', 'switch-failed', `${s.halted}; relays now select ${event.bay ?? 'no bay'}; stopped`);
      }
      break;
    }
    case 'consistency':
      s.consistent[event.bay] = event.consistent;
      break;
    case 'drive-replaced':
      s.failed[event.bay] = false;
      s.consistent[event.bay] = false;
      s.triesLeft[event.bay] = cfg.bootTries;
      break;
    case 'reset':
      s.halted = null;
      s.failed = { A: false, B: false };
      s.triesLeft = { A: cfg.bootTries, B: cfg.bootTries };
      break;
    case 'button-short':
      actions.push({ type: 'show-status' });
      break;
  }
  return { state: s, actions };
}

export function validateFailoverState(raw: unknown): FailoverState {
  const r = raw as FailoverState;
  const fail = (what: string): never => {
    throw new BadInputError(`failover state: ${what}`);
  };
  const isBay = (b: unknown): b is Bay => b === 'A' || b === 'B';
  const pair = (v: unknown, kind: 'number' | 'boolean', name: string) => {
    if (typeof v !== 'object' || v === null) fail(`${name} missing`);
    for (const b of ['A', 'B'] as const) if (typeof (v as Record<string, unknown>)[b] !== kind) fail(`${name}.${b} is not a ${kind}`);
  };
  if (typeof r !== 'object' || r === null) fail('not an object');
  if (!isBay(r.active) || !isBay(r.standby) || r.active === r.standby) fail(`active ${r.active} / standby ${r.standby} must be A and B`);
  pair(r.triesLeft, 'number', 'triesLeft');
  pair(r.failed, 'boolean', 'failed');
  pair(r.consistent, 'boolean', 'consistent');
  if (r.pendingBoot !== null && (typeof r.pendingBoot !== 'object' || !isBay(r.pendingBoot.bay) || typeof r.pendingBoot.deadline !== 'number')) fail('bad pendingBoot');
  if (r.switching !== null && (typeof r.switching !== 'object' || !isBay(r.switching.to) || !isBay(r.switching.from) || typeof r.switching.hardOff !== 'boolean')) fail('bad switching');
  if (!(r.halted === null || typeof r.halted === 'string')) fail('halted must be a string or null');
  if (!Number.isInteger(r.failovers) || r.failovers < 0) fail('failovers must be a non-negative integer');
  return structuredClone(r);
}
