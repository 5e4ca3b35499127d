/**
 * A throwaway `nats-server -js` for tests: JetStream on, its store in a temporary directory,
 * a free loopback port. `kill()` is a SIGKILL (the store survives for `restart()`).
 */
import { join } from "node:path";
import { findExecutable, freePort, stopChild, waitForPort } from "./local_service.ts";

export interface NatsServer {
  /** nats://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  /** SIGKILL: no goodbye to its clients, the JetStream store left as the crash left it. */
  kill(): Promise<void>;
  /**
   * SIGSTOP, resolving once every thread of the server has stopped (a loaded machine may let
   * it run on for a while after the signal): connections stay open and what clients send
   * waits in the socket, unanswered, as on a server too loaded to answer in time. `resume()`
   * (SIGCONT) lets it read on.
   */
  pause(): Promise<void>;
  resume(): void;
  /** Starts it again on the same port and store and waits until it listens. */
  restart(): Promise<void>;
  /** Stops it and deletes its files. */
  dispose(): Promise<void>;
}

/** The nats-server binary, or why the tests that need one cannot run. */
export function natsServerBinary(): { path: string } | { reason: string } {
  const path = findExecutable("nats-server");
  return path ? { path } : { reason: "no nats-server on PATH or in /usr/sbin (apt nats-server)" };
}

export async function startNats(): Promise<NatsServer> {
  const binary = natsServerBinary();
  if (!("path" in binary)) throw new Error(binary.reason);
  const dir = await Deno.makeTempDir({ prefix: "securechat-nats-" });
  const port = freePort();
  const logFile = join(dir, "nats.log");
  const args = ["-js", "-sd", join(dir, "jetstream"), "-a", "127.0.0.1", "-p", String(port)];
  args.push("-l", logFile);
  let child: Deno.ChildProcess | undefined;
  const start = async () => {
    child = new Deno.Command(binary.path, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitForPort(port, "nats-server", logFile);
  };
  const stop = async (signal: Deno.Signal) => {
    await stopChild(child, signal);
    child = undefined;
  };
  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    kill: () => stop("SIGKILL"),
    pause: async () => {
      if (!child) return;
      child.kill("SIGSTOP");
      await allThreadsStopped(child.pid);
    },
    resume: () => child?.kill("SIGCONT"),
    restart: async () => {
      await stop("SIGTERM");
      await start();
    },
    dispose: async () => {
      await stop("SIGTERM");
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Resolves once every thread of process `pid` is in state T (stopped), per /proc. */
async function allThreadsStopped(pid: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states: string[] = [];
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      const stat = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/stat`).catch(() => "");
      // "pid (comm) S ...": the state follows the last ')' (comm may hold spaces or parens).
      states.push(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
    }
    if (states.every((state) => state === "T" || state === "")) return;
    if (Date.now() > deadline) throw new Error(`nats-server ${pid} not stopped: ${states}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
