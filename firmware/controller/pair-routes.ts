/**
 * The routes that act on one drive pair, each twice: under
 * `/api/pairs/{id}/…` for any pair, and at its old place (`/api/sync`, …)
 * for the controller with one pair. With several pairs the old place names
 * no pair, so it answers 400 naming the pairs and the route to use.
 */
import { BadInputError, RefusedError } from '../../src/errors.ts';
import { summary, type JobRecord } from './jobs.ts';
import type { Controller } from './controller.ts';
import { refuseActiveWriteInline, type CopyJobOptions, type SyncOptions } from './copy-jobs.ts';
import type { DrivePair } from './pairs.ts';
import type { Reply, Route } from './http-server.ts';
import type { Schema } from './schema.ts';
import type { bodies as apiBodies } from './api.ts';

function jobReply(job: JobRecord): Reply {
  return { status: 202, body: { id: job.id, job: summary(job) } };
}

interface PairOp {
  name: string;
  tag: string;
  summary: string;
  body: Schema<unknown>;
  responses: Record<number, string>;
  handler(pair: DrivePair, body: unknown): Reply | Promise<Reply>;
}

const QUEUED = '; 202 also when the job waits in the queue behind another pair\'s (job.state "queued")';

export function pairRoutes(app: Controller, bodies: typeof apiBodies): Route[] {
  const ops: PairOp[] = [
    {
      name: 'sync', tag: 'jobs', summary: 'Start a sync of the active drive onto the standby', body: bodies.sync,
      responses: { 202: `the job started; { id, job }${QUEUED}`, 409: 'the pair has a job running or queued, a failover moves the drives, a restore of files onto the active drive was interrupted (finish or dismiss it first), or the sync is refused to protect data' },
      handler: (p, body) => {
        app.files.record.syncBlocker(p.id, `a sync of pair ${p.id}`);
        return jobReply(p.copies.start('sync', body as SyncOptions));
      },
    },
    {
      name: 'verify', tag: 'jobs', summary: 'Start comparing both drives', body: bodies.verify,
      responses: { 202: `the job started${QUEUED}`, 409: 'the pair has a job running or queued' },
      handler: (p, body) => jobReply(p.copies.start('verify', body as CopyJobOptions['verify'])),
    },
    {
      name: 'clone', tag: 'jobs', summary: 'Start the first full copy, which pairs the drives', body: bodies.clone,
      responses: { 202: `the job started${QUEUED}`, 409: 'the pair has a job running or queued, a restore of files onto the active drive was interrupted (finish or dismiss it first), or the copy is refused' },
      handler: (p, body) => {
        // A forced clone overwrites the standby as a sync does: it may hold the only copy of files not restored yet.
        app.files.record.syncBlocker(p.id, `a clone of pair ${p.id}`);
        return jobReply(p.copies.start('clone', body as CopyJobOptions['clone']));
      },
    },
    {
      name: 'recover', tag: 'jobs', summary: 'Roll an interrupted sync back: the standby becomes the previous backup again', body: bodies.empty,
      responses: { 202: `the job started${QUEUED}`, 409: 'the pair has a job running or queued, or nothing can be rolled back' },
      handler: (p) => jobReply(p.copies.start('recover', {})),
    },
    {
      name: 'reprotect', tag: 'jobs', summary: 'Make the drive in the standby bay a backup again (after a failover or a drive replacement)', body: bodies.reprotect,
      responses: { 202: `the job started${QUEUED}`, 409: 'the pair has a job running or queued, or refused' },
      handler: (p, body) => {
        app.files.record.syncBlocker(p.id, `a re-protect of pair ${p.id}`);
        return jobReply(p.copies.start('reprotect', body as CopyJobOptions['reprotect']));
      },
    },
    {
      name: 'restore', tag: 'jobs', summary: 'Copy the backup on the standby back over the active drive (journaled); the host must be off or a window asked for', body: bodies.restore,
      responses: { 202: `the job started${QUEUED}`, 409: 'the pair has a job running or queued, the host is powered without a window, or refused' },
      handler: (p, body) => {
        const b = body as { confirm: string; iMeanRestore?: boolean; window?: boolean };
        if (b.iMeanRestore === false) throw new BadInputError('"iMeanRestore": false says the restore is not meant: nothing was changed', { hint: 'send "confirm": "restore" (and leave out iMeanRestore) to restore' });
        refuseActiveWriteInline(app.config, 'restoring the whole drive');
        if (!p.window.wanted(b.window) && app.host.powered) {
          throw new RefusedError(`restore overwrites the drive in bay ${p.bays().active}, which the powered host runs from`, { hint: 'shut the host down first (POST /api/host/shutdown), or ask for a sync window: `dpsr restore --url URL --i-mean-restore --window`, or "window": true in the request' });
        }
        return jobReply(p.copies.start('restore', { window: b.window }));
      },
    },
    {
      name: 'failover', tag: 'boot', summary: "Fail over to the standby: the host shut down, the pair's relays moved with break before make and read back, roles swapped, the host powered on again (the boot pair boots its standby; a data pair's standby becomes the host's data disk)", body: bodies.failover,
      responses: { 202: 'the failover started: { from, to, accepted } (bays); watch the failover event, or a failover-failed alert after a roll-back', 409: 'the standby is not consistent, a job runs on the pair, another move or a sync window holds the host, or failover is halted' },
      handler: async (p, body) => {
        if (p.failover) return { status: 202, body: await p.failover.start(body as { hardOff?: boolean }) };
        return { status: 202, body: await app.boot.failover(body as { hardOff?: boolean }) };
      },
    },
  ];
  const routes: Route[] = [
    {
      method: 'GET', path: '/api/pairs', tag: 'pairs', summary: 'The drive pairs: roles, standby state, generations, schedule hints and job of each',
      responses: { 200: '{ pairs: [...] }' },
      handler: () => ({ status: 200, body: { pairs: app.status.status().pairs } }),
    },
    {
      method: 'GET', path: '/api/pairs/:id/status', tag: 'pairs', summary: "One pair's roles, standby state, generations, drives and job",
      responses: { 200: 'the pair', 404: 'no such pair' },
      handler: ({ params }) => {
        const p = app.pairs.get(params.id!);
        const entry = app.status.status().pairs.find((x) => x.id === p.id)!;
        const drives = Object.fromEntries(p.config.bays.map((bay) => [bay, { path: app.rig.bays.path(bay), present: app.rig.bays.path(bay) !== null, health: app.health.drives[bay]?.status ?? 'unknown' }]));
        return { status: 200, body: { ...entry, drives } };
      },
    },
  ];
  for (const op of ops) {
    routes.push({
      method: 'POST', path: `/api/pairs/:id/${op.name}`, tag: op.tag, summary: `${op.summary} (of pair {id})`, body: op.body,
      responses: { ...op.responses, 404: 'no such pair' },
      handler: ({ params, body }) => op.handler(app.pairs.get(params.id!), body),
    });
    routes.push({
      method: 'POST', path: `/api/${op.name}`, tag: op.tag, summary: `${op.summary} (the only pair; with several use /api/pairs/{id}/${op.name})`, body: op.body,
      responses: { ...op.responses, 400: 'the controller has several pairs: the error names them' },
      handler: ({ body }) => op.handler(app.pairs.only(`/api/${op.name}`), body),
    });
  }
  return routes;
}
