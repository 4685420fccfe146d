/**
 * A fake /sys/class/gpio tree: chips with their label, base and ngpio, and
 * lines already exported (a fake tree has no kernel to act on "export").
 * `kernelGpio` adds the one thing the kernel does that the driver relies on:
 * writing "high"/"low" to `direction` makes the line an output at that level
 * ("out" and the value, as the kernel then shows it).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Gpio } from 'onoff';

export interface FakeChip {
  name: string;
  label: string;
  base: number;
  ngpio: number;
}

export const CHIPS: FakeChip[] = [
  { name: 'gpiochip512', label: 'pinctrl-bcm2711', base: 512, ngpio: 58 },
  { name: 'gpiochip570', label: 'raspberrypi-exp-gpio', base: 570, ngpio: 8 },
];

export function fakeTree(root: string, chips: FakeChip[], exported: number[] = []): void {
  for (const c of chips) {
    mkdirSync(join(root, c.name), { recursive: true });
    writeFileSync(join(root, c.name, 'label'), `${c.label}\n`);
    writeFileSync(join(root, c.name, 'base'), `${c.base}\n`);
    writeFileSync(join(root, c.name, 'ngpio'), `${c.ngpio}\n`);
  }
  writeFileSync(join(root, 'export'), '');
  writeFileSync(join(root, 'unexport'), '');
  for (const n of exported) {
    mkdirSync(join(root, `gpio${n}`), { recursive: true });
    for (const [f, v] of [['value', '0'], ['direction', 'in'], ['active_low', '0'], ['edge', 'none']]) writeFileSync(join(root, `gpio${n}`, f), `${v}\n`);
  }
}

/**
 * onoff's Gpio with the kernel's answer to a direction write played on the
 * fake tree (onoff's own `_gpioPath` says where the line's files are).
 */
export function kernelGpio(OnoffGpio: typeof Gpio): typeof Gpio {
  return class extends OnoffGpio {
    override setDirection(direction: 'in' | 'out' | 'high' | 'low'): void {
      super.setDirection(direction);
      const dir = (this as unknown as { _gpioPath: string })._gpioPath;
      if (direction === 'high' || direction === 'low') {
        writeFileSync(join(dir, 'direction'), 'out\n');
        writeFileSync(join(dir, 'value'), direction === 'high' ? '1\n' : '0\n');
      }
    }
  } as typeof Gpio;
}

/** Set in the re-executed test file: it runs inside the private mount namespace. */
export const IN_FAKE_SYSFS = process.env.DPSR_GPIO_NS === '1';

/**
 * Re-runs the test file `self` inside a private mount namespace with a tmpfs
 * over /sys/class and an empty /sys/class/gpio (onoff hard-codes that path);
 * there `IN_FAKE_SYSFS` is true. Needs root and unshare. Returns the exit
 * status and everything the run printed.
 */
export function runInFakeSysfs(self: string): { status: number | null; out: string } {
  const script = `mount -t tmpfs dpsr-fake-sys /sys/class && mkdir /sys/class/gpio && exec "${process.execPath}" --import tsx "${self}"`;
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
    env: { ...process.env, DPSR_GPIO_NS: '1' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}
