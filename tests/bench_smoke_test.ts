/**
 * The bench works (issue 7): `bench/run.ts --quick` as a subprocess writes a JSON
 * report with every section and only finite positive numbers. Never asserts a speed.
 * The peer section (issue 18) needs InspIRCd: whether it must run or must say it was
 * skipped is decided here, before the run, from whether `inspircd` is installed.
 */
import assert from "node:assert/strict";
import { findInspircd, INSPIRCD_INSTALL_HINT } from "../testkit/inspircd.ts";
import { mysqlTestTarget } from "../testkit/mariadb.ts";
import { skipUnless } from "./helpers/optional_suites.ts";
import { SECTIONS } from "../testkit/bench_sections.ts";

const RUN = new URL("../bench/run.ts", import.meta.url).pathname;
// Without InspIRCd the peer section must report itself skipped; where CI requires it
// (SECURECHAT_CI_REQUIRE), its absence is a failing test of its own.
const PEER_SKIPPED = skipUnless(
  "inspircd",
  await findInspircd() ? undefined : `inspircd is not installed; ${INSPIRCD_INSTALL_HINT}`,
  "the bench's peer section (the smoke run checks that it says so)",
);
// The reconnect storm starts its own MariaDB (and nats-server, which the cluster section needs
// as well); without mariadbd it must say it was skipped.
const STORM_MISSING = mysqlTestTarget().kind === "local" ? undefined : "no local mariadbd";
const STORM_SKIPPED = skipUnless("mariadb", STORM_MISSING, "the bench's reconnect storm section");
/** The sections the run must report: all of them, less those skipped above (said why). */
const EXPECTED = SECTIONS.filter((name) =>
  !(name === "peer" && PEER_SKIPPED) && !(name === "storm" && STORM_SKIPPED)
);
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
      for (const name of EXPECTED) {
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
      if (PEER_SKIPPED) {
        assert.match(report.sections.peer?.skipped ?? "", /inspircd not found/);
        assert.equal(report.sections.peer.figures.length, 0);
      } else {
        // The three goals are stated, and the peer's version is recorded.
        const goals = report.sections.peer.figures.filter((f: { goal?: string }) => f.goal);
        assert.equal(goals.length, 3, "peer: the three goals of issue 18");
        assert.match(report.sections.peer.details.peer.version, /^InspIRCd-3\./);
        // The relay goal is measured on lines end to end, as `connect` sends them, and the
        // server-readable text records are measured beside them (both key types each).
        const relayGoal = goals.find((f: { name: string }) => f.name.includes("relay delivery"));
        assert.match(relayGoal?.name ?? "", /end to end/);
        const relays = report.sections.peer.figures.map((f: { name: string }) => f.name)
          .filter((n: string) => n.includes("relay delivery") && n.includes("a burst"));
        // The goal row's CPU split by thread, from the same burst, every thread in the details.
        const byThread = report.sections.peer.figures.filter((f: { name: string }) =>
          f.name.includes("relay delivery") && / on (the main|V8's helper) thread/.test(f.name)
        );
        assert.equal(byThread.length, 2, "peer: the relay goal's main and helper threads");
        const threads = report.sections.peer.details.securechat.relay_burst
          .server_thread_cpu_us_per_unit;
        assert.ok(threads.main > 0 && threads["V8 DefaultWorke"] > 0, JSON.stringify(threads));
        for (const shape of [/end to end/, /server-readable text/]) {
          assert.equal(relays.filter((n: string) => shape.test(n)).length >= 2, true, `${shape}`);
          assert.ok(relays.some((n: string) => shape.test(n) && n.includes("Ed25519")), `${shape}`);
        }
        // Every burst part's CPU is what each server thread added in it (testkit/burst_parts.ts):
        // never negative, as parts read when a thread exited in them; the goal row's quiet parts
        // are counted, and their median is a figure when one was quiet (a quick burst is one
        // short part of a server still growing, so mostly none is).
        const goalRow = report.sections.peer.details.securechat.relay_burst;
        for (const part of goalRow.by_part) assertPositive(part.cpuUs, "a relay burst part's CPU");
        const quiet = goalRow.quiet_parts;
        assert.ok(quiet.of >= 1 && quiet.parts <= quiet.of, JSON.stringify(quiet));
        const median = report.sections.peer.figures.find((f: { name: string }) =>
          f.name.includes("parts without a heap step")
        );
        assert.equal(median?.value, quiet.parts > 0 ? quiet.cpu_us_median : undefined);
        // The relay's floor in this runtime and each rung of the ladder ran (bench/_floor.ts),
        // all delivered (their figures are checked positive above), the floor beside ours.
        const names = report.sections.peer.figures.map((f: { name: string }) => f.name);
        assert.ok(names.some((n: string) => n.includes("this runtime's floor (")), "the floor row");
        assert.ok(names.some((n: string) => n.includes("against this runtime's floor")));
        for (const rung of ["floor", "json", "checks", "transcript", "inplace", "binary"]) {
          const phase = report.sections.peer.details.ladder?.[rung];
          assertPositive(phase?.server_cpu_us_per_unit, `peer: the ladder's ${rung} rung`);
          assert.equal(phase.rung, rung);
        }
      }
      if (STORM_SKIPPED) {
        assert.match(report.sections.storm?.skipped ?? "", /mariadbd/);
      } else {
        // Every user came back both ways, and the ticket storm states the goal.
        const { ticket_storm, password_storm, users } = report.sections.storm.details;
        assert.deepEqual([ticket_storm.failures, password_storm.failures], [0, 0]);
        assert.equal(ticket_storm.logins_by_ticket, users, "every reconnect was a resumption");
        assert.ok(report.sections.storm.figures.some((f: { goal?: string }) => f.goal));
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
