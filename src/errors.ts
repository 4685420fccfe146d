/**
 * The error vocabulary every room shares: one class per meaning, so the CLI
 * maps them to exit codes and the daemon to HTTP statuses in one place each.
 * A leaf module: it imports nothing, so every room may import it.
 */

export type ErrorKind = 'bad-input' | 'refused' | 'device' | 'busy' | 'not-found' | 'cancelled' | 'internal';

export abstract class DpsrError extends Error {
  abstract readonly kind: ErrorKind;
  /** What the operator can do about it, shown after the message. */
  readonly hint?: string;
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options?.hint;
  }
}

/** Arguments, config, request bodies or frames that are malformed. Nothing was changed. */
export class BadInputError extends DpsrError {
  readonly kind = 'bad-input' as const;
}

/** An operation refused because it could destroy data. Nothing was changed. */
export class RefusedError extends DpsrError {
  readonly kind = 'refused' as const;
}

/**
 * Where a device fault lies. `media`: the medium cannot give or take these
 * sectors (a bad sector); the rest of the drive may still work, so a reader
 * may retry and split the range. `transport`: the path to the device is gone
 * (a pulled drive, a bridge that dropped off USB, a relay board or bus that
 * stopped answering); retrying sector by sector only wastes time.
 */
export type DeviceFault = 'media' | 'transport';

/**
 * A drive, bridge, relay or bus failed while working. `fault` is set by the
 * code that raises the error, where it knows which kind of fault it saw;
 * undefined for failures that are neither (a write to a drive opened
 * read-only, a full filesystem under an image file).
 */
export class DeviceError extends DpsrError {
  readonly kind = 'device' as const;
  readonly fault?: DeviceFault;
  constructor(message: string, options?: { hint?: string; cause?: unknown; fault?: DeviceFault }) {
    super(message, options);
    this.fault = options?.fault;
  }
}

/**
 * A state file or journal could not be written because its filesystem is
 * full. Nothing was changed; the hint names what to free. HTTP 507, the
 * status RFC 4918 §11.5 defines for exactly this ("Insufficient Storage").
 */
export class NoSpaceError extends DeviceError {}

/**
 * A state file or journal could not be written because its filesystem is
 * mounted read-only or its directory denies writing. Nothing was changed;
 * the hint names the fix. HTTP 507 like a full one: the server cannot store
 * what the request needs.
 */
export class ReadOnlyStateError extends DeviceError {}

/** A bad sector: the one failure worth retrying and narrowing down. */
export function isMediaError(e: unknown): boolean {
  return e instanceof DeviceError && e.fault === 'media';
}

/** The device or the way to it is gone. */
export function isTransportError(e: unknown): boolean {
  return e instanceof DeviceError && e.fault === 'transport';
}

/** Something else is already running where exclusive access is needed. */
export class BusyError extends DpsrError {
  readonly kind = 'busy' as const;
}

/** A named drive, job, file or resource does not exist. */
export class NotFoundError extends DpsrError {
  readonly kind = 'not-found' as const;
}

/** The operator or a caller cancelled the work. */
export class CancelledError extends DpsrError {
  readonly kind = 'cancelled' as const;
}

export function isDpsrError(e: unknown): e is DpsrError {
  return e instanceof DpsrError;
}

/** Exit codes of the `dpsr` CLI (docs/architecture.md): 0 done, 1 failed or differs, 2 bad usage, 3 refused. */
export function exitCodeFor(e: unknown): 1 | 2 | 3 {
  if (!isDpsrError(e)) return 1;
  switch (e.kind) {
    case 'bad-input':
    case 'not-found':
      return 2;
    case 'refused':
      return 3;
    default:
      return 1;
  }
}

/** HTTP statuses of the daemon's API for the same meanings. */
export function httpStatusFor(e: unknown): number {
  if (!isDpsrError(e)) return 500;
  switch (e.kind) {
    case 'bad-input':
      return 400;
    case 'not-found':
      return 404;
    case 'refused':
    case 'busy':
      return 409;
    case 'cancelled':
      return 409;
    case 'device':
      return e instanceof NoSpaceError || e instanceof ReadOnlyStateError ? 507 : 502;
    default:
      return 500;
  }
}

/** An error as JSON (API bodies, job records): its meaning, message, hint and, for a device, where the fault lies. */
export interface ErrorData {
  kind: ErrorKind;
  message: string;
  hint?: string;
  fault?: DeviceFault;
}

export function errorData(e: unknown): ErrorData {
  return {
    kind: isDpsrError(e) ? e.kind : 'internal',
    message: e instanceof Error ? e.message : String(e),
    ...(isDpsrError(e) && e.hint ? { hint: e.hint } : {}),
    ...(e instanceof DeviceError && e.fault ? { fault: e.fault } : {}),
  };
}

/** Text for an operator: the message, then the hint on its own line. */
export function describeError(e: unknown): string {
  if (isDpsrError(e)) return e.hint ? `${e.message}\n  ${e.hint}` : e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
