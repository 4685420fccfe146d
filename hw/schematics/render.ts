/**
 * Renders hw/schematics/schematic.svg from wiring.json, so the drawing can
 * never disagree with the pin map the firmware's config is checked against:
 * first the whole appliance (host, SATA muxes, bays, bridges, relay carrier,
 * power monitors, controller, button, LEDs, display and the connections
 * between them, each control line labelled with its net and pin), then the
 * pin map of every board with each net's full description.
 *
 * Every text is measured (conservatively, for DejaVu Sans, the sans-serif
 * font of Debian's librsvg) and the renderer throws when one would cross its
 * box or the edge of the drawing, so nothing is ever clipped.
 * Usage: npm run schematic
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The parts of wiring.json the drawing shows. The schematic reads the file as
 * plain data: the full format, and the check of a configuration against it,
 * belong to the boot switch (src/bootswitch/wiring.ts), which this folder
 * does not import.
 */
export interface DrawnWiring {
  title: string;
  revision: string;
  boards: Record<string, { driver: string; part: string; chip?: string; bus?: number; address?: number; pins: Record<string, string> }>;
  nets: Record<string, { channel: string; kind: string; activeLow: boolean; description: string }>;
  i2c?: { bus: number; devices: { part: string; address: number; role: string }[] };
  system: {
    blocks: Record<string, { title: string; lines: string[]; x: number; y: number; w: number; h: number }>;
    links: { from: string; to: string; kind: LinkKind; label?: string; nets?: string[]; via?: [number, number][]; labelAt?: [number, number] }[];
  };
}

type LinkKind = 'sata' | 'usb' | 'power' | 'i2c' | 'relay' | 'input' | 'led' | 'sense';

const STYLE: Record<LinkKind, { colour: string; width: number; dash?: string; meaning: string }> = {
  sata: { colour: '#202020', width: 3, meaning: 'SATA' },
  usb: { colour: '#6a3d9a', width: 3, meaning: 'USB' },
  power: { colour: '#d06000', width: 2.5, meaning: 'drive power' },
  i2c: { colour: '#1f78b4', width: 2, dash: '6 3', meaning: 'I2C' },
  relay: { colour: '#b03030', width: 1.8, meaning: 'relay / opto output' },
  input: { colour: '#2060b0', width: 1.8, meaning: 'input' },
  led: { colour: '#208040', width: 1.8, meaning: 'LED output' },
  sense: { colour: '#806020', width: 1.8, meaning: 'contact sense' },
};

const W = 1600;
const MARGIN = 12;

