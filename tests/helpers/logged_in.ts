/** Both sides of a handshake over a pair of frame connections, in this process. */
import { clientHandshake } from "../../lib/handshake/client.ts";
import { serverHandshake } from "../../lib/handshake/server.ts";
import type { EstablishedSession } from "../../lib/handshake/common.ts";
import type { FrameConnection } from "../../lib/wire/connection.ts";
import type { TestPki } from "../../testkit/pki.ts";

/** alice's login to the PKI's server over `server` / `client`, any password accepted. */
export async function loggedIn(
  pki: TestPki,
  server: FrameConnection,
  client: FrameConnection,
): Promise<[server: EstablishedSession, client: EstablishedSession]> {
  return await Promise.all([
    serverHandshake(server, {
      identity: await pki.identity("server"),
      trust: pki.trust,
      authenticate: () => Promise.resolve({ registered: false }),
    }),
    clientHandshake(client, {
      identity: await pki.identity("alice"),
      trust: pki.trust,
      serverName: "localhost",
      credentials: { mode: "login", username: "alice", password: "a-long-password" },
    }),
  ]);
}
