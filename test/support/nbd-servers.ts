/** NBD servers for tests: nbdkit and qemu-nbd on a unix socket, killed at exit. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Server {
  readonly socket: string;
  readonly process: ChildProcess;
  /** `nbd+unix:///NAME?socket=…` for the given export name. */
  uri(exportName?: string): string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();

function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect({ path: socket });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

async function start(cmd: string, args: string[], socket: string): Promise<Server> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  let exited = false;
  child.on('exit', () => {
    exited = true;
    running.delete(child);
  });
  // The socket file appears at bind(), before listen(): wait until a connection is accepted.
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`${cmd} exited: ${stderr}`);
    if (existsSync(socket) && (await accepts(socket))) break;
    if (i === 400) throw new Error(`${cmd} did not listen on ${socket}: ${stderr}`);
    await sleep(25);
  }
  return {
    socket,
    process: child,
    uri: (name = '') => `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`,
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    },
  };
}

let counter = 0;

/** `nbdkit [options] [filters] PLUGIN ARGS…` on a fresh socket in `dir` (options such as `--tls=require`). */
export function nbdkit(dir: string, plugin: string[], filters: string[] = [], options: string[] = []): Promise<Server> {
  const socket = join(dir, `nbdkit-${process.pid}-${counter++}.sock`);
  return start('nbdkit', ['--foreground', '--exit-with-parent', '-U', socket, ...options, ...filters.flatMap((f) => ['--filter', f]), ...plugin], socket);
}

/** `qemu-nbd` serving a raw image under `exportName`, any number of clients. */
export function qemuNbd(dir: string, image: string, exportName = 'drive', extra: string[] = []): Promise<Server> {
  const socket = join(dir, `qemu-nbd-${process.pid}-${counter++}.sock`);
  return start('qemu-nbd', ['-k', socket, '-f', 'raw', '-x', exportName, '-t', '-e', '0', ...extra, image], socket);
}
