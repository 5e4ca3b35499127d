/**
 * A byte stream whose writes are held until `release`, then written at once: what a burst
 * looks like when the kernel already holds it (a client back from a stalled link, one that
 * pastes a file, the peer bench's burst made before its clock starts).
 */
import { concat } from "../lib/bytes.ts";
import type { ByteStreamConn } from "../lib/wire/connection.ts";

export class HeldWrites implements ByteStreamConn {
  #held: Uint8Array[] | null = null;
  constructor(readonly inner: Deno.TcpConn) {}
  get readable(): ReadableStream<Uint8Array> {
    return this.inner.readable;
  }
  read(into: Uint8Array): Promise<number | null> {
    return this.inner.read(into);
  }
  /** From now on writes are kept, not written. */
  hold(): void {
    this.#held = [];
  }
  write(bytes: Uint8Array): Promise<number> {
    if (!this.#held) return this.inner.write(bytes);
    this.#held.push(bytes.slice());
    return Promise.resolve(bytes.length);
  }
  /**
   * Takes out what is held so far, in one buffer, and goes on holding: a burst cut into parts
   * that the caller writes in order (to `inner`) before {@link release} writes the rest.
   */
  take(): Uint8Array {
    const bytes = concat(...this.#held ?? []);
    if (this.#held) this.#held = [];
    return bytes;
  }
  /** Writes everything held in one write, then lets writes through again. @returns its bytes */
  async release(): Promise<number> {
    const bytes = concat(...this.#held ?? []);
    this.#held = null;
    for (let at = 0; at < bytes.length;) at += await this.inner.write(bytes.subarray(at));
    return bytes.length;
  }
  close(): void {
    this.inner.close();
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
}
