/**
 * Finding a GPIO chip's sysfs base number by its label. The base is not a
 * constant: it moved from 0 to 512 on newer kernels for the same header
 * pins, so a hard-coded number would drive the wrong line.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceError, NotFoundError } from '../errors.ts';

export interface GpioChipInfo {
  name: string;
  label: string;
  base: number;
  ngpio: number;
}

export const SYSFS_GPIO = '/sys/class/gpio';

export function listChips(root = SYSFS_GPIO): GpioChipInfo[] {
  let names: string[];
  try {
    names = readdirSync(root).filter((n) => /^gpiochip\d+$/.test(n));
  } catch (e) {
    throw new DeviceError(`cannot list GPIO chips in ${root}: ${(e as Error).message}`, { cause: e, hint: 'is the kernel built with CONFIG_GPIO_SYSFS?' });
  }
  return names
    .map((name) => {
      const read = (f: string) => readFileSync(join(root, name, f), 'utf8').trim();
      const base = Number(read('base'));
      const ngpio = Number(read('ngpio'));
      if (!Number.isInteger(base) || !Number.isInteger(ngpio)) throw new DeviceError(`${join(root, name)}: unreadable base/ngpio`);
      return { name, label: read('label'), base, ngpio };
    })
    .sort((a, b) => a.base - b.base);
}

/** The sysfs number of `line` on the chip labelled `label`. */
export function resolveLine(label: string, line: number, root = SYSFS_GPIO): number {
  const chips = listChips(root);
  const chip = chips.find((c) => c.label === label);
  if (!chip) {
    throw new NotFoundError(`no GPIO chip labelled ${JSON.stringify(label)} in ${root}`, {
      hint: `chips present: ${chips.map((c) => `${c.label} (base ${c.base})`).join(', ') || 'none'}`,
    });
  }
  if (line < 0 || line >= chip.ngpio) throw new NotFoundError(`GPIO chip ${label} has lines 0-${chip.ngpio - 1}; line ${line} does not exist`);
  return chip.base + line;
}
