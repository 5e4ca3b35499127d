#!/usr/bin/python3
"""Issues a certificate under a securechat CA, from docs/PKI.md "Profiles" alone, for interop tests
that need a certificate lapsing within seconds (`cert issue` counts whole days) or a large one.

Usage: issue.py --dir CERTS --name NAME (--server | --client) --seconds N [--out BASE]
                [--der-bytes SIZE]
Writes BASE.pem and BASE.key (0600; BASE defaults to DIR/NAME) for an Ed25519 key: the profile's
extensions (basicConstraints CA:FALSE, keyUsage digitalSignature, EKU serverAuth or clientAuth,
SAN DNS:localhost and IP:127.0.0.1 for a server, SKI, AKI = the CA's SKI), validity from 5 minutes
in the past to N seconds from now, a 16-octet serial with the top bit clear and the next set.
--der-bytes: a certificate of exactly SIZE bytes of DER (at most 16 KiB, PKI.md "Validation" step
1), made so by one more extension, non-critical and of an OID no profile names (step 3 refuses only
an unknown critical one), holding an OCTET STRING of zeros: the size a PROTOCOL §6.1 / §12.6 bound
turns on, on a certificate every other check passes.
"""

import argparse
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


# under 32473, the enterprise number RFC 5612 sets aside for documentation: an OID no profile of
# PKI.md names, so no validator understands it
PAD_OID = x509.ObjectIdentifier("1.3.6.1.4.1.32473.1")


def padded(builder, ca_key, algorithm, size):
    """The certificate of `builder` with a non-critical PAD_OID extension making its DER exactly
    `size` bytes (the padding's length fixes every other length, so one guess and a few tries
    around it find it when it exists)."""
    def made(pad):
        ext = x509.UnrecognizedExtension(PAD_OID, b"\x04\x82" + pad.to_bytes(2, "big") + bytes(pad))
        return builder.add_extension(ext, critical=False).sign(ca_key, algorithm)
    guess = size - len(made(256).public_bytes(serialization.Encoding.DER)) + 256
    for pad in range(max(256, guess - 8), guess + 9):
        cert = made(pad)
        if len(cert.public_bytes(serialization.Encoding.DER)) == size:
            return cert
    raise SystemExit(f"no certificate of exactly {size} bytes of DER")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--name", required=True)
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--server", action="store_true")
    role.add_argument("--client", action="store_true")
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("--out")
    p.add_argument("--der-bytes", type=int)
    a = p.parse_args()
    with open(os.path.join(a.dir, "ca.pem"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(a.dir, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.timezone.utc)
    serial = int.from_bytes(os.urandom(16), "big") & ~(1 << 127) | (1 << 126)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, a.name)]))
         .issuer_name(ca.subject)
         .public_key(key.public_key())
         .serial_number(serial)
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(seconds=a.seconds))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                      False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if a.server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]),
                        critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier(ca_ski.digest, None, None), critical=False))
    if a.server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = b.sign(ca_key, algorithm)
    if a.der_bytes:
        cert = padded(b, ca_key, algorithm, a.der_bytes)
    base = a.out or os.path.join(a.dir, a.name)
    with open(base + ".pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(base + ".key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


if __name__ == "__main__":
    main()
