'use strict';
// Node-RED settings for the appliance: Node-RED runs as its own process beside
// dpsrd (a broken flow cannot take the controller down), keeps everything it
// writes in the daemon's state directory, and its editor sits behind a login.
//
//   DPSR_STATE_DIR          the daemon's state directory (required)
//   DPSR_URL                the daemon's API (default http://127.0.0.1:8750)
//   DPSR_TOKEN_FILE         its API token (default <state>/api-token)
//   DPSR_NODE_RED_LISTEN    HOST:PORT of the editor (default 127.0.0.1:1880; port 0 = any free port)
//   DPSR_MQTT_BROKER/PORT   where the default flows publish alerts (no broker by default: the
//                           alerts then show in the debug sidebar only; port default 1883)
//   DPSR_MQTT_TOPIC         topic prefix of those alerts (default dpsr)
//
// Secrets are created on first start, mode 0600, under <state>/node-red/:
// credential-secret (encrypts flows_cred.json) and admin-password (the
// editor's "admin" user; the settings keep only its bcrypt hash).
const { randomBytes } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const stateDir = process.env.DPSR_STATE_DIR;
if (!stateDir) throw new Error('DPSR_STATE_DIR is not set: the appliance settings keep the flows and their secrets in the daemon state directory');
const userDir = path.join(path.resolve(stateDir), 'node-red');
fs.mkdirSync(userDir, { recursive: true, mode: 0o700 });

/** A secret file, created once with 0600 (O_EXCL, so two starts cannot race to different values). */
function secret(name, bytes) {
  const file = path.join(userDir, name);
  try {
    fs.writeFileSync(file, randomBytes(bytes).toString('base64url') + '\n', { flag: 'wx', mode: 0o600 });
  } catch (e) {
    if (e.code !== 'EEXIST') throw e;
  }
  const value = fs.readFileSync(file, 'utf8').trim();
  if (value.length < 16) throw new Error(`${file} holds a secret shorter than 16 characters; delete it to have a new one made`);
  return value;
}

// First start: the operator edits a copy in the state directory, never the installed defaults.
const flowFile = path.join(userDir, 'flows.json');
if (!fs.existsSync(flowFile)) fs.copyFileSync(path.join(__dirname, 'flows.json'), flowFile);

const listen = process.env.DPSR_NODE_RED_LISTEN || '127.0.0.1:1880';
const m = /^(.*):(\d{1,5})$/.exec(listen);
if (!m) throw new Error(`DPSR_NODE_RED_LISTEN is ${JSON.stringify(listen)}; expected HOST:PORT, e.g. 127.0.0.1:1880`);

const defaults = {
  DPSR_URL: 'http://127.0.0.1:8750',
  DPSR_TOKEN_FILE: path.join(path.resolve(stateDir), 'api-token'),
  DPSR_MQTT_PORT: '1883',
  DPSR_MQTT_TOPIC: 'dpsr',
};
// The default flows read these through ${VAR} in node properties.
for (const [k, v] of Object.entries(defaults)) if (!process.env[k]) process.env[k] = v;
// No broker set: the broker node does not connect at all (it would retry, and log, every 5 s).
process.env.DPSR_MQTT_BROKER = process.env.DPSR_MQTT_BROKER || '';
process.env.DPSR_MQTT_AUTOCONNECT = process.env.DPSR_MQTT_BROKER ? 'true' : 'false';

// Started by dpsrd's supervisor: when it dies (dpsrd killed), go too rather than
// linger with the port held and no one to stop us.
if (typeof process.send === 'function') process.once('disconnect', () => process.exit(0));

const nodeRedDir = path.dirname(require.resolve('node-red/package.json'));
const bcrypt = require(require.resolve('bcryptjs', { paths: [nodeRedDir] }));

module.exports = {
  userDir,
  flowFile: 'flows.json',
  flowFilePretty: true,
  credentialSecret: secret('credential-secret', 32),
  uiHost: m[1] || '127.0.0.1',
  uiPort: Number(m[2]),
  // The dpsr nodes load from this package directly, without an npm install into userDir.
  nodesDir: [path.resolve(__dirname, '..')],
  adminAuth: {
    type: 'credentials',
    users: [{ username: 'admin', password: bcrypt.hashSync(secret('admin-password', 18), 10), permissions: '*' }],
  },
  // Flows on the appliance must not install code at run time.
  externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
  functionExternalModules: false,
  diagnostics: { enabled: false, ui: false },
  runtimeState: { enabled: false, ui: false },
  telemetry: { enabled: false },
  logging: { console: { level: process.env.DPSR_NODE_RED_LOG || 'info', metrics: false, audit: false } },
  editorTheme: {
    projects: { enabled: false },
    tours: false,
    page: { title: 'dpsr flows' },
    header: { title: 'dpsr flows' },
  },
};
