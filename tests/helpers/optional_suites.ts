/**
 * Suites that need something from outside the repository: the peer suites in ../shared
 * (x509-limbo, Wycheproof), a local MariaDB, openssl, python3 with `cryptography` for the
 * clean-room interop client, the right to mount a tmpfs (the full-disk fault test),
 * nats-server and haproxy with MariaDB (the cluster tests), InspIRCd (the bench's peer
 * section, run by the bench smoke test), Chromium (the browser page's test). Where it is missing, the tests are skipped with `ignore:`
 * decided when the file loads, the reason printed, and `deno test` counts them as ignored.
 *
 * CI must not go green without them: SECURECHAT_CI_REQUIRE (comma-separated suite names,
 * set by .ci/run) turns each such skip into a failing test that names the suite and why it
 * is missing.
 */

export const REQUIRE_ENV = "SECURECHAT_CI_REQUIRE";

export const OPTIONAL_SUITES = [
  "limbo",
  "wycheproof",
  "mariadb",
  "openssl",
  "interop",
  "tmpfs",
  "cluster",
  "inspircd",
  "chromium",
] as const;
export type OptionalSuite = typeof OPTIONAL_SUITES[number];

/** ../shared/peer-suites/ beside the checkout, as CI lays it out. */
export const PEER_SUITES = new URL("../../../shared/peer-suites/", import.meta.url);

/** Parses SECURECHAT_CI_REQUIRE; an unknown name throws, so a typo cannot disable a check. */
export function requiredSuites(value = Deno.env.get(REQUIRE_ENV) ?? ""): Set<OptionalSuite> {
  const names = value.split(",").map((name) => name.trim()).filter(Boolean);
  for (const name of names) {
    if (!(OPTIONAL_SUITES as readonly string[]).includes(name)) {
      throw new Error(
        `${REQUIRE_ENV}: unknown suite "${name}" (known: ${OPTIONAL_SUITES.join(", ")})`,
      );
    }
  }
  return new Set(names as OptionalSuite[]);
}

/**
 * The `ignore:` flag for tests that need `suite`: false when it is available (`missing` is
 * undefined). Otherwise true, after printing why `what` is skipped, or, when CI requires the
 * suite, after registering a failing test in its place.
 */
export function skipUnless(
  suite: OptionalSuite,
  missing: string | undefined,
  what: string,
): boolean {
  if (missing === undefined) return false;
  if (requiredSuites().has(suite)) {
    Deno.test(`${suite} is required by ${REQUIRE_ENV} but missing (${what})`, () => {
      throw new Error(`${what} cannot run: ${missing}`);
    });
  } else {
    console.warn(`\n!!! SKIPPING ${what}: ${missing} !!!\n`);
  }
  return true;
}

/** Why a file under ../shared/peer-suites/ cannot be read, or undefined when it can. */
export function peerSuiteMissing(path: string): string | undefined {
  const url = new URL(path, PEER_SUITES);
  try {
    Deno.statSync(url);
    return undefined;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return `${url.pathname} is absent`;
    throw error;
  }
}
