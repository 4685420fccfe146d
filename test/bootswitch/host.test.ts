/**
 * The simulated host and the relay-driven host pass the `Host` contract
 * (test/support/host-contract.ts). The relay-driven host runs over the
 * simulated board, with a simulated host behind the relays whose agent's
 * heartbeats are passed on, as the controller passes on the API's.
 */
import { Board, RelayHost, SimBoard, SimHost, simConfig, systemClock } from '../../src/bootswitch/index.ts';
import { hostContract } from '../support/host-contract.ts';

const timing = { bootMs: 150, shutdownMs: 100, heartbeatMs: 50, forceOffMs: 600 };

hostContract('simulated host (SimHost)', async () => {
  const board = new SimBoard(systemClock);
  const host = new SimHost(board, systemClock, timing);
  return {
    host,
    forceOffMs: timing.forceOffMs,
    waitMs: 3000,
    bootBay: 'A',
    hang: async () => host.hang(),
    close: async () => {
      host.forceOff();
      host.removeAllListeners();
      await board.close();
    },
  };
});

hostContract('relay-driven host (RelayHost) over the simulated board', async () => {
  const sim = new SimBoard(systemClock);
  const behind = new SimHost(sim, systemClock, timing);
  const board = await Board.open(simConfig(), { clock: systemClock, sim });
  await board.claimOutputs({}, () => {});
  const host = new RelayHost({ atxPower: board.relay('atxPower'), atxReset: board.relay('atxReset'), powerLed: board.inputs.powerLed! });
  behind.on('heartbeat', (bay) => host.heartbeat(bay));
  return {
    host,
    forceOffMs: timing.forceOffMs,
    waitMs: 3000,
    bootBay: 'A',
    hang: async () => behind.hang(),
    close: async () => {
      behind.forceOff();
      behind.removeAllListeners();
      await board.close();
    },
  };
});
