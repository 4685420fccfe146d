/** The deploy files: the example config is valid, the installer stages a complete root. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { validateDaemonConfig } from '../../firmware/controller/config.ts';
import { tempDir } from '../support/images.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));

test('the example hardware config passes the daemon config validation', () => {
  const raw = parse(readFileSync(join(repo, 'deploy/config.example.yaml'), 'utf8'));
  const config = validateDaemonConfig(raw, 'deploy/config.example.yaml');
  assert.is(config.rig, 'hardware');
  assert.is(config.drives?.A, '/dev/dpsr/bay-a');
});

test('install.sh with DESTDIR stages the code, unit, rules, quirks and config', () => {
  const root = tempDir('dpsr-stage-');
  execFileSync('bash', [join(repo, 'deploy/install.sh')], { env: { ...process.env, DESTDIR: root, UDC_MODULE: 'dwc2' }, stdio: 'pipe' });
  for (const f of ['opt/dpsr/bin/dpsrd.js', 'opt/dpsr/package.json', 'opt/dpsr/dist/src/sync/engine.js', 'etc/systemd/system/dpsrd.service', 'etc/udev/rules.d/60-dpsr-bridges.rules', 'etc/modprobe.d/dpsr-usb-quirks.conf', 'etc/modules-load.d/dpsr.conf', 'etc/dpsr/config.yaml']) {
    assert.ok(existsSync(join(root, f)), `${f} staged`);
  }
  assert.not.ok(existsSync(join(root, 'opt/dpsr/test')), 'tests are not installed');
  assert.is(statSync(join(root, 'var/lib/dpsr')).mode & 0o777, 0o700);
  const unit = readFileSync(join(root, 'etc/systemd/system/dpsrd.service'), 'utf8');
  assert.match(unit, /ExecStart=\/opt\/dpsr\/bin\/dpsrd\.js --config \/etc\/dpsr\/config\.yaml/);
  assert.match(unit, /KillSignal=SIGINT/);
  const exportUnit = readFileSync(join(root, 'etc/systemd/system/dpsr-export@.service'), 'utf8');
  assert.match(exportUnit, /^ExecStart=\/opt\/dpsr\/deploy\/dpsr-io-flusher \/opt\/dpsr\/deploy\/dpsr-nbd-listen \/usr\/bin\/qemu-storage-daemon /m);
  assert.ok(statSync(join(root, 'opt/dpsr/deploy/dpsr-io-flusher')).mode & 0o111, 'the IO_FLUSHER wrapper is executable');
  assert.ok(statSync(join(root, 'opt/dpsr/deploy/dpsr-nbd-listen')).mode & 0o111, 'the NBD listener launcher is executable');
  // Inline mode's host link: its modules loaded at boot by systemd-modules-load, the board's USB device controller's too.
  const modules = (f: string) => readFileSync(join(root, 'etc/modules-load.d', f), 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
  assert.equal(modules('dpsr.conf'), ['nbd', 'libcomposite', 'usb_f_mass_storage']);
  assert.equal(modules('dpsr-udc.conf'), ['dwc2']);
});

test('install.sh refuses a UDC_MODULE that is not a module name, before anything is staged', () => {
  const root = tempDir('dpsr-stage-');
  const r = spawnSync('bash', [join(repo, 'deploy/install.sh')], { env: { ...process.env, DESTDIR: root, UDC_MODULE: 'dwc2; rm -rf /' }, encoding: 'utf8' });
  assert.is(r.status, 2);
  assert.match(r.stderr, /UDC_MODULE is 'dwc2; rm -rf \/'; allowed: a kernel module name/);
  assert.not.ok(existsSync(join(root, 'etc')), 'nothing staged');
});

test('the udev rules keep bays from being automounted', () => {
  const rules = readFileSync(join(repo, 'deploy/60-dpsr-bridges.rules'), 'utf8');
  assert.match(rules, /UDISKS_IGNORE}="1"/);
  assert.match(rules, /SYMLINK\+="dpsr\/bay-a"/);
});

test.run();
