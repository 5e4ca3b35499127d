/**
 * A fetch of a contact's devices in flight when its session ends fails then, with the session's
 * end, rather than at its 10 s timeout: commands/connect.ts tells its device the session ended
 * (E2eClient.sessionEnded), and so does testkit's deviceLogin, which once did not.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { codeOf, SecureChatError } from "../lib/errors.ts";
import { openUserStore } from "../lib/store/open.ts";
import type { KeyDirectory } from "../lib/store/key_directory.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { type DeviceClient, deviceLogin } from "../testkit/e2e_device.ts";
import { makePki } from "../testkit/pki.ts";
import { pollUntil } from "../testkit/server_process.ts";
import { startInProcessServer } from "./helpers/in_process_server.ts";

const ACCOUNTS = { alice: "alice-password-1", bob: "bob-password-12" };

Deno.test("deviceLogin: a fetch in flight when the session ends fails with the session's end, not its timeout", async () => {
  const pki = await makePki(["alice", "bob"]);
  // A key directory that never answers a fetch: the server is slow, then the link goes.
  const store = await openUserStore({ url: "sqlite::memory:" });
  let fetching = false;
  let answer: ((devices: never[]) => void) | undefined;
  const keys = store.keys!;
  Object.defineProperty(store, "keys", {
    value: new Proxy(keys, {
      get(target, name) {
        if (name === "fetch") {
          return () => {
            fetching = true;
            return new Promise((resolve) => answer = resolve);
          };
        }
        const value = Reflect.get(target, name);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as KeyDirectory,
  });
  const srv = await startInProcessServer(pki, ACCOUNTS, { store });
  const work = await Deno.makeTempDir({ prefix: "securechat-fetch-end-" });
  let bob: DeviceClient | undefined;
  try {
    bob = await deviceLogin(
      new FrameConnection(await Deno.connect({ hostname: "127.0.0.1", port: srv.server.port })),
      { pki, user: "bob", password: ACCOUNTS.bob, transcriptDir: join(work, "bob") },
    );
    const preparing = bob.e2e.prepare("alice", bob.session).then(() => "answered", (e) => e);
    await pollUntil(() => fetching || undefined, 10_000, () => "the server got no keys_fetch");
    bob.session.abort(new SecureChatError("IO_ERROR", "the link went"));
    assert.equal((await bob.running).code, "IO_ERROR");
    const failure = await preparing;
    assert.equal(codeOf(failure), "PROTOCOL_ERROR", String(failure));
    assert.match((failure as Error).message, /the session ended/);
  } finally {
    await bob?.session.close().catch(() => {});
    answer?.([]); // the server's session ends once its handler is done
    await srv.dispose();
    await Deno.remove(work, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});
