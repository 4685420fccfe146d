/**
 * Which relay state means which boot bay. The wiring is fail-safe: with
 * every coil released, bay A reaches the host and both drives are powered.
 * K_MUX_A energised moves bay A to the controller's bridge; K_MUX_B
 * energised moves bay B to the host; K_PWR_x energised cuts that drive's power.
 */
import type { Bay } from './config.ts';

export interface SwitchRelays {
  muxA: boolean;
  muxB: boolean;
  pwrA: boolean;
  pwrB: boolean;
}

export const SWITCH_RELAYS = ['muxA', 'muxB', 'pwrA', 'pwrB'] as const;

export function patternFor(bay: Bay): SwitchRelays {
  return bay === 'A' ? { muxA: false, muxB: false, pwrA: false, pwrB: false } : { muxA: true, muxB: true, pwrA: false, pwrB: false };
}

/** Neither bay on the host, both on the controller's bridges: the sync window of switched mode. */
export const ISOLATED: SwitchRelays = { muxA: true, muxB: false, pwrA: false, pwrB: false };

/** Bays whose drive the relays connect to the host port. */
export function baysOnHost(r: Pick<SwitchRelays, 'muxA' | 'muxB'>): Bay[] {
  const out: Bay[] = [];
  if (!r.muxA) out.push('A');
  if (r.muxB) out.push('B');
  return out;
}

/** The boot bay a relay state selects, or null when it selects none or both. */
export function bayOf(r: SwitchRelays): Bay | null {
  const on = baysOnHost(r);
  return on.length === 1 ? on[0] : null;
}

export function samePattern(a: SwitchRelays, b: SwitchRelays): boolean {
  return SWITCH_RELAYS.every((k) => a[k] === b[k]);
}
