import assert from "node:assert/strict";
import { isValidEmail, isValidUserName } from "../lib/store/account_rules.ts";

Deno.test("isValidUserName() allows 3-32 of [A-Za-z0-9_.-] starting with a letter or digit", () => {
  const cases: [string, boolean][] = [
    ["abc", true],
    ["Alice", true],
    ["9lives", true],
    ["a.b-c_d", true],
    ["a".repeat(32), true],
    ["ab", false],
    ["a".repeat(33), false],
    ["_alice", false],
    [".alice", false],
    ["-alice", false],
    ["alice'; DROP TABLE users;--", false],
    ["' OR '1'='1", false],
    ["al ice", false],
    ["alice\n", false],
    ["ålice", false],
    ["alice/../x", false],
    ["", false],
  ];
  for (const [name, ok] of cases) assert.equal(isValidUserName(name), ok, JSON.stringify(name));
});

Deno.test("isValidEmail() checks a basic shape up to 254 characters", () => {
  const local = "a".repeat(64);
  const cases: [string, boolean][] = [
    ["alice@example.org", true],
    ["o'brien+chat@mail.example.co.uk", true],
    [`${local}@${"b".repeat(254 - 64 - 1 - 4)}.org`, true],
    [`${local}@${"b".repeat(254 - 64 - 1 - 4 + 1)}.org`, false],
    ["alice", false],
    ["alice@", false],
    ["@example.org", false],
    ["alice@example", false],
    ["alice@@example.org", false],
    ["al ice@example.org", false],
    ["alice@example..org", false],
    ["alice@example.org.", false],
  ];
  for (const [email, ok] of cases) assert.equal(isValidEmail(email), ok, email);
});
