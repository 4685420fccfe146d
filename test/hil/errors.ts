/**
 * The HIL tier's own errors. The tier stands outside the controller (on a
 * real rig it is a separate tool on another machine that talks to dpsrd over
 * HTTP), so it does not share the controller's src/errors.ts; the meanings are
 * the same, so are the names. A message says what failed; `hint` says what to
 * do about it.
 */
export abstract class HilError extends Error {
  readonly hint?: string;
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options?.hint;
  }
}

/** A setting (environment variable, argument) of the tier is malformed. */
export class BadInputError extends HilError {}

/** The rig, the host, the controller or a tool did not do what it should. */
export class DeviceError extends HilError {}

/** The tier itself refuses a step that could damage the rig's drives. */
export class RefusedError extends HilError {}

/** Something the tier needs is held by another process. */
export class BusyError extends HilError {}

/** A tool, package or file the tier needs does not exist. */
export class NotFoundError extends HilError {}
