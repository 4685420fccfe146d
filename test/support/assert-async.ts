/**
 * uvu's assert has no async `throws`: the error a promise rejects with, or a
 * failed assertion naming `what` when it resolves instead.
 */
import * as assert from 'uvu/assert';

export async function rejection(p: Promise<unknown>, what = 'the call'): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.unreachable(`${what} resolved; a rejection was expected`);
  throw new Error('unreachable');
}
