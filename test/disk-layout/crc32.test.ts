import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { crc32, crc32Table } from '../../src/disk-layout/crc32.ts';

test('CRC-32 check value and agreement of both implementations', () => {
  const check = Buffer.from('123456789', 'latin1');
  assert.is(crc32(check), 0xcbf43926);
  assert.is(crc32Table(check), 0xcbf43926);
  assert.is(crc32(new Uint8Array(0)), 0);
  const data = Buffer.alloc(16384);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  assert.is(crc32(data), crc32Table(data));
  assert.is(crc32(data.subarray(100, 300)), crc32Table(data.subarray(100, 300)));
});

test.run();
