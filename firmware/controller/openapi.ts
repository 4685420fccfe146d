/** The OpenAPI 3.1 document, built from the same route table and body schemas the server uses. */
import type { Route } from './http-server.ts';
import { EVENT_TYPES } from './events.ts';

const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      required: ['kind', 'message'],
      properties: {
        kind: { type: 'string', enum: ['bad-input', 'refused', 'device', 'busy', 'not-found', 'cancelled', 'internal', 'unauthorized', 'forbidden'] },
        message: { type: 'string', description: 'what went wrong and why' },
        hint: { type: 'string', description: 'what to do next' },
        fault: { type: 'string', enum: ['media', 'transport'], description: 'device errors: a bad sector (media) or a drive, bridge or board that is gone (transport)' },
      },
    },
  },
};

export function buildOpenApi(routes: Route[]) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.path.replace(/:([a-z]+)/g, '{$1}');
    const params = [...r.path.matchAll(/:([a-z]+)/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: m[1] === 'bay' ? { type: 'string', enum: ['A', 'B'] } : { type: 'string' },
    }));
    for (const [name, description] of Object.entries(r.query ?? {})) params.push({ name, in: 'query', required: false, schema: { type: 'string' }, description } as never);
    const responses: Record<string, unknown> = {};
    for (const [code, description] of Object.entries(r.responses)) {
      responses[code] = Number(code) >= 400 ? { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } } : { description };
    }
    const err = (description: string) => ({ description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });
    if (r.body) {
      responses['400'] ??= err('the body is not JSON, nests deeper than 32 levels, or breaks its schema (the message names the key, the value and what is allowed)');
      responses['413'] ??= err('the body is larger than api.bodyLimitBytes and than the largest body the schema admits (declared or streamed chunked)');
      responses['415'] ??= err('the body is not application/json');
    }
    // Every POST may record a job or state: on a full state directory it answers 507 and changes nothing.
    if (r.method === 'POST') responses['507'] ??= err('the state directory is full: nothing was recorded or started; free space there');
    if (params.some((p) => p.in === 'path')) responses['400'] ??= err('a path parameter holds a malformed percent-escape, or is not one of the allowed values');
    if (path.startsWith('/api/')) {
      const query = 'a query parameter the route does not list, or one given more than once';
      const given = responses['400'] as { description: string } | undefined;
      responses['400'] = err(given ? `${given.description}; or ${query}` : query);
    }
    if (r.auth !== false) responses['401'] = { description: 'no or a wrong bearer token (or console session)', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
    if (r.auth !== false && r.method === 'POST') responses['403'] ??= err('made with the console\'s session cookie but without its X-CSRF-Token header, or from another site');
    paths[path] ??= {};
    paths[path][r.method.toLowerCase()] = {
      summary: r.summary,
      tags: [r.tag],
      operationId: `${r.method.toLowerCase()}${path.replace(/[{}]/g, '').replace(/[^a-zA-Z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      ...(params.length ? { parameters: params } : {}),
      ...(r.body ? { requestBody: { required: false, content: { 'application/json': { schema: r.body.json } } } } : {}),
      ...(r.auth === false ? { security: [] } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'dpsrd',
      version: '1',
      description:
        'The dpsr controller daemon: its drive pairs, storage jobs (one per pair, by default one copy at a time, the others queued), failover and boot selection, events. ' +
        `Event names on GET /api/events: ${Object.entries(EVENT_TYPES).map(([k, v]) => `${k} (${v})`).join('; ')}.`,
    },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }, { session: [] }],
    tags: [
      { name: 'daemon', description: 'status, health, metrics, this document' },
      { name: 'pairs', description: 'the drive pairs; every pair-specific route also under /api/pairs/{id}/' },
      { name: 'jobs', description: 'storage jobs: clone, sync, verify, recover, re-protect' },
      { name: 'boot', description: 'failover, boot selection, host heartbeat' },
      { name: 'events', description: 'event stream and persisted event log' },
      { name: 'files', description: 'the files on both drives, side by side, and their content (read-only)' },
      { name: 'console', description: 'the operator console: its login and its page' },
      { name: 'sim', description: 'simulated rig controls (only when the simulated rig runs)' },
    ],
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'the token in <state-dir>/api-token' },
        session: { type: 'apiKey', in: 'cookie', name: 'dpsr_session', description: 'the console\'s login (POST /api/session with the password in <state-dir>/admin-password); state-changing requests also need the X-CSRF-Token header it answered with' },
      },
      schemas: { Error: errorSchema },
    },
    'x-event-types': EVENT_TYPES,
    paths,
  };
}
