/**
 * The contract every `Host` implementation passes (src/bootswitch/host.ts):
 * ATX button semantics, the power LED, heartbeats. Run per implementation:
 * the simulated host, the relay-driven host over the simulated board, and
 * the HIL tier's virtual machine.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Bay, Host } from '../../src/bootswitch/index.ts';

export interface HostFixture {
  host: Host;
  /** How long the power button must be held to force the host off. */
  forceOffMs: number;
  /** Longest a boot or an ACPI shutdown may take before the test gives up waiting. */
  waitMs: number;
  /** The bay the host boots from in this fixture. */
  bootBay: Bay;
  /** Makes the running OS stop answering (no heartbeats, ACPI ignored). */
  hang(): Promise<void>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A press shorter than any forced-off time. */
const SHORT_PRESS_MS = 200;

async function press(line: (pressed: boolean) => Promise<void>, ms: number): Promise<void> {
  await line(true);
  try {
    await sleep(ms);
  } finally {
    await line(false);
  }
}

async function until(what: string, ms: number, pred: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) assert.unreachable(`${what} did not happen within ${ms} ms`);
    await sleep(25);
  }
}

function nextHeartbeat(host: Host, ms: number): Promise<Bay | null> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no heartbeat within ${ms} ms`));
    }, ms);
    const off = host.onHeartbeat((bay) => {
      clearTimeout(timer);
      off();
      resolve(bay);
    });
  });
}

async function bootAndBeat(f: HostFixture): Promise<Bay | null> {
  const beat = nextHeartbeat(f.host, f.waitMs);
  await press((p) => f.host.powerButton(p), SHORT_PRESS_MS);
  return beat;
}

export function hostContract(name: string, make: () => Promise<HostFixture>): void {
  const t = suite(`Host contract: ${name}`);
  let f: HostFixture | null = null;
  t.before.each(async () => {
    f = await make();
  });
  t.after.each(async () => {
    await f?.close();
    f = null;
  });
  const fx = () => f!;

  t('an idle host is off: the power LED is dark', async () => {
    assert.is(await fx().host.powerLed(), false);
  });

  t('a short power press powers it on; the OS heartbeats with the bay it booted from', async () => {
    const bay = await bootAndBeat(fx());
    assert.is(await fx().host.powerLed(), true);
    assert.is(bay, fx().bootBay);
  });

  t('a short press asks a running OS to shut down: the LED goes dark', async () => {
    await bootAndBeat(fx());
    await press((p) => fx().host.powerButton(p), SHORT_PRESS_MS);
    await until('the ACPI shutdown', fx().waitMs, async () => !(await fx().host.powerLed()));
  });

  t('a hung OS ignores a short press; holding power for the forced-off time cuts it', async () => {
    await bootAndBeat(fx());
    await fx().hang();
    await press((p) => fx().host.powerButton(p), SHORT_PRESS_MS);
    await sleep(Math.min(1000, fx().waitMs / 4));
    assert.is(await fx().host.powerLed(), true, 'a hung OS acted on the ACPI request');
    await press((p) => fx().host.powerButton(p), fx().forceOffMs + 500);
    await until('the forced off', fx().waitMs, async () => !(await fx().host.powerLed()));
  });

  t('reset restarts a powered host: the LED stays lit and the new OS heartbeats', async () => {
    await bootAndBeat(fx());
    await fx().hang();
    const beat = nextHeartbeat(fx().host, fx().waitMs);
    await press((p) => fx().host.resetButton(p), SHORT_PRESS_MS);
    assert.is(await fx().host.powerLed(), true);
    assert.is(await beat, fx().bootBay);
  });

  t('reset does not power an off host on', async () => {
    await press((p) => fx().host.resetButton(p), SHORT_PRESS_MS);
    await sleep(Math.min(1000, fx().waitMs / 4));
    assert.is(await fx().host.powerLed(), false);
  });

  t('a listener that stopped listening hears no more heartbeats', async () => {
    let heard = 0;
    const off = fx().host.onHeartbeat(() => heard++);
    await bootAndBeat(fx());
    off();
    const before = heard;
    assert.ok(before >= 1, 'the listener heard the first heartbeat');
    await nextHeartbeat(fx().host, fx().waitMs);
    assert.is(heard, before);
  });

  t.run();
}
