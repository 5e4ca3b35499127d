/**
 * The peer bench's IRC load generator (issue 18): one IRC client over TLS 1.3
 * (Deno.connectTls with a client certificate), just enough of RFC 1459/2812 to
 * register, join a channel, send PRIVMSG and count the PRIVMSG lines it receives.
 * Lines are counted, not parsed, on the hot path, so the client costs little next to
 * the server it drives.
 */

export interface IrcTls {
  caCert: string;
  cert: string;
  key: string;
}

const encoder = new TextEncoder();

export class IrcClient {
  /** PRIVMSG lines received. */
  privmsgs = 0;
  /** Commands and numerics seen (001, 366, 451, ERROR, ...), each once. */
  readonly seen = new Set<string>();
  /** Server NOTICE lines, for what the server says about the TLS session. */
  readonly notices: string[] = [];
  readonly #conn: Deno.TlsConn;
  readonly closed: Promise<void>;
  #waiters: { ready: () => boolean; resolve: () => void; reject: (e: Error) => void }[] = [];

  private constructor(conn: Deno.TlsConn) {
    this.#conn = conn;
    this.closed = this.#readLoop();
  }

  /** Connects and completes the TLS handshake (the client certificate goes with it). */
  static async connect(port: number, tls: IrcTls): Promise<IrcClient> {
    const conn = await Deno.connectTls({
      hostname: "127.0.0.1", // the server certificate has the IP SAN 127.0.0.1
      port,
      caCerts: [tls.caCert],
      cert: tls.cert,
      key: tls.key,
    });
    await conn.handshake();
    return new IrcClient(conn);
  }

  async send(text: string): Promise<void> {
    const bytes = encoder.encode(text);
    let off = 0;
    while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
  }

  /**
   * Sends NICK and USER, then a PING that InspIRCd answers with 451 (not registered)
   * once it has processed both: the registration commands are in. The welcome (001)
   * follows on InspIRCd 3's next one-second tick (see peer_bench.ts).
   */
  async register(nick: string): Promise<void> {
    await this.send(`NICK ${nick}\r\nUSER bench 0 * :bench\r\nPING :registered\r\n`);
    await this.until(() => this.seen.has("451"));
  }

  /** Until the welcome burst ended (MOTD end or no MOTD). */
  welcomed(): Promise<void> {
    return this.until(() => this.seen.has("376") || this.seen.has("422"));
  }

  async join(channel: string): Promise<void> {
    await this.send(`JOIN ${channel}\r\n`);
    await this.until(() => this.seen.has("366"));
  }

  /** QUIT and wait until the server closed the connection. */
  async quit(): Promise<void> {
    await this.send("QUIT :bench\r\n").catch(() => {});
    await this.closed;
  }

  /** Drops the connection without QUIT. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  /** Resolves once `ready()` holds; rejects on timeout or when the server closes first. */
  until(ready: () => boolean, timeoutMs = 60_000): Promise<void> {
    if (ready()) return Promise.resolve();
    if (this.seen.has("EOF")) return Promise.reject(this.#failure("connection closed"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(this.#failure("timed out"));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const fail = (error: Error) => {
        clearTimeout(timer);
        reject(error);
      };
      this.#waiters.push({ ready, resolve: done, reject: fail });
    });
  }

  #failure(what: string): Error {
    return new Error(`IRC client: ${what} (seen ${[...this.seen].join(" ")})`);
  }

  async #readLoop(): Promise<void> {
    const decoder = new TextDecoder();
    const buf = new Uint8Array(64 * 1024);
    let pending = "";
    try {
      while (true) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        pending += decoder.decode(buf.subarray(0, n), { stream: true });
        let start = 0;
        let end: number;
        while ((end = pending.indexOf("\r\n", start)) >= 0) {
          this.#line(pending.slice(start, end));
          start = end + 2;
        }
        pending = pending.slice(start);
        this.#wake();
      }
    } catch {
      // reset or closed by us: the connection is over either way
    } finally {
      this.close();
      this.seen.add("EOF");
      this.#wake();
    }
  }

  #line(line: string): void {
    // ":nick!user@host PRIVMSG target :text" / ":server 001 nick :..." / "PING :x"
    const firstSpace = line.indexOf(" ");
    const command = line.startsWith(":")
      ? line.slice(firstSpace + 1, line.indexOf(" ", firstSpace + 1))
      : line.slice(0, firstSpace);
    if (command === "PRIVMSG") {
      this.privmsgs++;
      return;
    }
    if (command === "PING") {
      void this.send(`PONG ${line.slice(firstSpace + 1)}\r\n`).catch(() => {});
      return;
    }
    if (command === "NOTICE") this.notices.push(line);
    this.seen.add(command);
  }

  #wake(): void {
    if (this.#waiters.length === 0) return;
    const over = this.seen.has("EOF");
    this.#waiters = this.#waiters.filter((w) => {
      if (w.ready()) w.resolve();
      else if (over) w.reject(this.#failure("connection closed"));
      else return true;
      return false;
    });
  }
}
