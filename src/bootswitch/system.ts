/**
 * Composition: config → board → boot switch → failover shell → button.
 * Start-up restores the persisted relay state without ever moving a mux
 * under a running host: with the host off the persisted state is written;
 * with it on, relays found in another valid state are adopted, not moved.
 */
import { BootSwitch, INITIAL_SWITCH_RECORD, validateSwitchRecord, type HostLink, type SwitchRecord } from './boot-switch.ts';
import { Board, type BoardDeps } from './board.ts';
import { ButtonWatcher } from './button.ts';
import { systemClock, type Clock } from './clock.ts';
import { validateConfig, type BootSwitchConfig, type RelayName } from './config.ts';
import { DurableRecord } from '../durable-file.ts';
import { BootSwitchEmitter } from './events.ts';
import { initialFailoverState, validateFailoverState, type FailoverState } from './failover.ts';
import { FailoverShell } from './failover-shell.ts';
import { silentLogger, type I2cBus, type Logger } from './io.ts';
import { baysOnHost, bayOf, samePattern, SWITCH_RELAYS, type SwitchRelays } from './relay-pattern.ts';
import type { SimBoard } from './sim-board.ts';
import { checkAgainstWiring, type Wiring } from './wiring.ts';

export interface OpenOptions {
  /** Plain JSON; validated here. */
  config: unknown;
  /** Where the switch and failover state live (two copies each). */
  stateDir: string;
  /** The wiring (hw/schematics/wiring.json) to check the config against. */
  wiring?: Wiring;
  clock?: Clock;
  /** Wall-clock ms for persisted deadlines; defaults to Date.now. */
  wallNow?: () => number;
  logger?: Logger;
  sim?: SimBoard;
  openI2c?: (bus: number) => Promise<I2cBus>;
  firmataIo?: BoardDeps['firmataIo'];
  /** Pass an emitter to hear the alerts raised while starting (adopted relays, recovery gesture). */
  events?: BootSwitchEmitter;
  /** How the selected drive reaches the host (default `sata`; `export` in inline mode, see BootSwitch's HostLink). */
  hostLink?: HostLink;
}

export interface BootSwitchSystem {
  config: BootSwitchConfig;
  board: Board;
  bootSwitch: BootSwitch;
  failover: FailoverShell;
  button: ButtonWatcher;
  events: BootSwitchEmitter;
  /** The simulated board behind every 'sim' entry (always present; idle when unused). */
  sim: SimBoard;
  /** True when the button was held through start-up (recovery gesture). */
  recoveryGesture: boolean;
  close(): Promise<void>;
}

export async function openBootSwitch(opts: OpenOptions): Promise<BootSwitchSystem> {
  const config = validateConfig(opts.config);
  if (opts.wiring) checkAgainstWiring(config, opts.wiring);
  const clock = opts.clock ?? systemClock;
  const wallNow = opts.wallNow ?? Date.now;
  const log = opts.logger ?? silentLogger;
  const events = opts.events ?? new BootSwitchEmitter();
  // An emitter without an 'error' listener would throw; errors reach the daemon as alerts instead.
  const onError = (e: unknown) => events.emit('alert', { level: 'critical', code: 'device-error', message: (e as Error).message });

  const switchStore = new DurableRecord<SwitchRecord>(opts.stateDir, 'switch', validateSwitchRecord);
  const loaded = switchStore.load();
  for (const p of loaded?.problems ?? []) if (!p.endsWith('missing')) log.warn({ problem: p }, 'switch state copy damaged; using the other');
  let record = loaded?.data ?? INITIAL_SWITCH_RECORD;
  if (!loaded) switchStore.save(record);

  const board = await Board.open(config, { clock, sim: opts.sim, openI2c: opts.openI2c, firmataIo: opts.firmataIo, onError });
  try {
    const powerLed = board.inputs.powerLed!;
    const hostOn = await powerLed.value();
    const physical: Partial<SwitchRelays> = {};
    for (const k of SWITCH_RELAYS) {
      const v = await board.peek(k);
      if (v !== null) physical[k] = v;
    }
    let adoptedWhy: string | null = null;
    let initial: SwitchRelays = record.relays;
    if (hostOn && SWITCH_RELAYS.every((k) => physical[k] !== undefined)) {
      const p = physical as SwitchRelays;
      if (!samePattern(p, record.relays) && baysOnHost(p).length <= 1) {
        initial = p;
        adoptedWhy = `host running with relays ${JSON.stringify(p)}, recorded ${JSON.stringify(record.relays)}: kept as found`;
      }
    }
    await board.claimOutputs({ ...initial, atxPower: false, atxReset: false }, (channel, on) => events.emit('relay', { channel, on }));

    const relays = Object.fromEntries(
      (['muxA', 'muxB', 'pwrA', 'pwrB', 'atxPower', 'atxReset'] as RelayName[]).map((n) => [n, board.relay(n)]),
    ) as Record<RelayName, ReturnType<Board['relay']>>;
    const bootSwitch = new BootSwitch(
      { relays, powerLed, sense: { muxA: board.inputs.senseMuxA, muxB: board.inputs.senseMuxB } },
      config.timing,
      switchStore,
      record,
      clock,
      events,
      log,
      opts.hostLink ?? 'sata',
    );
    if (adoptedWhy) {
      bootSwitch.adopt(initial, adoptedWhy);
      events.emit('alert', { level: 'warning', code: 'relays-adopted', message: adoptedWhy });
    } else if (record.pending) {
      const msg = `a move to bay ${record.pending.to} was cut short; relays restored to bay ${record.bay ?? 'none'}`;
      bootSwitch.clearPending(msg);
      events.emit('alert', { level: 'warning', code: 'switch-interrupted', message: msg });
    }
    record = bootSwitch.record;

    const failStore = new DurableRecord<FailoverState>(opts.stateDir, 'failover', validateFailoverState);
    const fl = failStore.load();
    // In export mode the relays are ISOLATED whichever bay is selected: the record names it.
    const fstate = fl?.data ?? initialFailoverState(config.failover, (opts.hostLink === 'export' ? record.bay : bayOf(record.relays)) ?? 'A');
    if (!fl) failStore.save(fstate);
    const failover = new FailoverShell(fstate, config.failover, failStore, bootSwitch, clock, wallNow, events, log, {
      ledFault: board.outputs.ledFault,
      ledBayA: board.outputs.ledBayA,
      ledBayB: board.outputs.ledBayB,
    });

    const button = new ButtonWatcher(board.inputs.button!, board.outputs.ledStatus, clock, config.timing, (g) => {
      events.emit('button', g);
      if (g.kind === 'hold') void failover.dispatch({ type: 'failover-request', source: 'button' });
      else if (g.kind === 'short') void failover.dispatch({ type: 'button-short' });
    });
    const recoveryGesture = await button.start();
    await powerLed.start();
    powerLed.onChange((on) => {
      events.emit('host', { powered: on });
      void failover.dispatch({ type: 'host-power', on });
    });
    await failover.dispatch({ type: 'startup', buttonHeld: recoveryGesture, relayBay: bootSwitch.bay });
    failover.refreshIndicators();

    return {
      config,
      board,
      bootSwitch,
      failover,
      button,
      events,
      sim: board.sim,
      recoveryGesture,
      async close() {
        button.stop();
        failover.close();
        await failover.idle().catch(() => {});
        await board.close();
      },
    };
  } catch (e) {
    await board.close();
    throw e;
  }
}
