/** Runs the `dpsr` CLI as a user would, through its bin. */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const DPSR_BIN = fileURLToPath(new URL('../../bin/dpsr.js', import.meta.url));

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  json<T = any>(): T;
}

export function dpsr(args: string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, [DPSR_BIN, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return {
    code: r.status ?? 128,
    stdout: r.stdout,
    stderr: r.stderr,
    json() {
      return JSON.parse(r.stdout);
    },
  };
}

/** The same, without blocking the test's event loop (a daemon in the same process must answer it). */
export function dpsrAsync(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [DPSR_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (x) => (stdout += x));
    c.stderr.on('data', (x) => (stderr += x));
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
