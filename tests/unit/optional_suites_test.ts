/** tests/helpers/optional_suites.ts: how CI names the suites a run must not skip. */
import assert from "node:assert/strict";
import { OPTIONAL_SUITES, peerSuiteMissing, requiredSuites } from "../helpers/optional_suites.ts";

Deno.test("requiredSuites() parses the comma-separated list, spaces and empty items allowed", () => {
  assert.deepEqual(requiredSuites(""), new Set());
  assert.deepEqual(requiredSuites(" limbo , mariadb,,"), new Set(["limbo", "mariadb"]));
  assert.deepEqual(requiredSuites(OPTIONAL_SUITES.join(",")), new Set(OPTIONAL_SUITES));
});

Deno.test("requiredSuites() refuses an unknown name, so a typo cannot switch a check off", () => {
  assert.throws(() => requiredSuites("limbo,wychproof"), /unknown suite "wychproof"/);
  assert.throws(() => requiredSuites("LIMBO"), /unknown suite "LIMBO"/);
});

Deno.test("peerSuiteMissing() names the absent path", () => {
  assert.match(
    peerSuiteMissing("no-such-suite.json")!,
    /shared\/peer-suites\/no-such-suite\.json is absent$/,
  );
});
