/**
 * The bench works (issue 7): `bench/run.ts --quick` as a subprocess writes a JSON
 * report with every section and only finite positive numbers. Never asserts a speed.
 */
import assert from "node:assert/strict";

const RUN = new URL("../bench/run.ts", import.meta.url).pathname;
const SECTIONS = ["signing", "setup", "messages", "scale", "verify", "startup", "cluster"];
/** Sections compared for each key type the toolkit offers (figure names start with it). */
const PER_KEY_TYPE = ["signing", "setup", "messages"];
const KEY_TYPES = ["RSA-2048", "Ed25519"];

function assertPositive(x: unknown, what: string): void {
  assert.ok(typeof x === "number" && Number.isFinite(x) && x > 0, `${what} = ${x}`);
}

Deno.test({
  name: "bench --quick writes every section with finite positive figures",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sc-bench-smoke-" });
    try {
      const out = `${dir}/results.json`;
      const result = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", RUN, "--quick", "--out", out],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 0, `bench failed:\n${stderr}`);
      assert.match(new TextDecoder().decode(result.stdout), /== Session setup/);

      const report = JSON.parse(await Deno.readTextFile(out));
      assert.equal(report.quick, true);
      assert.ok(report.machine?.cpus > 0 && typeof report.machine.deno === "string");
      assert.ok(!Number.isNaN(Date.parse(report.date)));
      for (const name of SECTIONS) {
        const section = report.sections?.[name];
        assert.ok(section, `section ${name} missing`);
        assert.ok(section.figures.length > 0, `section ${name} has no figures`);
        for (const f of section.figures) {
          const what = `${name}: ${f.name}`;
          assertPositive(f.value, what);
          assert.equal(typeof f.unit, "string", what);
          if (f.reference === null) {
            // Only an absent reference tool (openssl) may leave a figure without one.
            assert.match(f.note ?? "", /not found/, `${what} has no reference`);
            continue;
          }
          assertPositive(f.reference.value, `${what} reference`);
          assertPositive(f.ratio, `${what} ratio`);
        }
      }
      for (const name of PER_KEY_TYPE) {
        for (const keyType of KEY_TYPES) {
          const figures = report.sections[name].figures.filter((f: { name: string }) =>
            f.name.startsWith(`${keyType}: `)
          );
          assert.ok(figures.length > 0, `section ${name} has no ${keyType} figures`);
        }
      }
      // The two targets are stated on figures for both key types.
      for (const keyType of KEY_TYPES) {
        for (const name of ["setup", "messages"]) {
          assert.ok(
            report.sections[name].figures.some((f: { name: string; goal?: string }) =>
              f.name.startsWith(`${keyType}: `) && typeof f.goal === "string"
            ),
            `${name}: no ${keyType} figure carries the target`,
          );
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
