/**
 * The controller board as a QEMU virtual machine (TCG): Debian's generic
 * kernel with inline mode's USB-disk modules and a busybox initramfs
 * (image/board.ts), QEMU's user network (the machine running the test is
 * 10.0.2.2), and a command channel on the second serial port: `exec` runs a
 * shell script in the VM and returns its output and exit code. The first
 * serial port is the kernel's console, kept for the report.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceError } from './errors.ts';
import type { BoardImage } from './image/board.ts';

export interface BoardVmOptions {
  image: BoardImage;
  /** Load the USB disk's modules and mount configfs at boot (default true). */
  modules?: boolean;
  memoryMiB?: number;
  bootTimeoutMs?: number;
  qemu?: string;
}

export interface ExecResult {
  code: number;
  output: string;
}

export class BoardVm {
  #proc: ChildProcess | null = null;
  #sock: Socket | null = null;
  #dir = mkdtempSync(join(tmpdir(), 'dpsr-board-'));
  #console: string[] = [];
  #buf = '';
  #seq = 0;
  #pending = new Map<string, { output?: string; resolve: (r: ExecResult) => void; reject: (e: Error) => void }>();
  /** Kernel release the VM reported at boot. */
  kernel = '';
  /** Milliseconds from start to the board's ready line. */
  bootMs = 0;

  constructor(private readonly opts: BoardVmOptions) {}

  /** The last lines of the kernel console, for a failure's report. */
  consoleTail(n = 30): string[] {
    return this.#console.slice(-n);
  }

  async start(): Promise<void> {
    const started = Date.now();
    const cmdSock = join(this.#dir, 'cmd.sock');
    const append = `console=ttyS0,115200 panic=-1 loglevel=4 dpsr.modules=${this.opts.modules === false ? 0 : 1}`;
    const proc = spawn(this.opts.qemu ?? 'qemu-system-x86_64', [
      '-M', 'pc', '-accel', 'tcg', '-m', String(this.opts.memoryMiB ?? 256), '-smp', '1',
      '-display', 'none', '-monitor', 'none', '-no-reboot',
      '-kernel', this.opts.image.kernel, '-initrd', this.opts.image.initramfs, '-append', append,
      '-serial', 'stdio',
      '-chardev', `socket,id=cmd,path=${cmdSock},server=on,wait=off`, '-serial', 'chardev:cmd',
      '-nic', 'user,model=e1000',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#proc = proc;
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let consoleBuf = '';
    let ready: (() => void) | null = null;
    const readyLine = new Promise<void>((res) => (ready = res));
    proc.stdout!.on('data', (d: Buffer) => {
      consoleBuf += d.toString();
      const lines = consoleBuf.split('\n');
      consoleBuf = lines.pop()!;
      for (const raw of lines) {
        const line = raw.replace(/\r$/, '');
        this.#console.push(line);
        const m = /DPSR-BOARD-READY (\S+)/.exec(line);
        if (m) {
          this.kernel = m[1]!;
          ready?.();
        }
      }
    });
    const exited = new Promise<never>((_, rej) => proc.on('exit', (code, sig) => rej(new DeviceError(`the board VM exited (${sig ?? code}) ${stderr.trim()}`, { hint: this.consoleTail(10).join('\n') }))));
    exited.catch(() => {});
    const timeout = this.opts.bootTimeoutMs ?? 90_000;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      readyLine,
      exited,
      new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new DeviceError(`the board VM did not boot within ${timeout / 1000} s`, { hint: this.consoleTail(10).join('\n') })), timeout))),
    ]).finally(() => clearTimeout(timer));
    this.bootMs = Date.now() - started;
    this.#sock = await new Promise<Socket>((res, rej) => {
      const s = connect(cmdSock, () => res(s));
      s.once('error', rej);
    });
    this.#sock.on('data', (d: Buffer) => this.#onData(d.toString()));
    this.#sock.on('close', () => {
      for (const p of this.#pending.values()) p.reject(new DeviceError('the board VM closed its command port'));
      this.#pending.clear();
    });
  }

  #onData(text: string): void {
    this.#buf += text;
    const lines = this.#buf.split('\n');
    this.#buf = lines.pop()!;
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      const out = /^DPSR-OUT (\d+) ?(.*)$/.exec(line);
      if (out) {
        const p = this.#pending.get(out[1]!);
        if (p) p.output = Buffer.from(out[2] ?? '', 'base64').toString();
        continue;
      }
      const done = /^DPSR-DONE (\d+) (\d+)$/.exec(line);
      if (done) {
        const p = this.#pending.get(done[1]!);
        this.#pending.delete(done[1]!);
        p?.resolve({ code: Number(done[2]), output: p.output ?? '' });
      }
    }
  }

  /** Runs `script` with the VM's /bin/sh; its stdout and stderr together. */
  exec(script: string, timeoutMs = 60_000): Promise<ExecResult> {
    const sock = this.#sock;
    if (!sock) return Promise.reject(new DeviceError('the board VM is not running'));
    const id = String(++this.#seq);
    return new Promise<ExecResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new DeviceError(`the board VM did not finish a command within ${timeoutMs / 1000} s: ${script.slice(0, 200)}`, { hint: this.consoleTail(10).join('\n') }));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      sock.write(`${id} ${Buffer.from(script).toString('base64')}\n`);
    });
  }

  /** Like exec, but a non-zero exit is an error carrying the output. */
  async sh(script: string, timeoutMs?: number): Promise<string> {
    const r = await this.exec(script, timeoutMs);
    if (r.code !== 0) throw new DeviceError(`board VM: exit ${r.code} from ${script.slice(0, 200)}: ${r.output.trim()}`);
    return r.output;
  }

  async stop(): Promise<void> {
    this.#sock?.destroy();
    this.#sock = null;
    const p = this.#proc;
    this.#proc = null;
    if (p && p.exitCode === null && p.signalCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await gone;
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
