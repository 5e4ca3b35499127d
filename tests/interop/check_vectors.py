#!/usr/bin/python3
"""Checks tests/vectors/protocol (PROTOCOL §9) with the clean-room client alone.

For each scenario file, two independent passes:

1. Recompute. From the recorded inputs and frames: both ephemeral public keys, ss1 from either
   side, H1, the handshake keys; open every sealed frame with the key and counter its position
   implies, check its padding and re-seal it to the recorded payload byte for byte; every handshake
   hash, both certificate_verify signatures (verified, and recomputed byte for byte: Ed25519 and
   RSA PKCS#1 v1.5 are deterministic), all four Finished MACs, ss2, master, Hfinal, session_id,
   the application keys and the key update; every message record's ek, ct, c, statement, leaf hash,
   root, batch statement and signature (PROTOCOL §6.1), and every batch's paths rebuilt.
2. Replay. The client state machine of client.py, given the vector's nonce, ephemeral keys, clock
   and content keys, reads the recorded server frames and must write the recorded client frames
   byte for byte.

Then negative.json's cases whose target is the client (`s2c …`) run against the replayed client;
the `c2s …` cases target a server and are run by probe.py against a real one.

Then tests/vectors/e2e (PROTOCOL §12.8): every value of pqxdh.json, ratchet.json and
sender_keys.json recomputed from client.py's §12 primitives (each wrap also opened by the other
side), and the §12 rejections (tampered kem_ct, moved or replayed wraps, bounds) built on their
inputs, each with its code.

Then batches.json (PROTOCOL §6.1): its batch of 5 recomputed (leaves, subtrees, paths, root,
batch statement, signature), and each case refused with its code live and in a file; its relays
(PROTOCOL §6.4): each group's root from its records and proof, the proof a server makes, each
record's path back, and each relay case with its code live and in a file (RELAYS lines). Then
tests/vectors/transcript/hash_v2.json (TRANSCRIPT §3): digests and hashes from its lines; and
golden.log's lines opened under golden.keys (TRANSCRIPT §6, the content cipher of PROTOCOL §6.1).

Usage: check_vectors.py [DIR [E2E_DIR]]   (defaults: ../vectors/protocol and ../vectors/e2e)
Prints one line per scenario and per case; exit 0 only if every check passed.
"""

import argparse
import base64
from collections import deque
import hashlib
import json
import os
import struct
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client as sc  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402


class Mismatch(Exception):
    pass


def unhex(s):
    return bytes.fromhex(s)


CHECKED = [0]  # every value compared against the vector, for the summary line


def eq(what, got, want):
    CHECKED[0] += 1
    if got != want:
        g = got.hex() if isinstance(got, bytes) else got
        w = want.hex() if isinstance(want, bytes) else want
        raise Mismatch(f"{what}: computed {str(g)[:96]}, recorded {str(w)[:96]}")


def cert_der(pem):
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


def private_key(pem):
    return serialization.load_pem_private_key(pem.encode(), None)


# ---------------------------------------------------------------- pass 1: recompute

# README: phase 1 uses the RFC 7748 §6.1 and RFC 5903 §8.1 test keys, whose shared secrets are
# published (X25519: K; P-256: the x-coordinate of the shared point).
PUBLISHED_SS1 = {
    "x25519": "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    "p256": "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de",
}

def recompute(v):
    """Recomputes the session of scenario `v` from its inputs and frames."""
    inp, pki, group = v["inputs"], v["inputs"]["pki"], v["inputs"]["group"]
    frames = v["frames"]

    hybrid = group == sc.HYBRID

    # The fixed inputs are what README.md says they are (it says nothing of the hybrid's
    # ML-KEM seeds: interop finding 17).
    for side in ("client", "server"):
        eq(f"{side} nonce derivation", unhex(inp[side]["nonce"]),
           hashlib.sha256(f"{side} nonce".encode()).digest())
        eq(f"{side} eph2 derivation", unhex(inp[side]["eph2_private"]),
           hashlib.sha256(f"securechat/v2 test vector {group} {side} eph2".encode()).digest())
    for r in v["records"]:
        eq(f"record {r['name']} k derivation", unhex(r["k"]),
           hashlib.sha256(f"securechat/v2 test vector k {r['name']}".encode()).digest())

    def phase_group(phase):
        """Phase 2 runs the group's phase 2 group: the hybrid's X25519 half (§4.2)."""
        return group if phase == 1 else sc.phase2_group(group)

    def client_share(phase):
        return sc.KeyShare(phase_group(phase), unhex(inp["client"][f"eph{phase}_private"]))

    def server_answer(phase, client_pub):
        """The server's share and secret for `client_pub` (§4.5: every group is a KEM)."""
        private = unhex(inp["server"][f"eph{phase}_private"])
        if phase_group(phase) == sc.HYBRID:  # private = m || X25519 scalar (finding 17)
            return sc.hybrid_respond(client_pub, private)
        share = sc.KeyShare(phase_group(phase), private)
        return share.pub, share.agree(client_pub)

    def exchange(phase, client_pub_wire, server_pub_wire, what):
        """Checks both shares on the wire against the inputs; returns the secret, derived by the
        client from the server's share and by the server from the client's: they must agree."""
        mine = client_share(phase)
        eq(f"{what} client share", client_pub_wire, mine.pub)
        server_pub, server_ss = server_answer(phase, client_pub_wire)
        eq(f"{what} server share", server_pub_wire, server_pub)
        for side, pub in (("client", mine.pub), ("server", server_pub)):
            if "eph_public" in inp[side]:
                eq(f"{what} {side} eph_public", pub, unhex(inp[side]["eph_public"][phase - 1]))
        ss = mine.agree(server_pub_wire)
        eq(f"{what} secret from the server's side", server_ss, ss)
        return ss

    hello, sh = unhex(frames[0]["payload_hex"]), unhex(frames[1]["payload_hex"])
    h, s = sc.parse_json(hello), sc.parse_json(sh)
    eq("hello nonce", sc.b64d(h["nonce"]), unhex(inp["client"]["nonce"]))
    eq("hello groups", h["groups"], inp["client_groups"])
    eq("server_hello nonce", sc.b64d(s["nonce"]), unhex(inp["server"]["nonce"]))
    eq("server_hello time", s["time"], v["session_time"])
    ss1 = exchange(1, sc.b64d(h["key_share"]["pub"]), sc.b64d(s["key_share"]["pub"]), "phase 1")
    # the X25519 (or P-256) half of ss1 is the published answer of the RFC test keys
    eq("ss1 is the published answer", ss1[-32:].hex(), PUBLISHED_SS1[
        "x25519" if hybrid else group])
    hashed = [hello, sh]
    hs = sc.HandshakeSecrets(ss1, sc.handshake_hash(hashed))

    # Every sealed frame, per direction, under the key its position implies (§3.2, §5).
    dirs = {"c2s": sc.RecordDirection(hs.key_c2s, hs.iv_c2s),
            "s2c": sc.RecordDirection(hs.key_s2c, hs.iv_s2c)}
    contents = {}

    def open_all(f):
        """Every message of frame f's record (§3.2: one or more), re-sealed byte for byte."""
        d = dirs[f["dir"]]
        n, payload = d.n, unhex(f["payload_hex"])
        opened = d.open(payload)
        inner = sc.pad_inner(*opened)
        eq(f"frame {f['index']} re-sealed", d.aead.encrypt(sc.counter_nonce(d.iv, n), inner,
                                                            sc.RECORD_AAD), payload)
        if f.get("counter") is not None:
            eq(f"frame {f['index']} counter", n, f["counter"])
        if "contents_hex" in f:  # a record of several messages (interop finding 67)
            eq(f"frame {f['index']} contents", opened, [unhex(c) for c in f["contents_hex"]])
        elif f.get("content_hex"):
            eq(f"frame {f['index']} content", opened, [unhex(f["content_hex"])])
        contents[f["index"]] = opened
        return opened

    def open_frame(f):
        """A frame that holds exactly one message (every handshake record, §3.2)."""
        opened = open_all(f)
        if len(opened) != 1:
            raise Mismatch(f"frame {f['index']}: {len(opened)} messages in one record")
        return opened[0], sc.parse_json(opened[0])

    server_der, client_der = cert_der(pki["server_cert_pem"]), cert_der(pki["client_cert_pem"])
    server_key, client_key = private_key(pki["server_key_pem"]), private_key(pki["client_key_pem"])
    it = iter(frames[2:])

    def next_msg(direction, msg_type):
        f = next(it)
        eq(f"frame {f['index']} direction", f["dir"], direction)
        content, m = open_frame(f)
        eq(f"frame {f['index']} type", m["type"], msg_type)
        return content, m

    def check_sig(content, m, key, label, what):
        signed = label + b"\x00" + sc.handshake_hash(hashed)
        pub = key.public_key()
        if not sc.verify(pub, sc.b64d(m["sig"]), signed):
            raise Mismatch(f"{what} does not verify")
        eq(f"{what} recomputed", sc.b64d(m["sig"]), sc.sign(key, signed))
        hashed.append(content)

    def check_mac(content, m, key, what):
        eq(what, sc.b64d(m["mac"]), sc.finished_mac(key, sc.handshake_hash(hashed)))
        hashed.append(content)

    content, m = next_msg("s2c", "certificate")
    eq("server certificate", sc.b64d(m["cert"]), server_der)
    hashed.append(content)
    check_sig(*next_msg("s2c", "certificate_verify"), server_key, sc.SERVER_SIG_LABEL,
              "server certificate_verify")
    check_mac(*next_msg("s2c", "finished"), hs.fin_server, "server finished")
    content, m = next_msg("c2s", "certificate")
    eq("client certificate", sc.b64d(m["cert"]), client_der)
    hashed.append(content)
    check_sig(*next_msg("c2s", "certificate_verify"), client_key, sc.CLIENT_SIG_LABEL,
              "client certificate_verify")
    check_mac(*next_msg("c2s", "finished"), hs.fin_client, "client finished")
    creds = inp["credentials"]
    _, m = next_msg("c2s", creds["mode"])  # not hashed (§5 client step 7)
    eq("credentials", {k: m[k] for k in m if k != "type"},
       {k: creds[k] for k in creds if k != "mode"})
    content, m = next_msg("s2c", "auth_ok")
    eq("auth_ok", (m["username"], m["registered"]), (creds["username"], creds["mode"] == "register"))
    hashed.append(content)
    content, m = next_msg("c2s", "dh_client")
    dh_client = sc.b64d(m["key_share"]["pub"])
    hashed.append(content)
    content, m = next_msg("s2c", "dh_server")
    ss2 = exchange(2, dh_client, sc.b64d(m["key_share"]["pub"]), "phase 2")
    hashed.append(content)
    ms = sc.MasterSecrets(hs.hs, ss2)
    check_mac(*next_msg("s2c", "finished"), ms.fin2_server, "server phase 2 finished")
    hfinal = sc.handshake_hash(hashed)
    ms.application(hfinal)
    eq("session_id", ms.session_id.hex(), v["session_id"])
    dirs["s2c"].switch(ms.app_s2c_0)
    _, m = next_msg("c2s", "finished")
    eq("client phase 2 finished", sc.b64d(m["mac"]), sc.finished_mac(ms.fin2_client, hfinal))
    dirs["c2s"].switch(ms.app_c2s_0)
    eq("handshake frames", (max(i for i in contents if frames[i]["dir"] == "c2s"),
                            max(i for i in contents if frames[i]["dir"] == "s2c")),
       (v["handshake_frames"]["c2s_last"], v["handshake_frames"]["s2c_last"]))

    # Session frames: app0, then app1 after a key_update (§4.3, §4.4).
    for f in it:
        epoch = "app1" if f["dir"] == "c2s" and dirs["c2s"].secret != ms.app_c2s_0 else "app0"
        eq(f"frame {f['index']} key", epoch, f["key"])
        for content in open_all(f):
            if sc.parse_content(content)["type"] == "key_update":  # the last of its record (§3.2)
                dirs[f["dir"]].update()

    # Message records (§6.1): each c2s record's statement, leaf, path to its batch's root, batch
    # statement and signature; every batch whose records are all here, its tree rebuilt.
    batches = {}
    for r in v["records"]:
        k, body, rec = unhex(r["k"]), r["body"].encode(), sc.parse_record(r["record"])
        eq(f"record {r['name']} ek", sc.content_key(k), unhex(r["ek"]))
        eq(f"record {r['name']} ct", rec["ct"], sc.seal_body(k, body))
        eq(f"record {r['name']} c", rec["c"], sc.commitment(k, body))
        eq(f"record {r['name']} opens", sc.check_content(rec, k), body)
        if rec["dir"] == "c2s":
            st = sc.statement(rec)
            eq(f"record {r['name']} statement", st, unhex(r["statement_hex"]))
            eq(f"record {r['name']} leaf_hash", sc.leaf_hash(st), unhex(r["leaf_hash"]))
            i, n, path = rec["batch"]
            eq(f"record {r['name']} root", sc.root_from_path(sc.leaf_hash(st), i, n, path),
               unhex(r["root"]))
            bst = sc.batch_of(rec)
            eq(f"record {r['name']} batch statement", bst, unhex(r["batch_statement_hex"]))
            if not sc.BatchCache().check("client", client_key.public_key(), rec):
                raise Mismatch(f"record {r['name']} batch signature does not verify")
            eq(f"record {r['name']} signature recomputed", rec["sig"], sc.sign(client_key, bst))
            batches.setdefault((rec["seqno"] - i, n, rec["sig"]), {})[i] = (st, path)
        else:
            eq(f"record {r['name']} unsigned", (rec["sig"], rec["batch"], r["statement_hex"]),
               (None, None, None))
        # the record travels byte for byte in a msg of a frame: the server's whole, a client's in
        # the group of a msg (PROTOCOL §6.3) without its sig and batch, which the msg carries once
        if not any(_travels(r["record"], sc.parse_content(c))
                   for opened in contents.values() for c in opened):
            raise Mismatch(f"record {r['name']} is in no frame")
    for (first, n, _), leaves in sorted(batches.items()):
        if len(leaves) == n:
            hashes = [sc.leaf_hash(leaves[i][0]) for i in range(n)]
            for i in range(n):
                eq(f"batch {first}+{n} path of leaf {i}", sc.inclusion_path(i, hashes),
                   leaves[i][1])


