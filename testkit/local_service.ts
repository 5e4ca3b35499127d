/**
 * What the helpers that start real services (MariaDB, nats-server, haproxy) share: a free
 * loopback port, finding a Debian binary that lives in sbin, waiting until a port answers,
 * and stopping a child without leaving it behind.
 */
import { join } from "node:path";

/** A loopback port nobody listens on right now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** sbin directories are often missing from PATH, and Debian puts these servers there. */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of dirs.filter(Boolean)) {
    const path = join(dir, name);
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/**
 * Resolves once something accepts TCP connections on `port`.
 * @throws Error naming `what` and the tail of `logFile` after `timeoutMs`
 */
export async function waitForPort(
  port: number,
  what: string,
  logFile?: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch (error) {
      if (Date.now() > deadline) {
        const log = logFile ? await Deno.readTextFile(logFile).catch(() => "") : "";
        throw new Error(`${what} did not listen on ${port}:\n${log.slice(-2000)}`, {
          cause: error,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** Sends `signal` to a child that may already be gone, and waits for it to exit. */
export async function stopChild(
  child: Deno.ChildProcess | undefined,
  signal: Deno.Signal = "SIGTERM",
): Promise<void> {
  if (!child) return;
  try {
    child.kill(signal);
  } catch {
    // already exited
  }
  await child.status;
}
