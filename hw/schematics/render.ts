/**
 * Renders hw/schematics/schematic.svg from wiring.json, so the drawing can
 * never disagree with the pin map the firmware's config is checked against.
 * Usage: npm run schematic
 */
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * The parts of wiring.json the drawing shows. The schematic reads the file as
 * plain data: the full format, and the check of a configuration against it,
 * belong to the boot switch (src/bootswitch/wiring.ts), which this folder
 * does not import.
 */
interface DrawnWiring {
  title: string;
  revision: string;
  boards: Record<string, { driver: string; part: string; chip?: string; bus?: number; address?: number; pins: Record<string, string> }>;
  nets: Record<string, { channel: string; kind: string; activeLow: boolean; description: string }>;
  i2c?: { bus: number; devices: { part: string; address: number; role: string }[] };
}

const here = new URL('.', import.meta.url);
const wiring = JSON.parse(readFileSync(new URL('wiring.json', here), 'utf8')) as DrawnWiring;

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const parts: string[] = [];
const W = 1100;
let y = 40;
const boardX = 40;
const netX = 520;
const rowH = 26;
const color: Record<string, string> = { relay: '#b03030', input: '#2060b0', led: '#208040', sense: '#806020' };

parts.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="18" font-weight="bold">${esc(wiring.title)} — wiring rev ${esc(wiring.revision)}</text>`);
for (const [id, b] of Object.entries(wiring.boards)) {
  const pins = Object.entries(b.pins);
  const h = 40 + pins.length * rowH;
  const sub = b.driver === 'gpio' ? `chip ${b.chip}` : `I2C bus ${b.bus} @ 0x${(b.address ?? 0).toString(16)}`;
  parts.push(`<rect x="${boardX}" y="${y}" width="260" height="${h}" fill="#f4f4f4" stroke="#333"/>`);
  parts.push(`<text x="${boardX + 8}" y="${y + 18}" font-size="13" font-weight="bold">${esc(id)}: ${esc(b.part)}</text>`);
  parts.push(`<text x="${boardX + 8}" y="${y + 33}" font-size="11">${esc(b.driver)} · ${esc(sub)}</text>`);
  pins.forEach(([pin, net], i) => {
    const py = y + 52 + i * rowH;
    const n = wiring.nets[net];
    const c = color[n.kind] ?? '#000';
    parts.push(`<text x="${boardX + 250}" y="${py + 4}" font-size="12" text-anchor="end">${esc(pin)}</text>`);
    parts.push(`<line x1="${boardX + 260}" y1="${py}" x2="${netX}" y2="${py}" stroke="${c}" stroke-width="2"/>`);
    parts.push(`<circle cx="${boardX + 260}" cy="${py}" r="3" fill="${c}"/>`);
    if (n.activeLow) parts.push(`<circle cx="${netX - 6}" cy="${py}" r="5" fill="white" stroke="${c}" stroke-width="2"/>`);
    parts.push(`<text x="${netX + 8}" y="${py + 4}" font-size="12" font-weight="bold" fill="${c}">${esc(net)}</text>`);
    parts.push(`<text x="${netX + 120}" y="${py + 4}" font-size="10">${esc(n.channel)} — ${esc(n.description.slice(0, 80))}</text>`);
  });
  y += h + 20;
}
if (wiring.i2c) {
  parts.push(`<text x="${boardX}" y="${y + 14}" font-size="13" font-weight="bold">I2C bus ${wiring.i2c.bus}</text>`);
  parts.push(`<line x1="${boardX}" y1="${y + 24}" x2="${W - 40}" y2="${y + 24}" stroke="#555" stroke-width="3"/>`);
  wiring.i2c.devices.forEach((d, i) => {
    const x = boardX + i * 250;
    parts.push(`<line x1="${x + 100}" y1="${y + 24}" x2="${x + 100}" y2="${y + 44}" stroke="#555" stroke-width="2"/>`);
    parts.push(`<rect x="${x}" y="${y + 44}" width="220" height="44" fill="#eef" stroke="#333"/>`);
    parts.push(`<text x="${x + 8}" y="${y + 62}" font-size="12" font-weight="bold">${esc(d.part)} @ 0x${d.address.toString(16)}</text>`);
    parts.push(`<text x="${x + 8}" y="${y + 78}" font-size="10">${esc(d.role)}</text>`);
  });
  y += 100;
}
const legend = Object.entries(color).map(([k, c], i) => `<text x="${boardX + i * 120}" y="${y + 10}" font-size="11" fill="${c}">■ ${k}</text>`).join('');
parts.push(legend, `<text x="${boardX + 500}" y="${y + 10}" font-size="11">○ = active-low</text>`);
y += 30;

const svg = `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${parts.join('\n')}
</svg>
`;
const out = new URL('schematic.svg', here);
writeFileSync(out, svg);
console.log(`wrote ${out.pathname}`);
