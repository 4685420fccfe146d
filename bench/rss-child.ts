/** Clones then syncs two drives and prints the process's peak RSS (KiB), for the memory benchmark. */
import { clone, sync } from '../src/sync/index.ts';

const [stateDir, a, b] = process.argv.slice(2) as [string, string, string];
await clone({ stateDir, source: a, target: b });
await sync({ stateDir, source: a, target: b });
console.log(`maxRSS=${process.resourceUsage().maxRSS}`);
