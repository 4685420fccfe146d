/**
 * The wiring picture: drawn from wiring.json (the committed SVG is what the
 * renderer makes of the data), showing the whole appliance with every net of
 * the pin map on a connection, rendered to PNG by librsvg with nothing
 * running off the edge, and the renderer's text widths never narrower than
 * the rendered text (its fit checks rest on them).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadWiring, renderSchematic, SCHEMATIC_PATH, type DrawnWiring } from '../../hw/schematics/render.ts';
import { requireEnv } from '../support/require.ts';
import { readPng, inked } from '../support/png.ts';

const wiring = loadWiring();
const drawn = renderSchematic(wiring);
const dir = mkdtempSync(join(tmpdir(), 'dpsr-schematic-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('schematic.svg is what `npm run schematic` draws from wiring.json', () => {
  assert.ok(readFileSync(SCHEMATIC_PATH, 'utf8') === drawn.svg, 'hw/schematics/schematic.svg is stale: run npm run schematic');
});

test('the picture shows the whole appliance and every net of the pin map on a connection', () => {
  const blocks = Object.values(wiring.system.blocks).map((b) => b.title);
  for (const part of ['Host PC', 'SATA 2:1 mux A', 'SATA 2:1 mux B', 'Bay A drive', 'Bay B drive', 'USB–SATA bridge A', 'USB–SATA bridge B', 'Relay carrier', 'INA219 @ 0x40', 'INA219 @ 0x41', 'Controller', 'SSD1306 OLED', 'Failover button', 'Front-panel LEDs', 'Data port 1: bays C, D', 'Data port 2: bays E, F', 'Data port 3: bays G, H', 'Data-port relay carrier']) {
    assert.ok(blocks.includes(part), `${part} is drawn`);
  }
  for (const net of Object.keys(wiring.nets)) assert.ok(drawn.svg.includes(`>${net} (`), `${net} is labelled on a connection with its pin`);
  const kinds = new Set(wiring.system.links.map((l) => l.kind));
  for (const k of ['sata', 'usb', 'power', 'i2c', 'relay', 'input', 'led']) assert.ok(kinds.has(k as never), `a ${k} connection`);
});

test('the wiring has every bay: a mux, a power relay, contact sense and an LED per bay A to H, each on a channel the firmware knows', () => {
  for (const bay of 'ABCDEFGH') {
    for (const [net, channel] of [[`K_MUX_${bay}`, `mux${bay}`], [`K_PWR_${bay}`, `pwr${bay}`], [`SENSE_MUX_${bay}`, `senseMux${bay}`], [`LED_BAY_${bay}`, `ledBay${bay}`]]) {
      assert.is(wiring.nets[net!]?.channel, channel, `${net} drives ${channel}`);
      assert.ok(Object.values(wiring.boards).some((b) => Object.values(b.pins).includes(net!)), `${net} is on a pin`);
    }
  }
});

test('the renderer refuses data that would draw a clipped or hidden text, or a net nowhere connected', () => {
  const copy = () => JSON.parse(JSON.stringify(wiring)) as DrawnWiring;
  const narrow = copy();
  narrow.system.blocks.button!.w = 60;
  assert.throws(() => renderSchematic(narrow), /does not fit between/);
  const offEdge = copy();
  offEdge.system.blocks.leds!.x = 1540;
  assert.throws(() => renderSchematic(offEdge), /does not fit|runs past the edge/);
  const onBlock = copy();
  onBlock.system.links.find((l) => l.nets?.includes('BTN_FAILOVER'))!.labelAt = [1100, 100];
  assert.throws(() => renderSchematic(onBlock), /lies on block ctrl/);
  const lost = copy();
  lost.system.links = lost.system.links.filter((l) => !l.nets?.includes('LED_FAULT'));
  assert.throws(() => renderSchematic(lost), /net LED_\w+ .* no system link carries it/);
});

test('rendered to PNG by librsvg: the size the SVG declares, nothing at the edges', () => {
  if (!requireEnv('rendering the schematic', { tools: ['rsvg-convert'] })) return;
  const png = join(dir, 'schematic.png');
  execFileSync('rsvg-convert', [SCHEMATIC_PATH, '-o', png]);
  const img = readPng(readFileSync(png));
  assert.is(img.width, drawn.width);
  assert.is(img.height, drawn.height);
  const edge = 4;
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      if (x >= edge && x < img.width - edge && y >= edge && y < img.height - edge) continue;
      assert.not.ok(inked(img, x, y), `ink at the edge, pixel ${x},${y}: something runs off the drawing`);
    }
  }
});

test('every text of the drawing renders no wider than the renderer reckons', () => {
  if (!requireEnv('measuring rendered text', { tools: ['rsvg-convert'] })) return;
  // Each distinct text on its own row at x=10; the rightmost ink of the row is its rendered width.
  const texts = [...new Map(drawn.texts.map((t) => [`${t.size}:${t.bold}:${t.what}`, t])).values()];
  const rowH = 24;
  const rows = texts.map((t, i) => `<text x="10" y="${i * rowH + 18}" font-size="${t.size}"${t.bold ? ' font-weight="bold"' : ''}>${t.what.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>`);
  const width = 1400;
  writeFileSync(join(dir, 'texts.svg'), `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${texts.length * rowH}" font-family="DejaVu Sans, sans-serif"><rect width="100%" height="100%" fill="white"/>${rows.join('')}</svg>`);
  execFileSync('rsvg-convert', [join(dir, 'texts.svg'), '-o', join(dir, 'texts.png')]);
  const img = readPng(readFileSync(join(dir, 'texts.png')));
  texts.forEach((t, i) => {
    let right = 0;
    for (let y = i * rowH; y < (i + 1) * rowH; y++) for (let x = 0; x < width; x++) if (inked(img, x, y, 80)) right = Math.max(right, x);
    const rendered = right - 10;
    assert.ok(rendered <= t.x1 - t.x0, `"${t.what}" at ${t.size} px renders ${rendered} px, the renderer reckons ${Math.round(t.x1 - t.x0)}`);
  });
});

test.run();
