import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { quirksFor, SmartctlSource } from '../../src/sata-bridge/index.ts';

test('known bridges: SMART access type and UAS trust', () => {
  assert.is(quirksFor('174c', '55aa').smartType, 'sat');
  assert.is(quirksFor('174C', '55AA').known, true, 'IDs are matched case-insensitively');
  assert.is(quirksFor('152d', '2338').smartType, 'usbjmicron');
  assert.ok(quirksFor('152d', '0578').uasUnreliable);
});

test('an unknown bridge gets SAT and says it is unknown', () => {
  const q = quirksFor('dead', 'beef');
  assert.is(q.known, false);
  assert.is(q.smartType, 'sat');
  assert.match(q.note ?? '', /not in the table/);
});

test('smartctl gets -d sat for a drive that is not behind a bridge, or a fixed type when configured', () => {
  assert.is(new SmartctlSource('smartctl', 'auto').typeFor('/nonexistent'), 'sat');
  assert.is(new SmartctlSource('smartctl', 'usbcypress').typeFor('/dev/whatever'), 'usbcypress');
});

test.run();
