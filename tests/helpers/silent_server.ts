/**
 * A session's server, as an end-to-end device sees it (lib/e2e KeysChannel), that takes every
 * message and answers none by itself: a test answers (`onKeys`, `onMembers`) or does not.
 */
import type { KeysChannel } from "../../lib/e2e/client.ts";
import type { Body } from "../../lib/message/record.ts";
import { pollUntil } from "../../testkit/server_process.ts";

export class SilentServer implements KeysChannel {
  readonly sent: Body[] = [];
  /** Where each of `sent` went (its record's `to`). */
  readonly sentTo: string[] = [];
  send(body: Body, to: string): Promise<number> {
    this.sent.push(body);
    this.sentTo.push(to);
    return Promise.resolve(this.sent.length);
  }
  /** The users whose devices were asked for, in order. */
  fetches(): string[] {
    return this.sent.flatMap((b) => b.kind === "keys_fetch" ? [b.user] : []);
  }
  /** Resolves once a device list has been asked for. */
  fetched(): Promise<unknown> {
    return pollUntil(
      () => this.sent.find((b) => b.kind === "keys_fetch"),
      2000,
      () => "no keys_fetch sent",
    );
  }
}
