#!/usr/bin/python3
"""Signs a CRL under a securechat CA, from docs/PKI.md "CRL" alone, for interop tests that need a
revocation at a chosen time or a CRL already past its nextUpdate (`cert revoke` dates an entry now
and `cert crl` always writes a fresh nextUpdate).

Usage: crl.py --dir CERTS --out FILE [--revoke PEM --at MS ...] [--next-update-in SECONDS]
Writes a v2 CRL signed by DIR/ca.key: thisUpdate now less 10 minutes, nextUpdate now plus SECONDS
(default 30 days; negative for a stale CRL), cRLNumber 1, authorityKeyIdentifier = the CA's SKI,
one entry per --revoke with revocationDate = its --at (milliseconds since the epoch).
"""

import argparse
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def at_ms(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--revoke", action="append", default=[])
    p.add_argument("--at", action="append", type=int, default=[])
    p.add_argument("--next-update-in", type=int, default=30 * 24 * 3600)
    a = p.parse_args()
    if len(a.revoke) != len(a.at):
        p.error("one --at per --revoke")
    with open(os.path.join(a.dir, "ca.pem"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(a.dir, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(ca.subject)
         .last_update(now - datetime.timedelta(minutes=10))
         .next_update(now + datetime.timedelta(seconds=a.next_update_in))
         .add_extension(x509.CRLNumber(1), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier(ca_ski.digest, None, None), critical=False))
    for pem, ms in zip(a.revoke, a.at):
        with open(pem, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                      .serial_number(cert.serial_number)
                                      .revocation_date(at_ms(ms)).build())
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    with open(a.out, "wb") as f:
        f.write(b.sign(ca_key, algorithm).public_bytes(serialization.Encoding.PEM))


if __name__ == "__main__":
    main()
