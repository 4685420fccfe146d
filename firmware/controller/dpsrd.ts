/**
 * `dpsrd`: the controller daemon. Options win over environment variables,
 * which win over the config file. Logs (pino) go to stdout: JSON with
 * syslog priorities under journald, readable lines on a terminal (see
 * log-output.ts); a short human banner with the URL and the token file goes
 * to stderr. Under systemd it reports readiness and feeds the watchdog
 * (systemd.ts).
 */
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { BadInputError, describeError, exitCodeFor } from '../../src/errors.ts';
import { defaultStateDir } from '../../src/sync/index.ts';
import { loadConfigFile, parseListen } from './config.ts';
import { startDaemon, DEFAULT_LISTEN } from './daemon.ts';
import { startNodeRed } from './node-red-runner.ts';
import { logDestination, resolveLogFormat } from './log-output.ts';
import { serviceNotifier } from './systemd.ts';
import { packageVersion } from './cli/version.ts';

const USAGE = `Usage: dpsrd [--config FILE] [--state-dir DIR] [--listen HOST:PORT]
             [--log-level LEVEL] [--log-format FORMAT] [--node-red]
       dpsrd --check-config FILE

  --config FILE            YAML or JSON config; without one the simulated rig
                           runs
  --state-dir DIR          state directory (env DPSR_STATE_DIR; default
                           /var/lib/dpsr as root, else ~/.local/state/dpsr)
  --default-state-dir DIR  the state directory when neither --state-dir nor
                           DPSR_STATE_DIR is given (npm start uses
                           ./.dpsr-state)
  --listen HOST:PORT       where the API listens (env DPSR_LISTEN; default
                           ${DEFAULT_LISTEN}; port 0 picks a free one)
  --log-level LEVEL        fatal, error, warn, info, debug, trace or silent
                           (env DPSR_LOG_LEVEL)
  --log-format FORMAT      auto (default), json, pretty or journal (env
                           DPSR_LOG_FORMAT): auto writes JSON lines with syslog
                           priority prefixes under systemd, one readable line
                           per entry on a terminal, JSON otherwise
  --check-config FILE      validate a config file (every key, docs/config.md)
                           and exit: 0 valid, 2 with the error
  --node-red               also run Node-RED with the appliance flows, as a
                           supervised child process (env DPSR_NODE_RED=1; editor
                           on DPSR_NODE_RED_LISTEN, default 127.0.0.1:1880)
  -V, --version            print the version
  -h, --help               this usage`;

async function main(): Promise<void> {
  let values;
  try {
    values = parseArgs({
      args: process.argv.slice(2),
      options: {
        config: { type: 'string' },
        'state-dir': { type: 'string' },
        'default-state-dir': { type: 'string' },
        listen: { type: 'string' },
        'log-level': { type: 'string' },
        'log-format': { type: 'string' },
        'check-config': { type: 'string' },
        'node-red': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new BadInputError((e as Error).message, { hint: 'run `dpsrd --help`' });
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values.version) {
    console.log(packageVersion());
    return;
  }
  // Checked before --check-config answers: a config found valid must start the daemon with the same command line.
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  const level = values['log-level'] ?? process.env.DPSR_LOG_LEVEL;
  if (level !== undefined && !levels.includes(level)) {
    const from = values['log-level'] !== undefined ? '--log-level' : 'DPSR_LOG_LEVEL';
    throw new BadInputError(`${from} is ${JSON.stringify(level)}; allowed: ${levels.join(', ')}`, { hint: `give one of them with ${from}` });
  }
  const logFormat = resolveLogFormat(values['log-format'] ?? process.env.DPSR_LOG_FORMAT);
  const listen = values.listen ?? process.env.DPSR_LISTEN;
  if (listen !== undefined) parseListen(listen, values.listen !== undefined ? '--listen' : 'DPSR_LISTEN');
  if (values['check-config'] !== undefined) {
    const c = loadConfigFile(values['check-config']);
    process.stdout.write(`${c.source}: valid (rig ${c.rig}${c.rig === 'hardware' ? `, bays A ${c.drives!.A} and B ${c.drives!.B}` : ''})\n`);
    return;
  }
  const stateDir = resolve(values['state-dir'] ?? process.env.DPSR_STATE_DIR ?? values['default-state-dir'] ?? defaultStateDir());
  const config = values.config ? loadConfigFile(values.config) : undefined;
  const daemon = await startDaemon({ stateDir, listen, config, logLevel: level, logStream: logDestination(logFormat) as unknown as NodeJS.WritableStream });
  const serviceManager = serviceNotifier({ warn: (message, extra) => daemon.log.warn(extra ?? {}, message) });
  process.stderr.write(
    `dpsrd: ${daemon.app.config.rig === 'sim' ? 'simulated rig' : 'hardware rig'} up at ${daemon.url}\n` +
      `dpsrd: state in ${daemon.stateDir}; API token in ${daemon.tokenFile}\n` +
      `dpsrd: console at ${daemon.url}/${daemon.httpsUrl ? ` and ${daemon.httpsUrl}/` : ''} (password in ${daemon.adminPasswordFile})\n` +
      `dpsrd: try  curl -H "Authorization: Bearer $(cat ${daemon.tokenFile})" ${daemon.url}/api/status\n` +
      `dpsrd:  or  DPSR_STATE_DIR=${daemon.stateDir} node bin/dpsr.js status --url ${daemon.url}\n`,
  );
  const nodeRed = values['node-red'] || process.env.DPSR_NODE_RED === '1' ? startNodeRed(daemon, { banner: (line) => process.stderr.write(`dpsrd: ${line}\n`) }) : null;
  // Ready once the API answers (Type=notify): units ordered after dpsrd can talk to it.
  serviceManager.ready(`API at ${daemon.url}`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(130);
    stopping = true;
    daemon.log.info({ signal }, 'stopping');
    serviceManager.stopping();
    serviceManager.close();
    Promise.all([nodeRed?.stop(), daemon.close()]).then(
      () => process.exit(0),
      (e) => {
        daemon.log.error({ err: e }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((e: unknown) => {
  process.stderr.write(`dpsrd: ${describeError(e)}\n`);
  if (process.env.DPSR_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  process.exit(exitCodeFor(e));
});
