export type { BlockDevice, DriveIdentity, OpenOptions } from './block-device.ts';
export { DeviceWrapper } from './block-device.ts';
export { allocAligned } from './aligned-buffer.ts';
export {
  openDrive,
  openLocated,
  locateDrive,
  sameStorage,
  storageOf,
  storageKeys,
  storageObjects,
  type StorageObject,
  usageOf,
  heldElsewhere,
  writeStampOf,
  identityOf,
  driveKeyOf,
  FileBlockDevice,
  DEFAULT_IMAGE_SECTOR,
  type DriveLocation,
  type LocalLocation,
  type NbdLocation,
  type OpenDriveOptions,
  type HeldReport,
} from './drive.ts';
export { discoverDrives, type DiscoveredDrive } from './discovery.ts';
export { FaultyDevice, type FaultPlan } from './fault-injection.ts';
export { Throttle, ThrottledDevice } from './throttle.ts';
export { linuxRoots, readBlockNode, holdersOf, lowerDisksOf, majorMinorOf, type SysRoots, type BlockNodeInfo } from './sysfs.ts';
export { readMounts, readAllMounts, describeMount, readSwaps, systemDisks, diskUsage, fileKeyOf, exclusivelyClaimed, openWriters, type MountInfo, type OpenWriter, type UsageReport, type SwapEntry } from './mounts.ts';
export * from './smart.ts';
export { quirksFor, type BridgeQuirks, type SmartDeviceType } from './bridge-quirks.ts';
export { NbdDrive, parseNbdUri, isNbdUri, readFlaggedRanges, NBD_PORT, type NbdUri, type OpenNbdOptions } from './nbd-drive.ts';
export { SnapshotDrive } from './snapshot-drive.ts';
export { NbdClient, type NbdAddress, type NbdExport, type NbdConnectOptions } from './nbd-client.ts';
export { NbdProtocolError, NbdRequestError, NbdOptionError, STATE_DIRTY, STATE_HOLE, STATE_ZERO, type Extent, type BlockSizeInfo } from './nbd-protocol.ts';
export { NbdFile } from './nbd-file.ts';
