import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_FAILOVER, initialFailoverState, reduce, validateFailoverState, type FailoverEvent, type FailoverState } from '../../src/bootswitch/index.ts';
import { hostActionDecision, type HostAction, type HostActionContext } from '../../src/bootswitch/failover-shell.ts';

const cfg = { ...DEFAULT_FAILOVER, bootTries: 2, confirmTimeoutMs: 1000 };
const base = (): FailoverState => ({ ...initialFailoverState(cfg), consistent: { A: true, B: true } });

function run(state: FailoverState, events: FailoverEvent[]) {
  const actions: string[] = [];
  for (const e of events) {
    const step = reduce(cfg, state, e);
    state = step.state;
    for (const a of step.actions) actions.push(a.type === 'alert' ? `alert:${a.code}` : a.type === 'switch' ? `switch:${a.to}${a.hardOff ? ':hard' : ''}` : a.type === 'boot' ? `boot:${a.bay}:${a.status}` : a.type);
  }
  return { state, actions };
}

const on = (at: number): FailoverEvent => ({ type: 'host-power', on: true, at });
const off = (at: number): FailoverEvent => ({ type: 'host-power', on: false, at });
const tick = (at: number): FailoverEvent => ({ type: 'tick', at });

test('table: the automatic power-on and boot retry are refused while a switch is unknown, skipped while something keeps the host off, owed only to a job', () => {
  const unknown = [{ name: 'data port C/D', why: 'relays differ from the record' }];
  const job = 'job 7 (restore on pair system)';
  const move = 'a move of the boot switch to bay B';
  const ctx = (u: HostActionContext['unknown'], heldBy: string | null, keptOffBy: string | null): HostActionContext => ({ unknown: u, heldBy, keptOffBy });
  // what, context → action, level, code, owed
  const table: [HostAction, HostActionContext, 'go' | 'skip', ('warning' | 'critical')?, string?, boolean?][] = [
    ['power-on', ctx([], null, null), 'go'],
    ['retry-boot', ctx([], null, null), 'go'],
    ['power-on', ctx(unknown, null, null), 'skip', 'critical', 'power-on-relays-unknown', false],
    ['retry-boot', ctx(unknown, null, null), 'skip', 'critical', 'retry-boot-relays-unknown', false],
    // Unknown relays come first: nothing is owed to a job then either.
    ['power-on', ctx(unknown, job, job), 'skip', 'critical', 'power-on-relays-unknown', false],
    ['retry-boot', ctx(unknown, move, null), 'skip', 'critical', 'retry-boot-relays-unknown', false],
    ['power-on', ctx([], job, job), 'skip', 'warning', 'power-on-held', true],
    ['retry-boot', ctx([], job, job), 'skip', 'warning', 'retry-boot-held', false],
    ['power-on', ctx([], move, null), 'skip', 'warning', 'power-on-held', false],
    ['retry-boot', ctx([], move, null), 'skip', 'warning', 'retry-boot-held', false],
  ];
  for (const [what, c, action, level, code, owed] of table) {
    const d = hostActionDecision(what, c);
    const label = `${what}, unknown ${c.unknown.length}, held by ${c.heldBy}, kept off by ${c.keptOffBy}`;
    assert.is(d.action, action, label);
    if (d.action === 'skip') assert.equal([d.level, d.code, d.owePowerOn], [level, code, owed], label);
  }
  const refused = hostActionDecision('power-on', ctx([...unknown, { name: 'boot switch', why: 'latches cannot be read back' }], null, null));
  assert.ok(refused.action === 'skip' && refused.message.includes('the data port C/D (relays differ from the record); the boot switch (latches cannot be read back) are in an unknown state'), JSON.stringify(refused));
});

test('a confirmed boot restores the tries', () => {
  const { state, actions } = run(base(), [on(0), { type: 'heartbeat', at: 500 }]);
  assert.equal(state.triesLeft.A, 2);
  assert.is(state.pendingBoot, null);
  assert.equal(actions, ['boot:A:pending', 'boot:A:confirmed']);
});

