/**
 * A real systemd (the machine's /lib/systemd/systemd) as PID 1 of its own
 * pid, mount, UTS and IPC namespaces, for testing units where systemd is not
 * the machine's init. It loads units only from a directory of the test's
 * (SYSTEMD_UNIT_PATH) and boots a target with no dependencies, so nothing of
 * the machine's own units starts. Its systemctl is reached with nsenter;
 * files the units put in /run are under `root` (/proc/PID/root).
 * Closing it kills the namespace's init, which ends every process in it.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasTool, inCI, isRoot } from './require.ts';

export interface SystemdSandbox {
  /** systemd's pid as this process sees it. */
  readonly pid: number;
  /** The command prefix that runs systemctl against it. */
  readonly systemctl: string[];
  /** Its root as this process reaches it (its /run is its own). */
  readonly root: string;
  /** Where its units are read from; `reload()` after adding one. */
  readonly unitDir: string;
  run(...args: string[]): string;
  reload(): void;
  close(): Promise<void>;
}

const SYSTEMD = '/lib/systemd/systemd';
const repo = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Puts the shipped deploy/dpsr-export@.service into `unitDir` with the
 * install prefix deploy/install.sh would give it (here: the checkout), and
 * the drop-in an admin adds for a state directory other than /var/lib/dpsr
 * (`stateDir`, which the daemon then may write).
 */
export function installExportUnit(unitDir: string, stateDir: string): void {
  mkdirSync(join(unitDir, 'dpsr-export@.service.d'), { recursive: true });
  writeFileSync(join(unitDir, 'dpsr-export@.service'), readFileSync(join(repo, 'deploy', 'dpsr-export@.service'), 'utf8').replaceAll('/opt/dpsr', repo.replace(/\/$/, '')));
  writeFileSync(join(unitDir, 'dpsr-export@.service.d', 'state-dir.conf'), `[Service]\nReadWritePaths=${stateDir}\n`);
}

/** Whether a sandbox can run here; prints a loud SKIP (or throws in CI) when not. */
export function canSandboxSystemd(what: string): boolean {
  const missing = [...(['unshare', 'nsenter', 'systemctl'].filter((t) => !hasTool(t))), ...(existsSync(SYSTEMD) ? [] : [SYSTEMD]), ...(isRoot ? [] : ['root privileges'])];
  if (!missing.length) return true;
  const message = `${what} needs ${missing.join(', ')} (systemd in its own namespaces)`;
  if (inCI) throw new Error(message);
  console.log(`SKIP: ${message}`);
  return false;
}

function childPid(parent: number): number | null {
  try {
    for (const t of readdirSync(`/proc/${parent}/task`)) {
      const kids = readFileSync(`/proc/${parent}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      if (kids.length) return Number(kids[0]);
    }
  } catch {
    /* not there yet */
  }
  return null;
}

export async function startSystemdSandbox(unitDir: string): Promise<SystemdSandbox> {
  mkdirSync(unitDir, { recursive: true });
  const bare = (name: string) => writeFileSync(join(unitDir, name), '[Unit]\nDefaultDependencies=no\n');
  // The targets services depend on by default, empty: nothing of the machine's boot runs.
  for (const t of ['sandbox.target', 'sysinit.target', 'basic.target', 'shutdown.target', 'local-fs.target', 'network.target']) bare(t);
  const proc: ChildProcess = spawn('unshare', ['--pid', '--fork', '--mount', '--uts', '--ipc', '--mount-proc', 'env', `SYSTEMD_UNIT_PATH=${unitDir}`, SYSTEMD, '--system', '--unit=sandbox.target', '--log-target=console', '--log-level=warning'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let pid: number | null = null;
  for (let i = 0; i < 200 && pid === null; i++) {
    pid = childPid(proc.pid!);
    if (pid === null) await sleep(25);
  }
  if (pid === null) throw new Error(`systemd sandbox did not start: ${log}`);
  const systemctl = ['nsenter', '-t', String(pid), '-m', '-p', 'systemctl'];
  const run = (...args: string[]) => execFileSync(systemctl[0]!, [...systemctl.slice(1), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  let state = '';
  for (let i = 0; i < 200; i++) {
    try {
      state = run('is-system-running').trim();
    } catch (e) {
      state = ((e as { stdout?: string }).stdout ?? '').trim();
    }
    if (state === 'running' || state === 'degraded') break;
    await sleep(50);
  }
  if (state !== 'running' && state !== 'degraded') throw new Error(`systemd sandbox is ${state || 'not answering'}: ${log}`);
  const sysPid = pid;
  return {
    pid: sysPid,
    systemctl,
    root: `/proc/${sysPid}/root`,
    unitDir,
    run,
    reload: () => void run('daemon-reload'),
    async close() {
      try {
        process.kill(sysPid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await exited;
      // It made its cgroups in the machine's named hierarchy; empty now.
      const prune = (dir: string) => {
        try {
          for (const sub of readdirSync(dir, { withFileTypes: true })) if (sub.isDirectory()) prune(join(dir, sub.name));
          rmdirSync(dir);
        } catch {
          /* not made, or in use */
        }
      };
      for (const d of ['system.slice', 'init.scope']) prune(`/sys/fs/cgroup/systemd/${d}`);
    },
  };
}
