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
  usageOf,
  identityOf,
  FileBlockDevice,
  DEFAULT_IMAGE_SECTOR,
  type DriveLocation,
  type OpenDriveOptions,
} from './drive.ts';
export { discoverDrives, type DiscoveredDrive } from './discovery.ts';
export { FaultyDevice, type FaultPlan } from './fault-injection.ts';
export { Throttle, ThrottledDevice } from './throttle.ts';
export { linuxRoots, readBlockNode, holdersOf, lowerDisksOf, type SysRoots, type BlockNodeInfo } from './sysfs.ts';
export { readMounts, readSwaps, systemDisks, diskUsage, fileKeyOf, type UsageReport, type SwapEntry } from './mounts.ts';
export * from './smart.ts';
export { quirksFor, type BridgeQuirks, type SmartDeviceType } from './bridge-quirks.ts';
