/**
 * Paths inside a partition's filesystem as the API and CLI give them:
 * `/`-separated, relative to the filesystem's root (a leading `/` is
 * optional). Checked before any tool sees them, so nothing names a place
 * outside the partition's own tree.
 */
import { BadInputError } from '../errors.ts';

/**
 * Splits a path into its names. `''` and `/` are the root.
 * @throws BadInputError for NUL or other control characters, `.` or `..` components, or empty names (`a//b`).
 */
export function splitPath(path: string): string[] {
  if (typeof path !== 'string') throw new BadInputError('a path must be a string');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(path)) throw new BadInputError(`the path ${JSON.stringify(path)} holds a NUL or control character`, { hint: 'give the path as the listing shows it' });
  const trimmed = path.replace(/^\/+/, '').replace(/\/+$/, '');
  if (trimmed === '') return [];
  const parts = trimmed.split('/');
  for (const p of parts) {
    if (p === '') throw new BadInputError(`the path ${JSON.stringify(path)} has an empty name (two slashes in a row)`);
    if (p === '.' || p === '..') throw new BadInputError(`the path ${JSON.stringify(path)} holds "${p}": paths are absolute inside the partition, without . or ..`, { hint: 'give the full path from the partition\'s root, e.g. /Users/me/file.txt' });
  }
  return parts;
}

/** The canonical form of a checked path: `/a/b`, `/` for the root. */
export function joinPath(parts: readonly string[]): string {
  return `/${parts.join('/')}`;
}
