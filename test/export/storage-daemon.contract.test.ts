/**
 * The StorageDaemon contract (support/daemon-contract.ts) run against both
 * ways of running qemu-storage-daemon: a child process, and the shipped
 * systemd unit (deploy/dpsr-export@.service) under a real systemd in its own
 * namespaces (systemd is not this machine's init).
 */
import { test } from 'uvu';
import { join } from 'node:path';
import { ChildDaemonProcess, SystemdDaemonProcess } from '../../src/export/index.ts';
import { storageDaemonContract } from './support/daemon-contract.ts';
import { tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { canSandboxSystemd, installExportUnit, startSystemdSandbox } from '../support/systemd-sandbox.ts';

const tools = { tools: ['qemu-storage-daemon', 'qemu-img'] };

storageDaemonContract('child process', async () => {
  if (!requireEnv('StorageDaemon contract (child)', tools)) return null;
  const dir = tempDir('dpsr-qsd-child-');
  return { dir, process: (name) => new ChildDaemonProcess(join(dir, name, 'qmp.sock')), cleanup: async () => {} };
});

storageDaemonContract('systemd unit', async () => {
  if (!requireEnv('StorageDaemon contract (systemd)', { tools: [...tools.tools, 'python3'], root: true }) || !canSandboxSystemd('StorageDaemon contract (systemd)')) return null;
  const dir = tempDir('dpsr-qsd-unit-');
  const units = join(dir, 'units');
  installExportUnit(units, dir);
  const sb = await startSystemdSandbox(units);
  return {
    dir,
    process: (name) => new SystemdDaemonProcess({ unit: `dpsr-export@${name}.service`, qmpSocket: `${sb.root}/run/dpsr-export/${name}/qmp.sock`, systemctl: sb.systemctl, journalctl: null }),
    cleanup: () => sb.close(),
    unit: (name) => {
      const kv = Object.fromEntries(sb.run('show', `dpsr-export@${name}.service`, '-p', 'ActiveState', '-p', 'NRestarts').trim().split('\n').map((l) => l.split('=')));
      return { active: kv.ActiveState === 'active', restarts: Number(kv.NRestarts) };
    },
  };
});

test.run();
