/**
 * Two connected pseudo-terminals from `socat`: bytes written to one come out
 * of the other, like the two ends of a USB serial cable.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface PtyPair {
  a: string;
  b: string;
  socat: ChildProcess;
  close(): Promise<void>;
}

/**
 * `links` gives the two ends fixed symlink names, so a pair started again
 * after `close` (a cable unplugged and plugged back) has the same paths.
 */
export function openPtyPair(opts: { links?: [string, string]; timeoutMs?: number } = {}): Promise<PtyPair> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const end = (i: 0 | 1) => `pty,raw,echo=0${opts.links ? `,link=${opts.links[i]}` : ''}`;
  // stdout ignored: a socat holding the test's stdout would keep a piped runner waiting after the test ends.
  const socat = spawn('socat', ['-d', '-d', end(0), end(1)], { stdio: ['ignore', 'ignore', 'pipe'] });
  // Also when the test process dies of an uncaught error or the watchdog's exit, before any cleanup ran.
  const onExit = () => socat.kill('SIGKILL');
  process.once('exit', onExit);
  socat.once('exit', () => process.off('exit', onExit));
  const close = () =>
    new Promise<void>((resolve) => {
      if (socat.exitCode !== null || socat.signalCode !== null) return resolve();
      const t = setTimeout(() => socat.kill('SIGKILL'), 2000);
      socat.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      socat.kill('SIGTERM');
    });
  return new Promise((resolve, reject) => {
    let err = '';
    const fail = (why: string) => {
      clearTimeout(t);
      void close().then(() => reject(new Error(`socat: ${why}; stderr: ${err.trim()}`)));
    };
    const t = setTimeout(() => fail(`no pty pair within ${timeoutMs} ms`), timeoutMs);
    socat.on('error', (e) => fail(e.message));
    socat.on('exit', (code, sig) => fail(`exited (${code ?? sig}) before the pair was ready`));
    socat.stderr!.setEncoding('utf8');
    socat.stderr!.on('data', (s: string) => {
      err += s;
      const paths = [...err.matchAll(/PTY is (\/dev\/pts\/\d+)/g)].map((m) => m[1]!);
      // Both ends exist once socat reports its transfer loop.
      if (paths.length === 2 && /starting data transfer loop/.test(err)) {
        clearTimeout(t);
        socat.removeAllListeners('exit');
        socat.stderr!.removeAllListeners('data');
        socat.stderr!.resume();
        resolve({ a: opts.links?.[0] ?? paths[0]!, b: opts.links?.[1] ?? paths[1]!, socat, close });
      }
    });
  });
}
