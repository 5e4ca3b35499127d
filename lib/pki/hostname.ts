/**
 * Host names, IP addresses and mailboxes as they appear in certificates, and how a
 * presented DNS name matches the name a client dialled (RFC 9525 §6.3: a wildcard is
 * only a whole left-most label and stands for exactly one label).
 */

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/** LDH syntax (RFC 1034 preferred name syntax); `*` allowed only as the whole left-most label. */
export function isValidDnsName(name: string, allowWildcard = false): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split(".");
  if (allowWildcard && labels[0] === "*") {
    // `*.com` would cover a whole top-level domain: refuse like browsers do.
    return labels.length >= 3 && labels.slice(1).every((l) => LABEL.test(l));
  }
  return labels.every((l) => LABEL.test(l));
}

/** A mailbox `local@domain`; the local part is opaque (compared exactly), the domain is LDH. */
export function isValidEmail(value: string): boolean {
  const at = value.lastIndexOf("@");
  return at > 0 && !value.slice(0, at).includes("@") && isValidDnsName(value.slice(at + 1));
}

function parseIpv4(text: string): number[] | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part) || Number(part) > 255) return null;
    out.push(Number(part));
  }
  return out;
}

function parseIpv6(text: string): number[] | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (half: string): number[] | null => {
    if (half === "") return [];
    const out: number[] = [];
    const parts = half.split(":");
    for (const [i, part] of parts.entries()) {
      if (i === parts.length - 1 && part.includes(".")) {
        const v4 = parseIpv4(part);
        if (!v4) return null;
        out.push(v4[0] * 256 + v4[1], v4[2] * 256 + v4[3]);
      } else if (/^[0-9a-f]{1,4}$/i.test(part)) out.push(parseInt(part, 16));
      else return null;
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  return [...head, ...Array(missing).fill(0), ...tail].flatMap((g) => [g >> 8, g & 0xff]);
}

/** The 4 or 16 octets of an IPv4/IPv6 literal, or null if `text` is not one. */
export function parseIp(text: string): Uint8Array | null {
  const octets = text.includes(":") ? parseIpv6(text) : parseIpv4(text);
  return octets ? Uint8Array.from(octets) : null;
}

/** Text form of 4 or 16 address octets; IPv6 in RFC 5952 canonical form. */
export function formatIp(octets: Uint8Array): string {
  if (octets.length === 4) return octets.join(".");
  const groups: number[] = [];
  for (let i = 0; i < octets.length; i += 2) groups.push((octets[i] << 8) | octets[i + 1]);
  // RFC 5952 §4.2: compress the longest run of two or more zero groups, the first on a tie.
  let best = { start: -1, length: 1 };
  for (let i = 0; i < groups.length; i++) {
    let j = i;
    while (j < groups.length && groups[j] === 0) j++;
    if (j - i > best.length) best = { start: i, length: j - i };
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (best.start < 0) return hex(groups);
  return `${hex(groups.slice(0, best.start))}::${hex(groups.slice(best.start + best.length))}`;
}

/** Does a presented dNSName (maybe `*.example.com`) match the reference name? */
export function dnsNameMatches(presented: string, reference: string): boolean {
  const ref = reference.toLowerCase();
  const pat = presented.toLowerCase();
  if (!pat.startsWith("*.")) return pat === ref;
  const dot = ref.indexOf(".");
  return dot > 0 && ref.slice(dot + 1) === pat.slice(2);
}
