import assert from "node:assert/strict";
import { isValidEmail } from "../../lib/store/account_rules.ts";

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
