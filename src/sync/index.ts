/** The copy engine and the operations built on it. */
export { runEngine, DEFAULT_CHUNK, type CopyMode, type EngineOptions, type EngineResult } from './engine.ts';
export { clone, sync, restore, verify, recover, precheckGeometry, precheckWriteTarget, geometryDrift, recordFailover, effectiveStandbyState, copyRunning, type RoleSwapReport, type CopyRequest, type CopyReport, type VerifyReport, type VerifyExclusion, type RecoverReport, type UnreadableReport, type SyncMode, type ChangedBlocks, type CommonRequest } from './operations.ts';
export { PairStore, PairsTransaction, newPairRecord, pairIdFor, pairHolding, pairOfDrives, standbysOf, knownDrive, defaultStateDir, recordBecameActive, recordCompletedCopy, descendsFrom, type PairRecord, type DriveRecord, type StandbyState, type LastSync } from './pair-state.ts';
export { ProgressTracker, type Progress, type ProgressListener, type Phase } from './progress.ts';
export { formatBytes, normalizeRanges, intersectRanges, type ByteRange } from './ranges.ts';
export { UndoJournal, rollBack, scanJournal, JournalFullError } from './undo-journal.ts';
export { acquireStateDirLock, acquirePairLock, acquireDriveLock, acquireDriveReadLock, acquireDriveKeep, type DriveKeep, DRIVE_LOCK_DIR, pairLockHeld, stateDirKey, type Lock } from './pair-lock.ts';
export { tryLock, isLockHeld, queryLockOwner, anchorHolders, type LockOwner } from './lock.ts';
export { verifyHeadline, formatSectorRange } from './verify-report.ts';
export { planCopy, describePlan, describeStandbys, commandFor, pendingCopyAdvice, type CopyPlan, type CopyDecision, type PlanInput, type Refusal, type DriveFacts, type TailSignature } from './copy-plan.ts';
export { migrate, type MigrateRequest, type MigrateReport } from './migrate.ts';
export { spotCheckStandby, type SpotCheck, type SpotCheckRequest } from './spot-check.ts';
