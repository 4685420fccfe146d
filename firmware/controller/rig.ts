/**
 * The rig: what the controller is attached to. The hardware rig is real
 * drives on their bridges, smartctl, the relay board and panel chips of the
 * config; the simulated rig (sim/rig.ts) is image-file drives, a simulated
 * board, panel chips and host, and its own HTTP controls. The controller
 * never asks which one runs; config `rig` picks it.
 */
import type { Bay, I2cBus, SimBoard } from '../../src/bootswitch/index.ts';
import type { SmartSource } from '../../src/sata-bridge/index.ts';
import type { HostDisk } from '../../src/export/index.ts';
import type { RigBays } from './roles.ts';
import type { BayName, PairConfig } from './pair-config.ts';
import type { Route } from './http-server.ts';
import type { Controller } from './controller.ts';

/** The front panel's chips: the I2C bus, the OLED's address, the INA219 rail monitors. */
export interface PanelChips {
  i2c: I2cBus;
  oledAddress: number | undefined;
  rails: { bay: Bay; address: number; shuntOhms: number }[];
  /** The drive power relay of `bay` is closed (`on`) or open: simulated rails follow it. */
  drivePower?(bay: Bay, on: boolean): void;
}

export interface Rig {
  /** Where each bay's drive is and how to open it. */
  readonly bays: RigBays;
  /** SMART data of the drives. */
  readonly smart: SmartSource;
  /** The device to ask SMART about for a bay, or null when the bay is empty. */
  smartDevice(bay: BayName): string | null;
  /** The simulated board the boot switch's 'sim' channels use, if this rig has one. */
  readonly board?: SimBoard;
  /** What the rig says when it starts (created drives), or null. */
  readonly banner: string | null;
  /** The front panel's chips, or null when the rig has no panel. */
  panelChips(): Promise<PanelChips | null>;
  /** A completed copy made this bay's drive a bootable system. */
  markBootable(bay: BayName): void;
  /** The rig's own facts about the host, added to the status. */
  hostStatus(): Record<string, unknown>;
  /**
   * In inline mode, what makes the host see `pair`'s export as its disk (the
   * board's USB gadget, the simulated host's NBD connection), or null when
   * the host reaches the export itself (network boot).
   */
  hostDisk?(pair: PairConfig): HostDisk | null;
  /** The rig's HTTP routes (the simulator's controls); none on hardware. */
  routes(ctl: Controller): Route[];
  /** Called once the controller has started (after start-up recovery): heartbeats, first clone, host power. */
  start(ctl: Controller): Promise<void>;
  stop(): Promise<void>;
}
