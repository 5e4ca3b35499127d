/**
 * validatePeerCertificate(): every rejection is BAD_CERT with its own reason. Fixtures
 * come from our CA (lib) and from openssl (`req -x509`, `x509 -req` with an extfile).
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { readCertificateDer } from "../lib/pki/key_files.ts";
import "reflect-metadata";
import assert from "node:assert/strict";
import { SecureChatError } from "../lib/errors.ts";
import { initCa, loadCaSigner } from "../lib/ca/ca.ts";
import { issueCertificate } from "../lib/ca/issue.ts";
import { revokeCertificates } from "../lib/ca/revoke.ts";
import {
  MAX_CERTIFICATE_BYTES,
  TrustStore,
  VALIDATED_CACHE_ENTRIES,
  validatePeerCertificate,
} from "../lib/pki/validate.ts";
import { opensslIssue, opensslOk } from "./helpers/openssl.ts";

const dir = await Deno.makeTempDir({ prefix: "securechat-pki-" });
const certs = `${dir}/certs`;
await initCa(certs, { name: "SecureChat Root CA", days: 30, keyType: "p256" }, false);
const ca = await loadCaSigner(certs);
const LEAVES = [["server", "server"], ["alice", "client"], ["mallory", "client"]] as const;
for (const [name, profile] of LEAVES) {
  await issueCertificate(certs, ca, {
    name,
    profile,
    dns: [],
    ip: [],
    days: 30,
    keyType: "p256",
  }, false);
}

const LEAF_EXT = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" +
  "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always";
const SERVER_EXT =
  `${LEAF_EXT}\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1`;

/** A self-signed P-256 certificate `<name>.pem`/`.key` in `dir` with the given extensions. */
async function opensslSelfSigned(name: string, cn: string, ...extensions: string[]) {
  await opensslOk(
    dir,
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-subj",
    `/CN=${cn}`,
    "-days",
    "30",
    ...extensions.flatMap((ext) => ["-addext", ext]),
  );
}

// Another CA with the very same name as ours, made by openssl.
await opensslSelfSigned(
  "other",
  "SecureChat Root CA",
  "basicConstraints=critical,CA:TRUE,pathlen:0",
  "keyUsage=critical,keyCertSign,cRLSign",
);
await opensslSelfSigned(
  "selfsigned",
  "localhost",
  "basicConstraints=critical,CA:FALSE",
  "keyUsage=critical,digitalSignature",
  "extendedKeyUsage=serverAuth",
  "subjectAltName=DNS:localhost",
);
const caFiles = { caCert: `${certs}/ca.pem`, caKey: `${certs}/ca.key` };
await opensslIssue(dir, { name: "openssl-server", ...caFiles, ext: SERVER_EXT });
await opensslIssue(dir, {
  name: "foreign",
  caCert: "other.pem",
  caKey: "other.key",
  ext: SERVER_EXT,
});
await opensslIssue(dir, { name: "weak-rsa", ...caFiles, key: ["rsa:1024"], ext: SERVER_EXT });
await opensslIssue(dir, {
  name: "critical-ext",
  ...caFiles,
  ext: `${SERVER_EXT}\n1.2.3.4=critical,ASN1:NULL`,
});
await opensslIssue(dir, {
  name: "no-digsig",
  ...caFiles,
  ext: SERVER_EXT.replace(
    "keyUsage=critical,digitalSignature",
    "keyUsage=critical,keyEncipherment",
  ),
});

const der = (path: string) => readCertificateDer(path);
const server = await der(`${certs}/server.pem`);
const alice = await der(`${certs}/alice.pem`);
const store = await loadTrustStore(`${certs}/ca.pem`);
const HOUR = 3600_000;

async function rejects(
  promise: Promise<unknown>,
  reason: RegExp,
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof SecureChatError, `not a SecureChatError: ${error}`);
    assert.equal(error.code, "BAD_CERT");
    assert.match(error.message, reason);
    return true;
  });
}

Deno.test("validatePeerCertificate() accepts our server and client certificates", async () => {
  const peer = await validatePeerCertificate(store, server, {
    role: "server",
    expectedName: "localhost",
  });
  assert.equal(peer.commonName, "server");
  assert.match(peer.fingerprint, /^[0-9a-f]{64}$/);
  assert.equal(peer.serial.length, 32);
  const byIp = await validatePeerCertificate(store, server, {
    role: "server",
    expectedName: "127.0.0.1",
  });
  assert.equal(byIp.fingerprint, peer.fingerprint);
  const user = await validatePeerCertificate(store, alice, {
    role: "client",
    expectedName: "alice",
  });
  assert.equal(user.commonName, "alice");
  assert.ok(user.notAfter > new Date());
});

