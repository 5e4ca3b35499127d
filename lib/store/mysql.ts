/**
 * MySQL or MariaDB through mysql2's connection pool. A pool survives the server going away:
 * a dead connection is dropped from the pool and the next statement dials a fresh one, so the
 * store recovers by itself when the server returns.
 */
import mysql from "mysql2/promise";
import { Buffer } from "node:buffer";
import type { Failure, SqlDatabase, SqlRow, SqlValue } from "./sql.ts";

export interface MysqlConfig {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** Seconds, not the OS's minutes: a login against a dead server should fail promptly. */
const CONNECT_TIMEOUT_MS = 5_000;
const STATEMENT_TIMEOUT_MS = 10_000;

/** A statement that got no answer in time: the server is hung or the network is partitioned. */
class StatementTimeout extends Error {}

/** Error codes that mean the server is unreachable, overloaded or restarting. */
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EPIPE",
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
  "ER_CON_COUNT_ERROR",
  "ER_SERVER_SHUTDOWN",
  "ER_ACCESS_DENIED_ERROR", // wrong credentials: still "cannot reach the accounts"
  "ER_BAD_DB_ERROR",
  "ER_LOCK_WAIT_TIMEOUT",
]);

/** A statement that lost a race with a concurrent one and was rolled back whole. */
const CONFLICT_CODES = new Set([
  "ER_LOCK_DEADLOCK",
  // Concurrent INSERT … SELECT into one table (the offline queue's bounded insert).
  "ER_AUTOINC_READ_FAILED",
]);

export function mysqlDescription(config: MysqlConfig): string {
  return `mysql://${config.user}@${config.host}:${config.port}/${config.database}`;
}

/** Creates the pool; no connection is made until the first statement. */
export function openMysql(config: MysqlConfig): SqlDatabase {
  const pool = mysql.createPool({
    ...config,
    connectionLimit: 10,
    connectTimeout: CONNECT_TIMEOUT_MS,
    waitForConnections: true,
    enableKeepAlive: true,
    charset: "utf8mb4",
  });
  // A pooled connection whose server vanishes emits 'error'; mysql2 listens once to drop it
  // from the pool, and a second emit with no listener would crash the process. Absorb them:
  // the statement that was using the connection gets the error through its own promise.
  pool.pool.on("connection", (connection) => connection.on("error", () => {}));
  return new MysqlDatabase(pool, mysqlDescription(config));
}

class MysqlDatabase implements SqlDatabase {
  readonly dialect = "mysql";
  #pool: mysql.Pool;
  #open = true;

  constructor(pool: mysql.Pool, readonly description: string) {
    this.#pool = pool;
  }

  async execute(sql: string, params: readonly SqlValue[] = []): Promise<SqlRow[]> {
    const rows = await this.#run(sql, params);
    return Array.isArray(rows) ? rows as SqlRow[] : [];
  }

  async change(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    const result = await this.#run(sql, params);
    // A write answers with a ResultSetHeader; affectedRows counts the rows it changed.
    return Array.isArray(result) ? 0 : Number((result as { affectedRows?: unknown }).affectedRows);
  }

  async #run(sql: string, params: readonly SqlValue[]): Promise<unknown> {
    // mysql2 binds Buffers as binary, but a plain Uint8Array would be sent as an object.
    const values = params.map((p) => p instanceof Uint8Array ? Buffer.from(p) : p);
    // Our own deadline over the whole statement: mysql2's `timeout` option does not cover
    // waiting for a pooled connection or preparing the statement, and a stopped (not dead)
    // server leaves either waiting forever. The statement itself may still complete later.
    const statement = this.#pool.execute({ sql, values });
    statement.catch(() => {}); // a late failure after the deadline has nobody to tell
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new StatementTimeout(`no answer within ${STATEMENT_TIMEOUT_MS} ms`)),
        STATEMENT_TIMEOUT_MS,
      );
    });
    try {
      const [result] = await Promise.race([statement, deadline]);
      return result;
    } finally {
      clearTimeout(timer);
    }
  }

  classify(error: unknown): Failure {
    if (error instanceof StatementTimeout) return "unavailable";
    const { code, fatal } = (error ?? {}) as { code?: unknown; fatal?: unknown };
    if (code === "ER_DUP_ENTRY") return "duplicate";
    if (CONFLICT_CODES.has(String(code))) return "conflict";
    return fatal === true || UNAVAILABLE_CODES.has(String(code)) ? "unavailable" : "other";
  }

  async close(): Promise<void> {
    if (!this.#open) return;
    this.#open = false;
    await this.#pool.end();
  }
}
