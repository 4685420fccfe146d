/**
 * node-red-node-test-helper, typed for what the tests use, with promise
 * wrappers, and the node package's node modules.
 */
import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';

const require = createRequire(import.meta.url);

export interface Msg {
  [k: string]: any;
  topic?: string;
  payload?: any;
}

export interface TestNode extends EventEmitter {
  id: string;
  receive(msg: Msg): void;
}

interface Helper {
  init(runtimePath: string, settings?: object): void;
  startServer(done: () => void): void;
  stopServer(done: () => void): void;
  load(nodes: unknown[], flow: object[], credentials: Record<string, object>, done: () => void): void;
  unload(): Promise<void>;
  getNode(id: string): TestNode;
}

export const helper: Helper = require('node-red-node-test-helper');
helper.init(require.resolve('node-red'));

export const nodes = ['controller', 'sync', 'status', 'events', 'failover'].map((n) => require(`../../../firmware/flows/nodes/dpsr-${n}.js`));

export const startServer = () => new Promise<void>((r) => helper.startServer(r));
export const stopServer = () => new Promise<void>((r) => helper.stopServer(r));
export const load = (flow: object[], credentials: Record<string, object> = {}) => new Promise<void>((r) => helper.load(nodes, flow, credentials, r));

/** Collects every message a helper node receives, and lets a test wait for one that matches. */
export class Inbox {
  readonly msgs: Msg[] = [];
  #waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  constructor(node: TestNode) {
    node.on('input', (m: Msg) => {
      this.msgs.push(m);
      this.#waiters = this.#waiters.filter((w) => (w.pred(m) ? (w.resolve(m), false) : true));
    });
  }
  next(pred: (m: Msg) => boolean = () => true, timeoutMs = 20_000, what = 'a message'): Promise<Msg> {
    const seen = this.msgs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${JSON.stringify(this.msgs.map((m) => m.topic))}`)), timeoutMs);
      // A wait that lost a race (done vs failed) must not hold the process open.
      t.unref();
      this.#waiters.push({ pred, resolve: (m) => (clearTimeout(t), resolve(m)) });
    });
  }
}

/** Every status badge a node showed, in order. */
export function badges(node: TestNode): { fill?: string; shape?: string; text?: string }[] {
  const out: { fill?: string; shape?: string; text?: string }[] = [];
  node.on('call:status', (call: { args: [{ fill?: string; shape?: string; text?: string }] }) => out.push(call.args[0]));
  return out;
}
