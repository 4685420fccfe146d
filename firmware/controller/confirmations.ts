/**
 * The typed confirmations of the actions that move the host to another drive
 * or overwrite one: the exact phrase the request body's `confirm` must carry.
 * The console asks the operator to type it, the CLI sends it once its own
 * --yes / --i-mean-restore / question was answered, the Node-RED failover
 * node once msg.confirm carried it. A boolean could come from any upstream
 * mistake; a phrase that names the action cannot.
 */
import { oneOf } from './schema.ts';

export const CONFIRMATIONS = {
  failover: 'failover',
  reprotect: 'reprotect',
  restore: 'restore',
} as const;

/** The phrase of a partition restore: it names the partition, so a typo in the number is no confirmation. */
export const partitionConfirmation = (n: number) => `restore partition ${n}`;

/** The body field of a fixed phrase: a missing or other value is 400 naming the phrase. */
export function confirmField(action: keyof typeof CONFIRMATIONS, what: string) {
  return oneOf([CONFIRMATIONS[action]] as const, `the typed confirmation: exactly "${CONFIRMATIONS[action]}" (${what}); without it the request is 400 and nothing changes`);
}
