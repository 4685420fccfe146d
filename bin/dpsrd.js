#!/usr/bin/env node
// The daemon is TypeScript run through tsx, like the CLI, so the repository works without a build step.
import { register } from 'tsx/esm/api';
register();
await import('../firmware/controller/dpsrd.ts');
