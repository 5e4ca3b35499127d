/**
 * Bad certificates for the BAD_CERT tests, made with `openssl` (OpenSSL 3.0 has no
 * `x509 -not_before`, so back- and forward-dated certificates come from `openssl ca`
 * with `-startdate/-enddate`) and with lib/pki (a second, unrelated CA). Every file
 * lands in the fixture PKI dir as `<name>.pem` / `<name>.key`, ready for
 * `--cert/--key` of `serve` or `connect`.
 *
 * A control certificate (`ossl-good`), issued by the same openssl pipeline with sane
 * dates, proves that a refusal comes from the one defect each fixture has and not
 * from the way openssl encodes certificates.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { loadCaSigner } from "../../lib/ca/ca.ts";
import { leafExtensions as profileExtensions } from "../../lib/ca/issue.ts";
import { randomSerialHex, validityWindow } from "../../lib/ca/serial.ts";
import { generateKeyPair, privateKeyToPem, signingAlgorithmOf } from "../../lib/pki/keys.ts";
import { pemEncode } from "../../lib/pki/pem.ts";
import { makePki, type TestPki } from "../../testkit/pki.ts";

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (out.code !== 0) {
    throw new Error(
      `openssl ${args.join(" ")} failed:\n${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

/** openssl's UTCTime form YYMMDDHHMMSSZ (dates before 2050). */
function utcTime(date: Date): string {
  return date.toISOString().replace(
    /^\d\d(\d\d)-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d).*$/,
    "$1$2$3$4$5$6Z",
  );
}

const DAY = 24 * 60 * 60 * 1000;

/** The extensions of every fixture leaf; they differ only in EKU and subjectAltName. */
function leafExtensions(eku: "clientAuth" | "serverAuth", san?: string): string {
  return [
    "basicConstraints = critical,CA:FALSE",
    "keyUsage = critical,digitalSignature",
    `extendedKeyUsage = ${eku}`,
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid:always",
    ...(san ? [`subjectAltName = ${san}`] : []),
  ].join("\n");
}

const CA_CONFIG = `
[ ca ]
default_ca = local
[ local ]
dir = .
database = ./index.txt
new_certs_dir = ./newcerts
serial = ./serial
default_md = default
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no
[ anything ]
commonName = supplied
[ client_ext ]
${leafExtensions("clientAuth")}
[ server_ext ]
${leafExtensions("serverAuth", "DNS:localhost,IP:127.0.0.1")}
[ other_name_ext ]
${leafExtensions("serverAuth", "DNS:other.example")}
`;

export interface OpensslLeaf {
  /** File stem in the PKI dir: `<name>.pem`, `<name>.key`. */
  name: string;
  /** The subject CN. */
  cn: string;
  ext: "client_ext" | "server_ext" | "other_name_ext";
  /** openssl genpkey algorithm: ED25519 (default), EC P-384, RSA... */
  keyAlg?: string[];
  notBefore?: Date;
  notAfter?: Date;
}

/** Issues a leaf under the fixture PKI's own CA (ca.pem / ca.key) with `openssl ca`. */
export async function opensslLeaf(pki: TestPki, leaf: OpensslLeaf): Promise<void> {
  const work = `${pki.dir}/openssl-ca`;
  await Deno.mkdir(`${work}/newcerts`, { recursive: true });
  await Deno.writeTextFile(`${work}/ca.cnf`, CA_CONFIG);
  await Deno.writeTextFile(`${work}/index.txt`, "", { append: true });
  const key = `${pki.dir}/${leaf.name}.key`;
  await openssl(["genpkey", ...(leaf.keyAlg ?? ["-algorithm", "ED25519"]), "-out", key], work);
  await Deno.chmod(key, 0o600);
  await openssl(
    ["req", "-new", "-key", key, "-subj", `/CN=${leaf.cn}`, "-out", `${leaf.name}.csr`],
    work,
  );
  const now = Date.now();
  await openssl([
    "ca",
    "-batch",
    "-config",
    "ca.cnf",
    "-cert",
    `${pki.dir}/ca.pem`,
    "-keyfile",
    `${pki.dir}/ca.key`,
    "-in",
    `${leaf.name}.csr`,
    "-out",
    `${pki.dir}/${leaf.name}.pem`,
    "-notext",
    "-rand_serial",
    "-extensions",
    leaf.ext,
    "-startdate",
    utcTime(leaf.notBefore ?? new Date(now - 60_000)),
    "-enddate",
    utcTime(leaf.notAfter ?? new Date(now + 30 * DAY)),
  ], work);
}

