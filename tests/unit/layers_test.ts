/**
 * The import rules (README "Layout"), read from the source itself: main → commands → lib with
 * no arrow back, lib free of cycles, and the tooling kept apart: testkit/ is the harness that
 * tests/, bench/ and scripts/ share, so bench/ and scripts/ never import tests/ and tests/
 * never imports scripts/ or bench/. The browser page (web/) imports lib/ only, and everything it
 * runs is free of node: modules and Deno APIs, so the CLI and the page share the protocol code.
 */
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";

const ROOT = new URL("../../", import.meta.url).pathname;

type Area = "main" | "commands" | "lib" | "web" | "testkit" | "tests" | "bench" | "scripts";

/** Project metadata any module may read (main.ts takes its version from it). */
const ROOT_DATA = new Set(["deno.json"]);

/** For each area, the areas it may import from (itself included where listed). */
const MAY_IMPORT: Record<Area, readonly Area[]> = {
  main: ["commands", "lib"],
  commands: ["commands", "lib"],
  lib: ["lib"],
  web: ["web", "lib"],
  testkit: ["testkit", "lib"],
  tests: ["tests", "testkit", "commands", "lib"],
  bench: ["bench", "testkit", "lib"],
  scripts: ["scripts", "testkit", "lib"],
};

function areaOf(path: string): Area | undefined {
  if (path === "main.ts") return "main";
  const top = path.split("/")[0];
  return top in MAY_IMPORT ? top as Area : undefined;
}

/**
 * Relative import specifiers of one module: static imports and re-exports (a line that
 * starts with `import`/`export`, or the `} from "…"` closing a multi-line one) and dynamic
 * `import("…")`. Bare and npm:/node: specifiers are outside the rules.
 */
export function importsOf(source: string): string[] {
  return specifiersOf(source).filter((spec) => spec.startsWith("./") || spec.startsWith("../"));
}

/** Every import specifier of one module, bare, npm: and node: ones included. */
function specifiersOf(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /^\s*(?:import|export)\b[^"'\n;]*?\bfrom\s*["']([^"']+)["']/gm,
    /^\s*import\s*["']([^"']+)["']/gm,
    /^\s*\}\s*from\s*["']([^"']+)["']/gm,
    /\bimport\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const pattern of patterns) {
    for (const match of source.matchAll(pattern)) found.push(match[1]);
  }
  return found;
}

async function sourceFiles(dir = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(join(ROOT, dir))) {
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory && !entry.name.startsWith(".")) out.push(...await sourceFiles(path));
    else if (entry.isFile && path.endsWith(".ts") && areaOf(path)) out.push(path);
  }
  return out;
}

/** Every module's relative imports, as repository paths. */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const file of await sourceFiles()) {
    const source = await Deno.readTextFile(join(ROOT, file));
    graph.set(
      file,
      importsOf(source).map((spec) => relative(ROOT, join(ROOT, dirname(file), spec))),
    );
  }
  return graph;
}

Deno.test("importsOf() finds static, multi-line, re-exported and dynamic imports", () => {
  const source = [
    '/** see "../not/an/import.ts" */',
    'import assert from "node:assert/strict";',
    'import { a } from "./a.ts";',
    'import type { B } from "../b.ts";',
    "import {",
    "  c,",
    '} from "./c.ts";',
    'export { d } from "./d.ts";',
    'import "./e.ts";',
    'const { f } = await import("../f.ts");',
    'export const G = new URL("../g/", import.meta.url);',
    'import config from "../deno.json" with { type: "json" };',
  ].join("\n");
  assert.deepEqual(importsOf(source).sort(), [
    "../b.ts",
    "../deno.json",
    "../f.ts",
    "./a.ts",
    "./c.ts",
    "./d.ts",
    "./e.ts",
  ]);
});

