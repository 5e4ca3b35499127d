/**
 * The inventory of issued certificates (`index.json` in the PKI directory), which
 * `cert list` shows and from which `cert revoke` rebuilds the CRL.
 */
import { z } from "zod";
import { SecureChatError } from "../errors.ts";
import { pathExists, readTextFile, writeFileAtomic } from "../files.ts";
import { canonicalName } from "../pki/names.ts";

const EntrySchema = z.object({
  name: z.string(),
  serial: z.string().regex(/^[0-9a-f]+$/),
  profile: z.enum(["server", "client"]),
  notAfter: z.string().datetime(),
  fingerprint: z.string().regex(/^[0-9a-f]{64}$/),
  revokedAt: z.string().datetime().optional(),
});

const InventorySchema = z.object({
  version: z.literal(1),
  /** The number of the last CRL signed (RFC 5280 §5.2.3: strictly increasing). */
  crlNumber: z.number().int().nonnegative(),
  certificates: z.array(EntrySchema),
});

export type InventoryEntry = z.infer<typeof EntrySchema>;
export type Inventory = z.infer<typeof InventorySchema>;

export function inventoryPath(dir: string): string {
  return `${dir}/index.json`;
}

/**
 * Reads the inventory; a directory without one has issued nothing yet.
 * @throws IO_ERROR when unreadable or corrupt
 */
export async function readInventory(dir: string): Promise<Inventory> {
  const path = inventoryPath(dir);
  if (!(await pathExists(path))) return { version: 1, crlNumber: 0, certificates: [] };
  try {
    return InventorySchema.parse(JSON.parse(await readTextFile(path)));
  } catch (cause) {
    if (cause instanceof SecureChatError) throw cause;
    throw new SecureChatError("IO_ERROR", `${path} is corrupt`, { cause });
  }
}

/** @throws IO_ERROR */
export async function writeInventory(dir: string, inventory: Inventory): Promise<void> {
  await writeFileAtomic(inventoryPath(dir), `${JSON.stringify(inventory, null, 2)}\n`);
}

/** @throws IO_ERROR */
export async function recordIssued(dir: string, entry: InventoryEntry): Promise<void> {
  const inventory = await readInventory(dir);
  inventory.certificates.push(entry);
  await writeInventory(dir, inventory);
}

/**
 * Entries a `cert revoke` argument names: a user/server name in any spelling of its
 * canonical form (every certificate of that name), or a serial (hex, colons allowed).
 */
export function findEntries(inventory: Inventory, nameOrSerial: string): InventoryEntry[] {
  const serial = nameOrSerial.replaceAll(":", "").toLowerCase();
  const name = canonicalName(nameOrSerial);
  return inventory.certificates.filter((e) =>
    canonicalName(e.name) === name || e.serial === serial
  );
}
