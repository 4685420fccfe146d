/**
 * Helpers of the inline-mode tests. A host that keeps writing through the inline export: 64 KiB blocks at
 * pseudo-random places, one after another, until stopped. Failures are
 * collected, not thrown: a backup must never fail a host write.
 */
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { NbdDrive } from '../../../src/sata-bridge/index.ts';
import { CACHE_FILE } from '../../../src/snapshot/index.ts';
import type { TestDaemon } from './harness.ts';
import { xorshift32 } from '../../support/xorshift.ts';

const BLOCK = 64 * 1024;

/** `span`: the bytes `[start, end)` written (default the whole drive). */
export function hostWriter(uri: string, span?: { start: number; end: number }) {
  let running = true;
  const failures: string[] = [];
  let writes = 0;
  const done = (async () => {
    const host = await NbdDrive.open(uri, { write: true });
    const start = span?.start ?? 0;
    const blocks = Math.floor(((span?.end ?? host.size) - start) / BLOCK);
    const next = xorshift32(12345);
    while (running) {
      const x = next();
      await host.write(Buffer.alloc(BLOCK, x & 0xff), start + (x % blocks) * BLOCK).catch((e: Error) => failures.push(e.message));
      writes++;
      await new Promise((r) => setTimeout(r, 2));
    }
    await host.close();
  })();
  return {
    failures,
    get writes() {
      return writes;
    },
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/** Whether the daemon's graph holds only the host's path (see assertTornDown). */
export async function tornDown(d: TestDaemon): Promise<boolean> {
  const daemon = d.app.inline!.pair!.daemon;
  const nodes = await daemon.qmp.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true });
  const exports = await daemon.qmp.execute<{ id: string }[]>('query-block-exports');
  return !nodes.some((n) => n['node-name'].startsWith('dpsr-')) && exports.length === 1 && !existsSync(join(d.dir, 'inline', CACHE_FILE));
}

/** The daemon's graph holds only the host's path: no snapshot filter, node or export, and no cache file. */
export async function assertTornDown(d: TestDaemon): Promise<void> {
  const daemon = d.app.inline!.pair!.daemon;
  const nodes = await daemon.qmp.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true });
  assert.equal(nodes.map((n) => n['node-name']).filter((n) => n.startsWith('dpsr-')), []);
  assert.equal((await daemon.qmp.execute<{ id: string }[]>('query-block-exports')).map((e) => e.id), ['host']);
  assert.not.ok(existsSync(join(d.dir, 'inline', CACHE_FILE)));
}

