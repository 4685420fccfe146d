/**
 * Composition: config → board → boot switch → failover shell → button.
 * Start-up restores the persisted relay state without ever moving a mux
 * under a running host: with the host off the persisted state is written;
 * with it on, relays found in another valid state are adopted, not moved.
 */
import { BootSwitch, HostGate, INITIAL_SWITCH_RECORD, validateSwitchRecord, type HostLink, type SwitchRecord } from './boot-switch.ts';
import { Board, type BoardDeps } from './board.ts';
import { ButtonWatcher } from './button.ts';
import { systemClock, type Clock } from './clock.ts';
import { portChannels, validateConfig, wiredPorts, type BootSwitchConfig, type DataPort, type OutputName, type RelayName } from './config.ts';
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

/**
 * A data port's switch: the same interlocked sequence as the boot switch, on
 * the relays of the two bays that share one of the host's data ports, with
 * its own persisted record and events. Position A is the port's first bay.
 */
export interface DataPortSwitch {
  bays: DataPort;
  sw: BootSwitch;
  events: BootSwitchEmitter;
}

export interface BootSwitchSystem {
  config: BootSwitchConfig;
  board: Board;
  bootSwitch: BootSwitch;
  /** The switches of the data ports whose relays the config names (every port on the simulated board). */
  ports: DataPortSwitch[];
  /** The one move at a time across all switches of the host. */
  gate: HostGate;
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

  const boot = loadSwitch(opts.stateDir, 'switch', log);
  const portNames = (port: DataPort) => portChannels(port);
  const ports = wiredPorts(config).map((bays) => ({ bays, ...loadSwitch(opts.stateDir, `switch-${bays.join('').toLowerCase()}`, log) }));

