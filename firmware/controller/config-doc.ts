/**
 * docs/config.md, generated: every key of dpsrd's config file with its type,
 * default and meaning, from the same schema that validates the file
 * (config.ts) and, for `bootswitch`, from the board validator's own lists
 * and defaults (src/bootswitch). A test fails when the committed file is
 * stale.
 *
 *   npx tsx firmware/controller/config-doc.ts --write    regenerate docs/config.md
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DATA_PORTS, DEFAULT_FAILOVER, DEFAULT_TIMING, INPUTS, OPTIONAL_INPUTS, OPTIONAL_OUTPUTS, PORT_INPUTS, PORT_OUTPUTS, RELAYS } from '../../src/bootswitch/index.ts';
import { configSchema } from './config.ts';
import type { JsonSchema } from './schema.ts';

export const CONFIG_DOC_PATH = fileURLToPath(new URL('../../docs/config.md', import.meta.url));

/** The meaning of each board setting (the validator in src/bootswitch/config.ts holds the ranges and defaults). */
const TIMING: Record<keyof typeof DEFAULT_TIMING, string> = {
  settleMs: 'wait after a mux relay moves before the next step (contact bounce, SATA link drop)',
  powerOffMs: "wait after cutting a drive's power (spin-down) before moving its mux",
  powerOnMs: "wait after restoring a drive's power before reading back and booting",
  shutdownPulseMs: 'ATX power-button pulse that asks the OS for an ACPI shutdown (below 4000)',
  hardOffPulseMs: 'ATX power-button hold that forces the power supply off (at least 4000)',
  powerOnPulseMs: 'ATX power-button pulse that powers the host on',
  shutdownTimeoutMs: 'how long to wait for the power LED to go dark after a shutdown request',
  pulseMinMs: 'shortest pulse allowed on the ATX lines',
  pulseMaxMs: 'longest pulse allowed on the ATX lines',
  debounceMs: 'how long an input must hold a level before it counts (button, power LED)',
  pollMs: 'how often inputs are read on drivers without edge interrupts',
  holdMs: 'how long the button must be held to fail over (at least 500)',
  blinkMs: 'half-period of a blinking LED',
};
const FAILOVER: Record<keyof typeof DEFAULT_FAILOVER, string> = {
  bootTries: 'unconfirmed boots allowed per bay before the daemon fails over by itself',
  confirmTimeoutMs: 'a boot counts as good when a host heartbeat arrives within this time of power-on',
  hardOffOnButton: 'a button failover may force the host off when it ignores the shutdown request',
};
const CHANNELS: Record<string, string> = {
  muxA: "relay K_MUX_A: bay A's drive to the host (de-energised) or to the controller's bridge",
  muxB: "relay K_MUX_B: bay B's drive to the host or to the controller's bridge",
  pwrA: "relay K_PWR_A: energised cuts bay A's drive power",
  pwrB: "relay K_PWR_B: energised cuts bay B's drive power",
  atxPower: "relay K_ATX_PWR across the host's power-button header (pulsed)",
  atxReset: "relay K_ATX_RST across the host's reset header (pulsed)",
  powerLed: "input: the host's power LED (through an optocoupler), read before every switch",
  button: 'input: the front-panel failover button',
  ledStatus: 'LED: green, the appliance state (see docs/front-panel.md)',
  ledFault: 'LED: red, a fault or an inconsistent standby',
  ledBayA: 'LED: bay A is connected to the host',
  ledBayB: 'LED: bay B is connected to the host',
  senseMuxA: "input: contact sense of K_MUX_A, read back after every move",
  senseMuxB: "input: contact sense of K_MUX_B, read back after every move",
  // A data port's lines: its first bay is on the host's data port with every coil released, as bay A is on the boot port.
  ...Object.fromEntries(
    DATA_PORTS.flatMap(([c, d]) => [
      [`mux${c}`, `relay K_MUX_${c}: bay ${c}'s drive to the host's data port (de-energised) or to the controller's bridge; muxC, muxD, pwrC, pwrD (and likewise E/F, G/H) are given together, and a data pair on bays ${c} and ${d} needs them`],
      [`mux${d}`, `relay K_MUX_${d}: energised connects bay ${d}'s drive to the host's data port`],
      [`pwr${c}`, `relay K_PWR_${c}: energised cuts bay ${c}'s drive power`],
      [`pwr${d}`, `relay K_PWR_${d}: energised cuts bay ${d}'s drive power`],
      [`ledBay${c}`, `LED: bay ${c} is connected to the host's data port`],
      [`ledBay${d}`, `LED: bay ${d} is connected to the host's data port`],
      [`senseMux${c}`, `input: contact sense of K_MUX_${c}, read back after every move`],
      [`senseMux${d}`, `input: contact sense of K_MUX_${d}, read back after every move`],
    ]),
  ),
};

