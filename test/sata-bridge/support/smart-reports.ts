/** smartctl --json reports as drives behind our bridges give them. */

/** An ATA drive through a SAT bridge, with reallocated and pending sectors. */
export const ATA = {
  smartctl: { version: [7, 3], exit_status: 0 },
  device: { name: '/dev/sdb', type: 'sat', protocol: 'ATA' },
  model_name: 'WDC WD10EZEX-08WN4A0',
  serial_number: 'WD-WCC6Y0000000',
  smart_status: { passed: true },
  temperature: { current: 41 },
  power_on_time: { hours: 23456 },
  ata_smart_attributes: {
    table: [
      { id: 5, name: 'Reallocated_Sector_Ct', raw: { value: 8, string: '8' } },
      { id: 194, name: 'Temperature_Celsius', raw: { value: 176094822441, string: '41 (Min/Max 20/53)' } },
      { id: 197, name: 'Current_Pending_Sector', raw: { value: 2, string: '2' } },
      { id: 198, name: 'Offline_Uncorrectable', raw: { value: 0, string: '0' } },
    ],
  },
};
