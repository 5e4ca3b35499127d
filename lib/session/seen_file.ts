/**
 * The CLI's relay high-water marks (PROTOCOL §6.4) in a JSON file, mode 0600, replaced
 * atomically: temporary file, fsync, rename.
 */
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
    write: async (text) => {
      const tmp = `${path}.tmp`;
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
      try {
        await file.write(new TextEncoder().encode(text));
        await file.sync();
      } finally {
        file.close();
      }
      await Deno.rename(tmp, path);
    },
    unrefTimer: (timer) => Deno.unrefTimer(timer),
  };
}
