/**
 * The switch rules over every port of the host: the boot port (bays A/B)
 * and the three data ports (C/D, E/F, G/H), eight bays. Random sequences of
 * moves and windows on any port (many started at once), welded relays,
 * a board that stops answering, host power, controller restarts and power
 * losses, checked against a model after every step:
 *
 * - never two drives on one host port, never a mux moving under the
 *   powered host (the simulated board watches every contact);
 * - break before make: a move's new connection is only made once the old
 *   one is confirmed broken (the steps of each move, in order);
 * - one move at a time across all ports (the host gate);
 * - a move that reports success left exactly its bay on its port;
 * - after a restart every port's persisted record matches its relays, or,
 *   when the host is powered and the relays (unreadable, or not as
 *   recorded) were left as found, the port's state is unknown: no relay was
 *   driven, every move of it is refused until the host is off, and then
 *   the recorded pattern is applied.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { readJsonChecked } from '../../src/durable-file.ts';
import { DATA_PORTS, type BootSwitch, type SimBoard } from '../../src/bootswitch/index.ts';
import { makeRig, type Rig } from './support/rig.ts';

const PORTS = [['A', 'B'], ...DATA_PORTS] as const;
type PortIx = 0 | 1 | 2 | 3;
const BAYS = PORTS.flat();

type Cmd =
  | { t: 'move'; port: PortIx; to: 'A' | 'B' }
  | { t: 'isolate'; port: PortIx }
  | { t: 'stick'; bay: string; energised: boolean | null }
  | { t: 'unstick' }
  | { t: 'drop' }
  | { t: 'reconnect' }
  | { t: 'host-on' }
  | { t: 'host-off' }
  | { t: 'restart' }
  | { t: 'power-loss'; latchesLost: boolean }
  | { t: 'wait'; ms: number };

const port = fc.constantFrom<PortIx>(0, 1, 2, 3);
const pos = fc.constantFrom<'A' | 'B'>('A', 'B');
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('move' as const), port, to: pos }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('isolate' as const), port }) },
  // A welded contact: where it is now (null), or a relay that fails to make (true).
  { weight: 2, arbitrary: fc.record({ t: fc.constant('stick' as const), bay: fc.constantFrom(...BAYS), energised: fc.constantFrom<boolean | null>(null, true) }) },
  { weight: 1, arbitrary: fc.constant({ t: 'unstick' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'drop' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'reconnect' as const }) },
  { weight: 2, arbitrary: fc.constant({ t: 'host-on' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'host-off' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'restart' as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('power-loss' as const), latchesLost: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 8000 }) }) },
);

const switchOf = (rig: Rig, p: PortIx): BootSwitch => (p === 0 ? rig.sys.bootSwitch : rig.sys.ports.find((x) => x.bays[0] === PORTS[p][0])!.sw);

/** The bays the contacts of a port connect to the host (first bay: mux released; second: mux energised). */
function onPort(sim: SimBoard, p: PortIx): string[] {
  const [first, second] = PORTS[p];
  return [...(sim.contact(`K_MUX_${first}`) ? [] : [first]), ...(sim.contact(`K_MUX_${second}`) ? [second] : [])];
}

function persisted(rig: Rig, p: PortIx) {
  const name = p === 0 ? 'switch' : `switch-${PORTS[p].join('').toLowerCase()}`;
  const read = (f: string) => {
    try {
      return readJsonChecked<{ sequence: number; relays: Record<string, boolean> }>(`${rig.dir}/${f}`) ?? null;
    } catch {
      return null;
    }
  };
  const copies = [read(`${name}.json`), read(`${name}.json.bak`)].filter((c) => c !== null);
  copies.sort((x, y) => y.sequence - x.sequence);
  return copies[0]!.relays;
}

function coils(sim: SimBoard, p: PortIx) {
  const [a, b] = PORTS[p];
  return { muxA: sim.coil(`K_MUX_${a}`), muxB: sim.coil(`K_MUX_${b}`), pwrA: sim.coil(`K_PWR_${a}`), pwrB: sim.coil(`K_PWR_${b}`) };
}

