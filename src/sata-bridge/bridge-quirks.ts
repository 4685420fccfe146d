/**
 * What is known about USB–SATA bridges: how smartctl reaches the drive behind
 * them (SAT pass-through or a vendor protocol) and whether their UAS firmware
 * can be trusted under sustained writes. Unknown bridges get the common case
 * (SAT, UAS trusted) and say so.
 */

export type SmartDeviceType = 'sat' | 'usbjmicron' | 'usbcypress' | 'usbsunplus' | 'usbprolific';

export interface BridgeQuirks {
  readonly chip: string;
  readonly smartType: SmartDeviceType;
  /** Its UAS mode is known to stall or reset under queued writes: use usb-storage (see deploy/dpsr-usb-quirks.conf). */
  readonly uasUnreliable: boolean;
  readonly known: boolean;
  readonly note?: string;
}

const TABLE: Record<string, Omit<BridgeQuirks, 'known'>> = {
  '174c:55aa': { chip: 'ASMedia ASM1051E/1053E/1153E', smartType: 'sat', uasUnreliable: false },
  '174c:1153': { chip: 'ASMedia ASM1153', smartType: 'sat', uasUnreliable: false },
  '174c:235c': { chip: 'ASMedia ASM235CM', smartType: 'sat', uasUnreliable: false },
  '152d:0578': { chip: 'JMicron JMS578', smartType: 'sat', uasUnreliable: true, note: 'some firmware revisions stall in UAS mode under sustained writes' },
  '152d:0583': { chip: 'JMicron JMS583', smartType: 'sat', uasUnreliable: false },
  '152d:2338': { chip: 'JMicron JM20337', smartType: 'usbjmicron', uasUnreliable: false, note: 'no SAT pass-through: SMART through the JMicron protocol' },
  '152d:2339': { chip: 'JMicron JM20339', smartType: 'usbjmicron', uasUnreliable: false },
  '2109:0711': { chip: 'VIA VL711', smartType: 'sat', uasUnreliable: true, note: 'UAS resets seen with large transfers' },
  '04b4:6830': { chip: 'Cypress CY7C68300', smartType: 'usbcypress', uasUnreliable: false },
  '0bc2:2312': { chip: 'Seagate (Sunplus)', smartType: 'usbsunplus', uasUnreliable: false },
  '067b:2773': { chip: 'Prolific PL2773', smartType: 'usbprolific', uasUnreliable: false },
  '0bda:9210': { chip: 'Realtek RTL9210', smartType: 'sat', uasUnreliable: false },
};

export function quirksFor(vendorId: string, productId: string): BridgeQuirks {
  const key = `${vendorId.toLowerCase()}:${productId.toLowerCase()}`;
  const hit = TABLE[key];
  if (hit) return { ...hit, known: true };
  return { chip: `unknown bridge ${key}`, smartType: 'sat', uasUnreliable: false, known: false, note: 'not in the table: SAT pass-through assumed; soak-test it before trusting it' };
}
