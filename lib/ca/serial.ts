/** Serial numbers and validity windows shared by the CA and leaf profiles. */
import { randomBytes, toHex } from "../bytes.ts";

/** Backdating tolerates peers whose clocks run a little slow. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

/** 16 random octets, top bit clear and second bit set: positive, never shortened, ~126 bits. */
export function randomSerialHex(): string {
  const serial = randomBytes(16);
  serial[0] = (serial[0] & 0x3f) | 0x40;
  return toHex(serial);
}

/** notBefore five minutes ago, in whole seconds; notAfter `days` after now. */
export function validityWindow(
  days: number,
  now = new Date(),
): { notBefore: Date; notAfter: Date } {
  const start = Math.floor(now.getTime() / 1000) * 1000;
  return { notBefore: new Date(start - CLOCK_SKEW_MS), notAfter: new Date(start + days * DAY_MS) };
}
