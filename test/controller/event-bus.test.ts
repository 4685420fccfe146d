/** The event bus's typed subscription: only the asked-for types, their data, until unsubscribed. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EventBus } from '../../firmware/controller/events.ts';

test('on() hears the asked-for types with their data, and nothing once unsubscribed', () => {
  const bus = new EventBus(null, { replay: 0, logMaxBytes: 1 << 20 });
  const heard: string[] = [];
  const off = bus.on(['alert', 'drive'], (data, type) => heard.push(`${type}:${'code' in data ? data.code : data.action}`));
  bus.publish('alert', { level: 'warning', code: 'verify-differs', message: 'm' });
  bus.publish('relay', { channel: 'muxA', on: true });
  bus.publish('drive', { bay: 'A', action: 'pulled' });
  off();
  bus.publish('alert', { level: 'info', code: 'later', message: 'm' });
  assert.equal(heard, ['alert:verify-differs', 'drive:pulled']);
  assert.is(bus.listenerCount, 0);
});

test.run();
