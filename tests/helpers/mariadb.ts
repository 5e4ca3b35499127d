/**
 * When the MySQL tests run: the throwaway MariaDB itself lives in testkit/mariadb.ts (the
 * benchmarks start it too); whether a test may use it is a test concern (optional_suites.ts).
 */
import { MYSQL_URL_ENV, type MysqlTestTarget } from "../../testkit/mariadb.ts";
import { skipUnless } from "./optional_suites.ts";

/**
 * The `ignore:` flag for `what` (see optional_suites.ts): "any" runs against a URL or a local
 * server, "local" needs a mariadbd of its own that it can stop and restart.
 */
export function skipMysql(target: MysqlTestTarget, what: string, needs: "any" | "local"): boolean {
  const missing = target.kind === "none"
    ? target.reason
    : needs === "local" && target.kind === "url"
    ? `it starts its own mariadbd, and ${MYSQL_URL_ENV} names a server it cannot restart`
    : undefined;
  return skipUnless("mariadb", missing, `${what} against MySQL/MariaDB`);
}