def _travels(record, m):
    """True when the message `m` carries `record` (JSON, as its author signed it): an s2c msg the
    record itself; a client's msg (§6.3) the record without `sig` and `batch` among its items, with
    the record's `sig` and its batch's `first` and `n` once for the group."""
    if m.get("type") != "msg":
        return False
    if "record" in m:
        return m["record"] == record
    bare = {key: v for key, v in record.items() if key not in ("sig", "batch")}
    batch = record.get("batch") or {}
    return (any(item.get("record") == bare for item in m.get("records", ()))
            and (m.get("sig"), m.get("first"), m.get("n"))
            == (record.get("sig"), record["seqno"] - batch.get("i", 0), batch.get("n")))


# ---------------------------------------------------------------- pass 2: replay the client

class FakeSock:
    def __init__(self):
        self.sent = []

    def sendall(self, data):
        (n,) = struct.unpack(">I", data[:4])
        assert n == len(data) - 4
        self.sent.append(data[4:])


class FakeConn:
    """Serves the recorded server frames in order; collects what the client writes."""

    def __init__(self, s2c_payloads):
        self.sock = FakeSock()
        self.send_lock = threading.Lock()
        self.incoming = list(s2c_payloads)

    def read_frame(self):
        if not self.incoming:
            raise sc.ProtoError("PROTOCOL_ERROR", "connection closed by the peer")
        return self.incoming.pop(0)

    def write_frame(self, payload):
        self.sock.sent.append(payload)

    def send_locked(self, data):
        self.sock.sendall(data)


class VectorClient(sc.Client):
    """client.py's Client with the vector's randomness and clock."""

    def __init__(self, v, workdir):
        inp, pki = v["inputs"], v["inputs"]["pki"]
        files = {}
        for name in ("ca_cert", "client_cert", "client_key"):
            path = os.path.join(workdir, name + ".pem")
            with open(path, "w") as f:
                f.write(pki[name + "_pem"])
            files[name] = path
        creds = inp["credentials"]
        os.environ["SC_VECTOR_PASSWORD"] = creds["password"]
        args = argparse.Namespace(
            host=None, port=None, ca=files["ca_cert"], cert=files["client_cert"],
            key=files["client_key"], user=creds["username"], password_env="SC_VECTOR_PASSWORD",
            register=creds.get("email") if creds["mode"] == "register" else None,
            server_name=pki["server_name"], group=inp["group"], transcripts=None,
            key_update_every=0)
        super().__init__(args)
        self.v = v
        self.clock = inp["time"]
        # In the order the client asks: the hello nonce, then one content key per c2s record.
        self.randomness = [unhex(inp["client"]["nonce"])] + [
            unhex(r["k"]) for r in v["records"] if r["record"]["dir"] == "c2s"]

    def now(self):
        return self.clock

    def random(self, n):
        if not self.randomness or len(self.randomness[0]) != n:
            raise AssertionError(f"unexpected request for {n} random bytes")
        return self.randomness.pop(0)

    def offered_groups(self):
        return self.v["inputs"]["client_groups"]

    def ephemeral(self, phase):
        group = self.group if phase == 1 else sc.phase2_group(self.group)
        return sc.KeyShare(group, unhex(self.v["inputs"]["client"][f"eph{phase}_private"]))


def replay(v, workdir, s2c_override=None, stop_after_handshake=False):
    """Runs the client against the recorded server frames; returns (client, frames it wrote).
    s2c_override maps a frame index to a replacement payload."""
    frames = v["frames"]
    s2c = [unhex((s2c_override or {}).get(f["index"], f["payload_hex"]))
           for f in frames if f["dir"] == "s2c"]
    c = VectorClient(v, workdir)
    c.conn = FakeConn(s2c)
    c.handshake()
    if stop_after_handshake:
        return c, c.conn.sock.sent
    # The session part, frame by frame in the recorded order.
    records = {(r["record"]["dir"], r["record"]["seqno"]): r for r in v["records"]}
    handlers = {"msg": c.on_msg, "relay": c.on_relay, "refused": c.on_refused,
                "close": c.on_close, "receipt": c.on_receipt}
    for f in frames[v["handshake_frames"]["c2s_last"] + 1:]:
        if "contents_hex" in f and f["dir"] != "c2s":
            raise Mismatch(f"frame {f['index']}: an s2c record of several messages")
        wants = [sc.parse_content(unhex(c)) for c in f.get("contents_hex", [f["content_hex"]])]
        if f["dir"] == "c2s" and all(w["type"] == "msg" for w in wants):
            # our records, one signed batch: its msgs (§6.3: one when it fits) in this record
            for want in wants:
                for item in want["records"]:
                    r = records[("c2s", item["record"]["seqno"])]
                    c.clock = r["record"]["ts"]
                    c.send_record(r["record"]["to"],
                                  sc.parse_json(r["body"].encode(), tag="kind"), hold=True)
            c.flush()
            continue
        want = wants[0]
        if f["dir"] == "s2c":
            _, m = c.read_content()
            if m["type"] == "key_update":
                c.rx.update()
                continue
            if "record" in m:
                c.clock = m["record"]["ts"]
            elif "ts" in m:
                c.clock = m["ts"]
            handlers[m["type"]](m)
        elif want["type"] == "key_update":
            with c.state_lock:
                c.send_content({"type": "key_update"})
                c.tx.update()
        elif want["type"] == "close":
            c.start_close()
        else:
            raise Mismatch(f"frame {f['index']}: no client action for {want['type']}")
    return c, c.conn.sock.sent


