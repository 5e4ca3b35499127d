/**
 * `deno task web:build [--out DIR]`: the browser page in web/dist/ (or DIR), which
 * `serve --web` serves (`--web-root DIR`).
 *
 * The page is bundled from web/app.ts with `deno bundle --platform browser` under an import
 * map made here from deno.json's imports with web/browser_imports.json laid over them, so the
 * one difference between the CLI's and the page's code is the `#sync-crypto` backend
 * (tests/unit/layers_test.ts holds the page's modules to no node: module and no Deno API).
 * Assets are named by their content hash and referenced with Subresource Integrity; the
 * page has no inline script or style, so it runs under `script-src 'self'` (lib/server/web.ts).
 */
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { toBase64 } from "../lib/bytes.ts";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const web = join(root, "web");
/** `--out DIR` builds elsewhere (the browser test builds into its own temp dir). */
const outAt = Deno.args.indexOf("--out");
const dist = outAt >= 0 && Deno.args[outAt + 1] ? Deno.args[outAt + 1] : join(web, "dist");

async function importMap(): Promise<string> {
  const config = JSON.parse(await Deno.readTextFile(join(root, "deno.json")));
  const browser = JSON.parse(await Deno.readTextFile(join(web, "browser_imports.json")));
  const imports: Record<string, string> = {};
  for (const [name, target] of Object.entries({ ...config.imports, ...browser })) {
    const value = target as string;
    imports[name] = value.startsWith("./") ? pathToFileURL(join(root, value)).href : value;
  }
  const path = await Deno.makeTempFile({ prefix: "securechat-web-", suffix: ".json" });
  await Deno.writeTextFile(path, JSON.stringify({ imports }));
  return path;
}

async function digest(bytes: Uint8Array, algorithm: "SHA-256" | "SHA-384") {
  return new Uint8Array(await crypto.subtle.digest(algorithm, bytes as BufferSource));
}

/** `name.<16 hex of SHA-256>.ext` and the integrity attribute of `bytes`. */
async function hashed(name: string, bytes: Uint8Array) {
  const hex = [...(await digest(bytes, "SHA-256")).subarray(0, 8)]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  const dot = name.lastIndexOf(".");
  return {
    file: `${name.slice(0, dot)}.${hex}${name.slice(dot)}`,
    integrity: `sha384-${toBase64(await digest(bytes, "SHA-384"))}`,
  };
}

const map = await importMap();
const bundled = join(await Deno.makeTempDir({ prefix: "securechat-web-" }), "app.js");
try {
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "browser",
      "--minify",
      "--import-map",
      map,
      "--output",
      bundled,
      join(web, "app.ts"),
    ],
    cwd: root,
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`deno bundle failed:\n${new TextDecoder().decode(stderr)}`);
} finally {
  await Deno.remove(map);
}
const app = await Deno.readFile(bundled);
const appText = new TextDecoder().decode(app);
// Belt and braces beside the layers test: the bundle must not reach for the CLI's runtime.
for (const forbidden of [/from\s*"node:/, /\bDeno\.[a-z]/]) {
  if (forbidden.test(appText)) throw new Error(`the bundle matches ${forbidden}`);
}
const style = await Deno.readFile(join(web, "style.css"));
const icon = await Deno.readFile(join(web, "icon.svg"));
const [appAsset, styleAsset, iconAsset] = [
  await hashed("app.js", app),
  await hashed("style.css", style),
  await hashed("icon.svg", icon),
];
const html = (await Deno.readTextFile(join(web, "index.html")))
  .replace("%APP%", `/assets/${appAsset.file}`)
  .replace("%APP_SRI%", appAsset.integrity)
  .replace("%STYLE%", `/assets/${styleAsset.file}`)
  .replace("%STYLE_SRI%", styleAsset.integrity)
  .replace("%ICON%", `/assets/${iconAsset.file}`);
await Deno.remove(dist, { recursive: true }).catch(() => {});
await Deno.mkdir(join(dist, "assets"), { recursive: true });
await Deno.writeTextFile(join(dist, "index.html"), html);
await Deno.writeFile(join(dist, "assets", appAsset.file), app);
await Deno.writeFile(join(dist, "assets", styleAsset.file), style);
await Deno.writeFile(join(dist, "assets", iconAsset.file), icon);
await Deno.remove(dirname(bundled), { recursive: true });
console.log(
  `${dist}: index.html, assets/${appAsset.file} (${(app.length / 1024).toFixed(0)} KiB), ` +
    `assets/${styleAsset.file}`,
);
