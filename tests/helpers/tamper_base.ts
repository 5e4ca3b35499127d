/**
 * The tamper table's base material (a CA, a session, its receipts), made on first use
 * and then shared by every test of a file: making it costs a handshake's worth of keys.
 */
import { makeTamperBase, type TamperBase } from "../../testkit/transcript_fixtures.ts";

let base: TamperBase | undefined;

export async function tamperBase(): Promise<TamperBase> {
  base ??= await makeTamperBase();
  return base;
}
