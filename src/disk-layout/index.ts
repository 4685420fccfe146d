/** Partition tables: reading MBR/GPT, choosing partitions, fixing a GPT copied onto a larger drive. */
export { readLayout, type DiskLayout, type Partition, type GptInfo, type MbrInfo, type ReadLayoutOptions } from './layout.ts';
export { regionsToCopy, partitionAt, type CopyRange } from './selection.ts';
export { crc32 } from './crc32.ts';
export { relocateGptBackup, relocatedGpt, readGptForRelocation, staleBackupCandidates, isStaleBackupHeader, type RelocationResult, type RelocatedGpt } from './relocate.ts';
export { formatLayout, formatSize } from './format.ts';
