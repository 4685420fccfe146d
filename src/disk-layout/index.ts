/** Partition tables: reading MBR/GPT, choosing partitions, fixing a GPT copied onto a larger drive, finding what is anchored to a drive's end. */
export { readLayout, type DiskLayout, type Partition, type GptInfo, type MbrInfo, type ReadLayoutOptions } from './layout.ts';
export { regionsToCopy, partitionAt, tableAreaAt, type CopyRange } from './selection.ts';
export { crc32 } from './crc32.ts';
export { relocateGptBackup, relocatedGpt, readGptForRelocation, staleBackupCandidates, isStaleBackupHeader, planGptRelocation, type RelocationResult, type RelocatedGpt, type GptRelocationPlan } from './relocate.ts';
export { sniffFilesystem, writeTelltales, SNIFF_BYTES } from './filesystem.ts';
export { formatLayout, formatSize, formatExactBytes } from './format.ts';
export { findEndSignatures, planTailCleanup, planCopyTail, endAnchoredMetadata, type EndSignature, type TailCleanup, type CopyTail } from './tail-signatures.ts';
export { planPartitionMove, writePartitionEntry, PARTITION_ALIGNMENT, type PartitionMoveRequest, type PartitionMovePlan, type PartitionMoveRefusal, type NewEntry } from './partition-move.ts';