function typeText(j: JsonSchema): string {
  if (Array.isArray(j.enum)) return (j.enum as string[]).map((v) => `\`${JSON.stringify(v)}\``).join(' \\| ');
  switch (j.type) {
    case 'integer':
    case 'number':
      return `${j.type} ${j.minimum}–${j.maximum}`;
    case 'string':
      return j.pattern ? `string (\`${String(j.pattern).replace(/\|/g, '\\|')}\`)` : 'string';
    case 'array':
      return `list of ${typeText(j.items as JsonSchema)} (at most ${j.maxItems})`;
    default:
      return String(j.type);
  }
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function rows(j: JsonSchema, prefix: string, out: string[][]): void {
  const props = (j.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((j.required ?? []) as string[]);
  for (const [k, v] of Object.entries(props)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (!v.description) throw new Error(`config key ${key} has no description: give it one in config.ts`);
    const nested = v.type === 'object' && v.properties;
    const dflt = v.default === undefined || nested ? (required.has(k) ? 'required' : '—') : `\`${JSON.stringify(v.default)}\``;
    const items = v.type === 'array' ? (v.items as JsonSchema) : null;
    const listOfObjects = items?.type === 'object' && items.properties;
    out.push([`\`${key}\``, nested ? 'object' : listOfObjects ? `list of objects (at most ${v.maxItems})` : typeText(v), dflt, cell(String(v.description))]);
    if (nested) rows(v, key, out);
    // Each item's keys, as key[].field (e.g. pairs[].bays).
    if (listOfObjects) rows(items!, `${key}[]`, out);
  }
}

function table(header: string[], body: string[][]): string {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function described<K extends string>(what: string, keys: readonly K[], meanings: Record<string, string>): [K, string][] {
  return keys.map((k) => {
    const m = meanings[k];
    if (!m) throw new Error(`${what} ${k} has no description: add it to config-doc.ts`);
    return [k, m];
  });
}

/** The whole reference as Markdown. Throws when a key lacks its meaning, so nothing goes undocumented. */
export function configReference(): string {
  const main: string[][] = [];
  rows(configSchema.json, '', main);
  const timing = described('bootswitch.timing', Object.keys(DEFAULT_TIMING) as (keyof typeof DEFAULT_TIMING)[], TIMING).map(([k, m]) => [`\`bootswitch.timing.${k}\``, 'integer 0–3600000 (ms)', `\`${DEFAULT_TIMING[k]}\``, m]);
  const failover = described('bootswitch.failover', Object.keys(DEFAULT_FAILOVER) as (keyof typeof DEFAULT_FAILOVER)[], FAILOVER).map(([k, m]) => [
    `\`bootswitch.failover.${k}\``,
    typeof DEFAULT_FAILOVER[k] === 'boolean' ? 'boolean' : k === 'bootTries' ? 'integer 1–20' : 'integer 1000–86400000 (ms)',
    `\`${DEFAULT_FAILOVER[k]}\``,
    m,
  ]);
  const required = new Set<string>([...RELAYS, ...INPUTS]);
  const channels = described('bootswitch.channels', [...RELAYS, ...INPUTS, ...OPTIONAL_OUTPUTS, ...OPTIONAL_INPUTS, ...PORT_OUTPUTS, ...PORT_INPUTS], CHANNELS).map(([k, m]) => [`\`bootswitch.channels.${k}\``, '{ board, pin, activeLow? }', required.has(k) ? 'required' : '—', m]);
  return `<!-- Generated by firmware/controller/config-doc.ts from the config schema: do not edit; run \`npx tsx firmware/controller/config-doc.ts --write\`. -->
# dpsrd configuration reference

\`dpsrd --config FILE\` reads one YAML or JSON file; \`dpsrd --check-config FILE\`
checks one and exits (0 valid, 2 with the error). Every key is checked before
anything starts: an unknown key or a bad value stops the daemon with a message
naming the key, the value and what is allowed. Without a file the simulated rig
runs with the defaults below. \`deploy/config.example.yaml\` is a hardware rig.

Options and environment variables win over the file: \`--listen\`/\`DPSR_LISTEN\`,
\`--log-level\`/\`DPSR_LOG_LEVEL\`, \`--state-dir\`/\`DPSR_STATE_DIR\`.

## Keys

${table(['key', 'type', 'default', 'meaning'], main)}

## \`bootswitch\`: the relay board, button, LEDs and I2C peripherals

Required on the hardware rig; on the simulated rig only \`timing\` and
\`failover\` may be given. The wiring in \`hw/schematics/wiring.json\` is the
reference; the tests check \`deploy/config.example.yaml\` against it.

### \`bootswitch.boards.<name>\`

Each board has a \`driver\` and that driver's settings:

| driver | settings | pins |
|---|---|---|
| \`gpio\` | \`chip\`: the gpiochip label (e.g. \`pinctrl-bcm2711\`) | line offsets 0–1023 |
| \`mcp23017\` | \`bus\` 0–255, \`address\` 0x20–0x27 | \`A0\`–\`B7\` or 0–15 |
| \`pcf8574\` | \`bus\` 0–255, \`address\` 0x20–0x27 or 0x38–0x3F (PCF8574A) | 0–7 |
| \`firmata\` | \`port\` (serial device), \`baudRate\` 9600–115200, \`reconnectMs\` 100–600000 | 2–69 |
| \`sim\` | none | any name |

### \`bootswitch.channels\`

\`activeLow: true\` means electrical low is "on" (most relay modules and
optocoupler inputs). No two channels may share a pin.

${table(['key', 'type', 'default', 'meaning'], channels)}

### \`bootswitch.timing\` and \`bootswitch.failover\`

${table(['key', 'type', 'default', 'meaning'], [...timing, ...failover])}

### \`bootswitch.i2c\`

| key | type | default | meaning |
|---|---|---|---|
| \`bootswitch.i2c.bus\` | integer 0–255 | required | the I2C bus of the OLED and the power monitors (\`/dev/i2c-N\`) |
| \`bootswitch.i2c.oled.address\` | integer 0x3C–0x3D | — | the SSD1306 status display |
| \`bootswitch.i2c.ina219\` | list of { bay, address 0x40–0x4F, shuntOhms > 0 and ≤ 10 } | — | INA219 monitors on the drives' power rails (drive-dead and drive-stuck alerts) |
`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes('--write')) {
    writeFileSync(CONFIG_DOC_PATH, configReference());
    process.stdout.write(`wrote ${CONFIG_DOC_PATH}\n`);
  } else process.stdout.write(configReference());
}
