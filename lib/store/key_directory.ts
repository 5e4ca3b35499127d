/**
 * The end-to-end key directory (PROTOCOL §12.6): per (user, device), the device's signed key
 * bundle and its one-time prekeys, kept in the same store as the accounts (SQLite, or
 * MariaDB in a cluster, so every node hands out the same keys). The server stores what
 * clients published and hands it out; it never holds a private key. Each one-time prekey is
 * handed out at most once: it is deleted in the statement that returns it.
 */
import { MAX_DEVICES } from "../e2e/envelope.ts";
import { SecureChatError } from "../errors.ts";
import { change, query, type SqlDatabase } from "./sql.ts";
import { parseCertificate } from "../pki/certificate.ts";
import { serialHex } from "../pki/crl.ts";

/** Directory rows read at a time by retireCertifiedBy. */
const SCAN_PAGE = 500;

/** One-time prekeys kept per device at most; a publish beyond it is cut to fit. */
export const MAX_STORED_PREKEYS = 200;

/**
 * Below this many one-time prekeys left, a device is told (PROTOCOL §12.6), so its client
 * publishes more before first contacts run out of them.
 */
export const PREKEYS_LOW = 10;

/** One device of a user as the directory hands it out. */
export interface StoredDevice {
  device: string;
  /** The device takes lobby sender keys (PROTOCOL §12.5). */
  lobby: boolean;
  /**
   * The certificate the bundle was published with (DER), the bundle's JSON text as published
   * (the recipient checks it, not the server) and a one-time prekey, now removed from the
   * store; all absent for a device the asker said it already has a session with.
   */
  keys?: {
    cert: Uint8Array;
    bundle: string;
    opk?: { id: number; pub: Uint8Array };
    /** The device's one-time prekeys left after this fetch. */
    left: number;
  };
}

export interface PublishResult {
  /** The device's one-time prekeys now stored. */
  left: number;
  /** Devices dropped to stay within MAX_DEVICES (least recently published first). */
  evicted: string[];
}

/** What retireCertifiedBy removed. */
export interface Retirement {
  /** Per user name as stored, the device ids removed. */
  removed: Map<string, Set<string>>;
  /**
   * Why the removals stopped before the last device found (DB_UNAVAILABLE), if they did. The
   * devices left go at their next fetch or publish; those in `removed` are gone all the same,
   * and only this call can name them for what follows a removal (PROTOCOL §12.6).
   */
  failure?: unknown;
}

export interface KeyDirectory {
  /**
   * Stores a device's bundle (replacing its previous one) when given, and adds one-time
   * prekeys to a device that has a bundle. A new device beyond MAX_DEVICES drops the user's
   * least recently published device and its prekeys; first, as fetch does, it removes the
   * user's devices published under a certificate `revoked` says is revoked (one revoked while
   * no server adopted the CRL), which do not count toward MAX_DEVICES (PROTOCOL §12.6).
   * @throws DB_UNAVAILABLE
   */
  publish(
    user: string,
    device: string,
    cert: Uint8Array,
    bundle: string | undefined,
    opks: { id: number; pub: Uint8Array }[],
    lobby?: boolean,
    revoked?: (cert: Uint8Array) => boolean,
  ): Promise<PublishResult>;
  /**
   * A user's devices, most recently published first; for each device not in `known`, its
   * bundle and one of its one-time prekeys (consumed). A device whose bundle was published
   * under a certificate `revoked` says is revoked is removed instead, with its prekeys, and not
   * listed (PROTOCOL §12.6): one revoked while no server adopted the CRL (a restart with a new
   * CRL file) is retired at its first fetch.
   * @throws DB_UNAVAILABLE
   */
  fetch(
    user: string,
    known: ReadonlySet<string>,
    revoked?: (cert: Uint8Array) => boolean,
  ): Promise<StoredDevice[]>;
  /**
   * Removes, with their one-time prekeys, the devices whose bundle was last published under a
   * certificate with one of `serials` (hex, as the CRL lists them): what a newly revoked
   * certificate retires (PROTOCOL §6.6, §12.6). A device published again meanwhile under
   * another certificate stays. A failure once removals have begun is returned beside what was
   * removed, not thrown: another node's scan would not find those devices again.
   * @throws DB_UNAVAILABLE before anything is removed
   */
  retireCertifiedBy(serials: ReadonlySet<string>): Promise<Retirement>;
}

