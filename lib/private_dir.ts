/**
 * Directories that hold secrets — `certs/` (private keys), `transcripts/`, the SQLite
 * store's directory — are owner-only, 0700 (issue 11 item 10). A directory that already
 * exists is not trusted to be: one made by `git clone`, `mkdir` or an archive is usually
 * 0755, and writing keys or records into it would let every local user list them (and
 * read any file a mistake left readable). So an existing directory is tightened to 0700;
 * if that is not possible (another user's directory, a read-only mount) it is refused
 * with the command that fixes it.
 */
import { SecureChatError } from "./errors.ts";

export const PRIVATE_DIR_MODE = 0o700;

/** What `ensurePrivateDir` did: made it, tightened it from `previousMode`, or nothing. */
export type PrivateDirChange =
  | { action: "created" }
  | { action: "tightened"; previousMode: number }
  | { action: "none" };

function refuse(dir: string, why: string, cause?: unknown): SecureChatError {
  return new SecureChatError("IO_ERROR", `${dir} ${why}`, {
    cause,
    hint: `it will hold secrets: make it yours and private with \`chmod 700 ${dir}\`, or choose ` +
      "another directory",
  });
}

/**
 * Makes `dir` an owner-only directory: creates it 0700 (parents as needed), or tightens
 * an existing one that group or others can access.
 * @throws IO_ERROR when it is not a directory or cannot be created or tightened
 */
export async function ensurePrivateDir(dir: string): Promise<PrivateDirChange> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw refuse(dir, "cannot be inspected", error);
    try {
      await Deno.mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
      // mkdir's mode is filtered by the umask; set it exactly.
      if (Deno.build.os !== "windows") await Deno.chmod(dir, PRIVATE_DIR_MODE);
    } catch (cause) {
      throw new SecureChatError("IO_ERROR", `cannot create directory ${dir}`, { cause });
    }
    return { action: "created" };
  }
  if (!info.isDirectory) throw refuse(dir, "is not a directory");
  const mode = (info.mode ?? PRIVATE_DIR_MODE) & 0o777;
  if (Deno.build.os === "windows" || (mode & 0o077) === 0) return { action: "none" };
  try {
    await Deno.chmod(dir, PRIVATE_DIR_MODE);
  } catch (cause) {
    throw refuse(
      dir,
      `is mode ${mode.toString(8).padStart(4, "0")} and cannot be made 0700`,
      cause,
    );
  }
  return { action: "tightened", previousMode: mode };
}

/** A line for the user about what `ensurePrivateDir` did; null when it did nothing worth saying. */
export function describePrivateDirChange(dir: string, change: PrivateDirChange): string | null {
  if (change.action !== "tightened") return null;
  return `${dir} was mode ${change.previousMode.toString(8).padStart(4, "0")}; ` +
    "made it 0700 (it holds secrets)";
}