test('every port of the host keeps the switch rules over random operations, faults and crashes', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(cmd, { minLength: 1, maxLength: 16 }), async (cmds) => {
      const rig = await makeRig({ failover: { bootTries: 3, confirmTimeoutMs: 8000 } });
      const broken: string[] = [];
      const inFlight = new Set<Promise<unknown>>();
      const stuck = new Set<string>();
      // The steps of every move, per port: make only after break, and one port's move at a time.
      let mover: string | null = null;
      const listen = () => {
        PORTS.forEach((_, i) => {
          const events = i === 0 ? rig.sys.events : rig.sys.ports.find((x) => x.bays[0] === PORTS[i][0])!.events;
          let broke = false;
          events.on('switch-step', ({ step }) => {
            const who = `port ${PORTS[i].join('/')}`;
            if (mover !== null && mover !== who) broken.push(`${who} stepped (${step}) while ${mover} was moving`);
            mover = who;
            if (step === 'intent persisted') broke = false;
            if (step === 'old connection broken') broke = true;
            if (step === 'new connection made' && !broke) broken.push(`${who}: made before the break was confirmed`);
            if (step === 'persisted' || step === 'already selected') mover = null;
          });
          events.on('alert', ({ code }) => {
            if (code === 'switch-failed') mover = null;
          });
          events.on('isolated', () => (mover = null));
        });
      };
      listen();
      const start = (p: PortIx, run: (sw: BootSwitch) => Promise<unknown>) => {
        const sw = switchOf(rig, p);
        const held = sw.unknown;
        const pr = run(sw).then(
          () => {
            if (held !== null) broken.push(`port ${PORTS[p].join('/')}: a move ran while its relays were unknown (${held})`);
            if (sw.record.fault === null && sw.bay !== null) {
              const want = [sw.naming.bay(sw.bay)];
              if (JSON.stringify(onPort(rig.sim, p)) !== JSON.stringify(want) && !rig.sim.dropped) broken.push(`port ${PORTS[p].join('/')}: move reported ${want} but contacts give ${onPort(rig.sim, p)}`);
            }
          },
          () => {
            // A failed or refused move may leave its port with no drive, never with two (the board checks).
          },
        );
        inFlight.add(pr);
        void pr.finally(() => inFlight.delete(pr));
      };
      // Until the moves started here and the failover machine's own actions (a power-on pulse, a move) have ended.
      const settle = async () => {
        let idle = false;
        void rig.sys.failover.idle().then(() => (idle = true));
        await new Promise<void>((r) => setImmediate(r));
        for (let i = 0; i < 800 && (inFlight.size || !idle); i++) await rig.clock.advance(100);
        mover = null;
      };
      // A freed contact drops to its coil: a port's second bay first (its release takes its drive off the host),
      // so freeing both welded muxes never puts two drives on a port by the test's own hand.
      const unstickAll = () => {
        const seconds = PORTS.map(([, b]) => `K_MUX_${b}`);
        for (const r of [...stuck].sort((x, y) => Number(!seconds.includes(x)) - Number(!seconds.includes(y)))) rig.sim.unstick(r as Parameters<SimBoard['unstick']>[0]);
        stuck.clear();
      };
      try {
        for (const c of cmds) {
          switch (c.t) {
            case 'move':
              start(c.port, (sw) => sw.moveTo(c.to));
              break;
            case 'isolate':
              start(c.port, (sw) => sw.isolate());
              break;
            case 'stick': {
              const relay = `K_MUX_${c.bay}` as Parameters<SimBoard['stick']>[0];
              // A contact welds where it is, or (while the host is off) fails to make: it drops to the side
              // that keeps its drive off the host. Forcing one onto the host would be two drives there by the
              // hardware's own fault, not by anything the controller did.
              const first = PORTS.some(([a]) => a === c.bay);
              if (c.energised === null) rig.sim.stick(relay);
              else if (!rig.host.powered) rig.sim.stick(relay, first);
              else break;
              stuck.add(relay);
              break;
            }
            case 'unstick':
              if (!rig.host.powered) unstickAll();
              break;
            case 'drop':
              rig.sim.drop();
              break;
            case 'reconnect':
              rig.sim.reconnect();
              break;
            case 'host-on':
              if (!rig.sim.dropped) rig.host.powerOn();
              break;
            case 'host-off':
              rig.host.forceOff();
              break;
            case 'power-loss':
            case 'restart': {
              await settle();
              rig.sim.reconnect();
              if (c.t === 'power-loss') rig.sim.powerLoss({ latchesLost: c.latchesLost });
              const before = ([0, 1, 2, 3] as PortIx[]).map((p) => coils(rig.sim, p));
              const hostOn = rig.host.powered;
              await rig.restart();
              listen();
              for (const p of [0, 1, 2, 3] as PortIx[]) {
                const sw = switchOf(rig, p);
                if (sw.unknown !== null) {
                  assert.ok(hostOn, `port ${PORTS[p].join('/')}: unknown only under a powered host`);
                  assert.equal(coils(rig.sim, p), before[p], `port ${PORTS[p].join('/')}: no relay driven while its state is unknown`);
                } else if (!sw.moving) assert.equal(persisted(rig, p), coils(rig.sim, p), `port ${PORTS[p].join('/')}: persisted state matches the relays after restart`);
              }
              await rig.clock.advance(50);
              break;
            }
            case 'wait':
              await rig.clock.advance(c.ms);
              break;
          }
          await rig.clock.advance(10);
          assert.equal(rig.sim.violations, [], 'no relay rule broken on any port');
          assert.equal(broken, []);
        }
        rig.sim.reconnect();
        await settle();
        assert.equal(rig.sim.violations, []);
        assert.equal(broken, []);
        // With the host off (and no relay stuck), every port whose state start-up left unknown gets its recorded pattern.
        rig.host.forceOff();
        unstickAll();
        const anyUnknown = () => ([0, 1, 2, 3] as PortIx[]).some((p) => switchOf(rig, p).unknown !== null);
        for (let i = 0; i < 300 && anyUnknown(); i++) await rig.clock.advance(100);
        await settle();
        for (const p of [0, 1, 2, 3] as PortIx[]) {
          assert.is(switchOf(rig, p).unknown, null, `port ${PORTS[p].join('/')}: known again once the host is off`);
          if (!switchOf(rig, p).moving) assert.equal(persisted(rig, p), coils(rig.sim, p), `port ${PORTS[p].join('/')}: the recorded pattern is on the relays`);
        }
        assert.equal(rig.sim.violations, []);
        assert.equal(broken, []);
      } finally {
        rig.sim.reconnect();
        await settle();
        await rig.close();
      }
    }),
    { numRuns: Number(process.env.DPSR_PROPERTY_RUNS ?? 40) },
  );
});

test.run();