def check_replay(v, workdir):
    c, sent = replay(v, workdir)
    recorded = [unhex(f["payload_hex"]) for f in v["frames"] if f["dir"] == "c2s"]
    for i, want in enumerate(recorded):
        if i >= len(sent):
            raise Mismatch(f"replay: the client wrote {len(sent)} frames, the vector has "
                           f"{len(recorded)}")
        eq(f"replay: client frame {i} (c2s)", sent[i], want)
    # What follows the vector's last frame is our receipt (the vector stops before receipts).
    extra = sent[len(recorded):]
    if len(extra) != 1 or [sc.parse_json(m)["type"] for m in sc.unpad_contents(c.tx.aead.decrypt(
            sc.counter_nonce(c.tx.iv, c.tx.n - 1), extra[0], sc.RECORD_AAD))] != ["receipt"]:
        raise Mismatch(f"replay: after the vector's frames the client wrote {len(extra)} more, "
                       "not its one receipt")
    return len(recorded)


# ---------------------------------------------------------------- negative cases (client targets)

def flip_b64_member(content, member):
    """The content bytes with the last byte of base64 member `member` flipped, nothing else."""
    m = sc.parse_json(content)
    old = m[member]
    raw = bytearray(sc.b64d(old))
    raw[-1] ^= 0x01
    new = base64.b64encode(bytes(raw)).decode()
    key = json.dumps(member).encode() + b":" + json.dumps(old).encode()
    assert content.count(key) == 1
    return content.replace(key, json.dumps(member).encode() + b":" + json.dumps(new).encode())


def s2c_handshake_case(v, case, workdir):
    """Flip the server's certificate_verify or phase 2 finished, re-seal under the same key and
    counter, replay the client; it must fail with the case's code."""
    inp = v["inputs"]
    what = case["set"]["flip"]
    # Find the frame by opening the s2c handshake frames in order.
    server_share = sc.b64d(sc.parse_json(unhex(v["frames"][1]["payload_hex"]))["key_share"]["pub"])
    ss1 = sc.KeyShare(inp["group"], unhex(inp["client"]["eph1_private"])).agree(server_share)
    hs = sc.HandshakeSecrets(ss1, sc.handshake_hash(
        [unhex(v["frames"][0]["payload_hex"]), unhex(v["frames"][1]["payload_hex"])]))
    rx = sc.RecordDirection(hs.key_s2c, hs.iv_s2c)
    finished_seen = 0
    for f in v["frames"][2:v["handshake_frames"]["s2c_last"] + 1]:
        if f["dir"] != "s2c":
            continue
        n = rx.n
        [content] = rx.open(unhex(f["payload_hex"]))  # a handshake record holds one (§3.2)
        t = sc.parse_json(content)["type"]
        finished_seen += t == "finished"
        if (what == "certificate_verify" and t == "certificate_verify") or \
                (what == "phase 2 finished" and t == "finished" and finished_seen == 2):
            member = "sig" if t == "certificate_verify" else "mac"
            payload = rx.aead.encrypt(sc.counter_nonce(rx.iv, n),
                                      sc.pad_inner(flip_b64_member(content, member)),
                                      sc.RECORD_AAD)
            try:
                replay(v, workdir, {f["index"]: payload.hex()}, stop_after_handshake=True)
            except sc.ProtoError as e:
                return e.code
            return "accepted"
    raise Mismatch(f"{case['name']}: no {what} frame in the vector")


def s2c_relay_case(v, case, workdir):
    """A relay of the client's own certificate's record (README), after the vector handshake. The
    first relay introduces the certificate (PROTOCOL §6.4.1) unless `cert` is "omitted"; a second
    one names it, or does what `second` says."""
    inp, pki = v["inputs"], v["inputs"]["pki"]
    c, _ = replay(v, workdir, stop_after_handshake=True)
    c.conn.incoming = []
    t0 = v["session_time"]
    client_key = private_key(pki["client_key_pem"])
    server_key = private_key(pki["server_key_pem"])
    author_sid = os.urandom(16)  # the author's own (other) session
    s = case["set"]
    to = s.get("to", "lobby")
    ts = t0 + 1000
    if s.get("ts") == "one hour before the session":
        ts = t0 - 3600 * 1000
    signer = server_key if s.get("signer") == "server" else client_key
    k = hashlib.sha256(b"negative relay").digest()
    body = b'{"kind":"text","text":"relayed"}'
    rec, _ = sc.make_record(signer, author_sid, to, 1, ts, body, k)
    author = cert_der(pki["client_cert_pem"])
    carrier = [{"k": sc.b64e(k)}]
    first = sc.relay_message(1, t0 + 1001, author, sc.group_of([rec]), carrier,
                             introduce=s.get("cert") != "omitted")
    relays = [first]
    if case["target"] == "s2c relay twice":
        second = {key: val for key, val in first.items() if key != "cert"}
        second.update(seqno=2, ts=t0 + 1002)
        what = s.get("second")
        if what == "introduces the certificate again":
            second["cert"] = first["cert"]
        elif what == "introduces the server certificate under the name":
            second["cert"] = sc.b64e(cert_der(pki["server_cert_pem"]))
        elif what == "a new record signed by the server":
            other, _ = sc.make_record(server_key, author_sid, to, 2, ts + 1, body, k)
            second = sc.relay_message(2, t0 + 1002, author, sc.group_of([other]), carrier,
                                      introduce=False)
        elif what is not None:
            raise Mismatch(f"{case['name']}: unknown second relay {what!r}")
        relays.append(second)
    c.clock = t0 + 1002
    try:
        for relay in relays:  # as it travels (PROTOCOL §6.4 "A relay on the wire")
            c.on_relay(sc.parse_content(sc.relay_wire(relay)))
    except sc.ProtoError as e:
        return e.code
    return "accepted"


def relay_batch_cases(v, workdir):
    """(name, expected code, thunk): PROTOCOL §6.4 steps 3-4 at the replayed client — relays of
    records of one batch of the vector client's own certificate (another session of its user):
    each relay's root from its records and proof (ROOT), its signature once, through the
    session's verified-batch cache (§6.1)."""
    pki, t0 = v["inputs"]["pki"], v["session_time"]
    key, author = private_key(pki["client_key_pem"]), cert_der(pki["client_cert_pem"])
    sid = hashlib.sha256(b"relay batch author session").digest()[:16]

    def k_of(j):
        return hashlib.sha256(b"relay batch k %d" % j).digest()

    def batch(count):
        recs = [sc.new_record(sid, "lobby", 1 + j, t0 + 1000 + j,
                              sc.enc_json({"kind": "text", "text": f"batched {j}"}), k_of(j))
                for j in range(count)]
        sc.sign_batch(key, recs)
        return recs

    def relay_all(relays):
        c, _ = replay(v, tempfile.mkdtemp(dir=workdir), stop_after_handshake=True)
        c.clock = t0 + 2000
        for j, m in enumerate(relays):
            m.update(seqno=j + 1, ts=t0 + 2000)
            if j > 0:
                m.pop("cert", None)
            c.on_relay(sc.parse_content(sc.relay_wire(m)))  # as it travels (PROTOCOL §6.4)

    def relayed(count, groups, edit=None):
        """Relays of a batch of `count`, one per group of record indices; the last relay edited
        by `edit(message)`."""
        recs = batch(count)
        relays = [sc.relay_message(0, 0, author, sc.group_of([recs[j] for j in g]),
                                   [{"k": sc.b64e(k_of(j))} for j in g]) for g in groups]
        if edit is not None:
            edit(relays[-1])
        return lambda: relay_all(relays)

    def once(thunk):
        """`thunk`, which must verify exactly one batch signature (the cache, §6.1)."""
        def run():
            calls, real = [], sc.verify

            def counting(pub, sig, data):
                if data.startswith(sc.BATCH_LABEL):
                    calls.append(1)
                return real(pub, sig, data)
            sc.verify = counting
            try:
                thunk()
            finally:
                sc.verify = real
            if len(calls) != 1:
                raise Mismatch(f"{len(calls)} batch signatures verified, not one")
        return run

    def flip_proof(m):
        m["proof"][0] = sc.b64e(_flip(sc.b64d(m["proof"][0])))

    def record(m, j=0):
        return m["records"][j]["record"]

    return [
        ("relay: the 5 records of one batch in one relay, an empty proof", "accepted",
         once(relayed(5, [[0, 1, 2, 3, 4]]))),
        ("relay: a batch of 5 in three relays, one verification", "accepted",
         once(relayed(5, [[0], [1, 3], [4]]))),
        ("relay: records not consecutive (one entry between them)", "accepted",
         relayed(5, [[1, 3]])),
        ("relay: a proof entry missing", "PROTOCOL_ERROR",
         relayed(5, [[1, 3]], lambda m: m["proof"].pop())),
        ("relay: a proof entry too many", "PROTOCOL_ERROR",
         relayed(5, [[0, 1, 2, 3]], lambda m: m["proof"].append(sc.b64e(bytes(32))))),
        ("relay: a proof entry flipped", "SIG_FAIL", relayed(5, [[2]], flip_proof)),
        ("relay: proof entries swapped", "SIG_FAIL",
         relayed(5, [[2]], lambda m: m["proof"].reverse())),
        ("relay: another signature on the batch statement verified just before", "SIG_FAIL",
         relayed(3, [[0], [1]], lambda m: m.update(sig=sc.b64e(_flip(sc.b64d(m["sig"])))))),
        ("relay: leaf 0 of 4 claims n = 3 (the same root)", "SIG_FAIL",
         relayed(4, [[0]], lambda m: m.update(n=3))),
        ("relay: first changed (the records at other leaves)", "SIG_FAIL",
         relayed(5, [[1, 2, 3, 4]], lambda m: m.update(first=2))),
        ("relay: records out of order", "PROTOCOL_ERROR",
         relayed(4, [[1, 2]], lambda m: m["records"].reverse())),
        ("relay: a record repeated", "PROTOCOL_ERROR",
         relayed(4, [[1]], lambda m: m["records"].append(m["records"][0]))),
        ("relay: a record outside first .. first + n - 1", "PROTOCOL_ERROR",
         relayed(4, [[1, 2]], lambda m: m.update(n=2))),
        ("relay: a record still carrying its sig and batch", "PROTOCOL_ERROR",
         relayed(4, [[1]], lambda m: record(m).update(
             sig=m["sig"], batch={"i": 0, "n": 4, "path": m["proof"][:2]}))),
        ("relay: more records than n", "PROTOCOL_ERROR",
         relayed(4, [[0, 1, 2, 3]], lambda m: m.update(n=3))),
        ("relay: no records", "PROTOCOL_ERROR",
         relayed(2, [[0]], lambda m: m.update(records=[]))),
        ("relay: a sender envelope in JSON (carrier 0x01; §6.4: one encoding each)",
         "PROTOCOL_ERROR", relayed(2, [[0]], lambda m: m["records"][0].update(
             e2e_raw=sc.enc_json({"kind": "sender", "from": "b0" * 8, "id": 1, "n": 0,
                                  "w": sc.b64e(bytes(48))})))),
    ]


