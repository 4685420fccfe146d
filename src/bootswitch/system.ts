/**
 * Composition: config → board → boot switch → failover shell → button.
 * Start-up restores the persisted relay state without ever driving a relay
 * under a host that is, or may be, powered (startupRelayDecision): with the
 * host off the recorded pattern is written, break first, and read back;
 * with it on (or its LED unreadable), relays found as recorded are kept, and
 * relays found otherwise or unreadable are left as they are, the switch's
 * state is unknown (everything using its drives is refused) until the host
 * is off and the recorded pattern is applied.
 */
import { BootSwitch, HostGate, INITIAL_SWITCH_RECORD, startupRelayDecision, validateSwitchRecord, type HostLink, type StartupRelayAction, type SwitchRecord } from './boot-switch.ts';
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
    // An unreadable power LED is a host that may be running.
    const hostOn = await powerLed.value().catch(() => null);
    const bootNames = { muxA: 'muxA', muxB: 'muxB', pwrA: 'pwrA', pwrB: 'pwrB' } as const;
    const bootStart = await startingRelays(board, boot.record, hostOn, bootNames);
    const portStarts: StartingRelays[] = [];
    for (const p of ports) portStarts.push(await startingRelays(board, p.record, hostOn, portNames(p.bays)));
    const initial: Partial<Record<OutputName, boolean>> = { atxPower: false, atxReset: false };
    const leave = new Set<OutputName>();
    const first: OutputName[] = [];
    for (const [start, names] of [[bootStart, bootNames], ...ports.map((p, i) => [portStarts[i]!, portNames(p.bays)] as const)] as const) {
      for (const k of SWITCH_RELAYS) {
        const v = start.initial[k];
        if (v === null) leave.add(names[k]);
        else initial[names[k]] = v;
      }
      // Break before make: the muxes that take a drive off the host are written first.
      if (start.initial.muxA === true) first.push(names.muxA);
      if (start.initial.muxB === false) first.push(names.muxB);
    }
    const onRelay = (channel: string, on: boolean) => events.emit('relay', { channel, on });
    await board.claimOutputs(initial, onRelay, { leave, first });

    const gate = new HostGate();
    // Read through getters: the lines of a held switch are claimed only once the host is off.
    const lineGetters = (names: Record<RelayName, OutputName>) =>
      Object.defineProperties({}, Object.fromEntries(Object.entries(names).map(([k, n]) => [k, { enumerable: true, get: () => board.relay(n as RelayName) }]))) as Record<RelayName, ReturnType<Board['relay']>>;
    const relays = lineGetters({ ...bootNames, atxPower: 'atxPower', atxReset: 'atxReset' });
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
    await settleStart(bootSwitch, bootStart, events, 'bay', board, bootNames, onRelay);
    const record = bootSwitch.record;

    const portBuilt = ports.map((p, i) => {
      const ch = portNames(p.bays);
      const portEvents = new BootSwitchEmitter();
      const sw = new BootSwitch(
        {
          relays: lineGetters({ muxA: ch.muxA, muxB: ch.muxB, pwrA: ch.pwrA, pwrB: ch.pwrB, atxPower: 'atxPower', atxReset: 'atxReset' } as Record<RelayName, OutputName>),
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
      return { p, ch, sw, portEvents, start: portStarts[i]! };
    });
    const portSwitches: DataPortSwitch[] = [];
    for (const { p, ch, sw, portEvents, start } of portBuilt) {
      await settleStart(sw, start, events, `data port ${p.bays.join('/')}: bay`, board, ch, onRelay);
      const leds = () => {
        const at = sw.bay;
        void board.outputs[ch.ledBayA]?.set(at === 'A').catch(onError);
        void board.outputs[ch.ledBayB]?.set(at === 'B').catch(onError);
      };
      for (const e of ['switched', 'isolated', 'alert'] as const) portEvents.on(e, leds);
      leds();
      portSwitches.push({ bays: p.bays, sw, events: portEvents });
    }

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
    const switches = [bootSwitch, ...portSwitches.map((p) => p.sw)];
    const unknownRelays = new UnknownRelayRetry(switches, () => powerLed.readNow(), clock);
    powerLed.onChange((on) => {
      events.emit('host', { powered: on });
      // A shutdown made by a move or window of any port, or asked by the operator through the controller, is the controller's own, not a failed boot.
      const operatorOff = gate.takeOperatorOff();
      if (on) gate.clearPendingPowerOn();
      const ours = on ? null : (gate.hostHeldBy() ?? operatorOff);
      const dispatch = () => void failover.dispatch({ type: 'host-power', on, ...(ours ? { ours } : {}) });
      // The host is off: relays start-up left unknown get the recorded pattern before the failover machine may move them.
      if (!on && switches.some((sw) => sw.unknown !== null)) void unknownRelays.hostOff().then(dispatch);
      else dispatch();
    });
    // Start-up with the host off may have left a switch unknown (its pattern did not read back): tried again while the host stays off.
    unknownRelays.retryLater();
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
        // A closed controller drives no relay: an apply under way stops at its next wait and is awaited.
        await unknownRelays.close();
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
  /** Per relay: the level to claim it with, or null to leave it unclaimed (unreadable under a powered host). */
  initial: Record<keyof SwitchRelays, boolean | null>;
  found: SwitchRelays | null;
  hostOn: boolean | null;
  decision: StartupRelayAction;
}

/**
 * The relays a switch starts with (startupRelayDecision): with the host off
 * the recorded pattern; else the latches as found (a restart must never
 * drive a relay under a running host), unreadable lines left unclaimed.
 */
async function startingRelays(board: Board, record: SwitchRecord, hostOn: boolean | null, names: Record<keyof SwitchRelays, OutputName>): Promise<StartingRelays> {
  const physical: Partial<SwitchRelays> = {};
  for (const k of SWITCH_RELAYS) {
    const v = await board.peek(names[k]);
    if (v !== null) physical[k] = v;
  }
  const found = SWITCH_RELAYS.every((k) => physical[k] !== undefined) ? (physical as SwitchRelays) : null;
  const decision = startupRelayDecision(found, record.relays, hostOn);
  const initial = decision.action === 'apply' ? { ...record.relays } : { muxA: physical.muxA ?? null, muxB: physical.muxB ?? null, pwrA: physical.pwrA ?? null, pwrB: physical.pwrB ?? null };
  return { initial, found, hostOn, decision };
}

/** Both drives off the host and unpowered: what a line start-up left unclaimed is claimed with, before the recorded pattern is made. */
const BROKEN: SwitchRelays = { muxA: true, muxB: false, pwrA: true, pwrB: true };

async function settleStart(sw: BootSwitch, start: StartingRelays, events: BootSwitchEmitter, bayWord: string, board: Board, names: Record<keyof SwitchRelays, OutputName>, onRelay: (channel: string, on: boolean) => void): Promise<void> {
  const record = sw.record;
  const where = sw.naming.name;
  // Patterns by the config's channel names (a data port's positions A and B are bays like C and D).
  const named = (r: SwitchRelays | null) => JSON.stringify(Object.fromEntries(SWITCH_RELAYS.map((k) => [names[k], r?.[k]])));
  if (start.decision.action === 'apply') {
    // Written at the claim: read back before anything relies on it.
    const read = await sw.readRelays();
    if (!samePattern(read, record.relays)) {
      const why = `the recorded pattern ${named(record.relays)} was written with the host off but reads back ${named(read)}`;
      sw.hold(why, async () => {});
      events.emit('alert', { level: 'critical', code: 'relays-unknown', message: `${where}: ${why}; its drives are not used. Check the relay board; dpsr tries again when the host is next seen off` });
      return;
    }
  } else if (start.decision.action === 'hold') {
    const left = SWITCH_RELAYS.filter((k) => start.initial[k] === null);
    const found =
      start.decision.found === 'unreadable' ? `relay latches ${left.map((k) => names[k]).join(', ')} cannot be read back`
      : start.decision.found === 'both-on-host' ? `relays ${named(start.found)} connect both drives to the host`
      : `relays ${named(start.found)} differ from the record`;
    const why = `the host is ${start.hostOn === null ? 'of unknown power (its power LED cannot be read)' : 'powered'} and ${found}; recorded ${named(record.relays)} (bay ${record.bay === null ? 'none' : sw.naming.bay(record.bay)})`;
    sw.hold(why, async () => board.claimOutputs(Object.fromEntries(left.map((k) => [names[k], BROKEN[k]])), onRelay, { only: left.map((k) => names[k]) }));
    events.emit('alert', {
      level: 'critical',
      code: 'relays-unknown',
      message: `${where}: ${why}. No relay was driven, and every job and move using its drives is refused. Shut the host down (from its OS, or POST /api/host/shutdown): dpsr then applies the recorded pattern, break before make, and reads it back`,
    });
    return;
  }
  if (record.pending) {
    const msg = `a move to ${bayWord} ${sw.naming.bay(record.pending.to)} was cut short; relays restored to bay ${record.bay === null ? 'none' : sw.naming.bay(record.bay)}`;
    sw.clearPending(msg);
    events.emit('alert', { level: 'warning', code: 'switch-interrupted', message: msg });
  }
}

/** First wait before a switch still unknown with the host off is tried again; doubled after each attempt up to UNKNOWN_RETRY_MAX_MS. */
const UNKNOWN_RETRY_FIRST_MS = 1000;
const UNKNOWN_RETRY_MAX_MS = 8000;

/**
 * Brings switches whose relay state is unknown (BootSwitch.unknown) back to
 * their recorded pattern while the host is off: at each dark power LED, and
 * again while it stays dark (a welded relay freed, a move that held the host
 * gate ended, the host powered on in the middle of an attempt), waiting
 * 1 s, 2 s, 4 s, then every 8 s between attempts. Each switch is tried on
 * its own, one after the other (each takes the host gate): one that fails
 * does not keep the others unknown. No attempt drives a relay under a
 * powered host (applyRecorded reads the power LED first and between steps).
 */
class UnknownRelayRetry {
  #run: Promise<void> | null = null;
  #timer: unknown = null;
  #waitMs = UNKNOWN_RETRY_FIRST_MS;
  #closed = false;
  readonly #abort = new AbortController();

  constructor(
    private readonly switches: BootSwitch[],
    private readonly hostPowered: () => Promise<boolean>,
    private readonly clock: Clock,
  ) {}

  /** The power LED went dark: tries every unknown switch now (or joins the attempt under way). Never rejects. */
  hostOff(): Promise<void> {
    this.#waitMs = UNKNOWN_RETRY_FIRST_MS;
    return this.#attempt();
  }

  #attempt(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#run ??= (async () => {
      for (const sw of this.switches) if (sw.unknown !== null && !this.#closed) await sw.applyRecorded(this.#abort.signal);
    })().finally(() => {
      this.#run = null;
      this.retryLater();
    });
    return this.#run;
  }

  /** Schedules the next attempt when a switch is still unknown; the attempt runs only if the host is off then. */
  retryLater(): void {
    if (this.#closed || this.#timer !== null || this.#run !== null) return;
    if (!this.switches.some((sw) => sw.unknown !== null)) {
      this.#waitMs = UNKNOWN_RETRY_FIRST_MS;
      return;
    }
    const wait = this.#waitMs;
    this.#waitMs = Math.min(wait * 2, UNKNOWN_RETRY_MAX_MS);
    this.#timer = this.clock.setTimeout(() => {
      this.#timer = null;
      // A lit (or unreadable) LED ends the retries: its going dark starts them again.
      void this.hostPowered().then(
        (on) => (on ? undefined : this.#attempt()),
        () => undefined,
      );
    }, wait);
  }

  /** Stops the retries and any attempt under way (at its next wait), and waits for it to end. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== null) this.clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.#abort.abort(new Error('the controller is closing'));
    await this.#run;
  }
}
