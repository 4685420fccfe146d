/**
 * The shape of the pair state file, checked after its checksum: a file edited
 * by hand (and re-checksummed) or written by another version must give a clear
 * error naming the field, never a TypeError deep inside a copy.
 */

const STATES = ['consistent', 'syncing', 'inconsistent'];
const KINDS = ['clone', 'sync', 'restore'];

type Check = (v: unknown) => boolean;
const isString: Check = (v) => typeof v === 'string';
const isCount: Check = (v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The first thing wrong with a parsed pairs.json, as `pairs[0].drives.X.generation is not a whole number`, or undefined. */
export function pairStateShapeProblem(value: unknown): string | undefined {
  if (!isObject(value)) return 'the file is not a JSON object';
  if (!isCount(value.sequence)) return '"sequence" is not a whole number';
  if (!Array.isArray(value.pairs)) return '"pairs" is not a list';
  for (const [i, p] of value.pairs.entries()) {
    const at = `pairs[${i}]`;
    if (!isObject(p)) return `${at} is not an object`;
    for (const k of ['id', 'createdAt', 'activeKey', 'standbyKey']) if (!isString(p[k])) return `${at}.${k} is not a string`;
    if (!isCount(p.counter)) return `${at}.counter is not a whole number`;
    if (!STATES.includes(p.standbyState as string)) return `${at}.standbyState is not one of ${STATES.join(', ')}`;
    if (!isObject(p.drives)) return `${at}.drives is not an object`;
    for (const key of [p.activeKey as string, p.standbyKey as string]) {
      const d = p.drives[key];
      const dat = `${at}.drives["${key}"]`;
      if (!isObject(d)) return `${dat} is missing`;
      if (d.key !== key) return `${dat}.key is not "${key}"`;
      if (!isString(d.lastPath)) return `${dat}.lastPath is not a string`;
      for (const k of ['sizeBytes', 'logicalSectorSize', 'generation']) if (!isCount(d[k])) return `${dat}.${k} is not a whole number`;
      if (!Array.isArray(d.lineage) || !d.lineage.every(isCount)) return `${dat}.lineage is not a list of whole numbers`;
    }
    const pc = p.pendingCopy;
    if (pc !== undefined) {
      const pat = `${at}.pendingCopy`;
      if (!isObject(pc)) return `${pat} is not an object`;
      if (!KINDS.includes(pc.kind as string)) return `${pat}.kind is not one of ${KINDS.join(', ')}`;
      for (const k of ['from', 'to', 'startedAt']) if (!isString(pc[k])) return `${pat}.${k} is not a string`;
      if (typeof pc.journaled !== 'boolean') return `${pat}.journaled is not true or false`;
      if (pc.plan !== undefined) {
        const plan = pc.plan;
        if (!isObject(plan) || !isString(plan.digest) || !Array.isArray(plan.ranges) || !Array.isArray(plan.partitions) || !Array.isArray(plan.tableFixups) || !isObject(plan.source) || !isObject(plan.target)) {
          return `${pat}.plan is not a copy plan (digest, ranges, partitions, table fix-ups, source, target)`;
        }
      }
    }
  }
  return undefined;
}
