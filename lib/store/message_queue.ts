/**
 * Offline delivery (PROTOCOL §6.6): private records for users who are not online, kept in the
 * same store as the accounts (SQLite, or MariaDB in a cluster, so whichever node the recipient
 * reaches finds them) until the recipient's client acknowledges them. The server stores what
 * it would have relayed, as the relay's JSON: the author's certificate, the signed record and
 * the content key's end-to-end wraps; it adds nothing it could read.
 *
 * Durability: a row is committed before `enqueue()` returns, and the sender is told "queued"
 * only after that. SQLite runs with `synchronous = FULL` (sqlite.ts), so a commit is on disk
 * in the WAL; InnoDB's default `innodb_flush_log_at_trx_commit = 1` does the same for MariaDB.
 */
import { SecureChatError } from "../errors.ts";
import { isValidUserName } from "../pki/names.ts";
import { query, queryRetryingConflicts, type SqlDatabase } from "./sql.ts";
import { MAX_STORED_AGE_MS } from "../message/record.ts";

/** What one recipient may have waiting, and for how long (PROTOCOL §6.6; `serve` flags). */
export interface QueueLimits {
  /** Records waiting per recipient, at most. */
  maxRecords: number;
  /** How long a record waits before it is dropped unread, ms. */
  maxAgeMs: number;
}

/** The protocol's ceiling on `maxAgeMs`: recipients keep their duplicate marks this long. */
export const MAX_QUEUE_AGE_MS = MAX_STORED_AGE_MS;

export const DEFAULT_QUEUE_LIMITS: QueueLimits = { maxRecords: 1000, maxAgeMs: MAX_QUEUE_AGE_MS };

/** Who wrote a record that waits in a queue. */
export interface QueueAuthor {
  /** The author's canonical name. */
  name: string;
  /** The serial of the certificate the record was signed under (hex, as the CRL lists it). */
  serial: string;
}

/** One waiting record, as stored. */
export interface QueuedRecord {
  /** Its place in the recipient's queue: delivery follows it. */
  id: number;
  /** The author's canonical name. */
  author: string;
  /** The relay as stored (cluster_record.ts's relay form), JSON text. */
  item: string;
  storedAt: number;
}

export interface MessageQueue {
  /**
   * Stores one record for `recipient`, committed before it returns.
   * @returns the record's place in the queue
   * @throws UNKNOWN_USER no account has that name
   * @throws QUEUE_FULL the recipient already has `limits.maxRecords` records waiting
   * @throws DB_UNAVAILABLE
   */
  enqueue(
    recipient: string,
    author: QueueAuthor,
    item: string,
    limits: QueueLimits,
    now?: number,
  ): Promise<number>;
  /**
   * The recipient's unexpired records after place `after`, oldest first (at most `limit`).
   * @throws DB_UNAVAILABLE
   */
  pending(recipient: string, limit: number, after?: number, now?: number): Promise<QueuedRecord[]>;
  /**
   * Deletes delivered records (only the recipient's own ids).
   * @throws DB_UNAVAILABLE
   */
  remove(recipient: string, ids: readonly number[]): Promise<void>;
  /**
   * Deletes every expired record.
   * @returns how many
   * @throws DB_UNAVAILABLE
   */
  purgeExpired(now?: number): Promise<number>;
  /**
   * Deletes every record signed under a certificate with one of `serials` (newly revoked: no
   * recipient would take it, PROTOCOL §6.6). Records stored before the queue kept serials are
   * not found here; delivery drops them.
   * @returns the authors of the deleted records, with how many each
   * @throws DB_UNAVAILABLE
   */
  removeSignedUnder(serials: readonly string[]): Promise<Map<string, number>>;
}

/** Longest stored relay text: a 64 KiB frame cannot carry more. */
const MAX_ITEM_CHARS = 65_536;

export class SqlMessageQueue implements MessageQueue {
  constructor(readonly db: SqlDatabase, readonly ready: () => Promise<void>) {}

