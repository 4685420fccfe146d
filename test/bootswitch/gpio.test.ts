/**
 * GPIO: the chip-base lookup runs on a temp dir; onoff itself hard-codes
 * /sys/class/gpio, so its test re-runs this file inside a private mount
 * namespace with a tmpfs over /sys/class holding a fake, pre-exported tree.
 * (A fake tree has no kernel behind it: "export" is not acted upon, and
 * edge interrupts cannot be tested; inputs are polled above the driver.)
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { listChips, resolveLine } from '../../src/bootswitch/index.ts';
import { NotFoundError } from '../../src/errors.ts';
import { requireEnv } from '../support/require.ts';
import { CHIPS, fakeTree, IN_FAKE_SYSFS, runInFakeSysfs } from './support/fake-sysfs-gpio.ts';

if (IN_FAKE_SYSFS) {
  // Inside the namespace: /sys/class is our tmpfs.
  const { GpioDriver } = await import('../../src/bootswitch/gpio.ts');
  const root = '/sys/class/gpio';
  test('onoff: claim, write, read back, read inputs on the looked-up line numbers', async () => {
    fakeTree(root, CHIPS, [529, 539, 585]);
    const d = await GpioDriver.open({ driver: 'gpio', chip: 'pinctrl-bcm2711' });
    const out = await d.output(17, true); // 512 + 17
    assert.is(readFileSync(`${root}/gpio529/direction`, 'utf8').trim(), 'high', 'level set with the direction, no glitch');
    await out.write(false);
    assert.is(readFileSync(`${root}/gpio529/value`, 'utf8').trim(), '0');
    await out.write(true);
    assert.is(await out.read(), true);
    const inp = await d.input(27); // 539
    writeFileSync(`${root}/gpio539/value`, '1');
    assert.is(await inp.read(), true);
    writeFileSync(`${root}/gpio539/value`, '0');
    assert.is(await inp.read(), false);
    writeFileSync(`${root}/gpio529/direction`, 'out');
    assert.is(await d.peek(17), true);
    assert.is(await d.peek(27), null);
    await d.close();
  });
  test.run();
} else {
  test('chip base is looked up by label, never assumed', () => {
    const root = mkdtempSync(join(tmpdir(), 'dpsr-gpio-'));
    try {
      fakeTree(root, CHIPS);
      assert.equal(listChips(root).map((c) => c.label), ['pinctrl-bcm2711', 'raspberrypi-exp-gpio']);
      assert.is(resolveLine('pinctrl-bcm2711', 17, root), 529);
      assert.is(resolveLine('raspberrypi-exp-gpio', 2, root), 572);
      assert.throws(() => resolveLine('pinctrl-bcm2835', 17, root), (e: unknown) => e instanceof NotFoundError && /pinctrl-bcm2711 \(base 512\)/.test(String((e as NotFoundError).hint)));
      assert.throws(() => resolveLine('pinctrl-bcm2711', 58, root), /lines 0-57/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('onoff against a fake sysfs tree (private mount namespace)', () => {
    if (!requireEnv('onoff fake-sysfs test', { tools: ['unshare', 'mount'], root: true })) return;
    const { status, out } = runInFakeSysfs(fileURLToPath(import.meta.url));
    assert.is(status, 0, out);
    assert.match(out, /Passed:\s+1/, out);
  });
  test.run();
}
