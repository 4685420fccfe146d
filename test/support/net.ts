/** Network helpers shared by tests and benchmarks. */
import { createServer } from 'node:net';

/**
 * A TCP port on 127.0.0.1 nobody listens on just now (the kernel's pick).
 * @throws Error the loopback interface refuses a listener.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
