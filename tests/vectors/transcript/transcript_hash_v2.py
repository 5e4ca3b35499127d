#!/usr/bin/env python3
"""Transcript hash v2 (docs/TRANSCRIPT.md section 3, transcript format 7), written from the spec text alone.

  python3 transcript_hash_v2.py vector > hash_v2.json   # the synthetic vector
  python3 transcript_hash_v2.py log FILE.log            # prints the hash of a transcript
"""
import base64, hashlib, json, struct, sys

u8 = lambda x: struct.pack(">B", x)
u32 = lambda x: struct.pack(">I", x)
u64 = lambda x: struct.pack(">Q", x)
DIR = {"c2s": 1, "s2c": 2}


def record_enc(r):
    to = r["to"].encode()
    ct = base64.b64decode(r["ct"], validate=True)
    sig = base64.b64decode(r["sig"], validate=True) if "sig" in r else b""
    # the record's batch (PROTOCOL 6.1): i, n, the path's length and entries; zeros without one
    batch = r.get("batch", {"i": 0, "n": 0, "path": []})
    path = [base64.b64decode(p, validate=True) for p in batch["path"]]
    return (bytes.fromhex(r["sid"]) + u8(DIR[r["dir"]]) + u32(len(to)) + to + u64(r["seqno"])
            + u64(r["ts"]) + u32(len(ct)) + ct + base64.b64decode(r["c"], validate=True)
            + u32(len(sig)) + sig + u32(batch["i"]) + u32(batch["n"]) + u8(len(path))
            + b"".join(path))


def group_enc(l):
    # the batch's sig, first, n and proof once, then each item's record (PROTOCOL 6.3, 6.4)
    sig = base64.b64decode(l["sig"], validate=True)
    proof = [base64.b64decode(p, validate=True) for p in l["proof"]]
    return (u32(len(sig)) + sig + u64(l["first"]) + u32(l["n"]) + u8(len(proof))
            + b"".join(proof) + u8(len(l["records"]))
            + b"".join(record_enc(item["record"]) for item in l["records"]))


def group_digest(l):
    # format 7: a group's line holds SHA-256 of its group_enc (section 3.1)
    return hashlib.sha256(group_enc(l)).digest()


def line_enc(l):
    if l["type"] == "msg":
        # a user's msg line is a group (tag 6), the server's one record (tag 1)
        return b"\x06" + group_digest(l) if l["dir"] == "c2s" else b"\x01" + record_enc(l["record"])
    if l["type"] in ("relay", "stored"):
        # the author certificate's fingerprint; the certificate only where it was introduced
        cert = base64.b64decode(l["cert"], validate=True) if "cert" in l else b""
        head = (b"\x02" if l["type"] == "relay" else b"\x05") + u64(l["seqno"]) + u64(l["ts"]) \
            + bytes.fromhex(l["author_fp"]) + u32(len(cert)) + cert
        if l["type"] == "stored":
            return head + record_enc(l["record"])
        return head + group_digest(l)
    if l["type"] == "queued":
        return b"\x04" + u64(l["seqno"]) + u64(l["ts"]) + u64(l["of"])
    code = l["code"].encode()
    return b"\x03" + u64(l["seqno"]) + u64(l["ts"]) + u64(l["of"]) + u32(len(code)) + code


def seqnos(l):
    """The seqnos a line takes: a user's msg line its records' (section 2.2), any other one."""
    if l["type"] == "msg" and l["dir"] == "c2s":
        return [item["record"]["seqno"] for item in l["records"]]
    return [l["record"]["seqno"] if l["type"] == "msg" else l["seqno"]]


def transcript_hash(header, lines):
    d = {}
    n = {}
    for direction in ("c2s", "s2c"):
        mine = sorted((l for l in lines if l["dir"] == direction), key=lambda l: seqnos(l)[0])
        # the count is the last seqno of the direction (section 3.2), not its number of lines
        n[direction] = seqnos(mine[-1])[-1] if mine else 0
        d[direction] = hashlib.sha256(b"".join(line_enc(l) for l in mine)).digest()
    fp = lambda b64: hashlib.sha256(base64.b64decode(b64)).digest()
    final = (b"securechat/v2 transcript\x00" + u32(header["protocol_version"])
             + bytes.fromhex(header["session_id"]) + u64(header["session_time"])
             + fp(header["client_cert"]) + fp(header["server_cert"])
             + u64(n["c2s"]) + d["c2s"] + u64(n["s2c"]) + d["s2c"])
    return hashlib.sha256(final).hexdigest(), d, n