  async enqueue(
    recipient: string,
    author: QueueAuthor,
    item: string,
    limits: QueueLimits,
    now = Date.now(),
  ): Promise<number> {
    await this.ready();
    if (item.length > MAX_ITEM_CHARS) {
      throw new SecureChatError("INTERNAL", "a stored record is larger than any frame");
    }
    const userId = isValidUserName(recipient) ? await this.#userId(recipient) : undefined;
    if (userId === undefined) {
      throw new SecureChatError("UNKNOWN_USER", `no account is named ${recipient}`);
    }
    // The bound is checked in the INSERT itself, so a record is stored or refused whole. On
    // MariaDB concurrent inserts for one recipient may lose a race (a deadlock, an
    // auto-increment read failure) and are rolled back whole: tried again a few times, then
    // DB_UNAVAILABLE and the sender is told; none can pass the bound.
    const rows = await queryRetryingConflicts(
      this.db,
      `INSERT INTO message_queue (user_id, author, author_serial, item, stored_at, expires_at)
       SELECT ?, ?, ?, ?, ?, ? FROM users WHERE id = ? AND
       (SELECT COUNT(*) FROM message_queue WHERE user_id = ? AND expires_at > ?) < ?
       RETURNING id`,
      [
        userId,
        author.name,
        author.serial,
        item,
        now,
        now + limits.maxAgeMs,
        userId,
        userId,
        now,
        limits.maxRecords,
      ],
    );
    if (rows.length === 0) {
      throw new SecureChatError(
        "QUEUE_FULL",
        `${recipient} already has ${limits.maxRecords} messages waiting`,
      );
    }
    return Number(rows[0].id);
  }

  async pending(
    recipient: string,
    limit: number,
    after = 0,
    now = Date.now(),
  ): Promise<QueuedRecord[]> {
    await this.ready();
    const userId = isValidUserName(recipient) ? await this.#userId(recipient) : undefined;
    if (userId === undefined) return [];
    const rows = await query(
      this.db,
      `SELECT id, author, item, stored_at FROM message_queue
       WHERE user_id = ? AND id > ? AND expires_at > ? ORDER BY id LIMIT ?`,
      [userId, after, now, limit],
    );
    return rows.map((row) => ({
      id: Number(row.id),
      author: String(row.author),
      item: String(row.item),
      storedAt: Number(row.stored_at),
    }));
  }

  async remove(recipient: string, ids: readonly number[]): Promise<void> {
    await this.ready();
    const userId = isValidUserName(recipient) ? await this.#userId(recipient) : undefined;
    if (userId === undefined || ids.length === 0) return;
    // Bound parameters only; a delivery batch is small (PENDING_BATCH at most).
    for (let i = 0; i < ids.length; i += 100) {
      const chunk = ids.slice(i, i + 100);
      await query(
        this.db,
        `DELETE FROM message_queue WHERE user_id = ? AND id IN (${chunk.map(() => "?").join(",")})`,
        [userId, ...chunk],
      );
    }
  }

  async purgeExpired(now = Date.now()): Promise<number> {
    await this.ready();
    const rows = await query(
      this.db,
      "DELETE FROM message_queue WHERE expires_at <= ? RETURNING id",
      [now],
    );
    return rows.length;
  }

  async removeSignedUnder(serials: readonly string[]): Promise<Map<string, number>> {
    await this.ready();
    const deleted = new Map<string, number>();
    // Bound parameters only, in chunks: a CRL may newly revoke many serials at once.
    for (let i = 0; i < serials.length; i += 100) {
      const chunk = serials.slice(i, i + 100);
      const rows = await query(
        this.db,
        `DELETE FROM message_queue WHERE author_serial IN (${chunk.map(() => "?").join(",")})
         RETURNING author`,
        chunk,
      );
      for (const row of rows) {
        const author = String(row.author);
        deleted.set(author, (deleted.get(author) ?? 0) + 1);
      }
    }
    return deleted;
  }

  async #userId(name: string): Promise<number | undefined> {
    const [row] = await query(this.db, "SELECT id FROM users WHERE username = ?", [name]);
    return row === undefined ? undefined : Number(row.id);
  }
}