# ---------------------------------------------------------------- end-to-end vectors (PROTOCOL §12.8)
# Every public key, the ML-KEM key and ciphertext, AD and SK of pqxdh.json; every header and wrap of
# ratchet.json, sent by one client.py Ratchet and opened by the other; every wrap of
# sender_keys.json. Then the negative rules of §12.3-§12.5, built on the same inputs.

def _pqxdh_parties(v):
    i, o = v["inputs"], v["outputs"]
    pub = sc.x25519_public
    for name, priv in (("alice_ik", "alice_ik_private"), ("alice_ek", "alice_ek_private"),
                       ("bob_ik", "bob_ik_private"), ("bob_spk", "bob_spk_private"),
                       ("bob_opk", "bob_opk_private")):
        eq(f"pqxdh {name}", pub(unhex(i[priv])), unhex(o[name]))
    pq_ek, pq_dk = sc.mlkem_keygen(unhex(i["bob_pq_seed"]))
    eq("pqxdh bob_pq_ek", pq_ek, unhex(o["bob_pq_ek"]))
    bundle = {"ik": pub(unhex(i["bob_ik_private"])), "spk": pub(unhex(i["bob_spk_private"])),
              "pq": pq_ek}
    return i, o, bundle, pq_dk


def check_pqxdh(v):
    i, o, bundle, pq_dk = _pqxdh_parties(v)
    certs = unhex(i["alice_cert"]), unhex(i["bob_cert"])
    sk, ad, kem_ct = sc.pqxdh_initiate(unhex(i["alice_ik_private"]), unhex(i["alice_ek_private"]),
                                       bundle, sc.x25519_public(unhex(i["bob_opk_private"])),
                                       unhex(i["kem_message"]), *certs)
    eq("pqxdh kem_ct", kem_ct, unhex(o["kem_ct"]))
    eq("pqxdh ad", ad, unhex(o["ad"]))
    eq("pqxdh sk (alice)", sk, unhex(o["sk"]))
    sk_b, ad_b = sc.pqxdh_respond(unhex(i["bob_ik_private"]), unhex(i["bob_spk_private"]),
                                  unhex(i["bob_opk_private"]), pq_dk, unhex(o["alice_ik"]),
                                  unhex(o["alice_ek"]), unhex(o["kem_ct"]), *certs)
    eq("pqxdh sk (bob)", sk_b, unhex(o["sk"]))
    eq("pqxdh ad (bob)", ad_b, unhex(o["ad"]))


def _ratchet_pair(v):
    i = v["inputs"]
    alice_keys = [unhex(k) for k in i["alice_ratchet_private"]]
    bob_keys = [unhex(k) for k in i["bob_ratchet_private"]]
    spk = unhex(i["bob_spk_private"])
    alice = sc.Ratchet.initiator(unhex(i["sk"]), unhex(i["ad"]), sc.x25519_public(spk),
                                 lambda: alice_keys.pop(0))
    bob = sc.Ratchet.responder(unhex(i["sk"]), unhex(i["ad"]), spk, lambda: bob_keys.pop(0))
    return {"alice": alice, "bob": bob}


def check_ratchet(v):
    sides = _ratchet_pair(v)
    for j, m in enumerate(v["messages"]):
        sender = sides[m["from"]]
        receiver = sides["bob" if m["from"] == "alice" else "alice"]
        header, wrapped = sender.encrypt(unhex(m["k"]), unhex(m["binding"]))
        eq(f"ratchet message {j} header", header, unhex(m["header"]))
        eq(f"ratchet message {j} wrapped", wrapped, unhex(m["wrapped"]))
        eq(f"ratchet message {j} k (opened)",
           receiver.decrypt(unhex(m["header"]), unhex(m["wrapped"]), unhex(m["binding"])),
           unhex(m["k"]))


def _sender_chain(v):
    i = v["inputs"]
    return sc.SenderChain(i["author"], i["id"], i["n"], unhex(i["ck"]))


def check_sender_keys(v):
    author, member = _sender_chain(v), _sender_chain(v)
    for m in v["messages"]:
        n, wrapped = author.encrypt(unhex(m["k"]), unhex(m["binding"]))
        eq(f"sender key n={m['n']} position", n, m["n"])
        eq(f"sender key n={m['n']} wrapped", wrapped, unhex(m["wrapped"]))
        eq(f"sender key n={m['n']} k (opened)",
           member.decrypt(v["inputs"]["id"], m["n"], unhex(m["wrapped"]), unhex(m["binding"])),
           unhex(m["k"]))


def check_bundle(v):
    """§12.2 from the device's private keys: the device id, both statements byte for byte, both
    signatures (Ed25519 and RSASSA-PKCS1-v1_5 are deterministic) and the receiver's checks."""
    i = v["inputs"]
    ik, spk = sc.x25519_public(unhex(i["ik_private"])), sc.x25519_public(unhex(i["spk_private"]))
    pq_ek, _ = sc.mlkem_keygen(unhex(i["pq_seed"]))
    eq("bundle device", sc.device_id(ik), v["device"])
    for case in v["cases"]:
        what, b = f"bundle ({case['key_type']})", case["bundle"]
        key = private_key(case["key_pem"])
        ident = sc.identity_statement(b["user"], ik)
        stmt = sc.bundle_statement(b["user"], b["created"], ik, b["spk_id"], spk, b["pq_id"], pq_ek)
        eq(f"{what} identity_statement", ident, unhex(case["identity_statement"]))
        eq(f"{what} bundle_statement", stmt, unhex(case["bundle_statement"]))
        for name, want in (("ik", ik), ("spk", spk), ("pq", pq_ek), ("ik_sig", sc.sign(key, ident)),
                           ("sig", sc.sign(key, stmt))):
            eq(f"{what} {name}", sc.b64e(want), b[name])
        with tempfile.TemporaryDirectory(prefix="securechat-bundle-") as d:
            with open(os.path.join(d, "ca.pem"), "w") as f:
                f.write(case["ca_cert_pem"])
            entry = {"device": v["device"], "cert": sc.b64e(cert_der(case["cert_pem"])),
                     "bundle": b}
            checked = sc.check_bundle(sc.Trust(os.path.join(d, "ca.pem")), b["user"], entry)
        eq(f"{what} passes the receiver's checks", checked["ik"], ik)


E2E_CHECKS = {"pqxdh.json": check_pqxdh, "ratchet.json": check_ratchet,
              "sender_keys.json": check_sender_keys, "bundle.json": check_bundle}
E2E_REQUIRED = {"bundle.json", "pqxdh.json", "ratchet.json", "sender_keys.json"}  # §12.8


def _code(fn):
    try:
        fn()
    except sc.ProtoError as e:
        return e.code
    return "accepted"


def _flip(b):
    return b[:-1] + bytes([b[-1] ^ 1])