/** A self-signed leaf (its own issuer) with the given profile, made by `openssl req -x509`. */
export async function opensslSelfSigned(
  pki: TestPki,
  name: string,
  cn: string,
  profile: "client_ext" | "server_ext",
): Promise<void> {
  const work = `${pki.dir}/openssl-ca`;
  await Deno.mkdir(work, { recursive: true });
  await Deno.writeTextFile(`${work}/ca.cnf`, CA_CONFIG);
  const key = `${pki.dir}/${name}.key`;
  await openssl(["genpkey", "-algorithm", "ED25519", "-out", key], work);
  await Deno.chmod(key, 0o600);
  await openssl([
    "req",
    "-x509",
    "-new",
    "-key",
    key,
    "-subj",
    `/CN=${cn}`,
    "-days",
    "30",
    "-config",
    "ca.cnf",
    "-extensions",
    profile,
    "-out",
    `${pki.dir}/${name}.pem`,
  ], work);
}

/** Copies `name`.pem/.key from another PKI dir into this one as `as`.pem/.key. */
export async function importLeaf(from: TestPki, name: string, to: TestPki, as: string) {
  await Deno.copyFile(`${from.dir}/${name}.pem`, `${to.dir}/${as}.pem`);
  await Deno.copyFile(`${from.dir}/${name}.key`, `${to.dir}/${as}.key`);
}

export interface BadCertPki {
  pki: TestPki;
  /** The unrelated CA's PKI dir; the caller removes it along with `pki`. */
  other: TestPki;
}

/**
 * The fixture PKI (CA, `server`, the given users) plus, in the same dir:
 *   ossl-good       client "alice", openssl-issued, valid (control)
 *   ossl-server     server, openssl-issued, valid (control)
 *   self-alice      client "alice", self-signed
 *   self-server     server (SAN localhost), self-signed
 *   other-alice     client "alice" from another CA
 *   other-server    server (SAN localhost) from another CA
 *   expired-alice   client "alice", valid 2020-01-01 .. 2020-02-01
 *   future-alice    client "alice", valid from 10 days ahead
 *   expired-server  server, expired
 *   future-server   server, not yet valid
 *   wrongname-server server cert with SAN other.example only
 *   p384-alice      client "alice" with an ECDSA P-384 key (not a protocol algorithm)
 *   ed448-alice     client "alice" with an Ed448 key (an algorithm the parser does not know)
 *   rsa1024-alice   client "alice" with a 1024-bit RSA key (too weak)
 */
export async function makeBadCertPki(users: string[]): Promise<BadCertPki> {
  const [pki, other] = await Promise.all([makePki(users), makePki(["alice"])]);
  try {
    await addBadCerts(pki, other);
  } catch (error) {
    for (const dir of [pki.dir, other.dir]) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
    throw error;
  }
  return { pki, other };
}

