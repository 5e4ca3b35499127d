/** Settings from the environment or a `.env` file beside the working directory. */
import { join } from "node:path";
import { parseEnv } from "node:util";

/** Each of `keys`: the real environment wins over `baseDir/.env`, as with dotenv. */
export function readEnvKeys(
  baseDir: string,
  keys: readonly string[],
): Record<string, string | undefined> {
  let fromFile: Record<string, string | undefined> = {};
  try {
    fromFile = parseEnv(Deno.readTextFileSync(join(baseDir, ".env")));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return Object.fromEntries(keys.map((key) => [key, Deno.env.get(key) ?? fromFile[key]]));
}
