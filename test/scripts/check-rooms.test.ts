/**
 * The room check (scripts/check-rooms.mjs): the repository passes it, and
 * trees that cross the table — built in a temp dir with the real
 * docs/architecture.md — fail it with the crossing named.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const script = join(repo, 'scripts', 'check-rooms.mjs');

interface Crossing {
  file: string;
  line: number;
  spec: string;
  from: string;
  to: string | null;
  why: string;
}

function run(root: string, json = true) {
  const r = spawnSync(process.execPath, [script, '--root', root, ...(json ? ['--json'] : [])], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, report: json && r.status !== 2 ? (JSON.parse(r.stdout) as { files: number; rooms: number; crossings: Crossing[] }) : null };
}

/** A tree with the real room table and the given files. */
function tree(files: Record<string, string>, table = true): string {
  const root = mkdtempSync(join(tmpdir(), 'dpsr-rooms-'));
  if (table) {
    mkdirSync(join(root, 'docs'));
    copyFileSync(join(repo, 'docs', 'architecture.md'), join(root, 'docs', 'architecture.md'));
  }
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const ROOMS = {
  'src/errors.ts': 'export class DeviceError extends Error {}\n',
  'src/sata-bridge/index.ts': "export { openDrive } from './drive.ts';\n",
  'src/sata-bridge/drive.ts': "import { DeviceError } from '../errors.ts';\nexport const openDrive = () => new DeviceError();\n",
  'src/sync/index.ts': "export { runEngine } from './engine.ts';\n",
  'src/sync/engine.ts': "import { openDrive } from '../sata-bridge/index.ts';\nexport const runEngine = openDrive;\n",
  'src/bootswitch/index.ts': "export const relays = 6;\n",
  'firmware/flows/lib/client.js': "'use strict';\nmodule.exports = {};\n",
};

test('the repository crosses no room of its table', () => {
  const r = run(repo);
  assert.is(r.status, 0, r.stdout + r.stderr);
  assert.equal(r.report!.crossings, []);
  assert.ok(r.report!.files > 50, `${r.report!.files} files checked`);
});

test('a tree that keeps to the table passes', () => {
  const root = tree(ROOMS);
  try {
    const r = run(root);
    assert.is(r.status, 0, r.stdout + r.stderr);
    assert.is(r.report!.files, Object.keys(ROOMS).length);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a room importing a room its row does not name fails, through every kind of import', () => {
  const root = tree({
    ...ROOMS,
    // bootswitch may import only the leaves
    'src/bootswitch/relay.ts': "import { runEngine } from '../sync/index.ts';\nexport const r = runEngine;\n",
    // a type-only import is still a dependency on the room
    'src/bootswitch/types.ts': "import type { runEngine } from '../sync/index.ts';\nexport type R = typeof runEngine;\n",
    // below firmware/ nothing imports firmware/
    'src/sync/up.ts': "export const f = () => import('../../firmware/controller/api.ts');\n",
    'firmware/controller/api.ts': "import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\nexport const c = require('../flows/lib/client.js');\n",
    // the HIL tier keeps to the controller's API and its own helpers
    'test/hil/rig.ts': "import { DeviceError } from '../../src/errors.ts';\nexport const e = DeviceError;\n",
  });
  try {
    const r = run(root);
    assert.is(r.status, 1, r.stdout);
    const got = r.report!.crossings.map((c) => `${c.file}:${c.line} ${c.from}->${c.to}`).sort();
    assert.equal(got, [
      'firmware/controller/api.ts:3 controller->flows',
      'src/bootswitch/relay.ts:1 bootswitch->sync',
      'src/bootswitch/types.ts:1 bootswitch->sync',
      'src/sync/up.ts:1 sync->controller',
      'test/hil/rig.ts:1 hil->leaves',
    ]);
    const relay = r.report!.crossings.find((c) => c.file === 'src/bootswitch/relay.ts')!;
    assert.match(relay.why, /room bootswitch may not import room sync \(it may import: leaves\)/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('an import that reaches past a room\'s index fails and names the index', () => {
  const root = tree({
    ...ROOMS,
    'src/sync/engine.ts': "import { openDrive } from '../sata-bridge/drive.ts';\nexport const runEngine = openDrive;\n",
    'firmware/controller/jobs.ts': "export const j = () => import('../../src/sync/engine.ts');\n",
  });
  try {
    const r = run(root);
    assert.is(r.status, 1, r.stdout);
    assert.equal(
      r.report!.crossings.map((c) => [c.file, c.why]).sort(),
      [
        ['firmware/controller/jobs.ts', 'skips the index of room sync: import src/sync/index.ts'],
        ['src/sync/engine.ts', 'skips the index of room sata-bridge: import src/sata-bridge/index.ts'],
      ],
    );
    const text = run(root, false);
    assert.match(text.stdout, /^src\/sync\/engine\.ts:1: imports '\.\.\/sata-bridge\/drive\.ts': skips the index/m);
    assert.match(text.stdout, /2 crossing\(s\) of the room table/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('an import into no room of the table fails', () => {
  const root = tree({ ...ROOMS, 'src/sync/x.ts': "import '../../elsewhere/thing.ts';\n", 'elsewhere/thing.ts': '' });
  try {
    const r = run(root);
    assert.is(r.status, 1);
    assert.match(r.report!.crossings[0].why, /elsewhere\/thing\.ts belongs to no room/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a missing or malformed table is exit 2 with a message, not a pass', () => {
  const none = tree(ROOMS, false);
  const bad = tree({
    ...ROOMS,
    'docs/architecture.md': '| room | folders | owns | may import |\n|---|---|---|---|\n| sync | `src/sync` | copies | sata-bridge, disk-layuot |\n| sata-bridge | `src/sata-bridge` | drives | — |\n',
  }, false);
  try {
    const r1 = run(none);
    assert.is(r1.status, 2);
    assert.match(r1.stderr, /architecture\.md is missing/);
    const r2 = run(bad);
    assert.is(r2.status, 2);
    assert.match(r2.stderr, /may import "disk-layuot", which is not a room of the table/);
  } finally {
    rmSync(none, { recursive: true, force: true });
    rmSync(bad, { recursive: true, force: true });
  }
});

test.run();
