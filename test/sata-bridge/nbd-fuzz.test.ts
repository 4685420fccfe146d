/**
 * A hostile NBD server: a fake that sends a valid conversation, random bytes,
 * or a valid conversation with bytes flipped, cut, repeated or inserted. The
 * client must settle every call with a DpsrError (never an uncaught
 * exception, never a hang) and never write outside the buffer it was given.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { NbdDrive } from '../../src/sata-bridge/index.ts';
import { isDpsrError } from '../../src/errors.ts';
import { tempDir } from '../support/images.ts';

const dir = tempDir();
const SIZE = 1024 * 1024;
const READ_AT = 8192;
const READ_LEN = 4096;
const CONTEXT = 'qemu:dirty-bitmap:b0';

let seed = 0x9e3779b9;
function rand(n: number): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
}

const u16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; };
const u64 = (v: number | bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(v)); return b; };
const optReply = (opt: number, type: number, payload: Buffer) => Buffer.concat([u64(0x3e889045565a9n), u32(opt), u32(type), u32(payload.length), payload]);
const chunk = (flags: number, type: number, handle: number, payload: Buffer) => Buffer.concat([u32(0x668e33ef), u16(flags), u16(type), u64(handle), u32(payload.length), payload]);

/** What a correct server says to this client: handshake, then a read reply (handle 1) and a block status reply (handle 2). */
function validConversation(): Buffer {
  const data = Buffer.alloc(READ_LEN, 0xab);
  return Buffer.concat([
    u64(0x4e42444d41474943n), u64(0x49484156454f5054n), u16(3),
    optReply(8, 1, Buffer.alloc(0)),
    optReply(10, 4, Buffer.concat([u32(7), Buffer.from(CONTEXT)])),
    optReply(10, 1, Buffer.alloc(0)),
    optReply(7, 3, Buffer.concat([u16(0), u64(SIZE), u16(1 | 4)])),
    optReply(7, 3, Buffer.concat([u16(3), u32(512), u32(4096), u32(1 << 20)])),
    optReply(7, 1, Buffer.alloc(0)),
    chunk(0, 1, 1, Buffer.concat([u64(READ_AT), data.subarray(0, 1024)])),
    chunk(0, 2, 1, Buffer.concat([u64(READ_AT + 1024), u32(1024)])),
    chunk(1, 1, 1, Buffer.concat([u64(READ_AT + 2048), data.subarray(2048)])),
    chunk(1, 5, 2, Buffer.concat([u32(7), u32(65536), u32(1), u32(SIZE - 65536), u32(0)])),
  ]);
}

/** Where the valid conversation's transmission replies start, and what the client sends until both requests are out. */
const HANDSHAKE_BYTES = 18 + 20 + (20 + 4 + CONTEXT.length) + 20 + (20 + 12) + (20 + 14) + 20;
const CLIENT_BYTES = 4 + 16 + (16 + 4 + 4 + 4 + CONTEXT.length) + (16 + 4 + 2 + 2) + 2 * 28;

function mutate(valid: Buffer): Buffer {
  const kind = rand(6);
  const b = Buffer.from(valid);
  switch (kind) {
    case 0: // random bytes from the start
      return Buffer.from(Array.from({ length: rand(300) }, () => rand(256)));
    case 1: { // flip a few bytes anywhere
      for (let i = 0, n = 1 + rand(4); i < n; i++) b[rand(b.length)] = rand(256);
      return b;
    }
    case 2: // cut short
      return b.subarray(0, rand(b.length));
    case 3: { // a 32-bit field set to an extreme value (lengths, offsets, magics)
      const at = rand(b.length - 4);
      b.writeUInt32BE([0, 1, 0xffffffff, 0x7fffffff, 8, 12, 4095][rand(7)]!, at);
      return b;
    }
    case 4: { // random bytes inserted
      const at = rand(b.length);
      return Buffer.concat([b.subarray(0, at), Buffer.from(Array.from({ length: 1 + rand(40) }, () => rand(256))), b.subarray(at)]);
    }
    default: { // a slice repeated (duplicate chunks, replayed handles)
      const at = rand(b.length);
      const len = 1 + rand(64);
      return Buffer.concat([b.subarray(0, at), b.subarray(at, at + len), b.subarray(at)]);
    }
  }
}

