/**
 * Everything the boot switch tells the outside world, typed, on one emitter
 * the daemon forwards to its event stream and log.
 */
import { EventEmitter } from 'node:events';
import type { Bay } from './config.ts';
import type { FailoverState } from './failover.ts';

export type AlertLevel = 'info' | 'warning' | 'critical';

export interface AlertEvent {
  level: AlertLevel;
  /** Stable machine-readable code, e.g. 'both-bays-failed'. */
  code: string;
  message: string;
}

export interface SwitchStepEvent {
  to: Bay;
  step: string;
  /** Milliseconds since the move started, and how long this step took. */
  atMs: number;
  tookMs: number;
}

export interface BootSwitchEvents {
  relay: [{ channel: string; on: boolean }];
  button: [{ kind: 'press' | 'release' | 'short' | 'hold' | 'startup-hold'; heldMs: number }];
  'switch-step': [SwitchStepEvent];
  switched: [{ from: Bay | null; to: Bay; totalMs: number; changed: boolean }];
  failover: [{ from: Bay; to: Bay; reason: string }];
  boot: [{ bay: Bay; status: 'pending' | 'confirmed' | 'unconfirmed' }];
  state: [FailoverState];
  /** Both drives were taken off the host for a sync window. */
  isolated: [{ from: Bay | null; totalMs: number }];
  alert: [AlertEvent];
  'show-status': [];
  host: [{ powered: boolean }];
}

export class BootSwitchEmitter extends EventEmitter<BootSwitchEvents> {}