test('table: unconfirmed boots use tries, then fail over with a hard off', () => {
  const rows: [string, FailoverEvent[], Partial<FailoverState>, string[]][] = [
    ['one timeout retries', [on(0), tick(1000)], { triesLeft: { A: 1, B: 2 } }, ['boot:A:pending', 'boot:A:unconfirmed', 'alert:boot-unconfirmed', 'retry-boot']],
    ['tick before the deadline does nothing', [on(0), tick(999)], { triesLeft: { A: 1, B: 2 } }, ['boot:A:pending']],
    ['host off before confirming counts', [on(0), off(10)], { triesLeft: { A: 1, B: 2 } }, ['boot:A:pending', 'boot:A:unconfirmed', 'alert:boot-unconfirmed', 'retry-boot']],
    ['a clean shutdown from the OS before the first heartbeat (the agent\'s notice) gives the try back', [on(0), { type: 'host-shutting-down', at: 5 }, off(10)], { triesLeft: { A: 2, B: 2 }, pendingBoot: null }, ['boot:A:pending', 'alert:boot-shut-down']],
    ['a notice after the boot was confirmed changes nothing', [on(0), { type: 'heartbeat', at: 5 }, { type: 'host-shutting-down', at: 6 }, off(10)], { triesLeft: { A: 2, B: 2 }, pendingBoot: null }, ['boot:A:pending', 'boot:A:confirmed']],
    ['clean shutdowns before confirming never add up to a failover; a boot that then times out still counts', [on(0), { type: 'host-shutting-down', at: 5 }, off(10), on(20), { type: 'host-shutting-down', at: 25 }, off(30), on(40), tick(1040)], { triesLeft: { A: 1, B: 2 } }, ['boot:A:pending', 'alert:boot-shut-down', 'boot:A:pending', 'alert:boot-shut-down', 'boot:A:pending', 'boot:A:unconfirmed', 'alert:boot-unconfirmed', 'retry-boot']],
    ['the controller shutting the host down (a data port moving) gives the try back', [on(0), { type: 'host-power', on: false, at: 10, ours: 'a move of the data port C/D to bay D' }], { triesLeft: { A: 2, B: 2 }, pendingBoot: null }, ['boot:A:pending']],
    ['its own shutdowns never add up to a failover', [on(0), { type: 'host-power', on: false, at: 10, ours: 'x' }, on(20), { type: 'host-power', on: false, at: 30, ours: 'x' }, on(40), tick(1040)], { triesLeft: { A: 1, B: 2 } }, ['boot:A:pending', 'boot:A:pending', 'boot:A:pending', 'boot:A:unconfirmed', 'alert:boot-unconfirmed', 'retry-boot']],
    ['two timeouts fail over', [on(0), tick(1000), on(2000), tick(3000)], { switching: { from: 'A', to: 'B', reason: 'x', hardOff: true } }, ['boot:A:pending', 'boot:A:unconfirmed', 'alert:boot-unconfirmed', 'retry-boot', 'boot:A:pending', 'boot:A:unconfirmed', 'switch:B:hard', 'alert:failover-started']],
  ];
  for (const [name, events, expect, actions] of rows) {
    const r = run(base(), events);
    for (const [k, v] of Object.entries(expect)) {
      if (k === 'switching') assert.equal({ ...r.state.switching!, reason: 'x' }, v, name);
      else assert.equal((r.state as unknown as Record<string, unknown>)[k], v, name);
    }
    assert.equal(r.actions, actions, name);
  }
});

test('switch result completes the failover and marks the old bay failed', () => {
  const r = run(base(), [on(0), tick(1000), on(2000), tick(3000), { type: 'switch-result', at: 4000, to: 'B', ok: true, bay: 'B' }]);
  assert.is(r.state.active, 'B');
  assert.is(r.state.standby, 'A');
  assert.is(r.state.failed.A, true);
  assert.is(r.state.switching, null);
  assert.is(r.state.failovers, 1);
  assert.equal(r.actions.slice(-2), ['failover', 'power-on']);
});

test('never fails over to an inconsistent standby: halts with an alert', () => {
  const s = { ...base(), consistent: { A: true, B: false } };
  const r = run(s, [on(0), tick(1000), on(2000), tick(3000)]);
  assert.is(r.state.switching, null);
  assert.ok(r.state.halted);
  assert.ok(r.actions.includes('alert:standby-inconsistent'));
  assert.not.ok(r.actions.some((a) => a.startsWith('switch')));
});