def e2e_negative_cases(vectors):
    """(name, expected code, thunk) for every §12 rejection the vectors' inputs can build."""
    pq, rt, sk = vectors["pqxdh.json"], vectors["ratchet.json"], vectors["sender_keys.json"]
    msgs = rt["messages"]
    cases = []

    def case(name, code):
        def add(fn):
            cases.append((name, code, fn))
        return add

    @case("pqxdh: a tampered kem_ct gives another SK, so the first wrap fails (§12.3)",
          "DECRYPT_FAIL")
    def _():
        i, o, _, pq_dk = _pqxdh_parties(pq)
        sk_b, ad = sc.pqxdh_respond(unhex(i["bob_ik_private"]), unhex(i["bob_spk_private"]),
                                    unhex(i["bob_opk_private"]), pq_dk, unhex(o["alice_ik"]),
                                    unhex(o["alice_ek"]), _flip(unhex(o["kem_ct"])),
                                    unhex(i["alice_cert"]), unhex(i["bob_cert"]))
        if sk_b == unhex(o["sk"]):
            raise Mismatch("a tampered kem_ct gave the same SK")
        alice = sc.Ratchet.initiator(unhex(o["sk"]), ad, unhex(o["bob_spk"]))
        header, wrapped = alice.encrypt(bytes(32), bytes(32))
        sc.Ratchet.responder(sk_b, ad, unhex(i["bob_spk_private"])).decrypt(header, wrapped,
                                                                           bytes(32))

    @case("pqxdh: a bundle whose PQ prekey fails the FIPS 203 modulus check (§12.2)",
          "BAD_KEY_SHARE")
    def _():
        i, _, bundle, _ = _pqxdh_parties(pq)
        bundle["pq"] = b"\xff\xff" + bundle["pq"][2:]  # first coefficient 4095 >= q
        sc.pqxdh_initiate(unhex(i["alice_ik_private"]), unhex(i["alice_ek_private"]), bundle,
                          None, unhex(i["kem_message"]), unhex(i["alice_cert"]),
                          unhex(i["bob_cert"]))

    @case("pqxdh: an all-zero X25519 output (a low-order signed prekey) (§12.1)", "BAD_KEY_SHARE")
    def _():
        i, _, bundle, _ = _pqxdh_parties(pq)
        bundle["spk"] = bytes(32)
        sc.pqxdh_initiate(unhex(i["alice_ik_private"]), unhex(i["alice_ek_private"]), bundle,
                          None, unhex(i["kem_message"]), unhex(i["alice_cert"]),
                          unhex(i["bob_cert"]))

    def bob_after_first():
        sides = _ratchet_pair(rt)
        m = msgs[0]
        sides["alice"].encrypt(unhex(m["k"]), unhex(m["binding"]))
        sides["bob"].decrypt(unhex(m["header"]), unhex(m["wrapped"]), unhex(m["binding"]))
        return sides["bob"]

    @case("ratchet: a wrap moved to another record (binding) (§12.4)", "DECRYPT_FAIL")
    def _():
        m = msgs[0]
        _ratchet_pair(rt)["bob"].decrypt(unhex(m["header"]), unhex(m["wrapped"]),
                                         unhex(msgs[1]["binding"]))

    @case("ratchet: a tampered header, pn changed (§12.4 aad)", "DECRYPT_FAIL")
    def _():
        m = msgs[1]
        dh, pn, n = sc.parse_header_enc(unhex(m["header"]))
        bob_after_first().decrypt(sc.header_enc(dh, pn + 1, n), unhex(m["wrapped"]),
                                  unhex(m["binding"]))

    @case("ratchet: the same message twice (§12.4)", "REPLAY")
    def _():
        m = msgs[0]
        bob_after_first().decrypt(unhex(m["header"]), unhex(m["wrapped"]), unhex(m["binding"]))

    @case("ratchet: a failed wrap leaves the state as it was; the real message then opens",
          "accepted")
    def _():
        bob = _ratchet_pair(rt)["bob"]
        m = msgs[0]
        try:
            bob.decrypt(unhex(m["header"]), _flip(unhex(m["wrapped"])), unhex(m["binding"]))
            raise Mismatch("a tampered wrap opened")
        except sc.ProtoError as e:
            if e.code != "DECRYPT_FAIL":
                raise
        eq("k after a failed attempt", bob.decrypt(unhex(m["header"]), unhex(m["wrapped"]),
                                                   unhex(m["binding"])), unhex(m["k"]))

    @case("ratchet: out of order (message 1 before 0) opens from skipped keys", "accepted")
    def _():
        bob = _ratchet_pair(rt)["bob"]
        for m in (msgs[1], msgs[0]):
            eq("k out of order", bob.decrypt(unhex(m["header"]), unhex(m["wrapped"]),
                                             unhex(m["binding"])), unhex(m["k"]))

    @case("ratchet: a header 1001 keys ahead (§12.4 bound)", "PROTOCOL_ERROR")
    def _():
        bob = bob_after_first()
        dh, pn, _ = sc.parse_header_enc(unhex(msgs[1]["header"]))
        bob.decrypt(sc.header_enc(dh, pn, 1 + 1001), unhex(msgs[1]["wrapped"]),
                    unhex(msgs[1]["binding"]))

    def member():
        m = _sender_chain(sk)
        return m, sk["inputs"]["id"], sk["messages"]

    @case("sender key: a wrap under another chain id (§12.5)", "DECRYPT_FAIL")
    def _():
        mem, cid, ms = member()
        mem.decrypt(cid ^ 1, ms[0]["n"], unhex(ms[0]["wrapped"]), unhex(ms[0]["binding"]))

    @case("sender key: n below the position the chain was handed over at (§12.5 step 3)",
          "REPLAY")
    def _():
        mem, cid, ms = member()
        mem.decrypt(cid, ms[0]["n"] - 1, unhex(ms[0]["wrapped"]), unhex(ms[0]["binding"]))

    @case("sender key: an n already opened (§12.5)", "REPLAY")
    def _():
        mem, cid, ms = member()
        for _ in range(2):
            mem.decrypt(cid, ms[0]["n"], unhex(ms[0]["wrapped"]), unhex(ms[0]["binding"]))

    @case("sender key: re-attributed to another author (aad) (§12.5)", "DECRYPT_FAIL")
    def _():
        _, cid, ms = member()
        mallory = sc.SenderChain("bob", cid, sk["inputs"]["n"], unhex(sk["inputs"]["ck"]))
        mallory.decrypt(cid, ms[0]["n"], unhex(ms[0]["wrapped"]), unhex(ms[0]["binding"]))

    @case("sender key: moved to another record (binding) (§12.5)", "DECRYPT_FAIL")
    def _():
        mem, cid, ms = member()
        mem.decrypt(cid, ms[0]["n"], unhex(ms[0]["wrapped"]), unhex(ms[1]["binding"]))

    @case("sender key: n=7 first, then 5 and 6 from skipped keys", "accepted")
    def _():
        mem, cid, ms = member()
        for m in (ms[2], ms[0], ms[1]):
            eq("sender k out of order", mem.decrypt(cid, m["n"], unhex(m["wrapped"]),
                                                    unhex(m["binding"])), unhex(m["k"]))

    def keyring_after(rotations, clock=None):
        """A receiver's keyring holding the vector's chain, then `rotations` newer chains."""
        ring = sc.SenderKeyring(clock) if clock else sc.SenderKeyring()
        ring.take("alice", "d", _sender_chain(sk))
        for i in range(rotations):
            ring.take("alice", "d", sc.SenderChain("alice", sk["inputs"]["id"] + 1 + i, 0,
                                                   bytes(32)))
        return ring

    def open_kept(ring):
        m, cid = sk["messages"][0], sk["inputs"]["id"]
        chain = ring.find("alice", "d", cid)
        if chain is None:
            raise sc.ProtoError("DECRYPT_FAIL", "no kept chain under this id")
        eq("sender k under a kept chain",
           chain.decrypt(cid, m["n"], unhex(m["wrapped"]), unhex(m["binding"])), unhex(m["k"]))

    @case("sender key: a line under a chain replaced 3 times still opens (§12.5 keeps 4)",
          "accepted")
    def _():
        open_kept(keyring_after(3))

    @case("sender key: a chain replaced 4 times is not kept (§12.5)", "DECRYPT_FAIL")
    def _():
        open_kept(keyring_after(4))

    @case("sender key: a departed member's chain goes 5 minutes after their left (§12.5)",
          "DECRYPT_FAIL")
    def _():
        now = [1000.0]
        ring = keyring_after(0, lambda: now[0])
        ring.departed("alice")
        now[0] += 299
        if ring.find("alice", "d", sk["inputs"]["id"]) is None:
            raise Mismatch("a departed member's chain dropped within the 5 minutes")
        now[0] += 2
        open_kept(ring)

    @case("sender key: 1001 keys ahead (§12.5, bounded as §12.4)", "PROTOCOL_ERROR")
    def _():
        mem, cid, ms = member()
        mem.decrypt(cid, ms[0]["n"] + 1001, unhex(ms[0]["wrapped"]), unhex(ms[0]["binding"]))

    # §12.5 "Membership": the `online` list in chunks (every one but the last with "more": true),
    # once, before any joined or left; §12.6's table: 1-1000 names
    def lobby_member():
        c = sc.Client.__new__(sc.Client)
        c.members, c.members_known = set(), threading.Event()
        c.device = sc.Device.__new__(sc.Device)
        c.device.chains, c.device.lists, c.device.my_chain = sc.SenderKeyring(), {}, None
        c.device.lock = threading.RLock()
        return c

    def members(*bodies):
        c = lobby_member()
        for event, users, *more in bodies:
            c.on_members({"kind": "members", "event": event, "users": users,
                          **({"more": more[0]} if more else {})})
        return c

    @case("members: online in two chunks, then joined and left (§12.5)", "accepted")
    def _():
        c = members(("online", ["alice", "bob"], True), ("online", ["carol"]), ("joined", ["dan"]),
                    ("left", ["bob"]))
        eq("members", sorted(c.members), ["alice", "carol", "dan"])

    @case("members: the list is not whole before its last chunk (§12.5)", "accepted")
    def _():
        if members(("online", ["alice"], True)).members_known.is_set():
            raise Mismatch("a chunk with more made the list whole")

    for name, bodies in (
        ("joined before the last online chunk", [("online", ["a"], True), ("joined", ["b"])]),
        ("left before any online list", [("left", ["b"])]),
        ("a second online list", [("online", ["a"]), ("online", ["a", "b"])]),
        ("more on joined", [("online", ["a"]), ("joined", ["b"], True)]),
        ("more false", [("online", ["a"], False)]),
        ("an online chunk with no names", [("online", [], True)]),
    ):
        case(f"members: {name} (§12.5, §12.6)", "PROTOCOL_ERROR")(
            lambda bodies=bodies: members(*bodies))

    return cases


