/**
 * A throwaway MariaDB for tests and benchmarks: a fresh datadir in a temporary directory, a free loopback port,
 * a real user with a random password, torn down by `dispose()`. Or, when
 * SECURECHAT_TEST_MYSQL_URL is set, that server instead (then it cannot be stopped or restarted).
 */
import { join } from "node:path";
import { findExecutable, freePort } from "./local_service.ts";

export const MYSQL_URL_ENV = "SECURECHAT_TEST_MYSQL_URL";
const DATABASE = "securechat_test";
const USER = "securechat";
const READY_TIMEOUT_MS = 30_000;

export interface MariaDb {
  /** mysql://securechat:PASSWORD@127.0.0.1:PORT/securechat_test */
  readonly url: string;
  /** Runs SQL through the `mariadb` command-line client as root; returns its tab-separated output. */
  sql(text: string, database?: string): Promise<string>;
  /** Shuts the server down (SIGTERM) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same datadir and port and waits until it accepts connections. */
  restart(): Promise<void>;
  /** Stops it and deletes its files. */
  dispose(): Promise<void>;
}

/** What the MySQL tests can run against: a URL to use as is, a local server to start, or nothing. */
export type MysqlTestTarget =
  | { kind: "url"; url: string }
  | { kind: "local"; mariadbd: string; installDb: string; client: string }
  | { kind: "none"; reason: string };

export function mysqlTestTarget(): MysqlTestTarget {
  const url = Deno.env.get(MYSQL_URL_ENV);
  if (url) return { kind: "url", url };
  const [mariadbd, installDb, client] = ["mariadbd", "mariadb-install-db", "mariadb"].map(
    findExecutable,
  );
  if (mariadbd && installDb && client) return { kind: "local", mariadbd, installDb, client };
  return {
    kind: "none",
    reason: `no mariadbd, mariadb-install-db and mariadb, and no ${MYSQL_URL_ENV}`,
  };
}

export async function startMariaDb(): Promise<MariaDb> {
  const target = mysqlTestTarget();
  if (target.kind !== "local") throw new Error("startMariaDb() needs mariadbd on this machine");
  const dir = await Deno.makeTempDir({ prefix: "securechat-mariadb-" });
  const datadir = join(dir, "data");
  const socket = join(dir, "mysqld.sock");
  // mariadbd refuses to run as root unless told to.
  const asRoot = Deno.uid() === 0 ? ["--user=root"] : [];
  // Temporary tables in a directory of this server's own: several servers installing at once
  // in the shared /tmp have failed with "Could not remove temporary table '/tmp/#sql-…'".
  const tmpdir = join(dir, "tmp");
  await Deno.mkdir(tmpdir);
  await run(target.installDb, [
    "--no-defaults",
    "--auth-root-authentication-method=normal",
    `--datadir=${datadir}`,
    `--tmpdir=${tmpdir}`,
    "--skip-test-db",
    "--skip-name-resolve",
    ...asRoot,
  ]);
  const port = freePort();
  const serverArgs = [
    "--no-defaults",
    `--datadir=${datadir}`,
    `--tmpdir=${tmpdir}`,
    `--socket=${socket}`,
    `--port=${port}`,
    "--bind-address=127.0.0.1",
    `--pid-file=${join(dir, "mysqld.pid")}`,
    `--log-error=${join(dir, "error.log")}`,
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-buffer-pool-size=16M",
    ...asRoot,
  ];
  let server: Deno.ChildProcess | undefined;

  const sql = (text: string, database?: string) =>
    run(
      target.client,
      ["--no-defaults", `--socket=${socket}`, "-uroot", "--batch", ...(database ? [database] : [])],
      text,
    );

  const start = async () => {
    server = new Deno.Command(target.mariadbd, {
      args: serverArgs,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      try {
        await sql("SELECT 1");
        return;
      } catch (error) {
        if (Date.now() > deadline) {
          const log = await Deno.readTextFile(join(dir, "error.log")).catch(() => "");
          throw new Error(`mariadbd did not become ready:\n${log.slice(-2000)}`, { cause: error });
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  };

  const stop = async () => {
    if (!server) return;
    server.kill("SIGTERM");
    await server.status;
    server = undefined;
  };

  await start();
  const password = Array.from(
    crypto.getRandomValues(new Uint8Array(12)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  await sql(`CREATE DATABASE ${DATABASE};
CREATE USER '${USER}'@'127.0.0.1' IDENTIFIED BY '${password}';
GRANT ALL PRIVILEGES ON *.* TO '${USER}'@'127.0.0.1';`);
  return {
    url: `mysql://${USER}:${password}@127.0.0.1:${port}/${DATABASE}`,
    sql,
    stop,
    restart: async () => {
      await stop();
      await start();
    },
    dispose: async () => {
      await stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function run(command: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(`${command} failed (${out.code}): ${decoder.decode(out.stderr).slice(-2000)}`);
  }
  return decoder.decode(out.stdout);
}
