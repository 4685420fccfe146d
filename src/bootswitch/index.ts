/** The public surface of src/bootswitch (see README.md). */
export { openBootSwitch, type OpenOptions, type BootSwitchSystem, type DataPortSwitch } from './system.ts';
export {
  validateConfig,
  simConfig,
  DEFAULT_TIMING,
  DEFAULT_FAILOVER,
  BAYS,
  RELAYS,
  INPUTS,
  OPTIONAL_OUTPUTS,
  OPTIONAL_INPUTS,
  DATA_PORTS,
  PORT_RELAYS,
  PORT_OUTPUTS,
  PORT_INPUTS,
  portChannels,
  wiredPorts,
  type DataPort,
  type DataBay,
  type Bay,
  type BootSwitchConfig,
  type BoardConfig,
  type ChannelRef,
  type TimingConfig,
  type FailoverConfig,
  type I2cPeripheralsConfig,
} from './config.ts';
export { checkAgainstWiring, type Wiring, type WiringBoard, type WiringNet } from './wiring.ts';
export { Board, type BoardDeps } from './board.ts';
export { BootSwitch, HostGate, BOOT_PORT_NAMING, hostPowerDecision, type MovePhase, type SwitchNaming, type ConnectHook, type HostLink, type MoveOptions, type MoveReport, type SwitchRecord } from './boot-switch.ts';
export { reduce, initialFailoverState, validateFailoverState, type FailoverState, type FailoverEvent, type FailoverAction, type Step } from './failover.ts';
export { FailoverShell, type FailoverInput } from './failover-shell.ts';
export { ButtonWatcher, type ButtonGesture } from './button.ts';
export { BootSwitchEmitter, type BootSwitchEvents, type AlertEvent, type SwitchStepEvent } from './events.ts';
export { SimBoard, SIM_RELAYS, SIM_PORT_RELAYS, type Violation } from './sim-board.ts';
export { SimHost, type HostState, type SimHostOptions } from './sim-host.ts';
export { RelayHost, type Host } from './host.ts';
export { SimI2cBus, SimMcp23017, SimPcf8574, SimSsd1306, SimIna219 } from './sim-i2c.ts';
export { Ssd1306, renderStatus, FrameBuffer, type StatusScreen } from './ssd1306.ts';
export { Ina219, classifyRail, type RailReading } from './ina219.ts';
export { Mcp23017Driver } from './mcp23017.ts';
export { Pcf8574Driver } from './pcf8574.ts';
export { listChips, resolveLine, type GpioChipInfo } from './gpio-chip.ts';
export { systemClock, ManualClock, type Clock } from './clock.ts';
export { patternFor, baysOnHost, ISOLATED, type SwitchRelays } from './relay-pattern.ts';
export type { DigitalInput, DigitalOutput, Driver, DriverKind, I2cBus, Logger } from './io.ts';
export { defaultOpenI2c } from './board.ts';