export class SqlKeyDirectory implements KeyDirectory {
  constructor(readonly db: SqlDatabase, readonly ready: () => Promise<void>) {}

  async publish(
    user: string,
    device: string,
    cert: Uint8Array,
    bundle: string | undefined,
    opks: { id: number; pub: Uint8Array }[],
    lobby = false,
    revoked?: (cert: Uint8Array) => boolean,
  ): Promise<PublishResult> {
    await this.ready();
    const evicted: string[] = [];
    if (bundle !== undefined) {
      await query(
        this.db,
        this.db.dialect === "sqlite"
          ? `INSERT INTO e2e_devices (username, device, cert, bundle, lobby, updated_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(username, device) DO UPDATE SET
             cert = excluded.cert, bundle = excluded.bundle, lobby = excluded.lobby,
             updated_at = excluded.updated_at`
          : `INSERT INTO e2e_devices (username, device, cert, bundle, lobby, updated_at)
             VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE cert = VALUES(cert),
             bundle = VALUES(bundle), lobby = VALUES(lobby), updated_at = VALUES(updated_at)`,
        [user, device, cert, bundle, lobby ? 1 : 0, Date.now()],
      );
      const rows = await query(
        this.db,
        `SELECT username, device, cert FROM e2e_devices WHERE username = ?
         ORDER BY updated_at DESC, device`,
        [user],
      );
      // The device publishing now stays whatever the clock's resolution says.
      const others: string[] = [];
      for (const row of rows) {
        const other = String(row.device);
        if (other === device) continue;
        // As fetch does: removed, so a revoked device does not take a valid one's place.
        if (revoked?.(bytes(row.cert))) {
          await this.#remove(String(row.username), other, bytes(row.cert));
          continue;
        }
        others.push(other);
      }
      for (const old of others.slice(MAX_DEVICES - 1)) {
        await query(this.db, "DELETE FROM e2e_devices WHERE username = ? AND device = ?", [
          user,
          old,
        ]);
        await query(this.db, "DELETE FROM e2e_prekeys WHERE username = ? AND device = ?", [
          user,
          old,
        ]);
        evicted.push(old);
      }
    }
    const [known] = await query(
      this.db,
      "SELECT 1 AS one FROM e2e_devices WHERE username = ? AND device = ?",
      [user, device],
    );
    // Prekeys belong to a published identity key: none are kept for a device without one.
    if (!known) return { left: 0, evicted };
    let left = await this.#prekeysLeft(user, device);
    const insert = this.db.dialect === "sqlite"
      ? "INSERT OR IGNORE INTO e2e_prekeys (username, device, id, pub) VALUES (?, ?, ?, ?)"
      : "INSERT IGNORE INTO e2e_prekeys (username, device, id, pub) VALUES (?, ?, ?, ?)";
    for (const opk of opks) {
      if (left >= MAX_STORED_PREKEYS) break;
      await query(this.db, insert, [user, device, opk.id, opk.pub]);
      left++;
    }
    return { left: await this.#prekeysLeft(user, device), evicted };
  }

  async fetch(
    user: string,
    known: ReadonlySet<string>,
    revoked?: (cert: Uint8Array) => boolean,
  ): Promise<StoredDevice[]> {
    await this.ready();
    const rows = await query(
      this.db,
      `SELECT username, device, cert, bundle, lobby FROM e2e_devices WHERE username = ?
       ORDER BY updated_at DESC, device`,
      [user],
    );
    const devices: StoredDevice[] = [];
    for (const row of rows) {
      if (devices.length === MAX_DEVICES) break;
      const device = String(row.device);
      if (revoked?.(bytes(row.cert))) {
        // As stored (the asker's spelling may differ in case), and only under that certificate.
        await this.#remove(String(row.username), device, bytes(row.cert));
        continue;
      }
      const lobby = Number(row.lobby) === 1;
      if (known.has(device)) {
        devices.push({ device, lobby });
        continue;
      }
      // One statement removes and returns the prekey, so two askers never get the same one.
      const [opk] = await query(
        this.db,
        this.db.dialect === "sqlite"
          ? `DELETE FROM e2e_prekeys WHERE rowid = (SELECT rowid FROM e2e_prekeys
             WHERE username = ? AND device = ? ORDER BY id LIMIT 1) RETURNING id, pub`
          : `DELETE FROM e2e_prekeys WHERE username = ? AND device = ? ORDER BY id LIMIT 1
             RETURNING id, pub`,
        [user, device],
      );
      devices.push({
        device,
        lobby,
        keys: {
          cert: bytes(row.cert),
          bundle: String(row.bundle),
          ...(opk ? { opk: { id: Number(opk.id), pub: bytes(opk.pub) } } : {}),
          left: await this.#prekeysLeft(user, device),
        },
      });
    }
    return devices;
  }

  async retireCertifiedBy(serials: ReadonlySet<string>): Promise<Retirement> {
    await this.ready();
    const removed = new Map<string, Set<string>>();
    if (serials.size === 0) return { removed };
    const doomed: { user: string; device: string; cert: Uint8Array }[] = [];
    // The serial is inside the stored certificate, so every row is read (~30 µs a certificate
    // to parse here): this runs only when a CRL newly revokes someone. A page at a time, so
    // neither the memory nor one turn of the event loop grows with the directory.
    let after = { username: "", device: "" };
    for (;;) {
      const rows = await query(
        this.db,
        `SELECT username, device, cert FROM e2e_devices
         WHERE username > ? OR (username = ? AND device > ?)
         ORDER BY username, device LIMIT ${SCAN_PAGE}`,
        [after.username, after.username, after.device],
      );
      for (const row of rows) {
        const user = String(row.username);
        after = { username: user, device: String(row.device) };
        let serial: string;
        try {
          serial = serialHex(parseCertificate(bytes(row.cert)).serial);
        } catch {
          continue; // Not a certificate (a row this server did not write): it certifies no one.
        }
        if (serials.has(serial)) doomed.push({ user, device: after.device, cert: bytes(row.cert) });
      }
      if (rows.length < SCAN_PAGE) break;
    }
    for (const { user, device, cert } of doomed) {
      try {
        if (!await this.#remove(user, device, cert)) continue;
      } catch (failure) {
        return { removed, failure };
      }
      let devices = removed.get(user);
      if (!devices) removed.set(user, devices = new Set());
      devices.add(device);
    }
    return { removed };
  }

  /**
   * Removes a device, and its prekeys, if its bundle is still the one published under `cert`
   * (one statement decides, so a publish under another certificate meanwhile wins).
   * @returns whether it was
   */
  async #remove(user: string, device: string, cert: Uint8Array): Promise<boolean> {
    const removed = await change(
      this.db,
      "DELETE FROM e2e_devices WHERE username = ? AND device = ? AND cert = ?",
      [user, device, cert],
    );
    if (removed === 0) return false;
    // Prekeys belong to a published identity key: unless the device published again since.
    await query(
      this.db,
      `DELETE FROM e2e_prekeys WHERE username = ? AND device = ? AND NOT EXISTS
       (SELECT 1 FROM e2e_devices WHERE username = ? AND device = ?)`,
      [user, device, user, device],
    );
    return true;
  }

  async #prekeysLeft(user: string, device: string): Promise<number> {
    const [row] = await query(
      this.db,
      "SELECT COUNT(*) AS n FROM e2e_prekeys WHERE username = ? AND device = ?",
      [user, device],
    );
    return Number(row?.n ?? 0);
  }
}

/** @throws INTERNAL for a column that is not bytes (a table that is not ours) */
function bytes(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new SecureChatError("INTERNAL", "a stored key is malformed");
  }
  return new Uint8Array(value); // mysql2 hands out Buffers
}