def check_e2e(edir):
    """Prints one E2E line per vector file and one E2E-NEGATIVE line per case; returns failures."""
    failed, vectors = 0, {}
    for name in sorted(os.listdir(edir)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(edir, name)) as f:
            v = json.load(f)
        vectors[name] = v
        try:
            if name not in E2E_CHECKS:
                raise Mismatch("no check for this file (not in PROTOCOL §12.8's list)")
            if not v["description"].endswith("Expected: valid."):
                raise Mismatch(f"expected outcome: {v['description']!r}")
            before = CHECKED[0]
            E2E_CHECKS[name](v)
            print(f"E2E {name} OK {CHECKED[0] - before} values recomputed and equal", flush=True)
        except (Mismatch, sc.ProtoError, AssertionError, KeyError) as e:
            failed += 1
            print(f"E2E {name} FAIL {e.__class__.__name__}: {e}", flush=True)
    if E2E_REQUIRED - set(vectors):
        print(f"E2E FAIL missing {sorted(E2E_REQUIRED - set(vectors))}", flush=True)
        return failed + 1
    for name, code, fn in e2e_negative_cases(vectors):
        try:
            got = _code(fn)
        except (Mismatch, AssertionError, KeyError) as e:
            got = f"setup failed, {e.__class__.__name__}: {e}"
        ok = got == code
        failed += not ok
        print(f"E2E-NEGATIVE {name!r} {'OK' if ok else f'FAIL expected {code}, got'} {got}",
              flush=True)
    return failed


def session_cert_cases():
    """(name, expected code, thunk): PROTOCOL §6.4.1's list at its bound, on client.SessionCerts
    (the one the live client and verify.py run). Fingerprints stand in for certificates: past its
    first check the list never looks at the bytes."""
    def full(n):
        certs = sc.SessionCerts()
        for i in range(n):
            certs.commit(f"{i:064x}", i)
        return certs

    def use(certs, i):
        fp = f"{i:064x}"
        certs.commit(fp, certs.resolve(fp, None))

    def first_dropped():
        use(full(sc.SESSION_CERTS + 1), 0)

    def used_first_kept():
        certs = full(sc.SESSION_CERTS)
        use(certs, 0)                        # now the most recently used
        certs.commit(f"{sc.SESSION_CERTS:064x}", "new")  # drops the least recently used: 1
        if f"{0:064x}" not in certs.entries:
            raise Mismatch("the most recently used name was dropped")
        use(certs, 1)

    def introduced_again_after_dropped():
        certs = full(sc.SESSION_CERTS + 1)
        der = b"a certificate's bytes"
        fp = sc.fingerprint(der)
        certs.commit(fp, certs.resolve(fp, der))  # new to the list: the caller validates it
        if len(certs.entries) != sc.SESSION_CERTS:
            raise Mismatch("the list grew past SESSION_CERTS")

    return [
        ("certificate list: 256 held, the 257th drops the first, whose name is refused",
         "PROTOCOL_ERROR", first_dropped),
        ("certificate list: a name used moves to the end; the least recently used goes",
         "PROTOCOL_ERROR", used_first_kept),
        ("certificate list: a dropped certificate is introduced again", "accepted",
         introduced_again_after_dropped),
    ]


def check_records(path):
    """tests/vectors/protocol/records.json (PROTOCOL §3.2): each case's payload opens under the
    fixed key at its counter to exactly its contents, and the contents re-sealed (padded once) give
    its inner and payload byte for byte; or the receiver refuses it with its code. One RECORDS line
    per case; returns the number failed."""
    with open(path) as f:
        v = json.load(f)
    key, iv = unhex(v["key_hex"]), unhex(v["iv_hex"])
    failed = 0
    for case in v["cases"]:
        d = sc.RecordDirection(key, iv, handshake=case["context"] == "handshake")
        d.n = case["counter"]
        payload = unhex(case["payload_hex"])
        try:
            got = [c.decode() for c in d.open(payload)]
            if "contents" in case:
                eq("contents", got, case["contents"])
                contents = [c.encode() for c in got]
                eq("inner", sc.pad_inner(*contents), unhex(case["inner_hex"]))
                d.n = case["counter"]
                eq("payload", d.seal_inner(sc.pad_inner(*contents)), payload)
                outcome, want = "contents", "contents"
            else:
                outcome, want = "accepted", case["error"]
        except sc.ProtoError as e:
            outcome, want = e.code, case.get("error", "contents")
        except Mismatch as e:
            outcome, want = f"mismatch: {e}", "contents"
        ok = outcome == want
        failed += not ok
        print(f"RECORDS {case['name']!r} {'OK' if ok else f'FAIL expected {want}, got'} {outcome}",
              flush=True)
    return failed


def _batch_key(entry):
    """An author of batches.json: its Ed25519 key from the seed, checked against its SPKI."""
    key = sc.ed25519.Ed25519PrivateKey.from_private_bytes(unhex(entry["ed25519_seed"]))
    eq("author spki", key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        unhex(entry["spki"]))
    return key


def _batch_verdict(cache, fp, key, wire, root_code):
    """The outcome a verifier reaches on one record JSON: OK, or the code (PROTOCOL §6.1 "Bounds"
    and "Checking a record's signature"; a schema fault is PROTOCOL_ERROR live, TAMPERED in a
    file, as `root_code` says)."""
    try:
        rec = sc.parse_record(wire)
    except sc.ProtoError:
        return "PROTOCOL_ERROR" if root_code == "PROTOCOL_ERROR" else "TAMPERED"
    if rec["sig"] is None:
        return "SIG_FAIL"
    try:
        return "OK" if cache.check(fp, key.public_key(), rec, root_code) else "SIG_FAIL"
    except sc.ProtoError as e:
        return e.code


def _batch_case_record(v, case):
    """The record JSON case `case` of batches.json stands for, built from its recipe `set` by the
    words of tests/vectors/protocol/README.md "batches.json"."""
    recs = v["records"]
    base = v["outside"]["record"] if case["record"] == "outside" else recs[case["record"]]["record"]
    w = json.loads(json.dumps(base))
    for what, value in case["set"].items():
        b = w.get("batch")
        if what == "batch_path_of":
            b["path"] = list(recs[value]["record"]["batch"]["path"])
        elif what == "batch_of":  # the outside record claims record j's place and signature
            w["sig"], w["batch"] = recs[value]["record"]["sig"], recs[value]["record"]["batch"]
        elif what == "batch_i":
            b["i"] = value
        elif what == "batch_n":
            b["n"] = value
        elif what == "batch_flip":  # any bit (README): the last one
            b["path"][value] = sc.b64e(_flip(sc.b64d(b["path"][value])))
        elif what == "batch_drop_last":
            b["path"].pop()
        elif what == "batch_truncate_entry":
            b["path"][value] = sc.b64e(sc.b64d(b["path"][value])[:31])
        elif what == "batch_pad_to":
            b["path"] += [sc.b64e(bytes(32))] * (value - len(b["path"]))
        elif what in ("sig", "batch") and value is None:
            del w[what]
        elif what == "sig" and value == "garbage":
            w["sig"] = sc.b64e(hashlib.sha256(b"garbage").digest() * 2)
        elif what == "author":
            pass  # checked under the other author's key (check_batches)
        elif what in ("ts", "to", "sid", "seqno"):
            w[what] = value
        else:
            raise Mismatch(f"{case['name']}: unknown recipe word {what!r}")
    return w


