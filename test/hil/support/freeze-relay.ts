/**
 * The host's end of the controller's snapshot hooks (inline.snapshot.preHook
 * / postHook as HTTP calls): a small HTTP server that passes `POST /freeze`
 * and `POST /thaw` on to the guest agent's `freeze` / `thaw` (fsfreeze of its
 * data filesystem) over the serial console, the guest's only channel (the
 * test OS has no network). It answers 2xx once the agent has replied, so the
 * controller takes its snapshot only after the filesystem is frozen.
 *
 * `freezing = false` makes /freeze answer 503 (a host whose freeze is
 * switched off): the controller then goes on crash-consistent, and thaws
 * anyway, which the agent takes as a no-op.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HostConsole } from '../rig.ts';

export interface HookCall {
  phase: 'freeze' | 'thaw';
  /** Date.now() when the controller's request arrived. */
  received: number;
  /** Date.now() when the answer went back. */
  answered: number;
  status: number;
  /** The agent's reply words, or why it failed. */
  detail: string;
}

export class FreezeRelay {
  freezing = true;
  readonly calls: HookCall[] = [];
  private console: HostConsole | null = null;

  private constructor(private readonly server: Server) {}

  static async listen(): Promise<FreezeRelay> {
    const server = createServer();
    const relay = new FreezeRelay(server);
    server.on('request', (req, res) => {
      const received = Date.now();
      const phase = req.url === '/freeze' ? 'freeze' : req.url === '/thaw' ? 'thaw' : null;
      req.resume();
      const answer = (status: number, detail: string): void => {
        res.writeHead(status, { 'content-type': 'text/plain' }).end(detail);
        if (phase) relay.calls.push({ phase, received, answered: Date.now(), status, detail });
      };
      if (req.method !== 'POST' || !phase) return answer(404, 'POST /freeze or /thaw');
      if (!relay.console) return answer(503, 'no host attached');
      if (phase === 'freeze' && !relay.freezing) return answer(503, 'freeze is switched off on this host');
      relay.console.command(phase, [], 15_000).then(
        (r) => answer(200, r.words.join(' ')),
        (e: Error) => answer(500, e.message),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    server.unref();
    return relay;
  }

  /** The hook URL of a phase. */
  url(phase: 'freeze' | 'thaw'): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/${phase}`;
  }

  attach(console: HostConsole): void {
    this.console = console;
  }

  close(): void {
    this.server.close();
  }
}
