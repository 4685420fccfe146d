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
  // JSON.parse reads 1e400 as Infinity, which JSON.stringify would show as null; YAML also has .nan and -.inf.
  if (typeof value === 'number' && Number.isNaN(value)) return 'not a number (NaN)';
  if (typeof value === 'number' && !Number.isFinite(value)) return value > 0 ? 'a number too large to hold' : 'a negative number too large to hold';
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

/**
 * A string. `valid`: a further check the pattern cannot say (e.g. a port's
 * range), failing with `patternText`. A NUL is refused in every string: no
 * path, argument or header can hold one, and it would be cut short there.
 */
export function str(opts: { pattern?: RegExp; patternText?: string; valid?: (v: string) => boolean; maxLength?: number; description?: string } = {}): Schema<string> {
  const max = opts.maxLength ?? 4096;
  return {
    parse(v, key) {
      if (typeof v !== 'string' || v.length === 0 || v.length > max) fail(key, v, opts.patternText ?? `a non-empty string of at most ${max} characters`, where);
      if (v.includes('\u0000')) fail(key, v, `${opts.patternText ?? 'a string'} without a NUL character`, where);
      if ((opts.pattern && !opts.pattern.test(v)) || (opts.valid && !opts.valid(v))) fail(key, v, opts.patternText ?? `a string matching ${opts.pattern}`, where);
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

/**
 * A list. `maxJsonBytes`: the items written as JSON (UTF-8) take at most this
 * many bytes in all, which keeps a long list of long strings inside the
 * request body limit (see maxBodyBytes).
 */
export function array<T>(item: Schema<T>, opts: { minItems?: number; maxItems: number; unique?: boolean; maxJsonBytes?: number; description?: string }): Schema<T[]> {
  const min = opts.minItems ?? 0;
  return {
    parse(v, key) {
      if (!Array.isArray(v) || v.length > opts.maxItems || v.length < min) fail(key, v, min > 0 ? `a list of ${min} to ${opts.maxItems} items` : `a list of at most ${opts.maxItems} items`, where);
      const out = v.map((x, i) => item.parse(x, `${key}[${i}]`));
      if (opts.maxJsonBytes !== undefined) {
        const bytes = out.reduce((n, x) => n + Buffer.byteLength(JSON.stringify(x)), 0);
        if (bytes > opts.maxJsonBytes) fail(key, `${out.length} items of ${bytes} bytes as JSON`, `at most ${opts.maxJsonBytes} bytes in all as JSON (send the rest in another request)`, where);
      }
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
    json: {
      type: 'array',
      items: item.json,
      ...(min > 0 ? { minItems: min } : {}),
      maxItems: opts.maxItems,
      ...(opts.unique ? { uniqueItems: true } : {}),
      ...(opts.maxJsonBytes !== undefined ? { [MAX_JSON_BYTES]: opts.maxJsonBytes } : {}),
      ...(opts.description ? { description: `${opts.description}${opts.maxJsonBytes !== undefined ? `; at most ${opts.maxJsonBytes} bytes in all as JSON` : ''}` } : {}),
    },
  };
}

/** The JSON Schema extension keyword of array's maxJsonBytes. */
const MAX_JSON_BYTES = 'x-maxJsonBytes';

/**
 * The largest body, in bytes, that `json` (a schema of this file) admits,
 * written as compact JSON: strings counted at 6 bytes a character (a \u
 * escape), lists at their item count or their x-maxJsonBytes. The HTTP
 * server never answers 413 to a body of at most this size, so a body the
 * schema allows is never refused for its size.
 */
export function maxBodyBytes(json: JsonSchema): number {
  const digits = (n: unknown) => String(n).length;
  switch (json.type) {
    case 'boolean':
      return 5;
    case 'integer':
    case 'number':
      return json.type === 'number' ? 24 : Math.max(digits(json.minimum), digits(json.maximum));
    case 'string':
      return Array.isArray(json.enum) ? Math.max(...(json.enum as string[]).map((v) => JSON.stringify(v).length)) : 2 + 6 * Number(json.maxLength ?? 4096);
    case 'array': {
      const items = Number(json.maxItems);
      const inner = typeof json[MAX_JSON_BYTES] === 'number' ? (json[MAX_JSON_BYTES] as number) : items * maxBodyBytes(json.items as JsonSchema);
      return 2 + inner + Math.max(0, items - 1);
    }
    case 'object': {
      const props = Object.entries((json.properties ?? {}) as Record<string, JsonSchema>);
      // A pass-through object has no properties to bound it: the configured limit applies.
      if (props.length === 0 && json.additionalProperties !== false) return 0;
      return 2 + props.reduce((n, [k, v]) => n + JSON.stringify(k).length + 1 + maxBodyBytes(v), 0) + Math.max(0, props.length - 1);
    }
    default:
      return 0;
  }
}

/**
 * The first key given twice in one object of `text`, which is valid JSON
 * (JSON.parse accepted it), as a path ("sync.mode", "[0].a"), or null.
 * JSON.parse silently keeps the last value; which one was meant cannot be
 * told, so a body or config file that repeats a key is bad input, as a query
 * parameter given twice is. Keys are compared as decoded ("\u0061" is "a").
 */
export function duplicateKey(text: string): string | null {
  interface Frame {
    keys: Set<string> | null;
    key: string;
    index: number;
    expectKey: boolean;
  }
  const stack: Frame[] = [];
  const pathTo = (last: string) => {
    let path = '';
    stack.forEach((f, i) => {
      const key = i === stack.length - 1 ? last : f.key;
      path = f.keys ? (path ? `${path}.${key}` : key) : `${path}[${f.index}]`;
    });
    return path;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return pathTo(key);
        top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) stack.push({ keys: new Set(), key: '', index: 0, expectKey: true });
    else if (c === 0x5b) stack.push({ keys: null, key: '', index: 0, expectKey: false });
    else if (c === 0x7d || c === 0x5d) stack.pop();
    else if (c === 0x2c) {
      const top = stack[stack.length - 1];
      if (top?.keys) top.expectKey = true;
      else if (top) top.index++;
    }
  }
  return null;
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

/**
 * `s`, refusing a key that an older version accepted with a message saying
 * why it went and what to do instead (the plain "no such key" would not).
 */
export function withoutKey<T>(s: Schema<T>, removed: string, why: string): Schema<T> {
  return {
    ...s,
    parse(v, key) {
      if (typeof v === 'object' && v !== null && !Array.isArray(v) && removed in v) {
        throw new BadInputError(`${where}: ${join(key, removed)} is no longer accepted: ${why}`, { hint: 'fix the request; nothing was changed' });
      }
      return s.parse(v, key);
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
  if ((j.type === 'integer' || j.type === 'number') && typeof j.minimum === 'number' && typeof j.maximum === 'number') return `${j.type === 'integer' ? 'an integer' : 'a number'} from ${j.minimum} to ${j.maximum} (this key is required)`;
  const type = String(j.type);
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type} (this key is required)`;
}
