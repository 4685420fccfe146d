/**
 * The host PC as its ATX front-panel header sees it: a power LED, a power
 * button, a reset button, and heartbeats from the OS once it runs. One
 * interface for the relay-driven real host (RelayHost, here), the simulated
 * host (sim-host.ts) and the HIL tier's virtual machine; one contract suite
 * (test/support/host-contract.ts) runs against each.
 *
 * Button semantics are the ATX ones: a press of the power button shorter
 * than the forced-off time powers an off host on, or asks a running OS to
 * shut down (ACPI; a hung OS ignores it); held for the forced-off time
 * (4 s on a real supply), it cuts the power. A reset press restarts a
 * powered host.
 */
import { EventEmitter } from 'node:events';
import type { Bay } from './config.ts';
import type { InputChannel, OutputChannel } from './channel.ts';

export interface Host {
  /** Whether the power LED is lit. */
  powerLed(): Promise<boolean>;
  /** The power button's line: pressed (true) or released. */
  powerButton(pressed: boolean): Promise<void>;
  /** The reset button's line: pressed (true) or released. */
  resetButton(pressed: boolean): Promise<void>;
  /**
   * Calls `listener` on each heartbeat of the running OS, with the bay it
   * says it booted from (null when it does not know). Returns a function
   * that stops the calls.
   */
  onHeartbeat(listener: (bay: Bay | null) => void): () => void;
}

/**
 * The real host behind the controller's relays: the ATX power and reset
 * relays close the buttons' contacts, the power LED is an input, and
 * heartbeats arrive from wherever the host's agent reports them (the HTTP
 * API, a serial console), passed in with `heartbeat()`.
 */
export class RelayHost implements Host {
  readonly #beats = new EventEmitter<{ heartbeat: [Bay | null] }>();

  constructor(private readonly lines: { atxPower: OutputChannel; atxReset: OutputChannel; powerLed: InputChannel }) {}

  powerLed(): Promise<boolean> {
    return this.lines.powerLed.value();
  }

  powerButton(pressed: boolean): Promise<void> {
    return this.lines.atxPower.set(pressed);
  }

  resetButton(pressed: boolean): Promise<void> {
    return this.lines.atxReset.set(pressed);
  }

  onHeartbeat(listener: (bay: Bay | null) => void): () => void {
    this.#beats.on('heartbeat', listener);
    return () => this.#beats.off('heartbeat', listener);
  }

  /** The host's agent reported a heartbeat. */
  heartbeat(bay: Bay | null): void {
    this.#beats.emit('heartbeat', bay);
  }
}
