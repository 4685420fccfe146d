/**
 * A whole-tree difference walk cancelled early (while its sorters are still
 * being fed) ends instead of waiting for ever on a killed sorter's input: a
 * hung walk would hold the daemon's job slot, and no sync could start after it.
 * It ends with the cancel's reason, whichever child it killed on the way.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { FileView, diffTree } from '../../src/file-view/index.ts';
import { requireEnv } from '../support/require.ts';
import { tempDir } from '../support/images.ts';
import { driveImage, filesystemImage, makeTree } from './support/fs-images.ts';

const ok = requireEnv('the difference walk', { tools: ['fls', 'icat', 'ifind', 'sfdisk', 'mkfs.ext4', 'debugfs', 'sort'] });

test('a walk cancelled at once or a few milliseconds in ends, every time', async () => {
  if (!ok) return;
  const tmp = tempDir('dpsr-diff-cancel-');
  // Enough entries that a killed sorter's input pipe fills up.
  const extra: Record<string, string> = {};
  for (let d = 0; d < 20; d++) for (let f = 0; f < 100; f++) extra[`d${d}/file-with-a-longer-name-${f}.txt`] = `${d}/${f}\n`;
  const root = makeTree(tmp, 'tree', extra);
  const drive = driveImage(join(tmp, 'drive.img'), [filesystemImage(tmp, 'ext4', root)]).path;
  for (const delay of [0, 0, 5, 20, 50]) {
    const stop = new AbortController();
    setTimeout(() => stop.abort(new Error('cancelled by the test')), delay);
    const outcome = await Promise.race([
      diffTree(await FileView.open(drive, 1), await FileView.open(drive, 1), '/', () => {}, { hash: true, signal: stop.signal }).then(
        () => 'finished',
        (e: Error) => e.message,
      ),
      new Promise<string>((r) => setTimeout(() => r('still running after 20 s'), 20_000).unref()),
    ]);
    assert.not.equal(outcome, 'still running after 20 s', `cancel after ${delay} ms`);
    // The cancel is the answer: a sorter, reader or lister the walk killed for it is no failure of its own ("sort failed … exit null").
    assert.ok(outcome === 'finished' || outcome === 'cancelled by the test', `cancel after ${delay} ms: ${outcome}`);
  }
});

test.run();
