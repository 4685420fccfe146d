/**
 * Drive health from SMART: `smartctl --json -a -d sat` (the SAT pass-through
 * that USB–SATA bridges need), reduced to what an operator acts on: overall
 * verdict, reallocated and pending sectors, temperature. A simulated source
 * gives the simulated rig the same shape.
 */
import { execFile } from 'node:child_process';
import { DeviceError, NotFoundError } from '../errors.ts';
import { quirksFor, type SmartDeviceType } from './bridge-quirks.ts';
import { locateDrive } from './drive.ts';

export interface SmartReport {
  readonly device: string;
  /** passed / failed from the drive's own verdict; unknown when it gives none. */
  readonly overall: 'passed' | 'failed' | 'unknown';
  readonly reallocatedSectors: number | null;
  readonly pendingSectors: number | null;
  readonly offlineUncorrectable: number | null;
  readonly temperatureC: number | null;
  readonly powerOnHours: number | null;
  readonly model: string | null;
  readonly serial: string | null;
  /** smartctl's own messages (e.g. "unsupported field"), for the log. */
  readonly messages: string[];
  readonly readAt: string;
}

export interface SmartSource {
  read(device: string): Promise<SmartReport>;
}

interface SmartctlJson {
  smartctl?: { exit_status?: number; messages?: { string?: string; severity?: string }[] };
  model_name?: string;
  serial_number?: string;
  smart_status?: { passed?: boolean };
  temperature?: { current?: number };
  power_on_time?: { hours?: number };
  ata_smart_attributes?: { table?: { id?: number; name?: string; raw?: { value?: number } }[] };
  nvme_smart_health_information_log?: { temperature?: number; media_errors?: number; power_on_hours?: number };
}

function attr(j: SmartctlJson, id: number): number | null {
  const row = j.ata_smart_attributes?.table?.find((r) => r.id === id);
  // Vendors pack extra data into the upper bytes of some raw values; the count sits in the low 32 bits.
  return typeof row?.raw?.value === 'number' ? row.raw.value % 2 ** 32 : null;
}

/** Parses smartctl's JSON output; throws DeviceError when it carries no device data at all. */
export function parseSmartctlJson(text: string, device: string, readAt = new Date().toISOString()): SmartReport {
  let j: SmartctlJson;
  try {
    j = JSON.parse(text) as SmartctlJson;
  } catch (e) {
    throw new DeviceError(`smartctl gave no JSON for ${device}`, { cause: e, hint: 'smartctl 7 or later is needed for --json' });
  }
  const messages = (j.smartctl?.messages ?? []).map((m) => m.string ?? '').filter(Boolean);
  const status = j.smartctl?.exit_status ?? 0;
  // Bits 0 and 1: the command line was bad or the device could not be opened: there is nothing to report.
  if (status & 0b11) throw new DeviceError(`smartctl could not read ${device}: ${messages.join('; ') || `exit status ${status}`}`, { hint: 'is the drive present, and does its bridge pass SAT commands through?' });
  const nvme = j.nvme_smart_health_information_log;
  const temp = j.temperature?.current ?? nvme?.temperature;
  return {
    device,
    overall: j.smart_status?.passed === true ? 'passed' : j.smart_status?.passed === false ? 'failed' : 'unknown',
    reallocatedSectors: attr(j, 5),
    pendingSectors: attr(j, 197),
    offlineUncorrectable: attr(j, 198) ?? (typeof nvme?.media_errors === 'number' ? nvme.media_errors : null),
    temperatureC: typeof temp === 'number' ? temp : null,
    powerOnHours: j.power_on_time?.hours ?? nvme?.power_on_hours ?? null,
    model: j.model_name ?? null,
    serial: j.serial_number ?? null,
    messages,
    readAt,
  };
}

/** Runs smartctl; its exit status is a bit mask, so a non-zero status with JSON on stdout is still a report. */
export class SmartctlSource implements SmartSource {
  /**
   * `deviceType` 'auto' picks smartctl's -d per drive from the bridge it hangs
   * off (bridge-quirks.ts): most speak SAT, some only a vendor protocol.
   */
  constructor(
    private readonly binary = 'smartctl',
    private readonly deviceType: SmartDeviceType | 'auto' = 'auto',
    private readonly timeoutMs = 30_000,
  ) {}

  typeFor(device: string): SmartDeviceType {
    if (this.deviceType !== 'auto') return this.deviceType;
    try {
      const bridge = locateDrive(device).node?.bridge;
      return bridge ? quirksFor(bridge.vendorId, bridge.productId).smartType : 'sat';
    } catch {
      return 'sat';
    }
  }

  read(device: string): Promise<SmartReport> {
    return new Promise((resolve, reject) => {
      execFile(this.binary, ['--json', '-a', '-d', this.typeFor(device), device], { timeout: this.timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (err, stdout) => {
        if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
          reject(new NotFoundError(`${this.binary} is not installed`, { hint: 'install smartmontools for drive health' }));
          return;
        }
        if (!stdout) {
          reject(new DeviceError(`smartctl failed on ${device}: ${err?.message ?? 'no output'}`));
          return;
        }
        try {
          resolve(parseSmartctlJson(stdout, device));
        } catch (e) {
          reject(e);
        }
      });
    });
  }
}

export interface SimulatedSmartValues {
  overall: 'passed' | 'failed';
  reallocatedSectors: number;
  pendingSectors: number;
  temperatureC: number;
  powerOnHours: number;
  present: boolean;
}

/** Values a test or the simulated rig sets by hand, per device path. */
export class SimulatedSmartSource implements SmartSource {
  readonly values = new Map<string, SimulatedSmartValues>();

  set(device: string, values: Partial<SimulatedSmartValues>): SimulatedSmartValues {
    const v = { overall: 'passed' as const, reallocatedSectors: 0, pendingSectors: 0, temperatureC: 35, powerOnHours: 1000, present: true, ...this.values.get(device), ...values };
    this.values.set(device, v);
    return v;
  }

  async read(device: string): Promise<SmartReport> {
    const v = this.values.get(device) ?? this.set(device, {});
    if (!v.present) throw new DeviceError(`smartctl could not read ${device}: No such device`);
    return {
      device,
      overall: v.overall,
      reallocatedSectors: v.reallocatedSectors,
      pendingSectors: v.pendingSectors,
      offlineUncorrectable: v.pendingSectors,
      temperatureC: v.temperatureC,
      powerOnHours: v.powerOnHours,
      model: 'dpsr simulated drive',
      serial: null,
      messages: [],
      readAt: new Date().toISOString(),
    };
  }
}
