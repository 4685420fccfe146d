#!/usr/bin/env node
// Fails when an import crosses the room table of docs/architecture.md: a room
// importing a room it may not import, or reaching past another room's index
// into its files. The table in the document is the one enforced, so the map
// and the code cannot drift apart silently.
//
// Usage: node scripts/check-rooms.mjs [--root DIR] [--json]
// Exit: 0 no crossings, 1 crossings (listed one a line), 2 the table cannot be read.
//
// Imports are found with TypeScript's own pre-processor (static imports,
// `export … from`, `import()`, `require()`, type-only imports included), not
// with regular expressions of our own.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ts = require('typescript');

const SOURCE = /\.(ts|tsx|mts|cts|js|mjs|cjs)$/;
const SKIP_DIRS = new Set(['node_modules', '.git', '.hil-cache', '.dpsr-state']);

export class TableError extends Error {}

/**
 * Reads the room table: the markdown table whose header row names the columns
 * `room`, `folders` and `may import`. `folders` lists backticked paths (a
 * folder, or a file for the shared leaves); `may import` lists room names
 * separated by commas, or `—` for none.
 */
export function readRoomTable(markdown, where = 'docs/architecture.md') {
  const lines = markdown.split('\n');
  const cells = (line) => line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
  const start = lines.findIndex((l) => {
    if (!l.trim().startsWith('|')) return false;
    const h = cells(l).map((c) => c.toLowerCase());
    return h.includes('room') && h.includes('folders') && h.includes('may import');
  });
  if (start < 0) throw new TableError(`${where} has no room table (a table with the columns "room", "folders" and "may import")`);
  const header = cells(lines[start]).map((c) => c.toLowerCase());
  const col = { room: header.indexOf('room'), folders: header.indexOf('folders'), may: header.indexOf('may import') };
  const rooms = [];
  for (let i = start + 2; i < lines.length && lines[i].trim().startsWith('|'); i++) {
    const row = cells(lines[i]);
    const name = row[col.room].replace(/[`*]/g, '').trim();
    const folders = [...row[col.folders].matchAll(/`([^`]+)`/g)].map((m) => m[1].replace(/\/+$/, ''));
    const mayText = row[col.may].trim();
    const may = mayText === '—' || mayText === '-' || mayText === '' ? [] : mayText.split(',').map((s) => s.replace(/[`*]/g, '').trim());
    if (!name || folders.length === 0) throw new TableError(`${where}, line ${i + 1}: a room needs a name and at least one backticked folder`);
    rooms.push({ name, folders, may, line: i + 1 });
  }
  const names = new Set(rooms.map((r) => r.name));
  for (const r of rooms) {
    for (const m of r.may) {
      if (!names.has(m)) throw new TableError(`${where}, line ${r.line}: room ${r.name} may import "${m}", which is not a room of the table (rooms: ${[...names].join(', ')})`);
    }
  }
  return rooms;
}

/** The room a repository path belongs to: the one with the longest matching folder. */
function roomOf(rooms, path) {
  let best = null;
  let bestLen = -1;
  for (const r of rooms) {
    for (const f of r.folders) {
      if ((path === f || path.startsWith(`${f}/`)) && f.length > bestLen) {
        best = r;
        bestLen = f.length;
      }
    }
  }
  return best;
}

function* sourceFiles(root, dir) {
  let entries;
  try {
    entries = readdirSync(join(root, dir), { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    if (SKIP_DIRS.has(e.name)) continue;
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory()) yield* sourceFiles(root, rel);
    else if (e.isFile() && SOURCE.test(e.name)) yield rel;
  }
}

/** The file a relative specifier names (folders resolve to their index), as a repository path. */
function resolveSpecifier(root, from, spec) {
  const abs = resolve(root, dirname(from), spec);
  let target = abs;
  try {
    if (statSync(abs).isDirectory()) {
      const idx = ['index.ts', 'index.js', 'index.mjs'].map((n) => join(abs, n)).find((p) => existsSync(p));
      if (idx) target = idx;
    }
  } catch {
    /* a missing file is still placed in its room by its path */
  }
  return relative(root, target).split(sep).join('/');
}

/** The index file of the room folder holding `path`, when that folder has one. */
function indexOf(root, room, path) {
  const folder = room.folders.filter((f) => path === f || path.startsWith(`${f}/`)).sort((a, b) => b.length - a.length)[0];
  if (!folder || folder === path) return null;
  for (const n of ['index.ts', 'index.js', 'index.mjs']) if (existsSync(join(root, folder, n))) return `${folder}/${n}`;
  return null;
}

/**
 * Every crossing in the repository at `root`: `{file, line, spec, target,
 * from, to, why}`; `files` is how many source files were read.
 */
export function checkRooms(root) {
  const docPath = join(root, 'docs', 'architecture.md');
  if (!existsSync(docPath)) throw new TableError(`${docPath} is missing: the room table lives there`);
  const rooms = readRoomTable(readFileSync(docPath, 'utf8'));
  const crossings = [];
  let files = 0;
  const seen = new Set();
  for (const room of rooms) {
    for (const folder of room.folders) {
      const paths = existsSync(join(root, folder)) && statSync(join(root, folder)).isFile() ? [folder] : [...sourceFiles(root, folder)];
      for (const file of paths) {
        if (seen.has(file) || roomOf(rooms, file) !== room) continue;
        seen.add(file);
        files++;
        const text = readFileSync(join(root, file), 'utf8');
        const info = ts.preProcessFile(text, true, true);
        for (const imp of info.importedFiles) {
          const spec = imp.fileName;
          if (!spec.startsWith('.')) continue; // packages and node: built-ins
          const target = resolveSpecifier(root, file, spec);
          const to = roomOf(rooms, target);
          const line = text.slice(0, imp.pos).split('\n').length;
          const base = { file, line, spec, target, from: room.name };
          if (!to) {
            crossings.push({ ...base, to: null, why: `${target} belongs to no room of the table` });
          } else if (to === room) {
            continue;
          } else if (!room.may.includes(to.name)) {
            crossings.push({ ...base, to: to.name, why: `room ${room.name} may not import room ${to.name} (it may import: ${room.may.join(', ') || 'nothing of ours'})` });
          } else {
            const index = indexOf(root, to, target);
            if (index && index !== target) crossings.push({ ...base, to: to.name, why: `skips the index of room ${to.name}: import ${index}` });
          }
        }
      }
    }
  }
  return { rooms, files, crossings };
}

function main(argv) {
  let root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--root') root = resolve(argv[++i] ?? '');
    else if (argv[i] === '--json') json = true;
    else {
      console.error(`check-rooms: unknown argument ${JSON.stringify(argv[i])}; usage: node scripts/check-rooms.mjs [--root DIR] [--json]`);
      return 2;
    }
  }
  let result;
  try {
    result = checkRooms(root);
  } catch (e) {
    if (!(e instanceof TableError)) throw e;
    console.error(`check-rooms: ${e.message}`);
    return 2;
  }
  const { rooms, files, crossings } = result;
  if (json) console.log(JSON.stringify({ files, rooms: rooms.length, crossings }, null, 2));
  else {
    for (const c of crossings) console.log(`${c.file}:${c.line}: imports '${c.spec}': ${c.why}`);
    console.log(crossings.length ? `${crossings.length} crossing(s) of the room table in docs/architecture.md` : `rooms: ${files} files in ${rooms.length} rooms, no crossings`);
  }
  return crossings.length ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
