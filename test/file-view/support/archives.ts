/** Folder archives in the file-view tests: made by archiveFolder, unpacked by tar or unzip, compared by diff -r. */
import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { archiveFolder, type FileView } from '../../../src/file-view/index.ts';

/** Archives `folder` of `view` as `format` into `scratch`, unpacks it into `into`; returns the unpacked top folder. */
export async function extractArchive(view: FileView, folder: string, format: 'tar' | 'zip', into: string, scratch: string): Promise<string> {
  const { top, stream } = await archiveFolder(view, folder, format);
  const file = join(scratch, `out.${format}`);
  await pipeline(stream, createWriteStream(file));
  mkdirSync(into, { recursive: true });
  if (format === 'tar') execFileSync('tar', ['-x', '-f', file, '-C', into]);
  else execFileSync('unzip', ['-q', '-o', file, '-d', into]);
  return join(into, top);
}

/** diff -r between an extracted folder and the tree it was made from: '' when alike. */
export function differences(a: string, b: string): string {
  try {
    execFileSync('diff', ['-r', '--no-dereference', a, b], { stdio: 'pipe' });
    return '';
  } catch (e) {
    return String((e as { stdout?: Buffer }).stdout);
  }
}
