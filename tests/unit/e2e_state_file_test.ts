/**
 * The end-to-end state file across a password change (PROTOCOL §12.7): re-encrypted under the
 * new password, and at every point where the client may crash, the password the server ends
 * up with opens the latest state.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { codeOf } from "../../lib/errors.ts";
import { openStateFile } from "../../lib/store/e2e_state_file.ts";
import type { SealedState } from "../../lib/e2e/sealed_state.ts";

const OLD = "old-password-1";
const NEW = "new-password-2";

async function withDir(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "securechat-state-" });
  try {
    await fn(join(dir, "alice.e2e"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function openCode(path: string, secret: string): Promise<string> {
  try {
    await openStateFile(path, secret);
    return "opened";
  } catch (error) {
    return codeOf(error);
  }
}

/** A file under OLD holding `{n: 1}`, its change to NEW begun, and `{n: 2}` saved since. */
async function changeBegun(path: string): Promise<SealedState> {
  const file = await openStateFile(path, OLD);
  await file.save({ n: 1 });
  file.beginRekey(NEW);
  await file.save({ n: 2 });
  return file;
}

Deno.test("openStateFile(): a committed password change re-encrypts the state under the new password", async () => {
  await withDir(async (path) => {
    const file = await changeBegun(path);
    await file.commitRekey();
    await file.save({ n: 3 });
    assert.equal(await exists(`${path}.next`), false);
    assert.deepEqual(await (await openStateFile(path, NEW)).load(), { n: 3 });
    assert.equal(await openCode(path, OLD), "DECRYPT_FAIL");
  });
});

Deno.test("openStateFile(): a crash after the server changed the password — the new one opens the latest state", async () => {
  await withDir(async (path) => {
    await changeBegun(path); // ...and the process dies before commitRekey
    const reopened = await openStateFile(path, NEW);
    assert.deepEqual(await reopened.load(), { n: 2 });
    assert.equal(await exists(`${path}.next`), false, "the change is finished at open");
    await reopened.save({ n: 3 });
    assert.deepEqual(await (await openStateFile(path, NEW)).load(), { n: 3 });
  });
});

Deno.test("openStateFile(): a crash before the server changed the password — the old one opens the latest state", async () => {
  await withDir(async (path) => {
    await changeBegun(path); // ...the server never got or never made the change
    const reopened = await openStateFile(path, OLD);
    assert.deepEqual(await reopened.load(), { n: 2 });
    assert.equal(await exists(`${path}.next`), false, "the change that did not happen is gone");
    assert.equal(await openCode(path, NEW), "DECRYPT_FAIL");
  });
});

Deno.test("openStateFile(): a refused password change leaves the state under the old password alone", async () => {
  await withDir(async (path) => {
    const file = await changeBegun(path);
    await file.abandonRekey();
    await file.save({ n: 3 });
    assert.equal(await exists(`${path}.next`), false);
    assert.deepEqual(await (await openStateFile(path, OLD)).load(), { n: 3 });
    assert.equal(await openCode(path, NEW), "DECRYPT_FAIL");
  });
});

Deno.test("openStateFile(): neither password opens a state another password sealed", async () => {
  await withDir(async (path) => {
    await changeBegun(path);
    assert.equal(await openCode(path, "a-third-password"), "DECRYPT_FAIL");
    assert.equal(await exists(`${path}.next`), true, "a failed open changes nothing");
  });
});
