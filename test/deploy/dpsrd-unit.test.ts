/**
 * dpsrd's unit (deploy/dpsrd.service) lets the daemon do what inline mode's
 * host link needs: configure the USB mass-storage gadget in configfs
 * (/sys/kernel/config) under its sandboxing. Checked from the unit's text,
 * and under a real systemd with the unit's own sandboxing directives: a
 * service with them writes into a filesystem mounted at /sys/kernel/config
 * (a tmpfs standing in for configfs, which this machine's kernel lacks) and
 * cannot write to /usr.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { tempDir } from '../support/images.ts';
import { canSandboxSystemd, startSystemdSandbox } from '../support/systemd-sandbox.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const unit = readFileSync(join(repo, 'deploy/dpsrd.service'), 'utf8');

/** The [Service] section's settings, each key with all its values (later lines add to earlier ones). */
function serviceSettings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      continue;
    }
    if (section !== 'Service') continue;
    const at = line.indexOf('=');
    const key = line.slice(0, at).trim();
    out.set(key, [...(out.get(key) ?? []), line.slice(at + 1).trim()]);
  }
  return out;
}

const settings = serviceSettings(unit);
const yes = (v: string | undefined) => v !== undefined && /^(yes|true|on|1|strict|full)$/i.test(v);

test('the unit keeps configfs writable: /sys/kernel/config is a ReadWritePaths entry, /sys is not made read-only', () => {
  assert.is(settings.get('ProtectSystem')?.at(-1), 'strict');
  const rw = (settings.get('ReadWritePaths') ?? []).flatMap((v) => v.split(/\s+/)).map((p) => p.replace(/^-/, ''));
  assert.ok(rw.includes('/sys/kernel/config'), `ReadWritePaths: ${rw.join(' ')}`);
  // ProtectKernelTunables makes /sys read-only; PrivateDevices and friends would hide /dev/nbdN.
  assert.not.ok(yes(settings.get('ProtectKernelTunables')?.at(-1)) && !rw.includes('/sys/kernel/config'));
  assert.not.ok(yes(settings.get('PrivateDevices')?.at(-1)), 'the nbd device and the raw drives are in /dev');
  // dpsr-nbd-attach talks to the kernel's nbd driver over generic netlink.
  assert.match(settings.get('RestrictAddressFamilies')?.at(-1) ?? '', /AF_NETLINK/);
});

test('under systemd, a service with the unit\'s sandboxing writes into /sys/kernel/config, /run/dpsr-export and the drive locks\' /run/dpsr/locks, not into /usr', async () => {
  if (!canSandboxSystemd('running dpsrd\'s sandboxing under systemd')) return;
  const dir = tempDir('dpsr-dpsrd-unit-');
  const units = join(dir, 'units');
  const sb = await startSystemdSandbox(units);
  try {
    // The sandbox's own mount namespace: /sys/kernel gets a tmpfs with a "config" mount in it, as configfs is.
    const inNs = (...cmd: string[]) => execFileSync('nsenter', ['-t', String(sb.pid), '-m', ...cmd], { encoding: 'utf8' });
    inNs('mount', '-t', 'tmpfs', 'kernel', '/sys/kernel');
    inNs('mkdir', '/sys/kernel/config');
    inNs('mount', '-t', 'tmpfs', 'configfs-stand-in', '/sys/kernel/config');
    const sandboxing = ['StateDirectory', 'ProtectSystem', 'ReadWritePaths', 'ProtectHome', 'PrivateTmp', 'NoNewPrivileges', 'ProtectKernelModules', 'ProtectKernelTunables', 'ProtectControlGroups', 'PrivateDevices', 'RestrictAddressFamilies', 'LockPersonality'];
    const lines = sandboxing.flatMap((k) => (settings.get(k) ?? []).map((v) => `${k}=${v}`));
    const probe = 'mkdir /sys/kernel/config/usb_gadget-probe && echo configfs=ok || echo configfs=refused; touch /usr/dpsr-probe 2>/dev/null && echo usr=written || echo usr=refused; mkdir -p /run/dpsr-export && echo x >/run/dpsr-export/probe.env && echo run=ok || echo run=refused; mkdir -p /run/dpsr/locks && flock --nonblock /run/dpsr/locks/block-probe true && echo locks=ok || echo locks=refused';
    writeFileSync(join(units, 'probe.service'), `[Unit]\nDefaultDependencies=no\n[Service]\nType=oneshot\nExecStart=/bin/sh -c '{ ${probe}; } >/run/probe.out 2>&1'\n${lines.join('\n')}\n`);
    sb.reload();
    try {
      sb.run('start', 'probe.service');
    } catch (e) {
      let status = '';
      try {
        status = sb.run('status', '--no-pager', '-l', 'probe.service');
      } catch (s) {
        status = (s as { stdout?: string }).stdout ?? '';
      }
      throw new Error(`the probe did not run under the unit's sandboxing: ${status}`, { cause: e });
    }
    const out = join(sb.root, 'run/probe.out');
    for (let i = 0; i < 100 && !existsSync(out); i++) await sleep(50);
    const got = readFileSync(out, 'utf8');
    assert.match(got, /configfs=ok/, got);
    assert.match(got, /usr=refused/, got);
    // The export unit's EnvironmentFile (the NBD server's TCP address), written before each start.
    assert.match(got, /run=ok/, got);
    // The drive locks' files, which every dpsr on the machine flocks (src/sync/pair-lock.ts DRIVE_LOCK_DIR).
    assert.match(got, /locks=ok/, got);
  } finally {
    await sb.close();
  }
});

test.run();
