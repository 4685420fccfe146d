import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  BadInputError,
  BusyError,
  CancelledError,
  DeviceError,
  NoSpaceError,
  NotFoundError,
  ReadOnlyStateError,
  RefusedError,
  exitCodeFor,
  httpStatusFor,
} from '../../src/errors.ts';

// One meaning, one exit code and one HTTP status: the table the CLI, the API and the docs rely on.
const table: [string, unknown, 1 | 2 | 3, number][] = [
  ['bad input', new BadInputError('x'), 2, 400],
  ['not found', new NotFoundError('x'), 2, 404],
  ['refused', new RefusedError('x'), 3, 409],
  ['busy', new BusyError('x'), 1, 409],
  ['cancelled', new CancelledError('x'), 1, 409],
  ['device (media)', new DeviceError('x', { fault: 'media' }), 1, 502],
  ['device (transport)', new DeviceError('x', { fault: 'transport' }), 1, 502],
  ['full state directory', new NoSpaceError('x'), 1, 507],
  ['read-only state directory', new ReadOnlyStateError('x'), 1, 507],
  ['anything else', new Error('x'), 1, 500],
];

for (const [name, error, exit, status] of table) {
  test(`${name}: exit ${exit}, HTTP ${status}`, () => {
    assert.is(exitCodeFor(error), exit);
    assert.is(httpStatusFor(error), status);
  });
}

test.run();
