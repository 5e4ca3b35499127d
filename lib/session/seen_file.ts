/**
 * The CLI's relay high-water marks (PROTOCOL §6.4) in a JSON file, mode 0600, replaced
 * durably (lib/files.ts).
 */
import { writeFileAtomic } from "../files.ts";
import type { SeenStorage } from "./relay.ts";

export function seenFile(path: string): SeenStorage {
  return {
    name: path,
    read: async () => {
      try {
        return await Deno.readTextFile(path);
      } catch (cause) {
        if (cause instanceof Deno.errors.NotFound) return null;
        throw cause;
      }
    },
    write: (text) => writeFileAtomic(path, text),
    unrefTimer: (timer) => Deno.unrefTimer(timer),
  };
}