Deno.test("layers: every import follows main → commands → lib and the tooling rules", async () => {
  const graph = await importGraph();
  assert.ok(graph.size > 100, `only ${graph.size} modules found under ${ROOT}`);
  const violations: string[] = [];
  for (const [file, imports] of graph) {
    const from = areaOf(file)!;
    for (const target of imports) {
      if (ROOT_DATA.has(target)) continue;
      const to = areaOf(target);
      if (to === undefined || !MAY_IMPORT[from].includes(to)) {
        violations.push(`${file} imports ${target} (${from} may import ${MAY_IMPORT[from]})`);
      }
    }
  }
  assert.deepEqual(violations, []);
});

Deno.test("layers: lib/ and commands/ have no import cycle", async () => {
  const graph = await importGraph();
  const cycles: string[] = [];
  const done = new Set<string>();
  const onPath: string[] = [];
  const visit = (file: string) => {
    if (done.has(file)) return;
    const at = onPath.indexOf(file);
    if (at >= 0) {
      cycles.push([...onPath.slice(at), file].join(" → "));
      return;
    }
    onPath.push(file);
    for (const next of graph.get(file) ?? []) {
      if (areaOf(next) === "lib" || areaOf(next) === "commands") visit(next);
    }
    onPath.pop();
    done.add(file);
  };
  for (const file of graph.keys()) {
    if (areaOf(file) === "lib" || areaOf(file) === "commands") visit(file);
  }
  assert.deepEqual(cycles, []);
});

/** The page's entry and the specifiers its build maps to browser modules (web_build.ts). */
const WEB_ENTRY = "web/app.ts";
const BROWSER_IMPORTS = new URL("../../web/browser_imports.json", import.meta.url);

/** `source` without comments (a comment may name Deno.Conn or node:crypto). */
function withoutComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

/** Files of the page: web/app.ts and what it imports, bare specifiers mapped as the build does. */
async function pageModules(): Promise<Map<string, string>> {
  const browserImports: Record<string, string> = JSON.parse(
    await Deno.readTextFile(BROWSER_IMPORTS),
  );
  const modules = new Map<string, string>();
  const queue = [WEB_ENTRY];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (modules.has(file)) continue;
    const source = await Deno.readTextFile(join(ROOT, file));
    modules.set(file, source);
    for (const spec of specifiersOf(source)) {
      const mapped = browserImports[spec];
      if (mapped) queue.push(relative(ROOT, join(ROOT, mapped)));
      else if (spec.startsWith(".")) queue.push(relative(ROOT, join(ROOT, dirname(file), spec)));
    }
  }
  return modules;
}

Deno.test("layers: the page runs the shared protocol code, with no node: module or Deno API", async () => {
  const modules = await pageModules();
  for (
    const shared of [
      "lib/handshake/client.ts",
      "lib/session/session.ts",
      "lib/crypto/sync_browser.ts",
    ]
  ) {
    assert.ok(modules.has(shared), `the page does not run ${shared}`);
  }
  assert.ok(!modules.has("lib/crypto/sync_node.ts"), "the page imports the node backend");
  const violations: string[] = [];
  for (const [file, source] of modules) {
    const code = withoutComments(source);
    for (const spec of specifiersOf(code)) {
      if (spec.startsWith("node:")) violations.push(`${file} imports ${spec}`);
    }
    if (/\bDeno\./.test(code)) violations.push(`${file} uses the Deno API`);
  }
  assert.deepEqual(violations, []);
});

Deno.test("layers: in lib/, only the #sync-crypto node backend imports node:crypto", async () => {
  const graph = await importGraph();
  const importers: string[] = [];
  for (const file of graph.keys()) {
    if (areaOf(file) !== "lib") continue;
    const code = withoutComments(await Deno.readTextFile(join(ROOT, file)));
    if (specifiersOf(code).includes("node:crypto")) importers.push(file);
  }
  assert.deepEqual(importers, ["lib/crypto/sync_node.ts"]);
});
