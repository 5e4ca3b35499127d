/**
 * The canary check of the end-to-end tests: lines typed by users must appear in nothing the
 * server wrote (its transcripts, its database and journal, the key log) or logged.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { utf8 } from "../../lib/bytes.ts";

/** Whether `needle` occurs in `haystack`, byte for byte. */
export function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** Every file below `dir`, at any depth. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) out.push(...await filesUnder(path));
    else if (entry.isFile) out.push(path);
  }
  return out;
}

/**
 * Asserts that no canary is in any file below `dir` or in `output` (the server's log lines).
 * @returns the files read, for the caller to check that the ones it expects were there
 */
export async function assertNoCanaries(
  dir: string,
  output: string,
  canaries: readonly string[],
): Promise<string[]> {
  const written = await filesUnder(dir);
  for (const path of written) {
    const bytes = await Deno.readFile(path);
    for (const canary of canaries) {
      assert.ok(!contains(bytes, utf8(canary)), `${canary} in the server's ${path}`);
    }
  }
  for (const canary of canaries) assert.ok(!output.includes(canary), `${canary} in the log`);
  return written;
}