async function withServer(script: Buffer, fn: (uri: string) => Promise<void>): Promise<void> {
  const socket = join(dir, `fake-${rand(1e9)}.sock`);
  // Replies to requests go out once the requests are in (or after a short wait): a server does not answer ahead.
  const server: Server = createServer((c) => {
    c.on('error', () => undefined);
    c.write(script.subarray(0, HANDSHAKE_BYTES));
    let received = 0;
    let sent = false;
    const rest = () => {
      if (sent) return;
      sent = true;
      clearTimeout(timer);
      c.end(script.subarray(HANDSHAKE_BYTES));
    };
    const timer = setTimeout(rest, 200);
    c.on('data', (d) => {
      received += d.length;
      if (received >= CLIENT_BYTES) rest();
    });
    c.on('close', () => clearTimeout(timer));
  });
  await new Promise<void>((r) => server.listen(socket, r));
  try {
    await fn(`nbd+unix:///?socket=${socket}`);
  } finally {
    await new Promise((r) => server.close(r));
  }
}

/** Opens, reads into the middle of a guarded buffer, asks block status; returns what happened. */
async function exercise(uri: string): Promise<{ outcome: string; guardsIntact: boolean }> {
  const whole = Buffer.alloc(READ_LEN + 2 * 512, 0x5c);
  const view = whole.subarray(512, 512 + READ_LEN);
  let drive: NbdDrive | undefined;
  const steps: string[] = [];
  const settle = async (p: Promise<unknown>, name: string) => {
    try {
      await p;
      steps.push(`${name}:ok`);
      return true;
    } catch (e) {
      if (!isDpsrError(e)) throw new Error(`${name} failed with a non-dpsr error: ${(e as Error)?.stack ?? String(e)}`);
      steps.push(`${name}:${(e as Error).constructor.name}`);
      return false;
    }
  };
  try {
    await settle((async () => { drive = await NbdDrive.open(uri, { metaContexts: [CONTEXT], handshakeTimeoutMs: 5000 }); })(), 'open');
    if (drive) {
      const d = drive;
      await Promise.all([settle(d.read(view, READ_AT, READ_LEN), 'read'), settle(d.extents(CONTEXT, 0, SIZE), 'extents')]);
    }
  } finally {
    await drive?.close().catch(() => undefined);
  }
  const guardsIntact = whole.subarray(0, 512).every((x) => x === 0x5c) && whole.subarray(512 + READ_LEN).every((x) => x === 0x5c);
  return { outcome: steps.join(' '), guardsIntact };
}

test('the fake server is right when unmutated: the client reads data, hole and extents', async () => {
  await withServer(validConversation(), async (uri) => {
    const d = await NbdDrive.open(uri, { metaContexts: [CONTEXT] });
    assert.is(d.size, SIZE);
    const buf = Buffer.alloc(READ_LEN, 1);
    const [, ext] = await Promise.all([d.read(buf, READ_AT, READ_LEN), d.extents(CONTEXT, 0, SIZE)]);
    assert.ok(buf.subarray(0, 1024).every((x) => x === 0xab));
    assert.ok(buf.subarray(1024, 2048).every((x) => x === 0), 'the hole chunk reads as zeros');
    assert.ok(buf.subarray(2048).every((x) => x === 0xab));
    assert.equal(ext, [{ start: 0, length: 65536, flags: 1 }, { start: 65536, length: SIZE - 65536, flags: 0 }]);
    await d.close();
  });
});

