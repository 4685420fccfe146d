/**
 * Lines of a child's output read with back-pressure: one chunk is taken from
 * the stream (through its own async iterator) only when the lines of the one
 * before are used up, so a listing of any length holds one chunk at a time.
 */
import type { Readable } from 'node:stream';

/** The lines of `stream` (UTF-8, `\n`-separated; a last line without `\n` included, empty lines too). */
export async function* lines(stream: Readable): AsyncGenerator<string> {
  let rest = '';
  for await (const chunk of stream) {
    const text = rest + (typeof chunk === 'string' ? chunk : (chunk as Buffer).toString('utf8'));
    const parts = text.split('\n');
    rest = parts.pop()!;
    yield* parts;
  }
  if (rest !== '') yield rest;
}
