/**
 * Where securechat keeps its files when no flag says (issue 17 item 1), so that every
 * command works from any directory:
 *
 * - `$SECURECHAT_HOME` set: everything under it — `config.json`, `certs/`,
 *   `transcripts/`, `data/securechat.db` (the layout of a checkout, so
 *   `SECURECHAT_HOME=.` is the old behaviour);
 * - otherwise the XDG base directories: `config.json` in `$XDG_CONFIG_HOME/securechat`
 *   (default `~/.config/securechat`), and `certs/`, `transcripts/`, `securechat.db` in
 *   `$XDG_DATA_HOME/securechat` (default `~/.local/share/securechat`).
 *
 * The optional config file holds the defaults people repeat (see `ConfigSchema`); a flag
 * always wins over it, and it wins over the built-in default. Relative paths in it are
 * relative to the file's directory.
 */
import { dirname, isAbsolute, join, resolve } from "node:path";
import { z } from "zod";
import { SecureChatError } from "../lib/errors.ts";

/** The environment variables read here; `deno.json`'s `--allow-env` lists them. */
export const HOME_ENV = ["SECURECHAT_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "HOME"] as const;

export interface Home {
  /** Which rule chose the locations, for `securechat paths`. */
  source: "SECURECHAT_HOME" | "XDG base directories";
  configFile: string;
  certs: string;
  transcripts: string;
  database: string;
}

const port = z.number().int().min(1).max(65535);
const text = z.string().min(1).max(4096);

/** The config file: flag names as keys, per command where a flag means different things. */
const ConfigSchema = z.object({
  dir: text.optional(),
  transcripts: text.optional(),
  connect: z.object({
    host: text.optional(),
    port: port.optional(),
    "server-name": text.optional(),
    user: text.optional(),
  }).strict().optional(),
  serve: z.object({
    host: text.optional(),
    port: port.optional(),
    db: text.optional(),
  }).strict().optional(),
}).strict();

export type Config = z.infer<typeof ConfigSchema>;

/** The home and config every command starts from. */
export interface Settings {
  home: Home;
  config: Config;
  /** Whether `home.configFile` exists (and was read). */
  configFound: boolean;
  /** The PKI directory: config `dir`, else the home's. */
  certs: string;
  /** The transcripts directory: config `transcripts`, else the home's. */
  transcripts: string;
}

function env(name: (typeof HOME_ENV)[number]): string | undefined {
  const value = Deno.env.get(name);
  return value === undefined || value === "" ? undefined : value;
}

/**
 * The home directories from the environment (nothing is created).
 * @throws USAGE when neither SECURECHAT_HOME nor HOME is set
 */
export function resolveHome(): Home {
  const explicit = env("SECURECHAT_HOME");
  if (explicit) {
    const root = resolve(explicit);
    return {
      source: "SECURECHAT_HOME",
      configFile: join(root, "config.json"),
      certs: join(root, "certs"),
      transcripts: join(root, "transcripts"),
      database: join(root, "data", "securechat.db"),
    };
  }
  const home = env("HOME");
  const configBase = env("XDG_CONFIG_HOME") ?? (home && join(home, ".config"));
  const dataBase = env("XDG_DATA_HOME") ?? (home && join(home, ".local", "share"));
  if (!configBase || !dataBase) {
    throw new SecureChatError("USAGE", "no home directory: HOME is not set", {
      hint: "set SECURECHAT_HOME to the directory securechat should use",
    });
  }
  const data = join(resolve(dataBase), "securechat");
  return {
    source: "XDG base directories",
    configFile: join(resolve(configBase), "securechat", "config.json"),
    certs: join(data, "certs"),
    transcripts: join(data, "transcripts"),
    database: join(data, "securechat.db"),
  };
}

/**
 * Reads and checks the config file, if there is one: the one parse of it.
 * @throws USAGE when it is not valid JSON or has an unknown or malformed key
 * @throws IO_ERROR when it exists but cannot be read
 */
export async function readConfig(path: string): Promise<Config | null> {
  let raw: string;
  try {
    raw = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw new SecureChatError("IO_ERROR", `cannot read ${path}`, { cause: error });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (cause) {
    throw new SecureChatError("USAGE", `${path} is not valid JSON`, { cause });
  }
  const checked = ConfigSchema.safeParse(parsed);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const where = issue.path.join(".") || "(top level)";
    throw new SecureChatError("USAGE", `${path}: ${where}: ${issue.message}`, {
      hint: "see `securechat paths --help` for the keys it may hold",
    });
  }
  const base = dirname(path);
  const fromFile = (p: string | undefined) => p && (isAbsolute(p) ? p : join(base, p));
  const config = checked.data;
  const db = config.serve?.db;
  const sqlitePath = db?.startsWith("sqlite:") ? db.slice("sqlite:".length) : undefined;
  const serve = sqlitePath && sqlitePath !== ":memory:"
    ? { ...config.serve, db: `sqlite:${fromFile(sqlitePath)}` }
    : config.serve;
  return {
    ...config,
    dir: fromFile(config.dir),
    transcripts: fromFile(config.transcripts),
    ...(serve ? { serve } : {}),
  };
}

/** The home, the config file and the directories they give. */
export async function loadSettings(): Promise<Settings> {
  const home = resolveHome();
  const config = await readConfig(home.configFile);
  return {
    home,
    config: config ?? {},
    configFound: config !== null,
    certs: config?.dir ?? home.certs,
    transcripts: config?.transcripts ?? home.transcripts,
  };
}

/** The PKI directory: the `--dir` flag, else the config file's, else the home's. */
export async function pkiDir(flag: string | undefined): Promise<string> {
  return flag ?? (await loadSettings()).certs;
}

/**
 * Which user store `serve` and `user` open: `--db`, else the config file's, else (with no
 * DB_* set) the SQLite file in the home.
 */
export function databaseOf(flag: string | undefined, settings: Settings) {
  return {
    url: flag ?? settings.config.serve?.db,
    defaultUrl: `sqlite:${settings.home.database}`,
  };
}

/** For help texts: what the config file may hold. */
export const CONFIG_HELP =
  `The config file (JSON; every key optional; relative paths are relative to it):
  {
    "dir": "certs",                 PKI directory (ca.pem, <name>.pem/.key)
    "transcripts": "transcripts",   where transcripts and receipts go
    "connect": { "host": "chat.example.com", "port": 65432,
                 "server-name": "chat.example.com", "user": "alice" },
    "serve":   { "host": "0.0.0.0", "port": 65432, "db": "sqlite:/srv/chat/users.db" }
  }
A flag always wins over the file.`;
