/**
 * The failed-login counts of the login throttle (PROTOCOL §8.2), kept in the user store so
 * that every node of a cluster, and `securechat user unlock` run beside them, see one count
 * per subject. A subject is `cert:<SHA-256 hex>` or `account:<canonical name>`; each record
 * carries the user it concerns, which is how an unlock finds the certificates that claimed
 * the user. Only decided failures live here: a node's undecided reservations stay in its
 * memory (lib/server/limits.ts says why).
 */
import { change, query, type SqlDatabase } from "./sql.ts";

export interface FailureCount {
  failures: number;
  /** When the latest failure was recorded (ms). */
  last: number;
}

export interface LoginFailureStore {
  /**
   * The recorded count of each subject that has one (a subject without a record has none).
   * @throws DB_UNAVAILABLE
   */
  read(subjects: readonly string[]): Promise<Map<string, FailureCount>>;
  /**
   * One more failure for each subject, in one atomic statement per subject: a count whose
   * window has passed (its last failure `windowMs` or more before `now`) starts again at 1.
   * @throws DB_UNAVAILABLE
   */
  fail(
    subjects: readonly string[],
    user: string | null,
    now: number,
    windowMs: number,
  ): Promise<void>;
  /** Forgets the subjects' counts (a certificate that logged in). @throws DB_UNAVAILABLE */
  clear(subjects: readonly string[]): Promise<void>;
  /**
   * Forgets every count about `user` (canonical name): the account's and those of the
   * certificates that claimed it.
   * @returns how many counts were forgotten
   * @throws DB_UNAVAILABLE
   */
  unlock(user: string): Promise<number>;
  /** Drops the counts whose last failure is before `before`. @throws DB_UNAVAILABLE */
  prune(before: number): Promise<void>;
}

/** The one implementation over SQLite and MySQL alike. */
export class SqlLoginFailures implements LoginFailureStore {
  constructor(readonly db: SqlDatabase, readonly ready: () => Promise<void>) {}

  async read(subjects: readonly string[]): Promise<Map<string, FailureCount>> {
    await this.ready();
    const counts = new Map<string, FailureCount>();
    if (subjects.length === 0) return counts;
    const rows = await query(
      this.db,
      `SELECT subject, failures, last_at FROM login_failures WHERE subject IN (${
        subjects.map(() => "?").join(", ")
      })`,
      subjects,
    );
    for (const row of rows) {
      counts.set(String(row.subject), {
        failures: Number(row.failures),
        last: Number(row.last_at),
      });
    }
    return counts;
  }

  async fail(
    subjects: readonly string[],
    user: string | null,
    now: number,
    windowMs: number,
  ): Promise<void> {
    await this.ready();
    // The count is read and written by the database in one statement, so failures recorded
    // at once by several nodes all count. MySQL evaluates the assignments left to right:
    // `failures` is computed from the old `last_at`.
    const upsert = this.db.dialect === "sqlite"
      ? `INSERT INTO login_failures (subject, user_name, failures, last_at) VALUES (?, ?, 1, ?)
         ON CONFLICT (subject) DO UPDATE SET
         failures = CASE WHEN ? - login_failures.last_at < ? THEN login_failures.failures + 1
           ELSE 1 END,
         last_at = excluded.last_at, user_name = excluded.user_name`
      : `INSERT INTO login_failures (subject, user_name, failures, last_at) VALUES (?, ?, 1, ?)
         ON DUPLICATE KEY UPDATE
         failures = IF(? - last_at < ?, failures + 1, 1),
         last_at = VALUES(last_at), user_name = VALUES(user_name)`;
    for (const subject of subjects) {
      await query(this.db, upsert, [subject, user, now, now, windowMs]);
    }
  }

  async clear(subjects: readonly string[]): Promise<void> {
    await this.ready();
    if (subjects.length === 0) return;
    await query(
      this.db,
      `DELETE FROM login_failures WHERE subject IN (${subjects.map(() => "?").join(", ")})`,
      subjects,
    );
  }

  async unlock(user: string): Promise<number> {
    await this.ready();
    return await change(this.db, "DELETE FROM login_failures WHERE user_name = ?", [user]);
  }

  async prune(before: number): Promise<void> {
    await this.ready();
    await query(this.db, "DELETE FROM login_failures WHERE last_at < ?", [before]);
  }
}

/** The same contract in one process's memory: for stores without a database (tests, benches). */
export class MemoryLoginFailures implements LoginFailureStore {
  readonly #counts = new Map<string, FailureCount & { user: string | null }>();

  read(subjects: readonly string[]): Promise<Map<string, FailureCount>> {
    const counts = new Map<string, FailureCount>();
    for (const subject of subjects) {
      const count = this.#counts.get(subject);
      if (count) counts.set(subject, { failures: count.failures, last: count.last });
    }
    return Promise.resolve(counts);
  }

  fail(
    subjects: readonly string[],
    user: string | null,
    now: number,
    windowMs: number,
  ): Promise<void> {
    for (const subject of subjects) {
      const old = this.#counts.get(subject);
      const failures = old && now - old.last < windowMs ? old.failures + 1 : 1;
      this.#counts.set(subject, { failures, last: now, user });
    }
    return Promise.resolve();
  }

  clear(subjects: readonly string[]): Promise<void> {
    for (const subject of subjects) this.#counts.delete(subject);
    return Promise.resolve();
  }

  unlock(user: string): Promise<number> {
    let forgotten = 0;
    for (const [subject, count] of this.#counts) {
      if (count.user === user) forgotten += Number(this.#counts.delete(subject));
    }
    return Promise.resolve(forgotten);
  }

  prune(before: number): Promise<void> {
    for (const [subject, count] of this.#counts) {
      if (count.last < before) this.#counts.delete(subject);
    }
    return Promise.resolve();
  }
}
