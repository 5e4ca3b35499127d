#!/usr/bin/python3
"""Writes a client transcript of one lobby line and the client's receipt over it, signed by a
certificate that lapses in a minute, with the line dated `--line-after` seconds from now: a receipt
made after every line it covers, so (TRANSCRIPT §4.2 step 7) one covering a line dated, less the
5-minute skew, after its signer's certificate lapsed was signed with a lapsed certificate. Written
with client.py's own record, transcript and receipt code (TRANSCRIPT §2-§4).

Usage: late_receipt.py --certs DIR --out DIR --line-after SECONDS
DIR holds ca.pem/ca.key and server.pem; a client certificate `alice` lapsing in 60 s is issued
beside the transcript (tests/interop/issue.py). Prints the path of the `.log`.
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client as sc  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402


def der_of(pem_path):
    with open(pem_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--certs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--line-after", type=int, required=True)
    a = p.parse_args()
    os.makedirs(a.out, mode=0o700, exist_ok=True)
    base = os.path.join(a.out, "alice-short")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "issue.py"),
                    "--dir", a.certs, "--name", "alice", "--client", "--seconds", "60",
                    "--out", base], check=True)
    client_der, server_der = der_of(base + ".pem"), der_of(os.path.join(a.certs, "server.pem"))
    with open(base + ".key", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    session_id, now = os.urandom(16), sc.now_ms()
    t = sc.Transcript(a.out, session_id, now, "localhost", client_der, server_der)
    ts = now + a.line_after * 1000
    k = os.urandom(32)
    rec, _ = sc.make_record(key, session_id, "lobby", 1, ts,
                            sc.enc_json({"kind": "text", "text": "a line"}), k)
    (msg, group, _), = sc.author_msgs([(rec, k, None)])
    t.add("c2s", 1, ts, sc.msg_line(msg), sc.msg_line_enc(*group), records=[(1, ts, k)])
    th = t.final_hash()
    t.store_receipt(".receipt.json", {
        "type": "receipt", "version": 2, "session_id": session_id.hex(), "signer_role": "client",
        "signer": sc.fingerprint(client_der), "c2s_count": 1, "s2c_count": 0,
        "transcript_sha256": th.hex(),
        "sig": sc.b64e(sc.sign(key, sc.receipt_signed_input("client", th)))})
    print(t.base + ".log")


if __name__ == "__main__":
    main()
