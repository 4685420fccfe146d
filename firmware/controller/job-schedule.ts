/**
 * Which waiting storage jobs may start: one pure decision, tested as a
 * table. A pair runs one job at a time; by default the controller runs one
 * copy at a time (a Raspberry Pi 4's USB 3 ports share one PCIe lane, so two
 * copies at once are no faster) and the others wait in the order they were
 * asked for. With `parallel`, jobs of different pairs run at once when they
 * share no bay and no bridge bandwidth budget; a job never overtakes an
 * earlier waiting job it conflicts with, so none waits forever.
 */

/** What a job holds while it runs. A job without a pair holds everything (it must run alone). */
export interface JobSlot {
  id: string;
  pair: string | null;
  bays: readonly string[];
  bridge: string | null;
}

export interface SchedulePolicy {
  parallel: boolean;
}

/** Two jobs that may not run at once: the same pair, a shared bay or bridge budget, or one that must run alone. */
export function conflicts(a: JobSlot, b: JobSlot): boolean {
  if (a.pair === null || b.pair === null || a.pair === b.pair) return true;
  if (a.bridge !== null && a.bridge === b.bridge) return true;
  return a.bays.some((x) => b.bays.includes(x));
}

/**
 * The ids of the `waiting` jobs (oldest first) to start now, given the
 * `running` ones, in the order to start them.
 */
export function startable(waiting: readonly JobSlot[], running: readonly JobSlot[], policy: SchedulePolicy): string[] {
  if (!policy.parallel) return running.length === 0 && waiting.length > 0 ? [waiting[0]!.id] : [];
  const out: string[] = [];
  const held = [...running];
  const passed: JobSlot[] = [];
  for (const w of waiting) {
    if (!held.some((r) => conflicts(r, w)) && !passed.some((p) => conflicts(p, w))) {
      out.push(w.id);
      held.push(w);
    } else passed.push(w);
  }
  return out;
}
