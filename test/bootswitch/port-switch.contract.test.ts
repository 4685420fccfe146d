/**
 * The data port switch contract (support/port-switch-contract.ts) against
 * the simulated board and against the MCP23017 driver on the simulated I2C
 * bus, the expander a real rig carries the data ports' relays on.
 */
import { SimI2cBus, SimMcp23017 } from '../../src/bootswitch/index.ts';
import { portSwitchContract } from './support/port-switch-contract.ts';

let simBoard: import('../../src/bootswitch/index.ts').SimBoard | null = null;

portSwitchContract('simulated board', () => ({
  boards: {},
  channels: {
    muxC: { board: 'sim', pin: 'K_MUX_C' },
    muxD: { board: 'sim', pin: 'K_MUX_D' },
    pwrC: { board: 'sim', pin: 'K_PWR_C' },
    pwrD: { board: 'sim', pin: 'K_PWR_D' },
    senseMuxC: { board: 'sim', pin: 'SENSE_MUX_C' },
    senseMuxD: { board: 'sim', pin: 'SENSE_MUX_D' },
  },
  bindSim(board: import('../../src/bootswitch/index.ts').SimBoard) {
    simBoard = board;
  },
  energised: (relay) => simBoard!.contact(`K_${relay.slice(0, 3).toUpperCase()}_${relay.slice(3)}`),
  disconnect: () => simBoard!.drop(),
  reconnect: () => simBoard!.reconnect(),
}));

/** Relay modules on the expander are active-low: a low pin energises the coil. */
const PINS = { muxC: 0, muxD: 1, pwrC: 2, pwrD: 3 } as const;

portSwitchContract('MCP23017 on the simulated I2C bus (active-low relay modules)', () => {
  const bus = new SimI2cBus();
  const chip = new SimMcp23017();
  bus.attach(0x21, chip);
  return {
    boards: { ports: { driver: 'mcp23017', bus: 1, address: 0x21 } },
    channels: Object.fromEntries(Object.entries(PINS).map(([name, pin]) => [name, { board: 'ports', pin, activeLow: true }])),
    // An input (never claimed) or a high pin leaves the relay released.
    energised: (relay) => chip.pin(PINS[relay]) === false,
    disconnect: () => bus.drop(),
    reconnect: () => bus.restore(),
    openBus: async () => bus,
  };
});
