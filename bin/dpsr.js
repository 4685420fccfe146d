#!/usr/bin/env node
// The compiled CLI when a current build exists, else its TypeScript sources (bin/entry.js).
import { run } from './entry.js';
await run('firmware/controller/cli/main');