/** Advance widths in em of DejaVu Sans (librsvg's sans-serif on Debian), rounded up: a little wider than rendered. */
export function textWidth(text: string, size: number, bold = false): number {
  let em = 0;
  for (const ch of text) {
    if (ch === ' ') em += 0.33;
    else if (/[il.,:;'|!()[\]]/.test(ch)) em += 0.36;
    else if (/[mwMW@%]/.test(ch)) em += 1.0;
    else if (/[A-Z_#&]/.test(ch)) em += 0.72;
    else if (/[0-9]/.test(ch)) em += 0.64;
    else em += 0.6;
  }
  return em * size * (bold ? 1.1 : 1);
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Words into lines of at most `width` px. */
function wrap(text: string, width: number, size: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    const next = line ? `${line} ${word}` : word;
    if (line && textWidth(next, size) > width) {
      lines.push(line);
      line = word;
    } else line = next;
  }
  if (line) lines.push(line);
  return lines;
}

export interface Box {
  x0: number;
  x1: number;
  what: string;
  size: number;
  bold: boolean;
}

class Drawing {
  readonly parts: string[] = [];
  /** Extents of every text, checked against the drawing's width at the end. */
  readonly texts: Box[] = [];

  text(x: number, y: number, s: string, opts: { size?: number; bold?: boolean; anchor?: 'start' | 'middle' | 'end'; fill?: string; within?: [number, number]; halo?: boolean } = {}): Box {
    const size = opts.size ?? 12;
    const w = textWidth(s, size, opts.bold);
    const anchor = opts.anchor ?? 'start';
    const x0 = anchor === 'start' ? x : anchor === 'middle' ? x - w / 2 : x - w;
    const box = { x0, x1: x0 + w, what: s, size, bold: opts.bold === true };
    if (opts.within && (box.x0 < opts.within[0] || box.x1 > opts.within[1])) {
      throw new Error(`text "${s}" (${Math.round(w)} px) does not fit between x=${opts.within[0]} and x=${opts.within[1]}: shorten it or widen its box in wiring.json`);
    }
    this.texts.push(box);
    if (opts.halo) this.parts.push(`<rect x="${x0 - 3}" y="${y - size + 1}" width="${w + 6}" height="${size + 4}" fill="white"/>`);
    this.parts.push(
      `<text x="${x}" y="${y}" font-size="${size}"${opts.bold ? ' font-weight="bold"' : ''}${anchor !== 'start' ? ` text-anchor="${anchor}"` : ''}${opts.fill ? ` fill="${opts.fill}"` : ''}>${esc(s)}</text>`,
    );
    return box;
  }
}

function anchorPoint(w: DrawnWiring, ref: string): [number, number] {
  const m = /^(\w+)\.([lrtb])@([\d.]+)$/.exec(ref);
  if (!m) throw new Error(`link anchor "${ref}": expected block.side@fraction, side one of l, r, t, b`);
  const b = w.system.blocks[m[1]!];
  if (!b) throw new Error(`link anchor "${ref}": no block ${m[1]}`);
  const f = Number(m[3]);
  switch (m[2]) {
    case 'l':
      return [b.x, b.y + f * b.h];
    case 'r':
      return [b.x + b.w, b.y + f * b.h];
    case 't':
      return [b.x + f * b.w, b.y];
    default:
      return [b.x + f * b.w, b.y + b.h];
  }
}

/** The net's label on a link: its name and the board pin that drives or reads it, from the pin map. */
function netLabel(w: DrawnWiring, net: string): string {
  if (!w.nets[net]) throw new Error(`link net ${net} is not in nets`);
  for (const [board, b] of Object.entries(w.boards)) {
    for (const [pin, n] of Object.entries(b.pins)) if (n === net) return `${net} (${board} ${/^\d+$/.test(pin) && b.driver === 'gpio' ? `GPIO ${pin}` : pin})`;
  }
  return net;
}

function drawSystem(w: DrawnWiring, d: Drawing, top: number): number {
  const sys = w.system;
  let bottom = top;
  // Links first, so the blocks sit on top of the wire ends.
  const labels: (() => void)[] = [];
  const labelBoxes: (Box & { y0: number; y1: number })[] = [];
  for (const link of sys.links) {
    const st = STYLE[link.kind];
    if (!st) throw new Error(`link ${link.from} → ${link.to}: kind ${link.kind} is not one of ${Object.keys(STYLE).join(', ')}`);
    const pts = [anchorPoint(w, link.from), ...(link.via ?? []), anchorPoint(w, link.to)].map(([x, y]) => [x, y + top] as [number, number]);
    // Orthogonal: each step goes horizontally, then vertically.
    const path: [number, number][] = [pts[0]!];
    for (const p of pts.slice(1)) {
      const last = path[path.length - 1]!;
      if (last[0] !== p[0] && last[1] !== p[1]) path.push([p[0], last[1]]);
      path.push(p);
    }
    d.parts.push(`<polyline points="${path.map(([x, y]) => `${x},${y}`).join(' ')}" fill="none" stroke="${st.colour}" stroke-width="${st.width}"${st.dash ? ` stroke-dasharray="${st.dash}"` : ''}/>`);
    for (const [x, y] of path) bottom = Math.max(bottom, y);
    const text = [...(link.label ? [link.label] : []), ...(link.nets ?? []).map((n) => netLabel(w, n))];
    if (text.length) {
      // On the longest segment, one line per label, on a white halo so wires under it do not hide it.
      let best = 0;
      for (let i = 1; i < path.length; i++) {
        const len = Math.abs(path[i]![0] - path[i - 1]![0]) + Math.abs(path[i]![1] - path[i - 1]![1]);
        if (len > Math.abs(path[best + 1]![0] - path[best]![0]) + Math.abs(path[best + 1]![1] - path[best]![1])) best = i - 1;
      }
      const [a, b] = [path[best]!, path[best + 1]!];
      const horizontal = a[1] === b[1];
      // labelAt (drawing coordinates of the block's top-left line) places it where the data says.
      const at = link.labelAt ? ([link.labelAt[0], link.labelAt[1] + top] as const) : null;
      const cx = at ? at[0] : (a[0] + b[0]) / 2;
      const cy = at ? at[1] : (a[1] + b[1]) / 2;
      labels.push(() =>
        text.forEach((t, i) => {
          const y = at ? cy + i * 13 : horizontal ? cy - 6 - (text.length - 1 - i) * 13 : cy - ((text.length - 1) * 13) / 2 + i * 13 + 4;
          const box = d.text(at || horizontal ? cx : cx + 6, y, t, { size: 10, fill: st.colour, anchor: at || horizontal ? 'middle' : 'start', halo: true });
          labelBoxes.push({ ...box, y0: y - 10, y1: y + 3 });
        }),
      );
    }
  }
  for (const [id, b] of Object.entries(sys.blocks)) {
    const y = b.y + top;
    d.parts.push(`<rect x="${b.x}" y="${y}" width="${b.w}" height="${b.h}" rx="4" fill="#f6f6f2" stroke="#333" stroke-width="1.2"/>`);
    const within: [number, number] = [b.x + 4, b.x + b.w - 4];
    d.text(b.x + 8, y + 17, b.title, { size: 13, bold: true, within });
    b.lines.forEach((l, i) => d.text(b.x + 8, y + 33 + i * 14, l, { size: 11, within }));
    const needed = 33 + (b.lines.length - 1) * 14 + 6;
    if (b.lines.length && needed > b.h) throw new Error(`block ${id}: ${b.lines.length} lines need ${needed} px of height, it has ${b.h}`);
    bottom = Math.max(bottom, y + b.h);
  }
  for (const l of labels) l();
  // A label on a block or on another label would hide text.
  const rects = Object.entries(sys.blocks).map(([id, b]) => ({ id, x0: b.x, x1: b.x + b.w, y0: b.y + top, y1: b.y + top + b.h }));
  const hit = (p: { x0: number; x1: number; y0: number; y1: number }, q: { x0: number; x1: number; y0: number; y1: number }) => p.x0 < q.x1 && q.x0 < p.x1 && p.y0 < q.y1 && q.y0 < p.y1;
  labelBoxes.forEach((l, i) => {
    for (const r of rects) if (hit(l, r)) throw new Error(`link label "${l.what}" lies on block ${r.id}: move it with labelAt or move the block in wiring.json`);
    for (const o of labelBoxes.slice(i + 1)) if (hit(l, o)) throw new Error(`link labels "${l.what}" and "${o.what}" overlap: move one with labelAt in wiring.json`);
  });
  return bottom;
}

function drawLegend(d: Drawing, y: number): number {
  let x = 40;
  for (const st of Object.values(STYLE)) {
    d.parts.push(`<line x1="${x}" y1="${y}" x2="${x + 28}" y2="${y}" stroke="${st.colour}" stroke-width="${st.width}"${st.dash ? ` stroke-dasharray="${st.dash}"` : ''}/>`);
    d.text(x + 34, y + 4, st.meaning, { size: 11 });
    x += 34 + textWidth(st.meaning, 11) + 24;
  }
  d.text(x, y + 4, '○ = active-low line', { size: 11 });
  return y + 20;
}

const PIN_COLOUR: Record<string, string> = { relay: STYLE.relay.colour, input: STYLE.input.colour, led: STYLE.led.colour, sense: STYLE.sense.colour };

function drawPinMap(w: DrawnWiring, d: Drawing, top: number): number {
  let y = top;
  d.text(40, y, 'Pin map', { size: 15, bold: true });
  y += 14;
  const colPin = 40;
  const colNet = 130;
  const colChannel = 270;
  const colText = 380;
  const textWidthMax = W - MARGIN - 10 - colText;
  for (const [id, b] of Object.entries(w.boards)) {
    y += 12;
    const sub = b.driver === 'gpio' ? `gpio, chip ${b.chip}` : `${b.driver}, I2C bus ${b.bus} at 0x${(b.address ?? 0).toString(16)}`;
    d.text(colPin, y + 12, `${id}: ${b.part} (${sub})`, { size: 13, bold: true, within: [MARGIN, W - MARGIN] });
    y += 20;
    for (const [pin, net] of Object.entries(b.pins)) {
      const n = w.nets[net];
      if (!n) throw new Error(`boards.${id}.pins.${pin}: net ${net} is not in nets`);
      const c = PIN_COLOUR[n.kind] ?? '#000';
      const lines = wrap(n.description, textWidthMax, 11);
      const rowH = Math.max(18, lines.length * 14 + 4);
      d.parts.push(`<line x1="${colPin}" y1="${y + rowH}" x2="${W - MARGIN - 10}" y2="${y + rowH}" stroke="#ddd"/>`);
      d.text(colPin + 4, y + 13, b.driver === 'gpio' ? `GPIO ${pin}` : pin, { size: 12, within: [colPin, colNet - 4] });
      if (n.activeLow) d.parts.push(`<circle cx="${colNet - 10}" cy="${y + 9}" r="4" fill="white" stroke="${c}" stroke-width="1.5"/>`);
      d.text(colNet, y + 13, net, { size: 12, bold: true, fill: c, within: [colNet, colChannel - 4] });
      d.text(colChannel, y + 13, n.channel, { size: 12, within: [colChannel, colText - 4] });
      lines.forEach((l, i) => d.text(colText, y + 13 + i * 14, l, { size: 11, within: [colText, W - MARGIN] }));
      y += rowH;
    }
  }
  if (w.i2c) {
    y += 16;
    d.text(colPin, y + 12, `I2C bus ${w.i2c.bus}`, { size: 13, bold: true });
    y += 20;
    for (const dev of w.i2c.devices) {
      d.text(colPin + 4, y + 13, `0x${dev.address.toString(16)}`, { size: 12, within: [colPin, colNet - 4] });
      d.text(colNet, y + 13, dev.part, { size: 12, bold: true, within: [colNet, colText - 4] });
      d.text(colText, y + 13, dev.role, { size: 11, within: [colText, W - MARGIN] });
      y += 18;
    }
  }
  return y + 10;
}

/** The whole drawing as SVG text. Throws when the data names a block, net or side that does not exist, or a text would not fit. */
export function renderSchematic(w: DrawnWiring): { svg: string; width: number; height: number; texts: Box[] } {
  for (const [net, n] of Object.entries(w.nets)) {
    if (!w.system.links.some((l) => l.nets?.includes(net))) throw new Error(`net ${net} (${n.channel}) is in the pin map but no system link carries it: add it to a link in wiring.json`);
  }
  const d = new Drawing();
  d.text(W / 2, 28, `${w.title}: the appliance's wiring (rev ${w.revision})`, { size: 18, bold: true, anchor: 'middle' });
  let y = drawSystem(w, d, 40);
  y = drawLegend(d, y + 28);
  y = drawPinMap(w, d, y + 30);
  const height = Math.ceil(y + MARGIN);
  for (const t of d.texts) {
    if (t.x0 < MARGIN || t.x1 > W - MARGIN) throw new Error(`text "${t.what}" runs past the edge of the drawing (x ${Math.round(t.x0)}–${Math.round(t.x1)} of ${W})`);
  }
  const svg = `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="DejaVu Sans, sans-serif">
<rect width="100%" height="100%" fill="white"/>
${d.parts.join('\n')}
</svg>
`;
  return { svg, width: W, height, texts: d.texts };
}

export const WIRING_PATH = fileURLToPath(new URL('wiring.json', import.meta.url));
export const SCHEMATIC_PATH = fileURLToPath(new URL('schematic.svg', import.meta.url));

export function loadWiring(): DrawnWiring {
  return JSON.parse(readFileSync(WIRING_PATH, 'utf8')) as DrawnWiring;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(SCHEMATIC_PATH, renderSchematic(loadWiring()).svg);
  console.log(`wrote ${SCHEMATIC_PATH}`);
}
