"""ML-KEM-768 keygen + encaps + decaps through OpenSSL, for the setup bench's reference when the
`openssl` command predates ML-KEM (OpenSSL < 3.5): pyca/cryptography (>= 47) links its own OpenSSL,
which has it. Prints one JSON line: {"ms": mean ms per round trip, "openssl": version text}.

    python3 bench/_openssl_mlkem.py SECONDS
"""
import json
import sys
import time

from cryptography.hazmat.backends.openssl.backend import backend
from cryptography.hazmat.primitives.asymmetric import mlkem


def round_trip():
    key = mlkem.MLKEM768PrivateKey.generate()
    shared, ciphertext = key.public_key().encapsulate()
    if key.decapsulate(ciphertext) != shared:
        raise SystemExit("ML-KEM-768 round trip disagrees")


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    for _ in range(50):  # warm-up
        round_trip()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        round_trip()
        n += 1
    ms = 1000 * (time.perf_counter() - start) / n
    print(json.dumps({"ms": ms, "openssl": backend.openssl_version_text()}))


main()
