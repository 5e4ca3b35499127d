/** `cert revoke`: marking certificates revoked in the inventory and re-signing ca.crl. */
import { SecureChatError } from "../errors.ts";
import { caPaths, type CaSigner } from "./ca.ts";
import { createCrl } from "./crl_sign.ts";
import { signingAlgorithmOf } from "../pki/keys.ts";
import { pemEncode } from "../pki/pem.ts";
import { writeFileAtomic } from "../files.ts";
import {
  findEntries,
  type Inventory,
  type InventoryEntry,
  readInventory,
  writeInventory,
} from "./inventory.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Signs `ca.crl` from the inventory's revoked entries, with the next CRL number.
 * @throws IO_ERROR
 */
export async function writeCrl(
  dir: string,
  ca: CaSigner,
  inventory: Inventory,
  days: number,
): Promise<void> {
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  inventory.crlNumber += 1;
  const der = await createCrl({
    caCert: ca.cert,
    caKey: ca.key,
    signingAlgorithm: signingAlgorithmOf(ca.key),
    crlNumber: inventory.crlNumber,
    entries: inventory.certificates.filter((e) => e.revokedAt)
      .map((e) => ({ serial: e.serial, revokedAt: new Date(e.revokedAt!) })),
    thisUpdate: now,
    nextUpdate: new Date(now.getTime() + days * DAY_MS),
  });
  await writeFileAtomic(caPaths(dir).crl, pemEncode("X509 CRL", der), 0o644);
  await writeInventory(dir, inventory);
}

/**
 * Revokes every certificate `nameOrSerial` names (all certificates of a name, since
 * re-issuing with --force leaves the old one valid) and re-signs the CRL.
 * @returns the entries newly revoked (empty if all were already revoked)
 * @throws USAGE when nothing matches; IO_ERROR
 */
export async function revokeCertificates(
  dir: string,
  ca: CaSigner,
  nameOrSerial: string,
  crlDays: number,
): Promise<InventoryEntry[]> {
  const inventory = await readInventory(dir);
  const matches = findEntries(inventory, nameOrSerial);
  if (matches.length === 0) {
    throw new SecureChatError("USAGE", `no issued certificate matches "${nameOrSerial}"`, {
      hint: "see `securechat cert list`",
    });
  }
  const now = new Date().toISOString();
  const fresh = matches.filter((e) => !e.revokedAt);
  for (const entry of fresh) entry.revokedAt = now;
  await writeCrl(dir, ca, inventory, crlDays);
  return fresh;
}
