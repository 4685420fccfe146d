/**
 * The files' routes (browse, archive, difference walks, restores of files
 * and partitions) in two places, like the copy jobs' routes of
 * pair-routes.ts: under `/api/pairs/{id}/…` for any pair, and at their old
 * place (`/api/browse`, `/api/restore/files`, …) for the boot pair, so
 * scripts written for one pair keep working when a data pair is added.
 */
import type { DrivePair, Pairs } from './pairs.ts';
import type { RequestContext, Route } from './http-server.ts';

/** A route without its path, given the pair the request names. */
export type PairScopedRoute = Omit<Route, 'path' | 'handler'> & {
  /** The path after `/api` (e.g. `/browse/file`). */
  readonly at: string;
  handler(pair: DrivePair, ctx: RequestContext): ReturnType<Route['handler']>;
};

export function pairScoped(pairs: Pairs, routes: PairScopedRoute[]): Route[] {
  const out: Route[] = [];
  for (const { at, handler, summary, responses, ...rest } of routes) {
    out.push({ ...rest, path: `/api/pairs/:id${at}`, summary: `${summary} (of pair {id})`, responses: { ...responses, 404: `${responses[404] ? `${responses[404]}; ` : ''}no such pair` }, handler: (ctx) => handler(pairs.get(ctx.params.id!), ctx) });
    out.push({ ...rest, path: `/api${at}`, summary: `${summary} (of the boot pair; any pair: /api/pairs/{id}${at.replace(/:([a-z]+)/g, '{$1}')})`, responses, handler: (ctx) => handler(pairs.boot, ctx) });
  }
  return out;
}