  const board = await Board.open(config, { clock, sim: opts.sim, openI2c: opts.openI2c, firmataIo: opts.firmataIo, onError });
  try {
    const powerLed = board.inputs.powerLed!;
    const hostOn = await powerLed.value();
    const bootStart = await startingRelays(board, boot.record, hostOn, { muxA: 'muxA', muxB: 'muxB', pwrA: 'pwrA', pwrB: 'pwrB' });
    const portStarts: StartingRelays[] = [];
    for (const p of ports) portStarts.push(await startingRelays(board, p.record, hostOn, portNames(p.bays)));
    const initial: Partial<Record<OutputName, boolean>> = { ...bootStart.initial, atxPower: false, atxReset: false };
    ports.forEach((p, i) => {
      const ch = portNames(p.bays);
      const r = portStarts[i]!.initial;
      Object.assign(initial, { [ch.muxA]: r.muxA, [ch.muxB]: r.muxB, [ch.pwrA]: r.pwrA, [ch.pwrB]: r.pwrB });
    });
    await board.claimOutputs(initial, (channel, on) => events.emit('relay', { channel, on }));

    const gate = new HostGate();
    const relays = Object.fromEntries(
      (['muxA', 'muxB', 'pwrA', 'pwrB', 'atxPower', 'atxReset'] as RelayName[]).map((n) => [n, board.relay(n)]),
    ) as Record<RelayName, ReturnType<Board['relay']>>;
    const bootSwitch = new BootSwitch(
      { relays, powerLed, sense: { muxA: board.inputs.senseMuxA, muxB: board.inputs.senseMuxB } },
      config.timing,
      boot.store,
      boot.record,
      clock,
      events,
      log,
      opts.hostLink ?? 'sata',
      gate,
    );
    settleStart(bootSwitch, bootStart, events, 'bay');
    const record = bootSwitch.record;

    const portSwitches: DataPortSwitch[] = ports.map((p, i) => {
      const ch = portNames(p.bays);
      const portEvents = new BootSwitchEmitter();
      const sw = new BootSwitch(
        {
          relays: { muxA: board.relay(ch.muxA), muxB: board.relay(ch.muxB), pwrA: board.relay(ch.pwrA), pwrB: board.relay(ch.pwrB), atxPower: relays.atxPower, atxReset: relays.atxReset },
          powerLed,
          sense: { muxA: board.inputs[ch.senseMuxA], muxB: board.inputs[ch.senseMuxB] },
        },
        config.timing,
        p.store,
        p.record,
        clock,
        portEvents,
        log,
        // Inline mode serves a data pair's drives through the export too: the port's relays keep both on the controller.
        opts.hostLink ?? 'sata',
        gate,
        { name: `data port ${p.bays.join('/')}`, bay: (pos) => (pos === 'A' ? p.bays[0] : p.bays[1]) },
      );
      // Start-up alerts of a data port reach the system's listeners, named by the port.
      settleStart(sw, portStarts[i]!, events, `data port ${p.bays.join('/')}: bay`);
      const leds = () => {
        const at = sw.bay;
        void board.outputs[ch.ledBayA]?.set(at === 'A').catch(onError);
        void board.outputs[ch.ledBayB]?.set(at === 'B').catch(onError);
      };
      for (const e of ['switched', 'isolated', 'alert'] as const) portEvents.on(e, leds);
      leds();
      return { bays: p.bays, sw, events: portEvents };
    });

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
      // A shutdown made by a move or window of any port, or asked by the operator through the controller, is the controller's own, not a failed boot.
      const operatorOff = gate.takeOperatorOff();
      if (on) gate.clearPendingPowerOn();
      const ours = on ? null : (gate.hostHeldBy() ?? operatorOff);
      void failover.dispatch({ type: 'host-power', on, ...(ours ? { ours } : {}) });
    });
    // A power-on skipped while a job kept the host off is made when the last such job ends.
    const stopResuming = gate.onKeptOffReleased(() => {
      void bootSwitch.resumePowerOn().catch((e: Error) => events.emit('alert', { level: 'critical', code: 'power-on-failed', message: `the owed power-on of the host failed: ${e.message}` }));
    });
    await failover.dispatch({ type: 'startup', buttonHeld: recoveryGesture, relayBay: bootSwitch.bay });
    failover.refreshIndicators();

    return {
      config,
      board,
      bootSwitch,
      ports: portSwitches,
      gate,
      failover,
      button,
      events,
      sim: board.sim,
      recoveryGesture,
      async close() {
        stopResuming();
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

function loadSwitch(stateDir: string, name: string, log: Logger): { store: DurableRecord<SwitchRecord>; record: SwitchRecord } {
  const store = new DurableRecord<SwitchRecord>(stateDir, name, validateSwitchRecord);
  const loaded = store.load();
  for (const p of loaded?.problems ?? []) if (!p.endsWith('missing')) log.warn({ problem: p, record: name }, 'switch state copy damaged; using the other');
  const record = loaded?.data ?? INITIAL_SWITCH_RECORD;
  if (!loaded) store.save(record);
  return { store, record };
}

interface StartingRelays {
  initial: SwitchRelays;
  adoptedWhy: string | null;
}

/**
 * The relays a switch starts with: the persisted ones, unless the host runs
 * on relays found in another valid state (a restart must never move a mux
 * under a running host): those are adopted.
 */
async function startingRelays(board: Board, record: SwitchRecord, hostOn: boolean, names: Record<keyof SwitchRelays, OutputName>): Promise<StartingRelays> {
  const physical: Partial<SwitchRelays> = {};
  for (const k of SWITCH_RELAYS) {
    const v = await board.peek(names[k]);
    if (v !== null) physical[k] = v;
  }
  if (hostOn && SWITCH_RELAYS.every((k) => physical[k] !== undefined)) {
    const p = physical as SwitchRelays;
    if (!samePattern(p, record.relays) && baysOnHost(p).length <= 1) {
      return { initial: p, adoptedWhy: `host running with relays ${JSON.stringify(p)}, recorded ${JSON.stringify(record.relays)}: kept as found` };
    }
  }
  return { initial: record.relays, adoptedWhy: null };
}

function settleStart(sw: BootSwitch, start: StartingRelays, events: BootSwitchEmitter, bayWord: string): void {
  const record = sw.record;
  if (start.adoptedWhy) {
    sw.adopt(start.initial, start.adoptedWhy);
    events.emit('alert', { level: 'warning', code: 'relays-adopted', message: start.adoptedWhy });
  } else if (record.pending) {
    const msg = `a move to ${bayWord} ${sw.naming.bay(record.pending.to)} was cut short; relays restored to bay ${record.bay === null ? 'none' : sw.naming.bay(record.bay)}`;
    sw.clearPending(msg);
    events.emit('alert', { level: 'warning', code: 'switch-interrupted', message: msg });
  }
}
