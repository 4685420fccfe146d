/**
 * The simulated rig's HTTP controls under /api/sim/: press the button, power
 * or hang the simulated host, write as its OS would, pull and insert drives,
 * make sectors unreadable, set SMART values. They exist only when the
 * simulated rig runs.
 */
import { BadInputError, RefusedError } from '../../../src/errors.ts';
import { array, bool, int, obj, oneOf, opt, str } from '../schema.ts';
import type { Controller } from '../controller.ts';
import type { Route } from '../http-server.ts';
import type { SimRig } from './rig.ts';

export const bodies = {
  button: obj({ holdMs: int(1, 60_000, 'how long the button is held') }),
  hostPower: obj({ power: oneOf(['on', 'off'] as const) }),
  hostWrite: obj({ mib: int(1, 4096, 'MiB of random writes the simulated OS makes to its drive'), pair: opt(str({ maxLength: 32, description: 'the pair whose active drive is written (default: the boot pair)' })) }),
  insert: obj({ replacement: opt(bool('insert a new blank drive instead of the pulled one')) }),
  readErrors: obj({ lbas: array(int(0, Number.MAX_SAFE_INTEGER), { maxItems: 10_000, unique: true, description: 'sectors whose reads fail; an empty list clears them' }) }),
  smart: obj({
    temperatureC: opt(int(0, 120)),
    reallocatedSectors: opt(int(0, 1_000_000)),
    pendingSectors: opt(int(0, 1_000_000)),
    overall: opt(oneOf(['passed', 'failed'] as const)),
  }),
  empty: obj({}),
};

export function simRoutes(rig: SimRig, ctl: Controller): Route[] {
  return [
    {
      method: 'POST', path: '/api/sim/button', tag: 'sim', summary: 'Press the failover button for holdMs', body: bodies.button,
      responses: { 200: 'pressed; released after holdMs' },
      handler: ({ body }) => {
        const ms = (body as { holdMs: number }).holdMs;
        rig.board.holdButton(ms);
        return { status: 200, body: { pressed: true, holdMs: ms } };
      },
    },
    {
      method: 'POST', path: '/api/sim/host/power', tag: 'sim',
      summary: 'Power the simulated host on, or cut its power; with an external host (sim.host "external") only its power-LED input is set',
      body: bodies.hostPower,
      responses: { 200: 'done' },
      handler: ({ body }) => {
        const on = (body as { power: string }).power === 'on';
        if (!rig.host) {
          rig.setHostPowerLed(on);
          return { status: 200, body: { state: 'external', powerLed: on } };
        }
        if (on) rig.host.powerOn();
        else rig.host.forceOff();
        return { status: 200, body: { state: rig.host.state } };
      },
    },
    {
      method: 'POST', path: '/api/sim/host/crash', tag: 'sim', summary: 'The simulated OS hangs: no heartbeats, no ACPI', body: bodies.empty,
      responses: { 200: 'hung', 409: 'the host is external' },
      handler: () => {
        if (!rig.host) throw new RefusedError('the host is external: hang it on its side', { hint: 'this route drives the simulated host only (sim.host "simulated")' });
        rig.host.hang();
        return { status: 200, body: { state: rig.host.state } };
      },
    },
    {
      method: 'POST', path: '/api/sim/host/write', tag: 'sim', summary: "The simulated OS writes random data to a pair's active drive (in inline mode through the pair's NBD export on the controller)", body: bodies.hostWrite,
      responses: { 200: '{ bay, bytes, through }', 404: 'no such pair', 409: 'the bay is empty' },
      handler: async ({ body }) => {
        const b = body as { mib: number; pair?: string };
        // Inline mode: the host's disks are the pairs' exports, each serving its pair's selected drive.
        const pair = b.pair === undefined ? ctl.pairs.boot : ctl.pairs.get(b.pair);
        const inline = ctl.inlines.get(pair.id);
        const served = inline?.pair;
        if (inline && !served) throw new RefusedError(`inline mode: the export of pair ${pair.id} is not running`, { hint: 'see the daemon log' });
        const bay = served ? pair.roles.name(served.bay) : b.pair === undefined ? ctl.status.core().active : pair.bays().active;
        const through = inline ? inline.hostUri : null;
        const bytes = await rig.hostWrite(bay, b.mib * 1024 * 1024, inline ? rig.hostDisk(pair.config) : undefined);
        return { status: 200, body: { bay, bytes, through } };
      },
    },
    {
      method: 'POST', path: '/api/sim/drive/:bay/pull', tag: 'sim', summary: 'Pull the drive out of a bay (running I/O fails)', body: bodies.empty,
      responses: { 200: 'pulled', 409: 'the bay is empty' },
      handler: async ({ params }) => {
        const bay = rig.bay(params.bay!);
        rig.pull(bay);
        ctl.status.invalidate();
        ctl.bus.publish('drive', { bay, action: 'pulled' });
        void ctl.health.check();
        return { status: 200, body: { bay, present: false } };
      },
    },
    {
      method: 'POST', path: '/api/sim/drive/:bay/insert', tag: 'sim', summary: 'Put the pulled drive back, or a new blank one', body: bodies.insert,
      responses: { 200: 'inserted', 409: 'the bay holds a drive' },
      handler: async ({ params, body }) => {
        const bay = rig.bay(params.bay!);
        const replacement = (body as { replacement?: boolean }).replacement === true;
        const path = rig.insert(bay, replacement);
        ctl.status.invalidate();
        ctl.bus.publish('drive', { bay, action: replacement ? 'replaced' : 'inserted', path });
        void ctl.health.check();
        ctl.status.publishChange();
        return { status: 200, body: { bay, present: true, path, replacement } };
      },
    },
    {
      method: 'POST', path: '/api/sim/drive/:bay/read-errors', tag: 'sim', summary: 'Make sectors of a drive unreadable (an empty list heals it)', body: bodies.readErrors,
      responses: { 200: 'set', 400: 'an LBA beyond the drive' },
      handler: async ({ params, body }) => {
        const bay = rig.bay(params.bay!);
        const lbas = (body as { lbas: number[] }).lbas;
        const max = rig.sectors(bay);
        lbas.forEach((l, i) => {
          if (l >= max) throw new BadInputError(`lbas[${i}] is ${l}; allowed: a sector number below ${max} (the drive's size)`);
        });
        rig.setReadErrors(bay, lbas);
        void ctl.health.check();
        return { status: 200, body: { bay, lbas: rig.readErrors(bay) } };
      },
    },
    {
      method: 'POST', path: '/api/sim/drive/:bay/smart', tag: 'sim', summary: 'Set the simulated SMART values of a drive', body: bodies.smart,
      responses: { 200: 'set; health re-read' },
      handler: async ({ params, body }) => {
        const bay = rig.bay(params.bay!);
        rig.setSmart(bay, body as object);
        await ctl.health.check();
        return { status: 200, body: { bay, health: ctl.health.drives[bay] } };
      },
    },
  ];
}
