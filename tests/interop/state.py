#!/usr/bin/python3
"""Opens a device's end-to-end state file with PROTOCOL §12.7 alone (written from the docs, as
client.py): scrypt from the password, AES-256-GCM with aad `securechat/e2e state`.

Usage: state.py FILE --password-env VAR
Prints `STATE OK <the inner JSON's top-level member names, sorted>` (the content is not part of
§12.7's format: interop finding 41), or `STATE ERROR <code>` and exits 1.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client as sc  # noqa: E402  (one home for §12.7's envelope: client.open_state)


def main():
    p = argparse.ArgumentParser(description="open a §12.7 end-to-end state file")
    p.add_argument("file")
    p.add_argument("--password-env", required=True)
    args = p.parse_args()
    password = os.environ.get(args.password_env)
    if password is None:
        sys.exit(f"${args.password_env} is not set")
    try:
        state = sc.open_state(args.file, password)
    except sc.ProtoError as e:
        sc.log(f"error: {e.code}: {e.detail}")
        print(f"STATE ERROR {e.code}")
        return 1
    print("STATE OK " + ",".join(sorted(state)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