test('replies cut into pieces of any size, arriving apart (a header split anywhere, read data in parts): every byte lands where it belongs', async () => {
  const big = 256 * 1024;
  const first = 100 * 1024;
  const hole = 4096;
  const data = Buffer.alloc(big);
  for (let i = 0; i < big; i += 4) data.writeUInt32BE((i * 2654435761) >>> 0, i);
  const valid = validConversation();
  const transmission = Buffer.concat([
    chunk(0, 1, 1, Buffer.concat([u64(READ_AT), data.subarray(0, first)])),
    chunk(0, 2, 1, Buffer.concat([u64(READ_AT + first), u32(hole)])),
    chunk(1, 1, 1, Buffer.concat([u64(READ_AT + first + hole), data.subarray(first + hole)])),
    chunk(1, 5, 2, Buffer.concat([u32(7), u32(65536), u32(1), u32(SIZE - 65536), u32(0)])),
  ]);
  for (let round = 0; round < 6; round++) {
    const socket = join(dir, `pieces-${round}.sock`);
    const server: Server = createServer((c) => {
      c.on('error', () => undefined);
      c.write(valid.subarray(0, HANDSHAKE_BYTES));
      let received = 0;
      c.on('data', async (d) => {
        received += d.length;
        if (received < CLIENT_BYTES || received - d.length >= CLIENT_BYTES) return;
        for (let at = 0; at < transmission.length; ) {
          const n = 1 + rand(round % 2 ? 40 : 70_000);
          c.write(transmission.subarray(at, at + n));
          at += n;
          // Tiny pieces pause now and then only: thousands of timers would make a slow test.
          if (rand(round % 2 ? 200 : 2) === 0) await new Promise((r) => setTimeout(r, rand(3)));
        }
      });
    });
    await new Promise<void>((r) => server.listen(socket, r));
    try {
      const d = await NbdDrive.open(`nbd+unix:///?socket=${socket}`, { metaContexts: [CONTEXT] });
      const whole = Buffer.alloc(big + 1024, 0x5c);
      const view = whole.subarray(512, 512 + big);
      const [, ext] = await Promise.all([d.read(view, READ_AT, big), d.extents(CONTEXT, 0, SIZE)]);
      assert.ok(view.subarray(0, first).equals(data.subarray(0, first)), `round ${round}: the first data chunk`);
      assert.ok(view.subarray(first, first + hole).every((x) => x === 0), `round ${round}: the hole`);
      assert.ok(view.subarray(first + hole).equals(data.subarray(first + hole)), `round ${round}: the last data chunk`);
      assert.ok(whole.subarray(0, 512).every((x) => x === 0x5c) && whole.subarray(512 + big).every((x) => x === 0x5c), `round ${round}: nothing outside the buffer`);
      assert.equal(ext, [{ start: 0, length: 65536, flags: 1 }, { start: 65536, length: SIZE - 65536, flags: 0 }]);
      await d.close();
    } finally {
      await new Promise((r) => server.close(r));
    }
  }
});

test('400 hostile conversations: every call settles with a DpsrError or succeeds, no write outside the buffer, no uncaught error', async () => {
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  const outcomes = new Map<string, number>();
  const valid = validConversation();
  try {
    for (let i = 0; i < 400; i++) {
      const script = mutate(valid);
      await withServer(script, async (uri) => {
        const r = await Promise.race([
          exercise(uri),
          new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`conversation ${i} hung`)), 10_000)),
        ]);
        assert.ok(r.guardsIntact, `conversation ${i} wrote outside the read buffer`);
        outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
      });
    }
  } finally {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  }
  assert.equal(uncaught, [], 'no uncaught exception or unhandled rejection');
  // The mutations reach past the handshake: some conversations fail there, some in transmission, some succeed.
  const all = [...outcomes.keys()].join('\n');
  assert.match(all, /open:\w+Error/);
  assert.match(all, /read:\w+Error/);
  assert.match(all, /open:ok read:ok|open:ok extents:ok/);
});

test.run();
