/**
 * One description per shape, used twice: to validate config files and API
 * bodies (every error names the key, the value and what is allowed; unknown
 * keys are errors) and to describe the same shapes in the OpenAPI document,
 * so the two cannot drift apart.
 */
import { BadInputError } from '../../src/errors.ts';

export type JsonSchema = Record<string, unknown>;

export interface Schema<T> {
  /** Returns the checked value (with defaults filled in) or throws BadInputError. */
  parse(value: unknown, key: string): T;
  readonly json: JsonSchema;
  readonly optional?: boolean;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

export function show(value: unknown): string {
  if (value === undefined) return 'missing';
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    // Too deeply nested (stack overflow) or cyclic: the shape is the message.
    return Array.isArray(value) ? 'a list nested too deeply to show' : 'a value nested too deeply to show';
  }
  if (text === undefined) return String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

export function fail(key: string, value: unknown, allowed: string, where: string): never {
  throw new BadInputError(`${where}: ${key || '(root)'} is ${show(value)}; allowed: ${allowed}`, {
    hint: where === 'config' ? 'fix the configuration file; the daemon did not start' : 'fix the request; nothing was changed',
  });
}

/** Where the error happened ("config" or "request body"): set by `check`. */
let where = 'input';

export function check<T>(schema: Schema<T>, value: unknown, context: string): T {
  const before = where;
  where = context;
  try {
    return schema.parse(value, '');
  } finally {
    where = before;
  }
}

const join = (key: string, k: string) => (key ? `${key}.${k}` : k);

export function int(min: number, max: number, description?: string): Schema<number> {
  return {
    parse(v, key) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(key, v, `an integer from ${min} to ${max}`, where);
      return v;
    },
    json: { type: 'integer', minimum: min, maximum: max, ...(description ? { description } : {}) },
  };
}

export function num(min: number, max: number, description?: string): Schema<number> {
  return {
    parse(v, key) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) fail(key, v, `a number from ${min} to ${max}`, where);
      return v;
    },
    json: { type: 'number', minimum: min, maximum: max, ...(description ? { description } : {}) },
  };
}

export function bool(description?: string): Schema<boolean> {
  return {
    parse(v, key) {
      if (typeof v !== 'boolean') fail(key, v, 'true or false', where);
      return v;
    },
    json: { type: 'boolean', ...(description ? { description } : {}) },
  };
}

export function str(opts: { pattern?: RegExp; patternText?: string; maxLength?: number; description?: string } = {}): Schema<string> {
  const max = opts.maxLength ?? 4096;
  return {
    parse(v, key) {
      if (typeof v !== 'string' || v.length === 0 || v.length > max) fail(key, v, opts.patternText ?? `a non-empty string of at most ${max} characters`, where);
      if (opts.pattern && !opts.pattern.test(v)) fail(key, v, opts.patternText ?? `a string matching ${opts.pattern}`, where);
      return v;
    },
    json: { type: 'string', minLength: 1, maxLength: max, ...(opts.pattern ? { pattern: opts.pattern.source } : {}), ...(opts.description ? { description: opts.description } : {}) },
  };
}

export function oneOf<const V extends readonly string[]>(values: V, description?: string): Schema<V[number]> {
  return {
    parse(v, key) {
      if (typeof v !== 'string' || !values.includes(v)) fail(key, v, values.map((x) => JSON.stringify(x)).join(', '), where);
      return v as V[number];
    },
    json: { type: 'string', enum: [...values], ...(description ? { description } : {}) },
  };
}

export function array<T>(item: Schema<T>, opts: { maxItems: number; unique?: boolean; description?: string }): Schema<T[]> {
  return {
    parse(v, key) {
      if (!Array.isArray(v) || v.length > opts.maxItems) fail(key, v, `a list of at most ${opts.maxItems} items`, where);
      const out = v.map((x, i) => item.parse(x, `${key}[${i}]`));
      if (opts.unique) {
        const seen = new Set<string>();
        out.forEach((x, i) => {
          const k = JSON.stringify(x);
          if (seen.has(k)) fail(`${key}[${i}]`, x, 'each value at most once', where);
          seen.add(k);
        });
      }
      return out;
    },
    json: { type: 'array', items: item.json, maxItems: opts.maxItems, ...(opts.unique ? { uniqueItems: true } : {}), ...(opts.description ? { description: opts.description } : {}) },
  };
}

/** An optional field: absent (or undefined) gives the default. */
export function opt<T>(s: Schema<T>, dflt: T): Schema<T>;
export function opt<T>(s: Schema<T>): Schema<T | undefined>;
export function opt<T>(s: Schema<T>, dflt?: T): Schema<T | undefined> {
  return {
    parse(v, key) {
      return v === undefined ? (dflt === undefined ? undefined : structuredClone(dflt)) : s.parse(v, key);
    },
    json: dflt === undefined ? s.json : { ...s.json, default: dflt },
    optional: true,
  };
}

type Shape = Record<string, Schema<unknown>>;
type OptionalKeys<S extends Shape> = { [K in keyof S]: undefined extends Infer<S[K]> ? K : never }[keyof S];
type ObjOut<S extends Shape> = { [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & { [K in OptionalKeys<S>]?: Infer<S[K]> };

export function obj<S extends Shape>(shape: S, description?: string): Schema<ObjOut<S>> {
  const keys = Object.keys(shape);
  return {
    parse(v, key) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(key, v, `an object with the keys ${keys.join(', ') || '(none)'}`, where);
      const input = v as Record<string, unknown>;
      for (const k of Object.keys(input)) {
        if (!keys.includes(k)) fail(join(key, k), input[k], `no such key; known keys: ${keys.join(', ') || '(none)'}`, where);
      }
      const out: Record<string, unknown> = {};
      for (const k of keys) {
        const s = shape[k]!;
        if (input[k] === undefined && !s.optional) fail(join(key, k), undefined, describe(s), where);
        const parsed = s.parse(input[k], join(key, k));
        if (parsed !== undefined) out[k] = parsed;
      }
      return out as ObjOut<S>;
    },
    json: {
      type: 'object',
      additionalProperties: false,
      properties: Object.fromEntries(keys.map((k) => [k, shape[k]!.json])),
      ...(keys.some((k) => !shape[k]!.optional) ? { required: keys.filter((k) => !shape[k]!.optional) } : {}),
      ...(description ? { description } : {}),
    },
  };
}

/** Anything JSON, checked later by someone else (the boot-switch config has its own validator). */
export function passThrough(description: string): Schema<unknown> {
  return { parse: (v) => v, json: { type: 'object', description } };
}

function describe(s: Schema<unknown>): string {
  const j = s.json;
  if (Array.isArray(j.enum)) return (j.enum as string[]).map((x) => JSON.stringify(x)).join(', ');
  if (j.type === 'object') return 'an object (this key is required)';
  return `a ${String(j.type)} (this key is required)`;
}