def check_batches(path):
    """tests/vectors/protocol/batches.json (PROTOCOL §6.1): the batch of 5 recomputed from its
    inputs (every leaf, subtree, path, the root, the batch statement, the signature), every record
    passing the check with and without the cache; then each case gives its code live and in a
    file. One BATCHES line per check; returns the number failed."""
    with open(path) as f:
        v = json.load(f)
    failed = 0

    def report(name, ok, detail):
        nonlocal failed
        failed += not ok
        print(f"BATCHES {name!r} {'OK' if ok else 'FAIL'} {detail}", flush=True)
    try:
        author, other = _batch_key(v["author"]), _batch_key(v["other_author"])
        sid, first, n = unhex(v["sid"]), v["first"], v["n"]
        recs = [sc.parse_record(r["record"]) for r in v["records"]]
        eq("n", (len(recs), n), (n, n))
        for j, (r, rec) in enumerate(zip(v["records"], recs)):
            k, body = unhex(r["k"]), r["body"].encode()
            eq(f"record {j} sid, seqno", (rec["sid"], rec["seqno"]), (sid, first + j))
            eq(f"record {j} ct", rec["ct"], sc.seal_body(k, body))
            eq(f"record {j} c", rec["c"], sc.commitment(k, body))
            eq(f"record {j} statement", sc.statement(rec), unhex(r["statement_hex"]))
            eq(f"record {j} leaf_hash", sc.leaf_hash(sc.statement(rec)), unhex(r["leaf_hash"]))
        hashes = [sc.leaf_hash(sc.statement(rec)) for rec in recs]
        root = sc.tree_hash(hashes)
        eq("root", root, unhex(v["root"]))
        for t in v["subtrees"]:
            a, b = t["range"]
            eq(f"subtree {a}..{b}", sc.tree_hash(hashes[a:b]), unhex(t["hash"]))
        bst = sc.batch_statement(sid, first, n, root)
        eq("batch statement", bst, unhex(v["batch_statement_hex"]))
        eq("batch statement is 93 bytes", len(bst), 93)
        eq("signature recomputed", sc.sign(author, bst), unhex(v["sig"]))
        cache = sc.BatchCache()
        for j, rec in enumerate(recs):
            eq(f"record {j} batch", rec["batch"], (j, n, sc.inclusion_path(j, hashes)))
            eq(f"record {j} sig", rec["sig"], unhex(v["sig"]))
            for c in (sc.BatchCache(), cache):
                if not c.check("author", author.public_key(), rec):
                    raise Mismatch(f"record {j} does not verify")
        out = sc.parse_record(v["outside"]["record"])
        eq("outside opens", sc.check_content(out, unhex(v["outside"]["k"])) is not None, True)
        if not sc.BatchCache().check("author", author.public_key(), out):
            raise Mismatch("the outside record does not verify alone")
        report("the batch of 5", True, "every value recomputed and equal")
    except (Mismatch, sc.ProtoError, KeyError, ValueError) as e:
        report("the batch of 5", False, f"{e.__class__.__name__}: {e}")
        return failed
    for case in v["cases"]:
        want_live = case["code"]
        want_file = "TAMPERED" if want_live == "PROTOCOL_ERROR" else want_live
        got = []
        try:
            wire = _batch_case_record(v, case)
            for root_code in ("PROTOCOL_ERROR", "TAMPERED"):
                cache = sc.BatchCache()
                for j in case.get("checked_before", []):
                    if _batch_verdict(cache, "author", author, v["records"][j]["record"],
                                      root_code) != "OK":
                        raise Mismatch(f"checked_before record {j} does not verify")
                key, fp = (other, "other") if case["set"].get("author") == "other" else \
                    (author, "author")
                got.append(_batch_verdict(cache, fp, key, wire, root_code))
        except (Mismatch, KeyError, ValueError, IndexError, TypeError) as e:
            report(case["name"], False, f"setup failed, {e.__class__.__name__}: {e}")
            continue
        want = [want_live, want_file]
        report(case["name"], got == want, f"live {want_live}, in a file {want_file}" if got == want
               else f"expected {want}, got {got}")
    if "relays" in v:
        failed += check_batch_relays(v, author)
    return failed


def _relay_verdict(cache, key, relay, code):
    """What a recipient (code PROTOCOL_ERROR: the relay as sent) or a verifier (TAMPERED: its
    line, each item only its record) concludes of a relay of batches.json (PROTOCOL §6.4 steps
    3-4): OK, SIG_FAIL or `code`."""
    m = json.loads(json.dumps(relay))
    if code == "TAMPERED":
        for item in m.get("records", []) if isinstance(m.get("records"), list) else []:
            if isinstance(item, dict):
                item.pop("k", None)
    try:
        sig, first, n, proof, items = sc.parse_group(m, carriers=code != "TAMPERED", code=code)
        recs = [rec for rec, _ in items]
        stmt = sc.group_statement(recs[0]["sid"], first, n, proof, recs, code=code)
    except sc.ProtoError as e:
        return e.code
    return "OK" if cache.verified("author", key.public_key(), stmt, sig) else "SIG_FAIL"


def check_batch_relays(v, author):
    """batches.json's relays (PROTOCOL §6.4): each group's records, proof and root recomputed (ROOT
    from the records and proof; the proof a server makes from the records' own paths; each
    record's path back from the relay, TRANSCRIPT §6), its signature once; then each relay case
    with its code live and in a file, after the whole batch's relay was verified by the same
    verifier (the cache must not pass it). Returns the number failed."""
    failed = 0

    def report(name, ok, detail):
        nonlocal failed
        failed += not ok
        print(f"RELAYS {name!r} {'OK' if ok else 'FAIL'} {detail}", flush=True)
    whole = sc.BatchCache()
    signed = []
    for r in v["records"]:
        rec = sc.parse_record(r["record"])
        signed.append(rec)
    for entry in v["relays"]:
        name = f"records {entry['indices']}"
        try:
            relay, n = entry["relay"], v["n"]
            sig, first, size, proof, items = sc.parse_group(relay)
            recs = [rec for rec, _ in items]
            eq(f"{name}: first, n", (first, size), (v["first"], n))
            eq(f"{name}: indices", [r["seqno"] - first for r in recs], entry["indices"])
            subtrees = sc.relay_subtrees({r["seqno"] - first: sc.leaf_hash(sc.statement(r))
                                          for r in recs}, n, proof)
            if subtrees is None:
                raise Mismatch(f"{name}: the proof does not fit")
            eq(f"{name}: root", subtrees[(0, n)], unhex(entry["root"]))
            eq(f"{name}: root is the batch's", subtrees[(0, n)], unhex(v["root"]))
            made = sc.group_of([signed[j] for j in entry["indices"]])
            eq(f"{name}: the proof made from the records' paths", made[3], proof)
            for rec, item in items:
                j = rec["seqno"] - first
                eq(f"{name}: record {j} path from the relay",
                   sc.relay_path(subtrees, n, j), signed[j]["batch"][2])
                sc.check_content(rec, sc.b64d(item["k"], size=32))
            if _relay_verdict(whole, author, relay, "PROTOCOL_ERROR") != "OK":
                raise Mismatch(f"{name}: the signature does not verify")
            report(name, True, "root, proof, paths and signature recomputed and equal")
        except (Mismatch, sc.ProtoError, KeyError, ValueError, TypeError) as e:
            report(name, False, f"{e.__class__.__name__}: {e}")
    for case in v["relay_cases"]:
        want = [case["code"], "TAMPERED" if case["code"] == "PROTOCOL_ERROR" else case["code"]]
        got = []
        for code in ("PROTOCOL_ERROR", "TAMPERED"):
            cache = sc.BatchCache()
            _relay_verdict(cache, author, v["relays"][0]["relay"], code)  # the batch, verified
            got.append(_relay_verdict(cache, author, case["relay"], code))
        report(case["name"], got == want, f"live {want[0]}, in a file {want[1]}" if got == want
               else f"expected {want}, got {got}")
    return failed


def _line_enc(line):
    """TRANSCRIPT §3.1 line_enc of one transcript line (record_enc covers `batch`), format 7: a
    group's line (a c2s msg, a relay) holds group_digest = SHA-256(group_enc)."""
    t = line["type"]
    if t == "msg" and line["dir"] == "c2s":  # a group of the client's batch (format 6 on)
        sig, first, n, proof, items = sc.parse_author_msg(line, carriers=False)
        return sc.msg_line_enc(sig, first, n, proof, [rec for rec, _ in items])
    if t == "msg":
        return b"\x01" + sc.record_enc(sc.parse_record(line["record"]))
    cert = sc.b64d(line["cert"]) if "cert" in line else None
    if t == "relay":  # a group of one batch's records (format 5 on)
        sig, first, n, proof, items = sc.parse_group(line, carriers=False)
        return sc.relay_line_enc(line["seqno"], line["ts"], line["author_fp"], cert, sig, first, n,
                                 proof, [rec for rec, _ in items])
    if t == "stored":
        return sc.stored_line_enc(line["seqno"], line["ts"], line["author_fp"], cert,
                                  sc.parse_record(line["record"]))
    if t == "refused":
        code = line["code"].encode()
        return (b"\x03" + sc.u64(line["seqno"]) + sc.u64(line["ts"]) + sc.u64(line["of"])
                + sc.u32(len(code)) + code)
    if t == "queued":
        return b"\x04" + sc.u64(line["seqno"]) + sc.u64(line["ts"]) + sc.u64(line["of"])
    raise Mismatch(f"a line of type {t!r}")


