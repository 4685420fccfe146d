#!/usr/bin/env node
// The CLI is TypeScript run through tsx, so the repository works without a build step.
import { register } from 'tsx/esm/api';
register();
await import('../firmware/controller/cli/main.ts');