test('both bays failed: stops instead of looping', () => {
  let r = run(base(), [on(0), tick(1000), on(2000), tick(3000), { type: 'switch-result', at: 4000, to: 'B', ok: true, bay: 'B' }]);
  r = run(r.state, [on(5000), tick(6000), on(7000), tick(8000), on(9000), tick(10000)]);
  assert.ok(r.state.halted?.includes('both bays failed'));
  assert.is(r.state.active, 'B');
  assert.ok(r.actions.includes('alert:both-bays-failed'));
  assert.not.ok(r.actions.some((a) => a.startsWith('switch')));
  // Halted: further boots are not counted and nothing switches.
  const later = run(r.state, [on(20000), tick(40000), { type: 'failover-request', at: 41000, source: 'button' }]);
  assert.not.ok(later.actions.some((a) => a.startsWith('switch')));
});

test('button failover: refused to an inconsistent standby, allowed when consistent, hardOff from config', () => {
  const refused = run({ ...base(), consistent: { A: true, B: false } }, [{ type: 'failover-request', at: 0, source: 'button' }]);
  assert.equal(refused.actions, ['alert:failover-refused']);
  assert.is(refused.state.halted, null);
  const ok = run(base(), [{ type: 'failover-request', at: 0, source: 'button' }]);
  assert.equal(ok.actions, ['switch:B', 'alert:failover-started']);
  const hard = reduce({ ...cfg, hardOffOnButton: true }, base(), { type: 'failover-request', at: 0, source: 'button' });
  assert.equal(hard.actions[0], { type: 'switch', to: 'B', hardOff: true, reason: 'requested by button' });
});

test('a refused switch (host would not shut down) is not a failure', () => {
  const r = run(base(), [{ type: 'failover-request', at: 0, source: 'button' }, { type: 'switch-result', at: 1, to: 'B', ok: false, bay: 'A', refused: true, error: 'host on' }]);
  assert.is(r.state.active, 'A');
  assert.is(r.state.halted, null);
  assert.is(r.state.failed.A, false);
});

test('a failed switch halts and follows the relays', () => {
  const r = run(base(), [{ type: 'failover-request', at: 0, source: 'api' }, { type: 'switch-result', at: 1, to: 'B', ok: false, bay: null, error: 'stuck' }]);
  assert.ok(r.state.halted);
  assert.ok(r.actions.includes('alert:switch-failed'));
});

test('startup: recovery gesture clears marks; an ordered switch is resumed or completed', () => {
  const halted = { ...base(), halted: 'both', failed: { A: true, B: true } };
  const r = run(halted, [{ type: 'startup', at: 0, buttonHeld: true, relayBay: 'A' }]);
  assert.is(r.state.halted, null);
  assert.equal(r.state.failed, { A: false, B: false });
  assert.ok(r.actions.includes('alert:recovery-gesture'));

  const sw = { ...base(), switching: { from: 'A' as const, to: 'B' as const, reason: 'r', hardOff: false } };
  assert.equal(run(sw, [{ type: 'startup', at: 0, buttonHeld: false, relayBay: 'A' }]).actions, ['switch:B']);
  const done = run(sw, [{ type: 'startup', at: 0, buttonHeld: false, relayBay: 'B' }]);
  assert.is(done.state.active, 'B');
  assert.is(done.state.switching, null);

  const adopted = run(base(), [{ type: 'startup', at: 0, buttonHeld: false, relayBay: 'B' }]);
  assert.is(adopted.state.active, 'B');
  assert.ok(adopted.actions.includes('alert:active-adopted'));
});

test('the reducer is pure: the input state is not modified', () => {
  const s = base();
  const copy = structuredClone(s);
  reduce(cfg, s, on(0));
  reduce(cfg, s, { type: 'failover-request', at: 0, source: 'api' });
  assert.equal(s, copy);
});

test('short press shows status; drive replacement clears the failed mark and consistency', () => {
  assert.equal(run(base(), [{ type: 'button-short', at: 0 }]).actions, ['show-status']);
  const r = run({ ...base(), failed: { A: false, B: true } }, [{ type: 'drive-replaced', at: 0, bay: 'B' }]);
  assert.equal(r.state.failed.B, false);
  assert.equal(r.state.consistent.B, false);
});

test('validateFailoverState rejects damaged records', () => {
  assert.ok(validateFailoverState(base()));
  assert.throws(() => validateFailoverState({ ...base(), active: 'B' }), /active/);
  assert.throws(() => validateFailoverState({ ...base(), triesLeft: { A: 1 } }), /triesLeft.B/);
  assert.throws(() => validateFailoverState(null), /not an object/);
});

test.run();
