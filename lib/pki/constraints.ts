/**
 * Name constraints (RFC 5280 §4.2.1.10) for the name forms we can judge: dNSName,
 * iPAddress and rfc822Name. A constraint of any other form meets a name of the same
 * form only by refusal, since we cannot prove it satisfied.
 */
import { SecureChatError } from "../errors.ts";
import type { GeneralName, NameConstraints, ParsedCertificate } from "./certificate.ts";
import { isValidDnsName, isValidEmail } from "./hostname.ts";

function reject(reason: string): never {
  throw new SecureChatError("BAD_CERT", reason);
}

/** A constraint's own syntax; a malformed one poisons the certificate that carries it. */
function checkConstraintSyntax(c: GeneralName): void {
  if (c.type === "dns" && c.value !== "" && !isValidDnsName(c.value)) {
    reject(`invalid dNSName name constraint "${c.value}"`);
  }
  if (c.type === "ip") {
    const mask = c.value.subarray(c.value.length / 2);
    const bits = Array.from(mask, (b) => b.toString(2).padStart(8, "0")).join("");
    if (/01/.test(bits)) reject("invalid iPAddress name constraint (non-contiguous mask)");
  }
  if (c.type === "email") {
    const domain = c.value.startsWith(".") ? c.value.slice(1) : c.value;
    if (!(c.value.includes("@") ? isValidEmail(c.value) : isValidDnsName(domain))) {
      reject(`invalid rfc822Name name constraint "${c.value}"`);
    }
  }
}

/** Checks every constraint in a certificate's nameConstraints extension for syntax. */
export function checkNameConstraintsSyntax(nc: NameConstraints): void {
  for (const c of [...(nc.permitted ?? []), ...(nc.excluded ?? [])]) checkConstraintSyntax(c);
}

function dnsWithin(name: string, base: string): boolean {
  return base === "" || name === base || name.endsWith(`.${base}`);
}

const lower = (n: GeneralName): GeneralName =>
  n.type === "dns" ? { ...n, value: n.value.toLowerCase() } : n;

/**
 * Whether a name lies within a constraint: "all" (every name the SAN can stand for),
 * "some" (a wildcard that can stand for a name inside) or "none".
 */
function within(presented: GeneralName, constraint: GeneralName): "all" | "some" | "none" {
  const [name, c] = [lower(presented), lower(constraint)];
  if (name.type === "dns" && c.type === "dns") {
    if (!name.value.startsWith("*.")) return dnsWithin(name.value, c.value) ? "all" : "none";
    // `*.X` stands for exactly the names L.X: all inside C if X is, and some if C is one of them.
    const parent = name.value.slice(2);
    if (dnsWithin(parent, c.value)) return "all";
    return c.value.endsWith(`.${parent}`) && !c.value.slice(0, -parent.length - 1).includes(".")
      ? "some"
      : "none";
  }
  if (name.type === "ip" && c.type === "ip") {
    if (c.value.length !== 2 * name.value.length) return "none";
    const mask = c.value.subarray(name.value.length);
    return name.value.every((b, i) => (b & mask[i]) === (c.value[i] & mask[i])) ? "all" : "none";
  }
  if (name.type === "email" && c.type === "email") {
    const at = name.value.lastIndexOf("@");
    const domain = name.value.slice(at + 1).toLowerCase();
    const base = c.value.toLowerCase();
    if (c.value.includes("@")) {
      const cAt = c.value.lastIndexOf("@");
      return name.value.slice(0, at) === c.value.slice(0, cAt) &&
          domain === base.slice(cAt + 1)
        ? "all"
        : "none";
    }
    return (base.startsWith(".") ? domain.endsWith(base) : domain === base) ? "all" : "none";
  }
  return "none";
}

const JUDGED = new Set(["dns", "ip", "email"]);

/** Name × constraint comparisons one certificate may cost (the limbo nc-dos cases). */
const MAX_COMPARISONS = 1024;

/**
 * Applies `nc` (from an issuer) to a certificate below it in the path.
 * @throws BAD_CERT naming the offending name
 */
export function checkNameConstraints(nc: NameConstraints, cert: ParsedCertificate): void {
  const names: GeneralName[] = [...(cert.subjectAltName ?? [])];
  if (cert.subject.attributes.length) names.push({ type: "dn", value: cert.subject.raw });
  const constraints = (nc.permitted?.length ?? 0) + (nc.excluded?.length ?? 0);
  if (names.length * constraints > MAX_COMPARISONS) {
    reject("too many names and name constraints to check");
  }
  const label = (n: GeneralName) => "value" in n && typeof n.value === "string" ? n.value : n.type;
  for (const name of names) {
    const permitted = (nc.permitted ?? []).filter((c) => c.type === name.type);
    const excluded = (nc.excluded ?? []).filter((c) => c.type === name.type);
    if (!JUDGED.has(name.type)) {
      if (permitted.length || excluded.length) {
        reject(`cannot evaluate ${name.type} name constraints`);
      }
      continue;
    }
    if (excluded.some((c) => within(name, c) !== "none")) {
      reject(`name ${label(name)} is excluded by a name constraint`);
    }
    if (permitted.length && !permitted.some((c) => within(name, c) === "all")) {
      reject(`name ${label(name)} is not permitted by the name constraints`);
    }
  }
}
