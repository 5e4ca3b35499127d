#!/usr/bin/python3
"""An auditor for `serve --keylog`, written from PROTOCOL §12.9 alone (as client.py).

  keylog.py proxy --to PORT --capture DIR
      A TCP forwarder on a free loopback port (printed as `PROXY <port>`) in front of the server:
      each connection's bytes go to DIR/<n>.c2s and DIR/<n>.s2c as they pass.
  keylog.py audit --keylog FILE --capture DIR [--canary TEXT ...]
      Opens every captured session with the key log (§12.9: H1 from the plaintext hello and
      server_hello, the handshake keys from hs, each direction switched to its APP_TRAFFIC_*_0
      secret after its second `finished`, advanced at each `key_update`) and prints one line per
      session record: `AUDIT <n> <dir> <type> to=<to> carrier=<k|ratchet|sender|->` (the records of a
      relay or of a client's msg one line each, §6.3, §6.4), where the
      carrier is what the server could use to read the record's body: `k` (readable), or the
      end-to-end envelope's kind. Then `CANARY <text> absent|FOUND` for each --canary: whether the
      text occurs anywhere in what the auditor (so the server) can read — the decrypted frames,
      and every body it can open with a `k`. Exit 1 if a session does not open.
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client as sc  # noqa: E402  (one home for every protocol step)


# ---------------------------------------------------------------- proxy

def proxy(args):
    os.makedirs(args.capture, exist_ok=True)
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"PROXY {listener.getsockname()[1]}", flush=True)
    n = 0
    while True:
        down, _ = listener.accept()
        n += 1
        up = socket.create_connection(("127.0.0.1", args.to))
        for src, dst, name in ((down, up, "c2s"), (up, down, "s2c")):
            threading.Thread(target=pipe, args=(src, dst, os.path.join(args.capture, f"{n}.{name}")),
                             daemon=True).start()


def pipe(src, dst, path):
    with open(path, "wb") as f:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                f.write(data)
                f.flush()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ---------------------------------------------------------------- audit

def frames(data):
    """The frames of a captured byte stream (§2: u32be length, payload); a cut-off tail is dropped."""
    out, i = [], 0
    while i + 4 <= len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        if i + 4 + length > len(data):
            break
        out.append(data[i + 4:i + 4 + length])
        i += 4 + length
    return out


def read_keylog(path):
    """§12.9: `<LABEL> <hex client hello nonce> <hex secret>` per line -> {nonce: {label: secret}}."""
    secrets = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                raise sc.ProtoError("PROTOCOL_ERROR", f"key log line {line!r}")
            secrets.setdefault(parts[1], {})[parts[0]] = bytes.fromhex(parts[2])
    return secrets


class Direction:
    """One direction of a captured session: handshake keys, then APP_TRAFFIC_<dir>_0 after the
    direction's second `finished`, advanced at each `key_update` (§12.9)."""

    def __init__(self, hs, h1, name, app0):
        self.rec = sc.RecordDirection(sc.expand_label(hs, f"hs {name} key", h1, sc.RECORD_KEY_BYTES),
                                      sc.expand_label(hs, f"hs {name} iv", h1, 12))
        self.app0, self.finished = app0, 0

    def open(self, payload):
        """The record's messages, [(content, parsed)], in order (§3.2: one or more per record; a
        `key_update` is the last of its record, and the next record is under the new key); a
        relay in its JSON form (§6.4), each item with its carrier."""
        got = []
        for content in self.rec.open(payload):
            msg = sc.parse_content(content)  # §3.3: JSON, or a relay in its binary layout (§6.4)
            got.append((content, msg))
            if msg["type"] == "finished":
                self.finished += 1
                if self.finished == 2:
                    self.rec.switch(self.app0)
            elif msg["type"] == "key_update":
                self.rec.update()
        return got


def carrier(item):
    if "e2e" in item and isinstance(item["e2e"], dict):
        return str(item["e2e"].get("kind"))
    return "k" if "k" in item else "-"


def readable_body(item):
    """The body the server can read: ct opened with the record's `k` (§6.1), else None."""
    if "k" not in item or "record" not in item:
        return None
    rec = sc.parse_record(item["record"])
    return sc.check_content(rec, sc.b64d(item["k"], size=32))


def carried(msg):
    """The records a message carries, each beside its content key's carrier: a server's `msg` or
    a `stored` carries one; a `relay` or a client's `msg` one or more, each an item of its
    `records` (§6.3, §6.4)."""
    if msg["type"] == "relay" or (msg["type"] == "msg" and "records" in msg):
        return [item for item in msg.get("records", []) if isinstance(item, dict)]
    return [msg] if msg["type"] in ("msg", "stored") else []


def audit_session(n, c2s, s2c, secrets, seen_text):
    hello, server_hello = c2s[0], s2c[0]
    nonce = base64.b64decode(json.loads(hello)["nonce"]).hex()
    keys = secrets.get(nonce)
    if keys is None:
        raise sc.ProtoError("PROTOCOL_ERROR", f"session {n}: no key log lines for nonce {nonce}")
    hs = keys["HANDSHAKE_SECRET"]
    h1 = sc.handshake_hash([hello, server_hello])
    seen_text.append(hello + server_hello)
    for name, captured in (("c2s", c2s), ("s2c", s2c)):
        d = Direction(hs, h1, name, keys[f"APP_TRAFFIC_{name.upper()}_0"])
        for payload in captured[1:]:
            for content, msg in d.open(payload):
                seen_text.append(content)
                for item in carried(msg):
                    body = readable_body(item)
                    if body is not None:
                        seen_text.append(body)
                    to = item["record"]["to"]
                    print(f"AUDIT {n} {name} {msg['type']} to={to} carrier={carrier(item)}",
                          flush=True)


def audit(args):
    secrets = read_keylog(args.keylog)
    seen_text = []
    names = sorted({int(f.split(".")[0]) for f in os.listdir(args.capture)})
    for n in names:
        data = {}
        for name in ("c2s", "s2c"):
            with open(os.path.join(args.capture, f"{n}.{name}"), "rb") as f:
                data[name] = frames(f.read())
        if not data["c2s"] or not data["s2c"]:
            continue  # a connection that never got to a handshake
        audit_session(n, data["c2s"], data["s2c"], secrets, seen_text)
        print(f"SESSION {n} opened", flush=True)
    everything = b"".join(seen_text)
    for canary in args.canary:
        print(f"CANARY {canary} {'FOUND' if canary.encode() in everything else 'absent'}",
              flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description="serve --keylog auditor (PROTOCOL §12.9)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("proxy")
    pp.add_argument("--to", type=int, required=True)
    pp.add_argument("--capture", required=True)
    pa = sub.add_parser("audit")
    pa.add_argument("--keylog", required=True)
    pa.add_argument("--capture", required=True)
    pa.add_argument("--canary", action="append", default=[])
    args = p.parse_args()
    if args.cmd == "proxy":
        return proxy(args)
    try:
        return audit(args)
    except sc.ProtoError as e:
        print(f"ERROR {e.code} {e.detail}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