Deno.test("validatePeerCertificate() accepts an openssl-made leaf with our profile", async () => {
  const peer = await validatePeerCertificate(store, await der(`${dir}/openssl-server.pem`), {
    role: "server",
    expectedName: "localhost",
  });
  assert.equal(peer.commonName, "openssl-server");
});

const tampered = server.slice();
tampered[tampered.length - 5] ^= 0x01;

const REJECTIONS: {
  name: string;
  cert: () => Promise<Uint8Array> | Uint8Array;
  opts: Parameters<typeof validatePeerCertificate>[2];
  reason: RegExp;
}[] = [
  {
    name: "a self-signed leaf",
    cert: () => der(`${dir}/selfsigned.pem`),
    opts: { role: "server", expectedName: "localhost" },
    reason: /not issued by a trusted CA/,
  },
  {
    name: "a leaf from another CA with the same name",
    cert: () => der(`${dir}/foreign.pem`),
    opts: { role: "server", expectedName: "localhost" },
    reason: /not issued by a trusted CA/,
  },
  {
    name: "an expired certificate",
    cert: () => server,
    opts: { role: "server", expectedName: "localhost", now: new Date(Date.now() + 31 * 24 * HOUR) },
    reason: /certificate has expired/,
  },
  {
    name: "a not-yet-valid certificate",
    cert: () => server,
    opts: { role: "server", expectedName: "localhost", now: new Date(Date.now() - HOUR) },
    reason: /certificate is not yet valid/,
  },
  {
    name: "a client certificate used as a server",
    cert: () => alice,
    opts: { role: "server", expectedName: "localhost" },
    reason: /not valid for serverAuth/,
  },
  {
    name: "a server certificate used as a client",
    cert: () => server,
    opts: { role: "client" },
    reason: /not valid for clientAuth/,
  },
  {
    name: "the CA certificate used as a leaf",
    cert: () => store.caDer,
    opts: { role: "server", expectedName: "localhost" },
    reason: /is a CA certificate, not an end-entity/,
  },
  {
    name: "a server name mismatch",
    cert: () => server,
    opts: { role: "server", expectedName: "evil.example.com" },
    reason: /does not match the server name "evil.example.com"/,
  },
  {
    name: "a user name mismatch",
    cert: () => alice,
    opts: { role: "client", expectedName: "bob" },
    reason: /is for user "alice", not "bob"/,
  },
  {
    name: "a tampered signature",
    cert: () => tampered,
    opts: { role: "server", expectedName: "localhost" },
    reason: /certificate has an invalid signature/,
  },
  {
    name: "an RSA key under 2048 bits",
    cert: () => der(`${dir}/weak-rsa.pem`),
    opts: { role: "server", expectedName: "localhost" },
    reason: /weak or odd-sized RSA key \(1024 bits\)/,
  },
  {
    name: "an unknown critical extension",
    cert: () => der(`${dir}/critical-ext.pem`),
    opts: { role: "server", expectedName: "localhost" },
    reason: /unknown critical extension 1\.2\.3\.4/,
  },
  {
    name: "keyUsage without digitalSignature",
    cert: () => der(`${dir}/no-digsig.pem`),
    opts: { role: "server", expectedName: "localhost" },
    reason: /lacks keyUsage digitalSignature/,
  },
  {
    name: "garbage DER",
    cert: () => Uint8Array.of(0x30, 0x03, 0x02, 0x01),
    opts: { role: "client" },
    reason: /malformed DER/,
  },
  {
    name: "enormous input",
    cert: () => new Uint8Array(MAX_CERTIFICATE_BYTES + 1),
    opts: { role: "client" },
    reason: /larger than 16 KiB/,
  },
];

for (const c of REJECTIONS) {
  Deno.test(`validatePeerCertificate() rejects ${c.name}`, async () => {
    await rejects(validatePeerCertificate(store, await c.cert(), c.opts), c.reason);
  });
}

Deno.test("validatePeerCertificate() rejects a revoked certificate once the CRL lists it", async () => {
  const mallory = await der(`${certs}/mallory.pem`);
  await validatePeerCertificate(store, mallory, { role: "client", expectedName: "mallory" });
  await revokeCertificates(certs, ca, "mallory", 30);
  const withCrl = await loadTrustStore(`${certs}/ca.pem`);
  assert.ok(withCrl.crl, "ca.crl beside ca.pem is loaded by default");
  await rejects(
    validatePeerCertificate(withCrl, mallory, { role: "client" }),
    /certificate is revoked/,
  );
  // Other certificates still pass under the CRL.
  await validatePeerCertificate(withCrl, alice, { role: "client", expectedName: "alice" });
  const late = new Date(Date.now() + 31 * 24 * HOUR);
  await rejects(
    validatePeerCertificate(withCrl, alice, { role: "client", now: late }),
    /has expired/,
  );
});