def check_transcript_hash(path):
    """tests/vectors/transcript/hash_v2.json (TRANSCRIPT §3): both per-direction digests and the
    transcript hash from its lines, with client.py's line encoding; and the hash of no line."""
    with open(path) as f:
        v = json.load(f)
    try:
        digests = {"c2s": hashlib.sha256(), "s2c": hashlib.sha256()}
        for line in v["lines"]:
            digests[line["dir"]].update(_line_enc(line))
        eq("d_c2s", digests["c2s"].hexdigest(), v["d_c2s"])
        eq("d_s2c", digests["s2c"].hexdigest(), v["d_s2c"])
        counts = {d: sum(len(line["records"]) if d == "c2s" and line["type"] == "msg" else 1
                         for line in v["lines"] if line["dir"] == d) for d in digests}
        eq("counts", (counts["c2s"], counts["s2c"]), (v["c2s_count"], v["s2c_count"]))
        for name, n, d in (("transcript_sha256", counts, digests),
                           ("empty_transcript_sha256", {"c2s": 0, "s2c": 0},
                            {"c2s": hashlib.sha256(), "s2c": hashlib.sha256()})):
            t = sc.Transcript(None, unhex(v["session_id"]), v["session_time"], None,
                              sc.b64d(v["client_cert"]), sc.b64d(v["server_cert"]),
                              protocol_version=v["protocol_version"])
            t.n, t.d = dict(n), d
            eq(name, t.final_hash().hex(), v[name])
        print(f"TRANSCRIPT-HASH OK {len(v['lines'])} lines encoded, both digests and both hashes "
              "equal", flush=True)
        return 0
    except (Mismatch, sc.ProtoError, KeyError) as e:
        print(f"TRANSCRIPT-HASH FAIL {e.__class__.__name__}: {e}", flush=True)
        return 1


def check_golden_openings(tdir):
    """tests/vectors/transcript (TRANSCRIPT §6): every record of golden.log whose key golden.keys
    holds opens under it (PROTOCOL §6.1's content cipher, DECRYPT_FAIL otherwise), its commitment
    matches and its body parses; and every record of a `msg`, `relay` or `stored` line has its key
    there (the golden client had them all): a relay's per record, `item` J from 1; a c2s msg
    line's per record, under the record's own seqno. One
    GOLDEN-OPENINGS line; returns the number failed."""
    try:
        with open(os.path.join(tdir, "golden.json")) as f:
            v = json.load(f)
        with open(os.path.join(tdir, v["keys"]), "rb") as f:
            keys = {}
            for raw in f.read().splitlines():
                kl = sc.parse_json(raw, tag="dir")
                sc.strict(kl, ["dir", "seqno", "k"], ["item"])
                keys[(kl["dir"], kl["seqno"], kl.get("item"))] = sc.b64d(kl["k"], size=32)
        with open(os.path.join(tdir, v["log"]), "rb") as f:
            lines = f.read().splitlines()[1:]
        opened = set()
        for raw in lines:
            line = sc.parse_json(raw)
            if line["type"] == "relay":
                _, _, _, _, items = sc.parse_group(line, carriers=False)
                records = [(rec, (line["dir"], line["seqno"], j))
                           for j, (rec, _) in enumerate(items, 1)]
            elif line["type"] == "msg" and line["dir"] == "c2s":  # a key per record, by its seqno
                _, _, _, _, items = sc.parse_author_msg(line, carriers=False)
                records = [(rec, ("c2s", rec["seqno"], None)) for rec, _ in items]
            elif line["type"] in ("msg", "stored"):
                rec = sc.parse_record(line["record"])
                records = [(rec, (line["dir"], rec["seqno"] if line["type"] == "msg"
                                  else line["seqno"], None))]
            else:
                continue
            for rec, at in records:
                if at not in keys:
                    raise Mismatch(f"{at} has no key in {v['keys']}")
                sc.parse_body(sc.check_content(rec, keys[at]))
                opened.add(at)
        eq("keys without a line", sorted(set(keys) - opened), [])
        print(f"GOLDEN-OPENINGS OK {len(opened)} lines of {v['log']} opened under {v['keys']}",
              flush=True)
        return 0
    except (Mismatch, sc.ProtoError, KeyError, OSError) as e:
        print(f"GOLDEN-OPENINGS FAIL {e.__class__.__name__}: {e}", flush=True)
        return 1


def record_reading_cases():
    """(name, expected code, thunk): client.Client.read_content over records of several messages
    (PROTOCOL §3.2), sealed under a fixed key and read from a stand-in connection: the messages
    come in order, and a `key_update` must be the last of its record."""
    class Frames:
        def __init__(self, payloads):
            self.payloads = list(payloads)

        def read_frame(self):
            return self.payloads.pop(0)

    def reading(*records):
        c = sc.Client.__new__(sc.Client)  # only the record layer's state: no socket, no session
        c.unread, c.peer_record_opened = deque(), True
        c.rx = sc.RecordDirection(bytes(sc.RECORD_KEY_BYTES), bytes(12), handshake=False)
        tx = sc.RecordDirection(bytes(sc.RECORD_KEY_BYTES), bytes(12), handshake=False)
        c.conn = Frames([tx.seal_inner(sc.pad_inner(*r)) for r in records])
        return c

    def queued(i):
        return sc.enc_json({"type": "queued", "seqno": i, "ts": 1767225600000 + i, "of": i})
    key_update = sc.enc_json({"type": "key_update"})

    def in_order():
        c = reading([queued(1), queued(2)], [queued(3)])
        got = [sc.Client.read_content(c)[1]["seqno"] for _ in range(3)]
        if got != [1, 2, 3]:
            raise Mismatch(f"read {got}")

    def key_update_last():
        c = reading([queued(1), key_update])
        if [sc.Client.read_content(c)[1]["type"] for _ in range(2)] != ["queued", "key_update"]:
            raise Mismatch("not read in order")

    def key_update_first():
        c = reading([key_update, queued(1)])
        sc.Client.read_content(c)

    return [
        ("records: three messages in two records are read in order", "accepted", in_order),
        ("records: a key_update as the last message of its record", "accepted", key_update_last),
        ("records: a key_update before another message of its record", "PROTOCOL_ERROR",
         key_update_first),
    ]


def recipient_rule_cases():
    """(name, expected, thunk): PROTOCOL §6.1's recipient rule on client.is_recipient, the one
    home client.py (its /msg) and verify.py apply, with §6.1's own examples."""
    def rule(to):
        def check():
            if not sc.is_recipient(to):
                raise sc.ProtoError("TAMPERED", "not a recipient")  # §6.3 step 3's code
        return check
    ok, bad = "accepted", "TAMPERED"
    cases = [("lobby", ok), ("server", ok), ("user:abc", ok), ("user:a.b-c_9", ok),
             ("user:" + "z" * 32, ok), ("user:Alice", bad), ("user:ab", bad), ("user:", bad),
             ("user:.x", bad), ("user:" + "z" * 33, bad), ("Lobby", bad), ("user:alice\n", bad),
             ("user:al ice", bad)]
    return [(f"recipient rule: {to!r}", want, rule(to)) for to, want in cases]


def main():
    sc.out = lambda line: None  # the replayed client's chat output is not this report
    here = os.path.dirname(os.path.abspath(__file__))
    vdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "vectors", "protocol")
    edir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "vectors", "e2e")
    failed = 0
    scenarios = {}
    with tempfile.TemporaryDirectory(prefix="securechat-vectors-") as work:
        for name in sorted(os.listdir(vdir)):
            if not name.endswith(".json") or name in ("negative.json", "records.json",
                                                      "batches.json"):
                continue
            with open(os.path.join(vdir, name)) as f:
                v = json.load(f)
            scenarios[name] = v
            try:
                if not v["expected"].startswith("valid"):
                    raise Mismatch(f"expected {v['expected']!r}")
                before = CHECKED[0]
                recompute(v)
                n = CHECKED[0] - before
                frames = check_replay(v, tempfile.mkdtemp(dir=work))
                print(f"VECTOR {name} OK {n} values recomputed and equal, {frames} client frames "
                      "replayed byte for byte", flush=True)
            except (Mismatch, sc.ProtoError, AssertionError, KeyError) as e:
                failed += 1
                print(f"VECTOR {name} FAIL {e.__class__.__name__}: {e}", flush=True)
        with open(os.path.join(vdir, "negative.json")) as f:
            neg = json.load(f)
        base = scenarios.get("handshake_ed25519_x25519.json") or next(iter(scenarios.values()))
        for case in neg["cases"]:
            target = case["target"]
            if target.startswith("c2s"):
                continue  # a server target: probe.py runs these against a real server
            try:
                if target == "s2c handshake":
                    got = s2c_handshake_case(base, case, tempfile.mkdtemp(dir=work))
                elif target in ("s2c relay", "s2c relay twice"):
                    got = s2c_relay_case(base, case, tempfile.mkdtemp(dir=work))
                else:
                    got = f"unknown target {target!r}"
            except (Mismatch, AssertionError, KeyError, sc.ProtoError) as e:
                got = f"setup failed, {e.__class__.__name__}: {e}"
            ok = got == case["code"]
            failed += not ok
            verdict = "OK" if ok else f"FAIL expected {case['code']}, got"
            print(f"NEGATIVE {case['name']!r} {verdict} {got}", flush=True)
    failed += check_e2e(edir)
    failed += check_records(os.path.join(vdir, "records.json"))
    failed += check_batches(os.path.join(vdir, "batches.json"))
    failed += check_transcript_hash(os.path.join(vdir, "..", "transcript", "hash_v2.json"))
    failed += check_golden_openings(os.path.join(vdir, "..", "transcript"))
    with tempfile.TemporaryDirectory(prefix="securechat-vectors-") as work:
        for name, code, fn in (session_cert_cases() + recipient_rule_cases()
                               + record_reading_cases() + relay_batch_cases(base, work)):
            try:
                got = _code(fn)
            except (Mismatch, AssertionError) as e:
                got = f"setup failed: {e}"
            failed += got != code
            print(f"RULE {name!r} {'OK' if got == code else f'FAIL expected {code}, got'} {got}",
                  flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