def vector():
    b64 = lambda b: base64.b64encode(b).decode()
    sid = bytes(range(16)).hex()
    header = {"protocol_version": 2, "session_id": sid, "session_time": 1767225600000,
              "client_cert": b64(b"client certificate DER (opaque to the hash)"),
              "server_cert": b64(b"server certificate DER (opaque to the hash)")}
    # a signed record is leaf i of a batch of n with a path of made-up hashes (opaque to the hash)
    rec = lambda d, to, s, ts, batch: dict(
        {"sid": sid if d == "c2s" or to.startswith("user:") else "ab" * 16, "dir": d, "to": to,
         "seqno": s, "ts": ts, "ct": b64(bytes([s]) * (16 + s)), "c": b64(bytes([0xc0 + s]) * 32)},
        **({"sig": b64(bytes([0x55]) * 64),
            "batch": {"i": batch[0], "n": batch[1],
                      "path": [b64(bytes([0xa0 + s + j]) * 32) for j in range(batch[2])]}}
           if batch else {}))
    bob = lambda to, s, ts, batch: dict(rec("c2s", to, s, ts, batch), sid="cd" * 16)
    bob_fp = hashlib.sha256(b"bob's certificate").hexdigest()
    # a relay (format 5): records without sig and batch; the batch's sig, first, n, proof once
    relay = lambda s, ts, cert, first, n, proof, records: dict(
        {"dir": "s2c", "type": "relay", "seqno": s, "ts": ts, "author_fp": bob_fp},
        **({"cert": b64(b"bob's certificate")} if cert else {}),
        sig=b64(bytes([0x66]) * 64), first=first, n=n,
        proof=[b64(bytes([0xe0 + j]) * 32) for j in range(proof)],
        records=[{"record": r} for r in records])
    # a user's msg (format 6 on): the relay's group members without the hop and the author
    msg = lambda first, n, proof, records: {
        "dir": "c2s", "type": "msg", "sig": b64(bytes([0x77 + first]) * 64), "first": first,
        "n": n, "proof": [b64(bytes([0xd0 + first + j]) * 32) for j in range(proof)],
        "records": [{"record": r} for r in records]}
    lines = [
        msg(1, 2, 0, [rec("c2s", "lobby", 1, 1767225600100, None),
                      rec("c2s", "user:bob", 2, 1767225600100, None)]),
        {"dir": "s2c", "type": "msg", "record": rec("s2c", "user:alice", 1, 1767225600101, None)},
        relay(2, 1767225600200, True, 7, 3, 1,
              [bob("lobby", 7, 1767225600150, None), bob("user:alice", 8, 1767225600150, None)]),
        # one batch of 3 in two msgs (records 3-4, then 5), each with its own proof
        msg(3, 3, 1, [rec("c2s", "server", 3, 1767225600300, None),
                      rec("c2s", "lobby", 4, 1767225600300, None)]),
        {"dir": "s2c", "type": "refused", "seqno": 3, "ts": 1767225600301, "of": 4,
         "code": "RATE_LIMITED"},
        msg(3, 3, 1, [rec("c2s", "lobby", 5, 1767225600302, None)]),
        relay(4, 1767225600400, False, 7, 3, 1, [bob("lobby", 9, 1767225600150, None)]),
        {"dir": "s2c", "type": "stored", "seqno": 5, "ts": 1767225600500, "author_fp": bob_fp,
         "record": bob("user:alice", 3, 1767225000000, (1, 2, 1))},
    ]
    h, d, n = transcript_hash(header, lines)
    empty, _, _ = transcript_hash(header, [])
    return {"description": "Transcript hash v2 of transcript format 7 (docs/TRANSCRIPT.md section 3: relay lines and "
                           "the client's msg lines carry a group, hashed as its digest; the c2s count is its last seqno), computed "
                           "independently in Python (transcript_hash_v2.py) from the spec text",
            **header, "lines": lines, "c2s_count": n["c2s"], "s2c_count": n["s2c"],
            "d_c2s": d["c2s"].hex(), "d_s2c": d["s2c"].hex(), "transcript_sha256": h,
            "empty_transcript_sha256": empty}


if __name__ == "__main__":
    if sys.argv[1] == "vector":
        print(json.dumps(vector(), indent=2))
    else:
        text = open(sys.argv[2]).read().split("\n")[:-1]
        print(transcript_hash(json.loads(text[0]), [json.loads(l) for l in text[1:]])[0])