Deno.test("TrustStore.fromPem() rejects a tampered CRL and one from another CA", async () => {
  const caPem = await Deno.readTextFile(`${certs}/ca.pem`);
  await revokeCertificates(certs, ca, "mallory", 30);
  const crlPem = await Deno.readTextFile(`${certs}/ca.crl`);
  await opensslOk(dir, "crl", "-in", `${certs}/ca.crl`, "-out", "crl.der", "-outform", "DER");
  const crlDer = await Deno.readFile(`${dir}/crl.der`);
  crlDer[crlDer.length - 3] ^= 0x01;
  const forged = crlPem.replace(
    /-----BEGIN X509 CRL-----[\s\S]*-----END X509 CRL-----/,
    () =>
      `-----BEGIN X509 CRL-----\n${btoa(String.fromCharCode(...crlDer))}\n-----END X509 CRL-----`,
  );
  await rejects(TrustStore.fromPem(caPem, forged), /CRL signature is invalid/);
  const otherCa = await Deno.readTextFile(`${dir}/other.pem`);
  await rejects(
    TrustStore.fromPem(otherCa, crlPem),
    /CRL is not issued by the CA|CRL signature is invalid/,
  );
});

Deno.test("TrustStore.fromPem() refuses a leaf as the trusted CA", async () => {
  await rejects(TrustStore.fromPem(await Deno.readTextFile(`${certs}/server.pem`)), /is not a CA/);
});

Deno.test("validatePeerCertificate() needs expectedName for the server role", async () => {
  await assert.rejects(validatePeerCertificate(store, server, { role: "server" }), (e: unknown) => {
    return e instanceof SecureChatError && e.code === "INTERNAL";
  });
});

Deno.test("validatePeerCertificate() remembers a validated path, never its revocation, time or server name", async () => {
  await issueCertificate(certs, ca, {
    name: "carol",
    profile: "client",
    dns: [],
    ip: [],
    days: 30,
    keyType: "p256",
  }, false);
  const carol = await der(`${certs}/carol.pem`);
  const fresh = await TrustStore.fromPem(await Deno.readTextFile(`${certs}/ca.pem`));
  const first = await validatePeerCertificate(fresh, carol, { role: "client" });
  // The second use is the remembered path: the same (frozen) peer, with a fresh copy of the DER.
  const again = await validatePeerCertificate(fresh, carol.slice(), { role: "client" });
  assert.equal(again, first);
  assert.ok(Object.isFrozen(again));
  await rejects(
    validatePeerCertificate(fresh, carol, { role: "client", expectedName: "alice" }),
    /is for user "carol", not "alice"/,
  );
  // Outside the remembered validity the full validation runs and says why.
  await rejects(
    validatePeerCertificate(fresh, carol, {
      role: "client",
      now: new Date(Date.now() + 31 * 24 * HOUR),
    }),
    /has expired/,
  );
  await rejects(
    validatePeerCertificate(fresh, carol, { role: "client", now: new Date(Date.now() - 2 * HOUR) }),
    /is not yet valid/,
  );
  // A server certificate remembered for one name proves nothing for another.
  await validatePeerCertificate(fresh, server, { role: "server", expectedName: "localhost" });
  await rejects(
    validatePeerCertificate(fresh, server, { role: "server", expectedName: "evil.example.com" }),
    /does not match the server name "evil.example.com"/,
  );
  // A CRL adopted after the path was remembered applies at the next use.
  await revokeCertificates(certs, ca, "carol", 30);
  assert.notEqual(await fresh.updateCrl(await Deno.readTextFile(`${certs}/ca.crl`)), null);
  await rejects(
    validatePeerCertificate(fresh, carol, { role: "client" }),
    /certificate is revoked/,
  );
});

Deno.test("TrustStore keeps at most VALIDATED_CACHE_ENTRIES paths, the least recently used going first", async () => {
  const fresh = await TrustStore.fromPem(await Deno.readTextFile(`${certs}/ca.pem`));
  const peer = await validatePeerCertificate(fresh, alice, { role: "client" });
  const entry = { peer, validFrom: 0, validUntil: Number.MAX_SAFE_INTEGER };
  fresh.remember("oldest", entry);
  fresh.remember("kept", entry);
  for (let i = 0; i < VALIDATED_CACHE_ENTRIES - 2; i++) fresh.remember(`filler ${i}`, entry);
  assert.ok(fresh.recall("kept", alice, 0), "used again: now the most recent");
  fresh.remember("newest", entry);
  assert.equal(fresh.recall("oldest", alice, 0), undefined);
  assert.ok(fresh.recall("kept", alice, 0));
  assert.ok(fresh.recall("newest", alice, 0));
  assert.equal(fresh.recall("kept", server, 0), undefined, "another DER under the same key");
});
