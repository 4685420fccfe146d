export { QmpClient, QmpError, QmpConnectionError, type QmpEvent } from './qmp.ts';
export {
  StorageDaemon,
  ACTIVE_NODE,
  TOP_NODE,
  HOST_EXPORT_ID,
  DAEMON_MALLOC_TUNABLES,
  type StorageDaemonOptions,
  type StorageDaemonEvents,
  nbdListenEnv,
  type NbdListen,
  type ExportSpec,
} from './storage-daemon.ts';
export { ChildDaemonProcess, SystemdDaemonProcess, unitQmpSocket, unitEnvironmentFile, NBD_LISTEN_SCRIPT, type DaemonProcess, type ExitInfo, type SystemdDaemonOptions } from './daemon-process.ts';
export { UsbGadgetDisk, USB_DISK_SCRIPT, type HostDisk, type HostDiskStatus, type ExportAddress, type ScriptRunner, type UsbGadgetDiskOptions } from './host-disk.ts';
