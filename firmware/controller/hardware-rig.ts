/**
 * The hardware rig: the drives of config `drives` (by a stable path that
 * names the bay), smartctl for their health, and the panel chips on the I2C
 * bus of config `bootswitch.i2c`. The relay board itself is the boot
 * switch's (config `bootswitch`).
 */
import { existsSync } from 'node:fs';
import { defaultOpenI2c, type Bay } from '../../src/bootswitch/index.ts';
import { SmartctlSource } from '../../src/sata-bridge/index.ts';
import { UsbGadgetDisk, type HostDisk } from '../../src/export/index.ts';
import type { DaemonConfig } from './config.ts';
import type { BayName, PairConfig } from './pair-config.ts';
import type { PanelChips, Rig } from './rig.ts';
import type { RigBays } from './roles.ts';

export class HardwareRig implements Rig {
  readonly bays: RigBays;
  readonly smart: SmartctlSource;
  readonly banner = null;

  constructor(private readonly config: DaemonConfig) {
    const drives = config.drives as Partial<Record<BayName, string>>;
    this.bays = {
      path: (bay) => {
        const p = drives[bay];
        return p && existsSync(p) ? p : null;
      },
    };
    this.smart = new SmartctlSource(config.health.smartctl);
  }

  smartDevice(bay: BayName): string | null {
    return this.bays.path(bay);
  }

  async panelChips(): Promise<PanelChips | null> {
    const c = this.config.bootswitch.i2c;
    if (!c || (!c.oled && !(c.ina219 ?? []).length)) return null;
    return {
      i2c: await defaultOpenI2c(c.bus),
      oledAddress: c.oled?.address,
      rails: (c.ina219 ?? []).map((r) => ({ bay: r.bay, address: r.address, shuntOhms: r.shuntOhms })),
    };
  }

  /** The boot pair's export as the host's USB disk (config inline.usbGadget); a data pair's host reaches its export over the network. */
  hostDisk(pair: PairConfig): HostDisk | null {
    const g = this.config.inline.usbGadget;
    if (this.config.mode !== 'inline' || !g || pair.role !== 'boot') return null;
    return new UsbGadgetDisk({ udc: g.udc, nbdDevice: g.nbdDevice, serial: g.serial, configfs: g.configfs, deadTimeoutSeconds: g.deadConnectionSeconds });
  }

  /** A real drive needs no mark: it boots or it does not. */
  markBootable(): void {}

  hostStatus(): Record<string, unknown> {
    return {};
  }

  routes(): [] {
    return [];
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {}
}
