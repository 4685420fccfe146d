/**
 * One copy per pair at a time, across processes: a lock file holding the
 * owner's pid. A lock whose owner is dead is stale (the owner crashed) and is
 * taken over; that is also how an interrupted copy is recognised.
 */
import { openSync, writeSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BusyError } from '../errors.ts';

export function lockOwner(pairDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(pairDir, 'lock'), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && isAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function acquirePairLock(pairDir: string, what: string): () => void {
  const path = join(pairDir, 'lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = lockOwner(pairDir);
      if (owner !== undefined && owner !== process.pid) {
        throw new BusyError(`another copy on this drive pair is running (process ${owner})`, { hint: `wait for it to finish or stop it before starting ${what}` });
      }
      rmSync(path, { force: true });
    }
  }
  throw new BusyError(`cannot take the lock of this drive pair (${path})`);
}