async function addBadCerts(pki: TestPki, other: TestPki): Promise<void> {
  const now = Date.now();
  await importLeaf(other, "alice", pki, "other-alice");
  await importLeaf(other, "server", pki, "other-server");
  await opensslSelfSigned(pki, "self-alice", "alice", "client_ext");
  await opensslSelfSigned(pki, "self-server", "server", "server_ext");
  // `openssl ca` keeps one index file: issue one after the other.
  const leaves: OpensslLeaf[] = [
    { name: "ossl-good", cn: "alice", ext: "client_ext" },
    { name: "ossl-server", cn: "server", ext: "server_ext" },
    ...([["alice", "client_ext"], ["server", "server_ext"]] as const).flatMap(([cn, ext]) => [
      {
        name: `expired-${cn}`,
        cn,
        ext,
        notBefore: new Date("2020-01-01T00:00:00Z"),
        notAfter: new Date("2020-02-01T00:00:00Z"),
      },
      {
        name: `future-${cn}`,
        cn,
        ext,
        notBefore: new Date(now + 10 * DAY),
        notAfter: new Date(now + 40 * DAY),
      },
    ]),
    { name: "wrongname-server", cn: "server", ext: "other_name_ext" },
    {
      name: "p384-alice",
      cn: "alice",
      ext: "client_ext",
      keyAlg: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    },
    { name: "ed448-alice", cn: "alice", ext: "client_ext", keyAlg: ["-algorithm", "ED448"] },
    {
      name: "rsa1024-alice",
      cn: "alice",
      ext: "client_ext",
      keyAlg: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    },
  ];
  for (const leaf of leaves) await opensslLeaf(pki, leaf);
}

/** Reads the DER of `<name>.pem` in the PKI dir. */
export async function certDer(pki: TestPki, name: string): Promise<Uint8Array> {
  const pem = await Deno.readTextFile(`${pki.dir}/${name}.pem`);
  const b64 = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** A DER OCTET STRING of `length` zero bytes (length < 64 KiB). */
function derOctetString(length: number): Uint8Array<ArrayBuffer> {
  const head = length < 0x80
    ? [0x04, length]
    : length < 0x100
    ? [0x04, 0x81, length]
    : [0x04, 0x82, length >> 8, length & 0xff];
  const der = new Uint8Array(head.length + length);
  der.set(head);
  return der;
}

/**
 * Re-issues `name`'s client certificate under the test PKI's CA, padded with a non-critical
 * extension of the documentation PEN (RFC 5612) to exactly `derBytes` bytes of DER: the
 * largest certificate the protocol takes is 16 KiB (PROTOCOL §3.3), ours are 1–2 KB.
 */
export async function issuePaddedClient(
  pki: TestPki,
  name: string,
  derBytes: number,
): Promise<Uint8Array> {
  const ca = await loadCaSigner(pki.dir);
  const keys = await generateKeyPair("ed25519");
  const profile = await profileExtensions(
    { name, profile: "client", dns: [], ip: [], days: 30, keyType: "ed25519" },
    keys.publicKey,
    ca,
  );
  const window = validityWindow(30);
  const make = async (pad: number) =>
    new Uint8Array(
      (await x509.X509CertificateGenerator.create({
        serialNumber: randomSerialHex(), // always 16 bytes: the size does not move between tries
        subject: [{ CN: [name] }],
        issuer: ca.cert.subjectName,
        ...window,
        signingAlgorithm: signingAlgorithmOf(ca.key),
        publicKey: keys.publicKey,
        signingKey: ca.key,
        extensions: [
          ...profile,
          new x509.Extension("1.3.6.1.4.1.32473.1", false, derOctetString(pad)),
        ],
      })).rawData,
    );
  // The padding's own length fields grow with it: a few tries land on the size.
  let pad = Math.max(0, derBytes - 400);
  let der = await make(pad);
  for (let tries = 0; der.length !== derBytes && tries < 4; tries++) {
    pad += derBytes - der.length;
    der = await make(pad);
  }
  if (der.length !== derBytes) {
    throw new Error(`padded certificate is ${der.length} bytes, not ${derBytes}`);
  }
  await Deno.writeTextFile(`${pki.dir}/${name}.key`, await privateKeyToPem(keys.privateKey));
  await Deno.writeTextFile(`${pki.dir}/${name}.pem`, pemEncode("CERTIFICATE", der));
  return der;
}
