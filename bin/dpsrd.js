#!/usr/bin/env node
// The compiled daemon when a current build exists, else its TypeScript sources (bin/entry.js).
import { run } from './entry.js';
await run('firmware/controller/dpsrd');
