/**
 * The one `serve` a whole test file shares (starting one per test would cost seconds),
 * with the per-address handshake limit lifted: every test connects from 127.0.0.1,
 * dozens of times. The file's last test stops it and removes what the file made; if
 * the run ends early, an unload handler still does.
 */
import assert from "node:assert/strict";
import { Bystander, registerUser, ServerProcess } from "../../testkit/server_process.ts";

export interface SharedServerOptions {
  pkiDir: string;
  /** Further directories the file made (fixture PKIs), removed along with pkiDir. */
  alsoRemove?: string[];
  /** Users registered through the CLI before the first test, with their passwords. */
  users?: Record<string, string>;
  /** `serve --console`, for operator lines. */
  console?: boolean;
}

export interface SharedServer {
  server: ServerProcess;
  /** `user`, an honest `connect` on `on` (default: the shared server), across a hostile test. */
  bystander(user: string, password: string, on?: ServerProcess): Promise<Bystander>;
  /**
   * Registers the file's last test: `serve` exits 0 on SIGTERM, `check` passes on what
   * it logged, and everything the file made is removed.
   */
  testShutdown(check?: (server: ServerProcess) => void): void;
}

/** Kills `server` and removes its work dir and `dirs` when the test run unloads. */
export function cleanUpAtExit(server: ServerProcess, dirs: string[] = []): void {
  globalThis.addEventListener("unload", () => {
    try {
      server.child.kill("SIGKILL");
    } catch {
      // already stopped
    }
    for (const dir of [server.workDir, ...dirs]) {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // already removed
      }
    }
  });
}

export async function startSharedServer(o: SharedServerOptions): Promise<SharedServer> {
  const server = await ServerProcess.start({
    pkiDir: o.pkiDir,
    console: o.console,
    args: ["--handshake-rate", "1000"],
  });
  const dirs = [o.pkiDir, ...(o.alsoRemove ?? [])];
  cleanUpAtExit(server, dirs);
  for (const [user, password] of Object.entries(o.users ?? {})) {
    await registerUser(server, o.pkiDir, user, password);
  }
  return {
    server,
    bystander: (user, password, on = server) =>
      Bystander.join(on, {
        user,
        password,
        pkiDir: o.pkiDir,
        transcripts: `${on.workDir}/${user}`,
      }),
    testShutdown: (check) =>
      Deno.test({
        name: "serve shuts down cleanly on SIGTERM after all of the above (exit 0)",
        sanitizeOps: false,
        sanitizeResources: false,
        fn: async () => {
          const status = await server.stop();
          assert.equal(status.code, 0, server.otherOutput.join("\n"));
          check?.(server);
          await server.dispose();
          for (const dir of dirs) await Deno.remove(dir, { recursive: true });
        },
      }),
  };
}
