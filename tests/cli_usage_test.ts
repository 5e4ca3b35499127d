/**
 * What `securechat` says when it is used wrong or a file is not right: every diagnostic in our
 * one shape (`securechat: error: CODE: ...`, then `hint: ...`), naming the flag or the file at
 * fault, with argv quoted safely. Real CLI subprocesses.
 */
import assert from "node:assert/strict";
import { runCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";

Deno.test("securechat: commander's usage errors come in our shape, with where the help is", async () => {
  const cases: [string[], RegExp, string][] = [
    [["bogus"], /^securechat: error: USAGE: unknown command 'bogus'$/m, "securechat"],
    [
      ["connect", "--usr", "alice"],
      /^securechat: error: USAGE: unknown option '--usr'$/m,
      "securechat connect",
    ],
    [
      ["cert", "issue"],
      /^securechat: error: USAGE: missing required argument 'name'$/m,
      "securechat cert issue",
    ],
  ];
  for (const [args, said, help] of cases) {
    const result = await runCli(args);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, said);
    assert.match(result.stderr, new RegExp(`^hint: run \`${help} --help\` for usage$`, "m"));
  }
  // An option as typed is quoted, never written to the terminal raw.
  const escape = await runCli(["connect", "--\x1b[2Jx"]);
  assert.equal(escape.code, 2);
  assert.ok(!escape.stderr.includes("\x1b"), JSON.stringify(escape.stderr));
  assert.match(escape.stderr, /unknown option '--\^\[\[2Jx'/);
});

Deno.test("serve: a port flag out of range is named, and 0 (any free port) is said to be allowed", async () => {
  for (const flag of ["--port", "--web", "--health-port"]) {
    const result = await runCli(["serve", flag, "99999"]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(
        `USAGE: ${flag} must be an integer from 0 \\(any free port\\) to 65535, not "99999"`,
      ),
    );
  }
});

Deno.test("verify: a CA or CRL file that holds the wrong thing is named; a missing one says why once", async () => {
  const pki = await makePki(["alice"]);
  try {
    const log = `${pki.dir}/none.log`;
    const notCa = await runCli(["verify", log, "--ca", `${pki.dir}/alice.key`]);
    assert.equal(notCa.code, 1, notCa.stderr);
    assert.match(
      notCa.stderr,
      new RegExp(`BAD_CERT: ${pki.dir}/alice.key: no PEM CERTIFICATE found`),
    );
    await Deno.writeTextFile(`${pki.dir}/ca.crl`, "not a CRL\n");
    const badCrl = await runCli(["verify", log, "--ca", `${pki.dir}/ca.pem`]);
    assert.match(badCrl.stderr, new RegExp(`BAD_CERT: ${pki.dir}/ca.crl: no PEM X509 CRL found`));
    const missing = await runCli(["verify", log, "--ca", `${pki.dir}/nothing.pem`]);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(
      missing.stderr,
      new RegExp(`IO_ERROR: cannot read ${pki.dir}/nothing.pem: No such file or directory$`, "m"),
    );
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
