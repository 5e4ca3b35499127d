/**
 * A server that runs only the handshake, with whatever certificate it is given, and logs the
 * code each connection ended with as `serve` would. For a client's own checks of a server
 * certificate `serve` refuses to present (PROTOCOL §5.2: it will not start with an expired or
 * not yet valid one): a server with a wrong clock, or a hostile one, still could.
 */
import { codeOf } from "../../lib/errors.ts";
import type { Identity } from "../../lib/handshake/common.ts";
import { serverHandshake } from "../../lib/handshake/server.ts";
import type { TrustStore } from "../../lib/pki/validate.ts";
import { FrameConnection } from "../../lib/wire/connection.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { type LogEvent, type LogPredicate, pollUntil } from "../../testkit/server_process.ts";

export class HandshakeOnlyServer {
  readonly logs: LogEvent[] = [];
  readonly #listener: Deno.TcpListener;
  readonly #serving: Promise<void>;

  constructor(identity: Identity, trust: TrustStore) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#serving = this.#serve(identity, trust);
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  mark(): number {
    return this.logs.length;
  }

  waitFor(predicate: LogPredicate, timeoutMs = 10_000, from = 0): Promise<LogEvent> {
    return pollUntil(
      () => this.logs.slice(from).find(predicate),
      timeoutMs,
      () => `no matching log line; seen: ${JSON.stringify(this.logs.slice(from))}`,
    );
  }

  async dispose(): Promise<void> {
    this.#listener.close();
    await this.#serving;
  }

  async #serve(identity: Identity, trust: TrustStore): Promise<void> {
    for (;;) {
      let tcp: Deno.TcpConn;
      try {
        tcp = await this.#listener.accept();
      } catch {
        return; // closed
      }
      const conn = new FrameConnection(tcp);
      this.logs.push({ time: new Date().toISOString(), event: "CONNECT" });
      try {
        await serverHandshake(conn, {
          identity,
          trust,
          authenticate: () =>
            Promise.reject(new SecureChatError("AUTH_FAIL", "this server logs no one in")),
        });
      } catch (error) {
        this.logs.push({
          time: new Date().toISOString(),
          event: codeOf(error),
          detail: (error as Error).message,
        });
      } finally {
        conn.close();
      }
    }
  }
}
