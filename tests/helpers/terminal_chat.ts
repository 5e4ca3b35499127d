/**
 * alice at a real terminal (`connect` under tmux) and bob on a pipe, both registered on a
 * running server: the setup of the pty tests, which drive alice by key presses and read what
 * bob gets.
 */
import { makePki, type TestPki } from "../../testkit/pki.ts";
import { LiveClient, registerUser, ServerProcess } from "../../testkit/server_process.ts";
import { Tmux } from "../../testkit/tmux.ts";

export const BOB_PASSWORD = "bob-password-12";

export interface TerminalChat {
  pki: TestPki;
  /** alice's transcripts and end-to-end state are in `${server.workDir}/alice`, bob's in `/bob`. */
  server: ServerProcess;
  /** alice's terminal, at her chat prompt. */
  tmux: Tmux;
  bob: LiveClient;
}

/**
 * Runs `test` with alice (`alicePassword`) at her prompt in a `width`-column terminal and bob
 * logged in, on a server started with `serverArgs`; ends everything however the test ends.
 */
export async function withTerminalChat(
  o: { alicePassword: string; width?: number; serverArgs?: string[] },
  test: (chat: TerminalChat) => Promise<void>,
): Promise<void> {
  const pki = await makePki(["alice", "bob"]);
  const server = await ServerProcess.start({ pkiDir: pki.dir, args: o.serverArgs });
  const tmux = new Tmux(o.width);
  let bob: LiveClient | undefined;
  try {
    await registerUser(server, pki.dir, "alice", o.alicePassword);
    await registerUser(server, pki.dir, "bob", BOB_PASSWORD);
    bob = await LiveClient.login({
      port: server.port,
      user: "bob",
      password: BOB_PASSWORD,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/bob`,
    });
    await tmux.startConnect({
      port: server.port,
      user: "alice",
      password: o.alicePassword,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/alice`,
    });
    await test({ pki, server, tmux, bob });
  } finally {
    await tmux.kill();
    await bob?.end();
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
}
