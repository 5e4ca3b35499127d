/**
 * A running server on which alice is locked out (two wrong passwords, then her right one is
 * refused RATE_LIMITED), for the tests of the operator's two ways to forgive her: `securechat
 * user unlock` against the store and the console's `/unlock`.
 */
import assert from "node:assert/strict";
import { makePki } from "../../testkit/pki.ts";
import type { CliResult } from "../../testkit/cli.ts";
import {
  errorCodeOf,
  registerUser,
  runConnect,
  ServerProcess,
} from "../../testkit/server_process.ts";

export const ALICE_PASSWORD = "alice-password-1";

export interface LockedOut {
  server: ServerProcess;
  /** alice's login with `password`, through the real CLI. */
  login(password: string): Promise<CliResult>;
  dispose(): Promise<void>;
}

export async function lockedOutAlice(opts: { console?: boolean } = {}): Promise<LockedOut> {
  const pki = await makePki(["alice"]);
  const server = await ServerProcess.start({
    pkiDir: pki.dir,
    ...(opts.console ? { console: true } : {}),
    args: ["--login-lockout", "2", "--login-delay", "1"],
  });
  const login = (password: string) =>
    runConnect({
      port: server.port,
      user: "alice",
      password,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/alice`,
    });
  const dispose = async () => {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  };
  try {
    await registerUser(server, pki.dir, "alice", ALICE_PASSWORD);
    for (let i = 0; i < 2; i++) {
      assert.equal(errorCodeOf(await login("not-alices-password")), "AUTH_FAIL");
    }
    assert.equal(errorCodeOf(await login(ALICE_PASSWORD)), "RATE_LIMITED");
  } catch (error) {
    await dispose();
    throw error;
  }
  return { server, login, dispose };
}
