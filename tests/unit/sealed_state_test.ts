/**
 * The end-to-end state at rest (lib/e2e/sealed_state.ts, PROTOCOL §12.7), which the CLI's
 * file and the page's IndexedDB both hold: it opens with the login password only, any changed
 * byte or a malformed text is DECRYPT_FAIL, each seal draws a fresh nonce, and the text is
 * what §12.7 says, recomputed here from node:crypto and the formula alone.
 */
import assert from "node:assert/strict";
import { createDecipheriv, scryptSync } from "node:crypto";
import { concat, fromBase64, toBase64 } from "../../lib/bytes.ts";
import { codeOf } from "../../lib/errors.ts";
import { type SealedSlots, SealedState, StateSeal } from "../../lib/e2e/sealed_state.ts";

const PASSWORD = "alice-password-1";
const STATE = { version: 1, user: "alice", peers: { bob: {} } };

Deno.test("StateSeal opens what it sealed with the login password, and nothing else", () => {
  const sealed = StateSeal.fresh(PASSWORD).seal(STATE);
  const { seal, value } = StateSeal.open(sealed, PASSWORD, "the state");
  assert.deepEqual(value, STATE);
  // The key it returns seals the next version under the same salt, a new nonce.
  const next = seal.seal({ ...STATE, user: "alice" });
  assert.notEqual(JSON.parse(next).nonce, JSON.parse(sealed).nonce);
  assert.equal(JSON.parse(next).salt, JSON.parse(sealed).salt);
  assert.deepEqual(StateSeal.open(next, PASSWORD, "the state").value, STATE);

  const refused = (text: string, password = PASSWORD) =>
    assert.throws(
      () => StateSeal.open(text, password, "the state"),
      (error) => codeOf(error) === "DECRYPT_FAIL",
    );
  refused(sealed, "another password");
  const parsed = JSON.parse(sealed);
  const ct = fromBase64(parsed.ct);
  ct[0] ^= 1;
  refused(JSON.stringify({ ...parsed, ct: toBase64(ct) }));
  refused(JSON.stringify({ ...parsed, n: 1024 })); // a cheaper cost is not ours to accept
  refused(JSON.stringify({ ...parsed, extra: 1 }));
  refused("not json");
});

Deno.test("StateSeal's text is PROTOCOL §12.7's: AES-256-GCM under scrypt(password, salt, N, r, p, 32)", () => {
  const sealed = JSON.parse(StateSeal.fresh(PASSWORD).seal(STATE));
  assert.deepEqual(Object.keys(sealed).sort(), [
    "ct",
    "kdf",
    "n",
    "nonce",
    "p",
    "r",
    "salt",
    "version",
  ]);
  assert.deepEqual([sealed.version, sealed.kdf, sealed.n, sealed.r, sealed.p], [
    1,
    "scrypt",
    32768,
    8,
    1,
  ]);
  const key = scryptSync(PASSWORD, fromBase64(sealed.salt), 32, {
    N: sealed.n,
    r: sealed.r,
    p: sealed.p,
    maxmem: 64 * 1024 * 1024,
  });
  const ct = fromBase64(sealed.ct);
  const decipher = createDecipheriv("aes-256-gcm", key, fromBase64(sealed.nonce));
  decipher.setAAD(new TextEncoder().encode("securechat/e2e state"));
  decipher.setAuthTag(ct.subarray(ct.length - 16));
  const plaintext = concat(
    decipher.update(ct.subarray(0, ct.length - 16)),
    decipher.final(),
  );
  assert.deepEqual(JSON.parse(new TextDecoder().decode(plaintext)), STATE);
});

/** Slots in memory; `crashAtPromote` makes the move of `next` over the state fail once. */
function memorySlots(records: Map<string, string>, o: { crashAtPromote?: boolean } = {}) {
  const slots: SealedSlots = {
    where: "the state",
    read: (slot) => Promise.resolve(records.get(slot)),
    write: (slot, text) => Promise.resolve(void records.set(slot, text)),
    dropNext: () => Promise.resolve(void records.delete("next")),
    promoteNext: () => {
      if (o.crashAtPromote) {
        o.crashAtPromote = false;
        return Promise.reject(new Error("the process died"));
      }
      records.set("state", records.get("next")!);
      records.delete("next");
      return Promise.resolve();
    },
  };
  return slots;
}

Deno.test("SealedState.reseal() opens a state under the password before a change made elsewhere and seals it under the current one", async () => {
  const NEW = "alice-password-2";
  const opens = (text: string | undefined, password: string) => {
    try {
      return StateSeal.open(text!, password, "the state").value;
    } catch (error) {
      return codeOf(error);
    }
  };
  const records = new Map([["state", StateSeal.fresh(PASSWORD).seal(STATE)]]);
  // The current password alone does not open it; a wrong previous one changes nothing.
  await assert.rejects(
    SealedState.open(memorySlots(records), NEW),
    (e) => codeOf(e) === "DECRYPT_FAIL",
  );
  const before = new Map(records);
  await assert.rejects(
    SealedState.reseal(memorySlots(records), "not the old password", NEW),
    (e) => codeOf(e) === "DECRYPT_FAIL",
  );
  assert.deepEqual(records, before);

  // The previous one: the same state, under the current password alone from now on.
  const state = await SealedState.reseal(memorySlots(records), PASSWORD, NEW);
  assert.deepEqual(await state.load(), STATE);
  assert.deepEqual([...records.keys()], ["state"]);
  assert.deepEqual(opens(records.get("state"), NEW), STATE);
  assert.equal(opens(records.get("state"), PASSWORD), "DECRYPT_FAIL");
  await state.save({ ...STATE, later: true });
  assert.deepEqual(opens(records.get("state"), NEW), { ...STATE, later: true });
  // Given again when the state already opens with the current password: nothing to do.
  assert.deepEqual(await (await SealedState.reseal(memorySlots(records), PASSWORD, NEW)).load(), {
    ...STATE,
    later: true,
  });

  // A crash between the copy under the current password and its move over the state: the
  // next open with the current password takes the copy.
  const crashed = new Map([["state", StateSeal.fresh(PASSWORD).seal(STATE)]]);
  await assert.rejects(
    SealedState.reseal(memorySlots(crashed, { crashAtPromote: true }), PASSWORD, NEW),
  );
  assert.deepEqual(opens(crashed.get("next"), NEW), STATE);
  assert.deepEqual(await (await SealedState.open(memorySlots(crashed), NEW)).load(), STATE);
  assert.deepEqual([...crashed.keys()], ["state"]);
});
