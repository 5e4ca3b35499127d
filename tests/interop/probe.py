#!/usr/bin/python3
"""Conformance probes for a securechat server of wire version 3 (PROTOCOL §3.1), written from the
docs alone (as client.py).

Each probe opens its own session, sends one fault the docs define, and expects the `error` code
the docs name for it (or, for the few positive probes, the documented outcome). Every expectation
cites its section of docs/PROTOCOL.md. Usage:

  probe.py --port P --ca ca.pem --certs DIR --password-env VAR [--only NAME,...] [--e2e]
  probe.py --hostile-e2e MODE CLIENT-ARGS     (client.py whose first private line is faulty)

DIR holds alice.pem/.key, carol.pem/.key, dave.pem/.key (12792 bytes of DER: issue.py --der-bytes,
for §6.3 step 7) and server.pem (a certificate of the wrong role). alice
must not exist yet (the first probe registers her); carol must never be registered.
One output line per probe: `PROBE <name> OK <observed>` or `PROBE <name> FAIL expected <x>, got
<y>`; exit 0 only if every probe passed.
"""

import argparse
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client as sc  # noqa: E402  (the clean-room client: one home for every protocol step)

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402


class Outcome(Exception):
    """How a probe ended: `peer:<code>` (the server's error), `local:<code>`, or a word."""


def peer_or_local(e):
    return ("peer:" if e.detail.startswith("from the peer") else "local:") + e.code


class Probe(sc.Client):
    def __init__(self, args, tampers=None):
        super().__init__(args)
        self.tampers = tampers or {}

    def tamper(self, step, msg):
        f = self.tampers.get(step)
        return f(msg) if f else msg

    def connect(self):
        self.conn = sc.Conn(socket.create_connection((self.args.host, self.args.port), timeout=10))
        self.conn.sock.settimeout(10)

    def session(self):
        """A complete handshake (§5); raises Outcome if the server refused it."""
        self.connect()
        try:
            self.handshake()
        except sc.ProtoError as e:
            raise Outcome(peer_or_local(e))
        self.seq_tx = 0

    def await_error(self):
        """Reads records until the server's `error` (or EOF); returns the outcome word."""
        try:
            while True:
                _, m = self.read_content()
                if m["type"] == "key_update":
                    self.rx.update()
                elif m["type"] == "refused":
                    return f"refused:{m['code']}:of={m['of']}"
        except sc.ProtoError as e:
            if e.detail == "connection closed by the peer":
                return "closed"
            return peer_or_local(e)
        except OSError as e:
            return f"socket:{e.__class__.__name__}"

    def record(self, to="lobby", body=None, seqno=None, ts=None, sid=None, k=None):
        """A correct signed record (§6.1) with the next seqno; (decoded, wire, k)."""
        k = k or os.urandom(32)
        seqno = self.seq_tx + 1 if seqno is None else seqno
        rec, wire = sc.make_record(self.my_key, sid or self.session_id, to, seqno,
                                   ts if ts is not None else sc.now_ms(),
                                   sc.enc_json(body or {"kind": "text", "text": "probe"}), k)
        return rec, wire, k

    def send_content_raw(self, content):
        """Seals content bytes as given (for faults a JSON serialiser cannot produce)."""
        self.conn.write_frame(self.tx.seal(content))

    def msg_of(self, made, carriers=None):
        """The c2s `msg` (§6.3) carrying `made`, [(decoded, wire, k)] of one signed batch in seqno
        order: the group members of its records with the proof made from their paths (§6.4
        "Making the proof"), each record as its wire says without `sig` and `batch` (a wire the
        record's schema refuses goes as it is, its group from the decoded record; otherwise the
        wire is parsed again, so an edit to it counts, its `sig` included); each record with its
        `k` unless `carriers` says otherwise."""
        recs = []
        for rec, wire, _ in made:
            try:
                recs.append(sc.parse_record(wire))
            except sc.ProtoError:
                recs.append(rec)
        carriers = carriers or [{"k": sc.b64e(k)} for _, _, k in made]
        msg = {"type": "msg", **sc.group_members(sc.group_of(recs), carriers)}
        for item, (_, wire, _) in zip(msg["records"], made):
            item["record"] = {key: v for key, v in wire.items() if key not in ("sig", "batch")}
        return msg

    def send_msg(self, wire, k, extra=None, rec=None):
        """One signed record (its own batch, or a part of one) in a `msg` of its own; `rec` its
        decoded form, for a wire the record's schema refuses."""
        msg = self.msg_of([(rec, wire, k)])
        msg.update(extra or {})
        self.send_content(msg)
        self.seq_tx = max(self.seq_tx, wire["seqno"])

    def batch(self, count, to="server", body=None, first=None):
        """`count` correct records with the next seqnos signed as one batch (§6.1): a list of
        (decoded, wire, k). A `who` to the server by default, which the server answers."""
        first = self.seq_tx + 1 if first is None else first
        made = []
        for j in range(count):
            k = os.urandom(32)
            made.append((sc.new_record(self.session_id, to, first + j, sc.now_ms(),
                                       sc.enc_json(body or {"kind": "who"}), k), k))
        sc.sign_batch(self.my_key, [rec for rec, _ in made])
        return [(rec, sc.record_wire(rec), k) for rec, k in made]

    def send_msgs(self, msgs):
        """`msg` objects in one sealed record (§3.2)."""
        self.conn.write_frame(self.tx.seal_inner(sc.pad_inner(*[sc.enc_json(m) for m in msgs])))
        self.seq_tx = max([self.seq_tx] + [item["record"]["seqno"] for m in msgs
                                           for item in m["records"]])

    def await_notices(self, count, before=None):
        """Reads the server's answers until `count` `online` notices came (each `who` of ours
        answered: the records passed every check) or the server's error; with `before`, the
        error is expected after exactly that many (§6.3: nothing of a failing msg is acted on)."""
        seen = 0
        try:
            while seen < count:
                _, m = self.read_content()
                if m["type"] == "key_update":
                    self.rx.update()
                elif m["type"] != "msg":
                    return f"unexpected {m['type']}"
                else:
                    rec = sc.parse_record(m["record"])
                    body = sc.parse_body(sc.check_content(rec, sc.b64d(m["k"], size=32)))
                    self.check_hop(rec["seqno"], rec["ts"])
                    self.accept_hop(rec["seqno"], rec["ts"])
                    seen += body["kind"] == "notice" and body["text"].startswith("online")
        except sc.ProtoError as e:
            if before is not None and seen != before:
                return f"{peer_or_local(e)} after {seen} answers"
            return peer_or_local(e)
        return f"answered {seen}" if before is None else "the session went on"

    def resign(self, rec, wire):
        """Re-sign a record after changing its decoded fields, so only the intended fault stays."""
        sc.sign_batch(self.my_key, [rec])
        wire.update(sc.record_wire(rec))


def text_of_ct(ct_len):
    """A `text` (§6.2) of at most MAX_TEXT UTF-16 units whose record's `ct` is exactly `ct_len`
    bytes (§6.1: the body's JSON, as client.py writes it, and the 16-byte tag), from characters
    of 6 (U+0001, written \\u0001), 3 (U+20AC) and 1 byte; None when no such text exists."""
    room = ct_len - 16 - len(sc.enc_json({"kind": "text", "text": ""}))
    for six in range(min(room // 6, sc.MAX_TEXT), -1, -1):
        three, one = divmod(room - 6 * six, 3)
        if room - 6 * six >= 0 and six + three + one <= sc.MAX_TEXT:
            text = "\x01" * six + "\u20ac" * three + "x" * one
            assert len(sc.enc_json({"kind": "text", "text": text})) + 16 == ct_len
            return text
    return None


def raw_hello(args, payload):
    """Sends one raw `hello` frame payload; returns the server's plaintext answer (§3.1)."""
    conn = sc.Conn(socket.create_connection((args.host, args.port), timeout=10))
    conn.sock.settimeout(10)
    try:
        conn.write_frame(payload)
        reply = sc.parse_json(conn.read_frame())
        if reply["type"] == "error":
            return "peer:" + reply["code"]
        return "answered:" + reply["type"]
    except sc.ProtoError as e:
        return "closed" if e.detail == "connection closed by the peer" else "local:" + e.code
    finally:
        conn.sock.close()


def hello_obj(group="x25519", groups=None, version=sc.WIRE_VERSION, pub=None, nonce=None):
    share = sc.KeyShare(group)
    return {"type": "hello", "version": version, "nonce": sc.b64e(nonce or os.urandom(32)),
            "groups": [group] if groups is None else groups,
            "key_share": {"group": group, "pub": sc.b64e(pub or share.pub)}}


PROBES = []


E2E_PROBES = set()  # run only with --e2e: they need a server with PROTOCOL §12.6's key directory
# name -> (outcome the server gives instead of the documented one, interop finding that reports it).
# Printed as KNOWN-DEVIATION, not OK; any third outcome fails; once the server follows the docs the
# probe is plain OK and the entry can go.
KNOWN_DEVIATIONS = {}


def probe(name, expected, user="alice", e2e=False, deviation=None):
    """Registers a probe: `expected` is the outcome word the docs require."""
    def wrap(fn):
        PROBES.append((name, expected, user, fn))
        if e2e:
            E2E_PROBES.add(name)
        if deviation:
            KNOWN_DEVIATIONS[name] = deviation
        return fn
    return wrap


def flip(b64):
    raw = bytearray(sc.b64d(b64))
    raw[len(raw) // 2] ^= 0x01
    return sc.b64e(bytes(raw))


# ---- a positive probe first: it registers alice (§5 server step 7)
@probe("register_then_close_with_receipts", "receipts")
def _(a):
    a.args.register = "alice@example.com"
    a.session()
    if not a.registered:
        return "registered=false"
    a.args.register = None
    a.transcript = sc.Transcript(None, a.session_id, a.session_time, "localhost", a.my_der,
                                 a.server_der)
    a.start_close()
    while a.receipt_hash is None:
        _, m = a.read_content()
        if m["type"] == "close":
            a.on_close(m)
        elif m["type"] == "receipt":
            a.on_receipt(m)
        elif m["type"] == "key_update":
            a.rx.update()
        elif m["type"] == "msg":
            a.on_msg(m)
    return "receipts"


# ---- hello (§3.1, §4.5, §5 server steps 1-2): plaintext answers
@probe("hello_version_1", "peer:UNSUPPORTED")
def _(a):
    return raw_hello(a.args, sc.enc_json(hello_obj(version=1)))


# §3.1, §5 server step 1, §11 "The wire's version is 3": a hello of version 2 (a peer up to
# session 23: JSON relays, or binary ones under version 2) is refused at once, not at its first relay
@probe("hello_version_2", "peer:UNSUPPORTED")
def _(a):
    return raw_hello(a.args, sc.enc_json(hello_obj(version=2)))


@probe("hello_share_group_not_listed", "peer:UNSUPPORTED")
def _(a):
    return raw_hello(a.args, sc.enc_json(hello_obj(group="x25519", groups=["p256"])))


@probe("hello_only_unknown_group", "peer:UNSUPPORTED")
def _(a):
    h = hello_obj()
    h["groups"] = ["x448"]
    h["key_share"]["group"] = "x448"
    return raw_hello(a.args, sc.enc_json(h))


@probe("hello_x25519_low_order_share", "peer:BAD_KEY_SHARE")
def _(a):
    return raw_hello(a.args, sc.enc_json(hello_obj(pub=bytes(32))))


@probe("hello_x25519_short_share", "peer:BAD_KEY_SHARE")
def _(a):
    return raw_hello(a.args, sc.enc_json(hello_obj(pub=bytes(range(31)))))


@probe("hello_p256_compressed_share", "peer:BAD_KEY_SHARE")
def _(a):
    full = sc.KeyShare("p256").pub
    compressed = bytes([2 + (full[64] & 1)]) + full[1:33]
    return raw_hello(a.args, sc.enc_json(hello_obj(group="p256", pub=compressed)))


@probe("hello_p256_off_curve_share", "peer:BAD_KEY_SHARE")
def _(a):
    full = bytearray(sc.KeyShare("p256").pub)
    full[64] ^= 1
    return raw_hello(a.args, sc.enc_json(hello_obj(group="p256", pub=bytes(full))))


@probe("hello_hybrid_share_1215_bytes", "peer:BAD_KEY_SHARE")
def _(a):
    pub = sc.KeyShare(sc.HYBRID).pub
    return raw_hello(a.args, sc.enc_json(hello_obj(group=sc.HYBRID, pub=pub[:-1])))


@probe("hello_hybrid_share_over_schema_bound", "peer:PROTOCOL_ERROR")
def _(a):
    pub = sc.KeyShare(sc.HYBRID).pub
    return raw_hello(a.args, sc.enc_json(hello_obj(group=sc.HYBRID, pub=pub + b"\0")))


@probe("hello_hybrid_ek_coefficient_not_below_q", "peer:BAD_KEY_SHARE")
def _(a):
    pub = bytearray(sc.KeyShare(sc.HYBRID).pub)
    pub[0], pub[1] = 0xFF, pub[1] | 0x0F  # the first 12-bit coefficient becomes 4095 >= q
    return raw_hello(a.args, sc.enc_json(hello_obj(group=sc.HYBRID, pub=bytes(pub))))


@probe("hello_hybrid_x25519_low_order", "peer:BAD_KEY_SHARE")
def _(a):
    pub = sc.KeyShare(sc.HYBRID).pub
    return raw_hello(a.args, sc.enc_json(hello_obj(group=sc.HYBRID, pub=pub[:-32] + bytes(32))))


@probe("hybrid_session", "session")
def _(a):
    a.args.group = a.group = sc.HYBRID
    a.session()
    return "session"


@probe("hello_nonce_31_bytes", "peer:PROTOCOL_ERROR")
def _(a):
    return raw_hello(a.args, sc.enc_json(hello_obj(nonce=bytes(31))))


@probe("hello_repeated_member", "peer:PROTOCOL_ERROR")
def _(a):
    body = sc.enc_json(hello_obj())  # the repeat holds the good value: only the repeat is wrong
    return raw_hello(a.args, body[:-1] + b',"version":%d}' % sc.WIRE_VERSION)


@probe("hello_unknown_member", "peer:PROTOCOL_ERROR")
def _(a):
    h = hello_obj()
    h["extra"] = 1
    return raw_hello(a.args, sc.enc_json(h))


@probe("hello_noncanonical_base64", "peer:PROTOCOL_ERROR")
def _(a):
    h = hello_obj()
    n = h["nonce"]  # 32 bytes: 44 chars ending "="; the last data char has 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    h["nonce"] = n[:42] + alphabet[alphabet.index(n[42]) | 1] + "="
    return raw_hello(a.args, sc.enc_json(h))


@probe("hello_nine_groups", "peer:PROTOCOL_ERROR")
def _(a):
    return raw_hello(a.args, sc.enc_json(hello_obj(groups=["x25519"] + ["p256"] * 8)))


@probe("hello_no_groups", "peer:PROTOCOL_ERROR")
def _(a):
    return raw_hello(a.args, sc.enc_json(hello_obj(groups=[])))


@probe("frame_length_zero", "peer:FRAME_TOO_LARGE")
def _(a):
    conn = socket.create_connection((a.args.host, a.args.port), timeout=10)
    conn.settimeout(10)
    conn.sendall(sc.u32(0))
    c = sc.Conn(conn)
    try:
        reply = sc.parse_json(c.read_frame())
        return "peer:" + reply.get("code", "?")
    except sc.ProtoError as e:
        return "closed" if "closed" in e.detail else "local:" + e.code
    finally:
        conn.close()


@probe("hello_unknown_groups_ignored", "session")
def _(a):
    a.tampers["hello"] = lambda h: {**h, "groups": ["x448", "x25519", "x25519"]}
    a.session()
    return "session"


# ---- the client's phase 1 (§5 server steps 4-5)
@probe("client_certificate_of_server_role", "peer:BAD_CERT")
def _(a):
    with open(os.path.join(a.args.certs, "server.pem"), "rb") as f:
        der = sc.x509.load_pem_x509_certificate(f.read()).public_bytes(
            sc.serialization.Encoding.DER)
    a.tampers["certificate"] = lambda m: {**m, "cert": sc.b64e(der)}
    a.session()


@probe("client_certificate_over_16_kib", "peer:PROTOCOL_ERROR")
def _(a):
    a.tampers["certificate"] = lambda m: {**m, "cert": sc.b64e(bytes(16 * 1024 + 1))}
    a.session()


@probe("client_certificate_verify_bad", "peer:SIG_FAIL")
def _(a):
    a.tampers["certificate_verify"] = lambda m: {**m, "sig": flip(m["sig"])}
    a.session()


@probe("client_finished_bad", "peer:HANDSHAKE_FAIL")
def _(a):
    a.tampers["finished"] = lambda m: {**m, "mac": flip(m["mac"])}
    a.session()


@probe("client_finished_33_bytes", "peer:PROTOCOL_ERROR")
def _(a):
    a.tampers["finished"] = lambda m: {**m, "mac": sc.b64e(sc.b64d(m["mac"]) + b"\0")}
    a.session()


@probe("login_instead_of_certificate", "peer:PROTOCOL_ERROR")
def _(a):
    a.tampers["certificate"] = lambda m: {"type": "login", "username": "alice",
                                          "password": a.password}
    a.session()


# ---- phase 2 (§4.5, §5 server steps 9-11)
@probe("dh_client_other_group", "peer:UNSUPPORTED")
def _(a):
    a.tampers["dh_client"] = lambda m: {**m, "key_share": sc.KeyShare("p256").wire()}
    a.session()


@probe("dh_client_low_order_share", "peer:BAD_KEY_SHARE")
def _(a):
    a.tampers["dh_client"] = lambda m: {**m, "key_share": {"group": "x25519",
                                                           "pub": sc.b64e(bytes(32))}}
    a.session()


@probe("client_finished2_bad", "peer:HANDSHAKE_FAIL")
def _(a):
    a.tampers["finished2"] = lambda m: {**m, "mac": flip(m["mac"])}
    a.session()
    return a.await_error()


# ---- the record layer (§3.2)
@probe("record_of_two_messages_each_answered", "answered 2")
def _(a):
    a.session()  # §3.2: any sender MAY put several messages in one record; each is processed
    made = []
    for _ in range(2):
        rec, wire, k = a.record(to="server", body={"kind": "who"})
        a.seq_tx = wire["seqno"]
        made.append((rec, wire, k))
    a.send_msgs([a.msg_of([m]) for m in made])  # two batches of one, a msg each
    return a.await_notices(2)


@probe("record_of_two_handshake_messages", "peer:PROTOCOL_ERROR")
def _(a):
    # §3.2: handshake records hold one message each; our certificate and certificate_verify
    # sealed in one record are refused (the handshake hash is as usual: it covers the contents)
    held, send_alone = [], a.send_content

    def send_content(obj):
        content = sc.enc_json(obj)
        if obj["type"] == "certificate":
            held.append(content)
        elif held:
            a.conn.write_frame(a.tx.seal_inner(sc.pad_inner(held.pop(), content)))
        else:
            return send_alone(obj)
        return content
    a.send_content = send_content
    a.session()
    return a.await_error()


@probe("record_nonzero_padding", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    inner = bytearray(sc.pad_inner(sc.enc_json({"type": "key_update"})))
    inner[-1] = 1
    a.conn.write_frame(a.tx.seal_inner(bytes(inner)))
    return a.await_error()


@probe("record_inner_not_multiple_of_256", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    a.conn.write_frame(a.tx.seal_inner(sc.pad_inner(sc.enc_json({"type": "key_update"}))[:-1]))
    return a.await_error()


@probe("record_length_beyond_inner", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    inner = bytearray(sc.pad_inner(sc.enc_json({"type": "key_update"})))
    inner[0:4] = sc.u32(len(inner) - 3)
    a.conn.write_frame(a.tx.seal_inner(bytes(inner)))
    return a.await_error()


@probe("record_replayed", "peer:DECRYPT_FAIL")
def _(a):
    a.session()
    _, wire, k = a.record()
    payload = a.tx.seal(sc.enc_json(a.msg_of([(None, wire, k)])))
    a.conn.write_frame(payload)
    a.conn.write_frame(payload)
    return a.await_error()


@probe("plaintext_frame_after_keys", "peer:DECRYPT_FAIL")
def _(a):
    a.session()
    a.conn.write_frame(sc.enc_json({"type": "close"}))
    return a.await_error()


@probe("frame_too_large_after_keys", "peer:FRAME_TOO_LARGE")
def _(a):
    a.session()
    a.conn.sock.sendall(sc.u32(sc.MAX_FRAME_BYTES + 1))
    return a.await_error()


# ---- session messages (§3.3, §6, §6.3): every failed check ends the session with its code
@probe("msg_other_session", "peer:TAMPERED")
def _(a):
    a.session()
    rec, wire, k = a.record(sid=os.urandom(16))
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_dir_s2c", "peer:TAMPERED")
def _(a):
    a.session()
    rec, wire, k = a.record()
    rec["dir"], wire["dir"] = "s2c", "s2c"
    a.resign(rec, wire)
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_seqno_gap", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record(seqno=2)
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_seqno_repeated", "peer:REPLAY")
def _(a):
    a.session()
    _, wire, k = a.record()
    a.send_msg(wire, k)
    _, wire, k = a.record(seqno=1)
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_ts_stale", "peer:STALE")
def _(a):
    a.session()
    _, wire, k = a.record(ts=sc.now_ms() - sc.SKEW_MS - 60_000)
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_ts_backwards", "peer:STALE")
def _(a):
    a.session()
    t = sc.now_ms()
    _, wire, k = a.record(ts=t)
    a.send_msg(wire, k)
    _, wire, k = a.record(ts=t - 1000)
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_to_unknown_recipient_form", "peer:TAMPERED")
def _(a):
    a.session()
    _, wire, k = a.record(to="everyone")
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_bad_signature", "peer:SIG_FAIL")
def _(a):
    a.session()
    _, wire, k = a.record()
    wire["sig"] = flip(wire["sig"])
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_of_the_record_form", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §6.3: a client's msg carries a group; the s2c form (one record whole) is refused
    _, wire, k = a.record()
    a.send_content({"type": "msg", "record": wire, "k": sc.b64e(k)})
    return a.await_error()


# ---- a client's msg carries a group of one signed batch (§6.1, §6.3)

@probe("msg_batch_of_five_in_one_msg", "answered 5")
def _(a):
    a.session()  # §6.3: one msg, sig and first and n once, an empty proof
    a.send_msgs([a.msg_of(a.batch(5))])
    return a.await_notices(5)


@probe("msg_batch_of_32_in_one_msg", "answered 32")
def _(a):
    a.session()  # MAX_BATCH = 32
    a.send_msgs([a.msg_of(a.batch(32))])
    return a.await_notices(32)


@probe("msg_batch_of_32_over_several_msgs", "answered 1")
def _(a):
    # 31 lobby lines of 4000 characters and a `who`, one batch: it does not fit one record, so it
    # leaves in several msgs, each with its proof (§6.3), as the client splits it; the `who` is
    # answered only once every msg before it passed (nobody else is online to receive the lines)
    a.session()
    line = sc.enc_json({"kind": "text", "text": "x" * sc.MAX_TEXT})
    made = []
    for seqno in range(1, 33):
        k = os.urandom(32)
        to, body = ("lobby", line) if seqno < 32 else ("server", b'{"kind":"who"}')
        made.append((sc.new_record(a.session_id, to, seqno, sc.now_ms(), body, k), k, None))
    sc.sign_batch(a.my_key, [rec for rec, _, _ in made])
    msgs = [m for m, _, _ in sc.author_msgs(made)]
    if len(msgs) < 2 or any(m["proof"] == [] for m in msgs):
        return f"the batch left in {len(msgs)} msgs"
    a.send_contents([sc.enc_json(m) for m in msgs])
    return a.await_notices(1)


@probe("msg_batch_of_three_in_three_msgs", "answered 3")
def _(a):
    a.session()  # each msg one record of the batch with its own proof (§6.1's cache)
    a.send_msgs([a.msg_of([made]) for made in a.batch(3)])
    return a.await_notices(3)


@probe("msg_batch_of_five_in_two_msgs_two_records", "answered 5")
def _(a):
    a.session()  # records 1-3 then 4-5 of one batch, each msg with its proof (interop finding 110)
    made = a.batch(5)
    first, second = a.msg_of(made[:3]), a.msg_of(made[3:])
    if (len(first["proof"]), len(second["proof"])) != (2, 2):
        return f"proofs of {len(first['proof'])} and {len(second['proof'])} entries"
    a.send_msgs([first])
    a.send_msgs([second])
    return a.await_notices(5)


@probe("msg_batches_back_to_back", "answered 6")
def _(a):
    a.session()  # a batch of 2, one of 1 and one of 3, each its msg, in one record
    a.send_msgs([a.msg_of(a.batch(2)), a.msg_of(a.batch(1, first=3)),
                 a.msg_of(a.batch(3, first=4))])
    return a.await_notices(6)


@probe("msg_batch_cut_short_then_another", "answered 3")
def _(a):
    # records 1-2 of a batch of 3 (its proof: leaf 3), then record 3 of another batch: each msg
    # proves its own records (the batch adds no rule to §6)
    a.session()
    a.send_msgs([a.msg_of(a.batch(3)[:2]), a.msg_of(a.batch(1, first=3))])
    return a.await_notices(3)


def _three(a, middle, bad_commitment=False):
    """Records 1-3 of one batch, all of one ts: a `who`, `middle` (to, body), a `who` (with a
    commitment that does not match its content when `bad_commitment`)."""
    ts, made = sc.now_ms(), []
    for seqno, (to, body) in enumerate((("server", {"kind": "who"}), middle,
                                        ("server", {"kind": "who"})), 1):
        k = os.urandom(32)
        made.append((sc.new_record(a.session_id, to, seqno, ts, sc.enc_json(body), k), k))
    if bad_commitment:
        made[2][0]["c"] = os.urandom(32)
    sc.sign_batch(a.my_key, [rec for rec, _ in made])
    return [(rec, sc.record_wire(rec), k) for rec, k in made]


@probe("msg_each_record_acted_on", "notice,notice,refused:of=2")
def _(a):
    # §6.3: then the records are acted on, each as if it had come alone: two `who`s answered, a
    # private line to no account refused (§6.5) by its own seqno. Acted on in seqno order, but
    # the answers need not leave so (§6.3 as spec16 f336f67 settles interop finding 114: the
    # refusal comes after the later `who`'s notice), so they are compared sorted
    a.session()
    a.send_msgs([a.msg_of(_three(a, ("user:nobody-here", {"kind": "text", "text": "hi"})))])
    got = []
    try:
        while len(got) < 3:
            _, m = a.read_content()
            if m["type"] == "key_update":
                a.rx.update()
            elif m["type"] == "refused":
                a.check_hop(m["seqno"], m["ts"])
                a.accept_hop(m["seqno"], m["ts"])
                got.append(f"refused:of={m['of']}")
            elif m["type"] == "msg":
                rec = sc.parse_record(m["record"])
                a.check_hop(rec["seqno"], rec["ts"])
                a.accept_hop(rec["seqno"], rec["ts"])
                got.append("notice")
            else:
                got.append(m["type"])
    except sc.ProtoError as e:
        got.append(peer_or_local(e))
    return ",".join(sorted(got))


def _group_fault(a, count, edit, at=None, answered=0):
    """Sends a batch of `count` `who`s as one msg (or, with `at`, the records before `at` in a
    msg of their own, then a msg of the rest), the last msg changed by `edit(msg)`; returns the
    server's verdict. §6.3: nothing of a failing msg is acted on, so no `who` of it is answered;
    a msg before it is (`answered` of them, each checked)."""
    a.session()
    made = a.batch(count)
    msgs = [a.msg_of(made)] if at is None else [a.msg_of(made[:at]), a.msg_of(made[at:])]
    edit(msgs[-1])
    a.send_msgs(msgs)
    return a.await_notices(answered + 1, before=answered)


def _entry(b):
    return sc.b64e(b)


def _records(edit):
    """An edit of each record of the msg."""
    return lambda m: [edit(item["record"]) for item in m["records"]]


# §6.3 step 4, §6.4 ROOT: the proof does not fit the records and n (PROTOCOL_ERROR) ...
probe("msg_group_proof_one_entry_short", "peer:PROTOCOL_ERROR")(
    lambda a: _group_fault(a, 3, lambda m: m["proof"].pop(), at=1, answered=1))
probe("msg_group_proof_one_entry_extra", "peer:PROTOCOL_ERROR")(
    lambda a: _group_fault(a, 3, lambda m: m["proof"].append(_entry(bytes(32))), at=1,
                           answered=1))
probe("msg_group_whole_batch_with_a_proof_entry", "peer:PROTOCOL_ERROR")(
    lambda a: _group_fault(a, 2, lambda m: m["proof"].append(_entry(bytes(32)))))
probe("msg_group_part_of_a_batch_without_its_proof", "peer:PROTOCOL_ERROR")(
    lambda a: _group_fault(a, 3, lambda m: m.update(proof=[]), at=2, answered=2))
# ... or fits and proves another root, first or n, which the signature does not cover (SIG_FAIL)
probe("msg_group_proof_entry_flipped", "peer:SIG_FAIL")(
    lambda a: _group_fault(a, 4, lambda m: m["proof"].__setitem__(0, flip(m["proof"][0])),
                           at=2, answered=2))
probe("msg_group_proof_entries_swapped", "peer:SIG_FAIL")(
    # record 4 of 4 alone: its proof [MTH(1..2), leaf 3] in the other order
    lambda a: _group_fault(a, 4, lambda m: m.update(proof=m["proof"][::-1]), at=3, answered=3))
probe("msg_group_first_changed", "peer:SIG_FAIL")(
    # records 2-3 of a batch 1-4 claim first = 2: their indices move, and so does the root
    lambda a: _group_fault(a, 4, lambda m: m.update(first=2, proof=m["proof"][:1]), at=1,
                           answered=1))
probe("msg_group_cached_statement_with_another_sig", "peer:SIG_FAIL")(
    # msg 1 verifies the batch; msg 2 of the same batch (the same batch statement) carries
    # another signature: a cache keyed on the statement alone would pass it (§6.1)
    lambda a: _group_fault(a, 2, lambda m: m.update(sig=flip(m["sig"])), at=1, answered=1))
probe("msg_group_cached_statement_signed_by_another_key", "peer:SIG_FAIL")(
    lambda a: _group_fault(a, 2, lambda m: m.update(sig=sc.b64e(
        sc.ed25519.Ed25519PrivateKey.generate().sign(_statement_of(a, m)))), at=1, answered=1))
# the schema (§6.3's table and the paragraph after it, checked on parsing): PROTOCOL_ERROR
for _name, _count, _edit in (
        ("msg_group_n_33", 1, lambda m: m.update(n=33)),
        ("msg_group_n_0", 1, lambda m: m.update(n=0)),
        ("msg_group_n_string", 1, lambda m: m.update(n="1")),
        ("msg_group_first_0", 1, lambda m: m.update(first=0)),
        ("msg_group_record_outside_the_batch", 1, lambda m: m.update(first=2)),
        ("msg_group_more_records_than_n", 2, lambda m: m.update(n=1)),
        ("msg_group_no_records", 1, lambda m: m["records"].clear()),
        ("msg_group_sig_0_bytes", 1, lambda m: m.update(sig="")),
        ("msg_group_sig_1025_bytes", 1, lambda m: m.update(sig=sc.b64e(bytes(1025)))),
        ("msg_group_without_sig", 1, lambda m: m.pop("sig")),
        ("msg_group_without_proof", 1, lambda m: m.pop("proof")),
        ("msg_group_unknown_member", 1, lambda m: m.update(seqno=1)),
        ("msg_group_proof_entry_31_bytes", 2, lambda m: m.update(proof=[_entry(bytes(31))])),
        ("msg_group_proof_of_32_entries", 1, lambda m: m.update(proof=[_entry(bytes(32))] * 32)),
        ("msg_group_record_carrying_sig", 1, _records(lambda r: r.update(
            sig=sc.b64e(bytes(64))))),
        ("msg_group_record_carrying_sig_and_batch", 1, _records(lambda r: r.update(
            sig=sc.b64e(bytes(64)), batch={"i": 0, "n": 1, "path": []}))),
        ("msg_group_records_not_consecutive", 3, lambda m: m["records"].pop(1)),
        ("msg_group_records_reordered", 2, lambda m: m["records"].reverse()),
        ("msg_group_record_repeated", 2, lambda m: m["records"].__setitem__(1, m["records"][0])),
        ("msg_group_records_of_two_sessions", 2, lambda m: m["records"][1]["record"].update(
            sid=os.urandom(16).hex())),
        ("msg_group_item_without_carrier", 1, lambda m: m["records"][0].pop("k")),
        ("msg_group_item_unknown_member", 1, lambda m: m["records"][0].update(x=1)),
        ("msg_group_item_k_31_bytes", 1, lambda m: m["records"][0].update(
            k=sc.b64e(bytes(31))))):
    probe(_name, "peer:PROTOCOL_ERROR")(lambda a, c=_count, e=_edit: _group_fault(a, c, e))


def _statement_of(a, m):
    """The batch statement a msg's records and proof prove (§6.4 ROOT, §6.1)."""
    recs = [sc.parse_record(item["record"]) for item in m["records"]]
    return sc.group_statement(recs[0]["sid"], m["first"], m["n"],
                              [sc.b64d(p) for p in m["proof"]], recs)


@probe("msg_group_claims_another_size_same_root", "peer:SIG_FAIL")
def _(a):
    # record 1 of a batch of 4 alone claims n = 3: its proof [leaf 2, MTH(3..4)] proves the same
    # root in a tree of 3 (ROOT takes MTH(3..4) as the subtree 2..3), so only the batch
    # statement's n tells them apart
    a.session()
    m = a.msg_of(a.batch(4)[:1])
    m["n"] = 3
    a.send_msgs([m])
    return a.await_notices(1, before=0)


@probe("msg_group_signature_of_a_batch_on_another", "peer:SIG_FAIL")
def _(a):
    a.session()  # the batch 1-2's signature on record 3, a batch of one, in the next msg
    first, other = a.msg_of(a.batch(2)), a.msg_of(a.batch(1, first=3))
    other["sig"] = first["sig"]
    a.send_msgs([first, other])
    return a.await_notices(3, before=2)


@probe("msg_nothing_acted_on_before_every_record_passed", "peer:TAMPERED")
def _(a):
    # §6.3: a `who` and a private line to an unknown user (refused) before a record whose
    # commitment fails (step 5): the session ends TAMPERED, and neither the notice nor the refusal
    # comes first (await_notices reports any)
    a.session()
    a.send_msgs([a.msg_of(_three(a, ("user:nobody-here", {"kind": "text", "text": "hi"}),
                                 bad_commitment=True))])
    return a.await_notices(1, before=0)


@probe("msg_wrong_content_key", "peer:DECRYPT_FAIL")
def _(a):
    a.session()
    _, wire, _k = a.record()
    a.send_msg(wire, os.urandom(32))
    return a.await_error()


@probe("msg_old_content_cipher", "peer:DECRYPT_FAIL")
def _(a):
    # PROTOCOL §11: a record sealed as before session 11 (AES-128-GCM under ek's first 16 bytes),
    # its commitment and signature right, fails to open
    a.session()
    body = {"kind": "text", "text": "the old content cipher"}
    rec, wire, k = a.record(body=body)
    rec["ct"] = AESGCM(sc.content_key(k)[:16]).encrypt(bytes(12), sc.enc_json(body),
                                                       sc.CONTENT_AAD)
    a.resign(rec, wire)
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_commitment_mismatch", "peer:TAMPERED")
def _(a):
    a.session()
    rec, wire, k = a.record()
    rec["c"] = os.urandom(32)
    wire["c"] = sc.b64e(rec["c"])
    a.resign(rec, wire)
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_text_to_server", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record(to="server")
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_who_to_lobby", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record(body={"kind": "who"})
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_notice_from_client", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record(body={"kind": "notice", "text": "forged notice"})
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_operator_from_client", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record(body={"kind": "operator", "text": "forged operator"})
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_empty_text", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record(body={"kind": "text", "text": ""})
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_text_4001_chars", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record(body={"kind": "text", "text": "x" * 4001})
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_text_4000_astral_chars_is_8000_units", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §3.3: chars are UTF-16 code units; an astral character counts 2
    _, wire, k = a.record(body={"kind": "text", "text": "\U0001F600" * 2001})
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_body_unknown_member", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record(body={"kind": "text", "text": "hi", "color": "red"})
    a.send_msg(wire, k)
    return a.await_error()


@probe("msg_unknown_member", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record()
    a.send_msg(wire, k, {"extra": True})
    return a.await_error()


@probe("msg_repeated_member", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record()
    msg = a.msg_of([(None, wire, k)])
    content = sc.enc_json(msg)
    a.send_content_raw(content[:-1] + b',"sig":' + json.dumps(msg["sig"]).encode() + b"}")
    return a.await_error()


@probe("msg_k_31_bytes", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    _, wire, k = a.record()
    a.send_msg(wire, k[:31])
    return a.await_error()


@probe("refused_sent_by_client", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    a.send_content({"type": "refused", "seqno": 1, "ts": sc.now_ms(), "of": 1,
                    "code": "RATE_LIMITED"})
    return a.await_error()


@probe("login_after_handshake", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    a.send_content({"type": "login", "username": "alice", "password": a.password})
    return a.await_error()


@probe("receipt_before_close", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()
    a.transcript = sc.Transcript(None, a.session_id, a.session_time, "localhost", a.my_der,
                                 a.server_der)
    _, receipt = a.make_receipt()
    a.send_content(receipt)
    return a.await_error()


@probe("msg_after_own_close", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §7 step 1: the closing side stops sending session messages
    a.send_content({"type": "close"})
    _, wire, k = a.record()
    a.send_msg(wire, k)
    return a.await_error()


@probe("second_close", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §7 step 2: a second close is PROTOCOL_ERROR
    a.send_content({"type": "close"})
    a.send_content({"type": "close"})
    return a.await_error()


@probe("key_update_after_own_close_then_receipts", "receipts")
def _(a):
    a.session()  # §7 step 2: a key_update is record-layer and stays allowed after close
    a.transcript = sc.Transcript(None, a.session_id, a.session_time, "localhost", a.my_der,
                                 a.server_der)
    a.start_close()
    with a.state_lock:
        a.send_content({"type": "key_update"})
        a.tx.update()
    while a.receipt_hash is None:
        _, m = a.read_content()
        {"close": a.on_close, "receipt": a.on_receipt, "msg": a.on_msg,
         "key_update": lambda m: a.rx.update()}[m["type"]](m)
    a.conn.sock.settimeout(2)
    try:  # the server, holding our receipt, closes without an error
        more = a.conn.sock.recv(1)
    except OSError:
        more = b"?"
    return "receipts" if more == b"" else "the server sent more after the receipts"


def msg_to(to):
    def run(a):
        a.session()
        rec, wire, k = a.record(to=to)
        a.send_msg(wire, k, rec=rec)
        return a.await_error()
    return run


# §6.1's recipient rule: `user:` + a canonical name, 3-32 of [a-z0-9_.-] starting with a letter
# or digit, lower case; anything else from a client is TAMPERED (§6.3 step 3)
for _name, _to in (("msg_to_non_canonical_user", "user:ALICE"),
                   ("msg_to_user_name_of_2_chars", "user:ab"),
                   ("msg_to_user_name_of_33_chars", "user:" + "b" * 33),
                   ("msg_to_user_name_starting_with_a_dot", "user:.bob")):
    probe(_name, "peer:TAMPERED")(msg_to(_to))


# §6.1: the record's schema caps `to` at 80 characters before the rule applies
probe("msg_to_over_80_characters", "peer:PROTOCOL_ERROR")(msg_to("user:" + "b" * 76))


@probe("private_to_offline_user_refused", "refused:NOT_ONLINE:of=1")
def _(a):
    a.session()  # §6.5: a refusal, not an error; the session goes on
    _, wire, k = a.record(to="user:nobody-here")
    a.send_msg(wire, k)
    return a.await_error()


@probe("private_to_self_comes_back_as_relay", "relay")
def _(a):
    a.session()  # §6.4: a private record to its own author comes back as a relay
    a.transcript = sc.Transcript(None, a.session_id, a.session_time, "localhost", a.my_der,
                                 a.server_der)
    a.send_record("user:" + a.my_name, {"kind": "text", "text": "a note to myself"})
    while True:
        _, m = a.read_content()
        if m["type"] == "relay":
            a.on_relay(m)  # every client check of §6.4 passes on our own record
            return "relay"
        if m["type"] != "msg":
            return f"unexpected {m['type']}"
        a.on_msg(m)


@probe("relay_names_a_certificate_it_introduced", "cert,ref,ref")
def _(a):
    a.session()  # §6.4.1: the author's certificate on the session's first relay of it, then its name
    a.transcript = sc.Transcript(None, a.session_id, a.session_time, "localhost", a.my_der,
                                 a.server_der)
    shapes = []
    for i in range(3):
        a.send_record("user:" + a.my_name, {"kind": "text", "text": f"a note to myself, {i}"})
    while len(shapes) < 3:
        _, m = a.read_content()
        if m["type"] == "relay":
            if m.get("author_fp") != sc.fingerprint(a.my_der):
                return f"author_fp {m.get('author_fp')!r}"
            a.on_relay(m)  # the list checks of §6.4.1 pass, and the line's hash is TRANSCRIPT's
            shapes.append("cert" if "cert" in m else "ref")
        elif m["type"] == "msg":
            a.on_msg(m)
        else:
            return f"unexpected {m['type']}"
    return ",".join(shapes)


# ---- offline delivery (§6.6)
@probe("offline_received_upto_zero", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §6.2: `received` carries `upto`, an s2c seqno >= 1
    _, wire, k = a.record(to="server", body={"kind": "received", "upto": 0})
    a.send_msg(wire, k)
    return a.await_error()


@probe("offline_received_to_the_lobby", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §6.2: `received` goes to `server` only
    _, wire, k = a.record(to="lobby", body={"kind": "received", "upto": 1})
    a.send_msg(wire, k)
    return a.await_error()


@probe("offline_stored_sent_by_a_client", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §3.3: `stored` is s2c only
    _, wire, k = a.record(to="user:" + a.my_name)
    a.send_content({"type": "stored", "seqno": 1, "ts": sc.now_ms(),
                    "author_fp": sc.fingerprint(a.my_der), "cert": sc.b64e(a.my_der),
                    "record": wire, "k": sc.b64e(k)})
    return a.await_error()


@probe("offline_queued_sent_by_a_client", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §3.3: `queued` is s2c only
    a.send_content({"type": "queued", "seqno": 1, "ts": sc.now_ms(), "of": 1})
    return a.await_error()


# ---- §3.3 "JSON or binary" (session 23): a content is a relay's binary layout (0x02) or JSON
def own_relay(a):
    """A relay (§6.4's JSON form) of a record of ours to ourselves, as a server would send it."""
    rec, _, k = a.record(to="user:" + a.my_name)
    return sc.relay_message(1, sc.now_ms(), a.my_der, sc.group_of([rec]), [{"k": sc.b64e(k)}])


@probe("relay_binary_sent_by_a_client", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §3.3: a relay in its binary layout, which only the server sends
    a.send_content_raw(sc.relay_wire(own_relay(a)))
    return a.await_error()


@probe("relay_json_sent_by_a_client", "peer:PROTOCOL_ERROR")
def _(a):
    a.session()  # §3.3: a relay in JSON is PROTOCOL_ERROR (and a relay is s2c only)
    a.send_content(own_relay(a))
    return a.await_error()


def send_who_after(a, prefix):
    """A `who` to the server (which answers it with an `online` notice) in a content of `prefix`
    and the `msg`'s JSON; the outcome: "answered 1" when the server took it."""
    a.session()
    _, wire, k = a.record(to="server", body={"kind": "who"})
    a.send_content_raw(prefix + sc.enc_json(a.msg_of([(None, wire, k)])))
    return a.await_notices(1)


# §3.3 "JSON or binary" (binrelay 6d4ae45, answering interop finding 123): a content whose first
# byte is not 0x02 is read as JSON, what comes before its `{` being what the receiver's JSON reader
# allows: "ours a byte-order mark or whitespace"; anything else PROTOCOL_ERROR.
@probe("content_json_after_whitespace", "answered 1")
def _(a):
    return send_who_after(a, b" \t\r\n")  # JSON's whitespace (RFC 8259), all four


@probe("content_json_after_a_byte_order_mark", "answered 1")
def _(a):
    return send_who_after(a, b"\xef\xbb\xbf")  # §2, §3.3: ours skips a leading BOM


@probe("content_first_byte_neither_json_nor_relay", "peer:PROTOCOL_ERROR")
def _(a):
    return send_who_after(a, b"\x01")  # §3.3: neither 0x02 nor JSON


@probe("content_json_after_a_form_feed", "peer:PROTOCOL_ERROR")
def _(a):
    return send_who_after(a, b"\x0c")  # not JSON's whitespace (RFC 8259 §2)


@probe("content_json_after_a_bom_then_whitespace", "answered 1")
def _(a):
    return send_who_after(a, b"\xef\xbb\xbf \n")  # a BOM and whitespace


# §2: ours "skips a leading BOM", one and first; a BOM after it is neither JSON nor whitespace
@probe("content_json_after_whitespace_then_a_bom", "peer:PROTOCOL_ERROR")
def _(a):
    return send_who_after(a, b" \xef\xbb\xbf")


@probe("content_json_after_two_byte_order_marks", "peer:PROTOCOL_ERROR")
def _(a):
    return send_who_after(a, b"\xef\xbb\xbf\xef\xbb\xbf")


# ---- the end-to-end key directory and records (§12.6)
def e2e_session(a):
    """A session with this probe's own device (§12.2), nothing published yet."""
    a.session()
    a.device = sc.Device(a.my_name, a.my_der, a.my_key)


def server_answer(a, want="devices"):
    """The body of the server's next `keys` answer to a fetch (`want` = "devices") or a publish
    ("opks_left"), read with the client's checks. A `keys` of the other shape is skipped: the
    server sends `{"kind":"keys","user","device","opks_left"}` unasked when a fetch left a device
    fewer than PREKEYS_LOW one-time prekeys (§12.6), and a probe that fetches its own device gets
    one between its fetches. A store failure (neither member) is returned either way."""
    other = "opks_left" if want == "devices" else "devices"
    while True:
        _, m = a.read_content()
        if m["type"] == "key_update":
            a.rx.update()
            continue
        if m["type"] != "msg":
            raise Outcome(f"unexpected {m['type']}")
        rec = sc.parse_record(m["record"])
        body = sc.parse_body(sc.check_content(rec, sc.b64d(m["k"], size=32)))
        a.check_hop(rec["seqno"], rec["ts"])  # §6; the probe keeps no transcript lines
        a.accept_hop(rec["seqno"], rec["ts"])
        if body["kind"] == "keys" and other not in body:
            return body


def send_body(a, body, to="server"):
    _, wire, k = a.record(to=to, body=body)
    a.send_msg(wire, k)


@probe("e2e_publish_then_fetch_hands_out_each_one_time_prekey_once", "opks:1,2,none", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: the opk handed out is removed in the statement that reads it
    send_body(a, a.device.publish_body(2))
    got = server_answer(a, "opks_left")
    if got.get("opks_left") != 2 or got.get("device") != a.device.id:
        return f"publish answer {got}"
    seen = []
    for _ in range(3):
        send_body(a, {"kind": "keys_fetch", "user": a.my_name, "known": []})
        devs = server_answer(a).get("devices") or []
        mine = [d for d in devs if d.get("device") == a.device.id]
        if len(mine) != 1:
            return f"fetch lists {devs}"
        sc.check_bundle(a.trust, a.my_name, mine[0])  # §12.2's receiver checks pass
        seen.append(str(mine[0]["opk"]["id"]) if "opk" in mine[0] else "none")
    return "opks:" + ",".join(seen)


@probe("e2e_prekeys_low_tells_the_device_unasked", "notice:1", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: a fetch that leaves a device < 10 one-time prekeys (PREKEYS_LOW)
    send_body(a, a.device.publish_body(2))  # makes the server tell its user, online, unasked
    server_answer(a, "opks_left")
    send_body(a, {"kind": "keys_fetch", "user": a.my_name, "known": []})
    server_answer(a)
    got = server_answer(a, "opks_left")
    if got.get("device") != a.device.id:
        return f"notice {got}"
    return f"notice:{got.get('opks_left')}"


@probe("e2e_prekeys_low_of_another_device_goes_to_the_user", "other-device:1", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: PREKEYS_LOW is told to the device's *user*, on whichever device is on
    send_body(a, a.device.publish_body(2))
    server_answer(a, "opks_left")
    a.conn.sock.close()
    first = a.device.id
    e2e_session(a)  # the same user on a new device
    send_body(a, a.device.publish_body(0))
    server_answer(a, "opks_left")
    send_body(a, {"kind": "keys_fetch", "user": a.my_name, "known": [a.device.id]})
    server_answer(a)  # takes one of the first device's prekeys
    got = server_answer(a, "opks_left")
    if got.get("device") != first:
        return f"notice {got}"
    return f"other-device:{got.get('opks_left')}"


@probe("e2e_sender_key_with_k_refused", "peer:PROTOCOL_ERROR", e2e=True)
def _(a):
    e2e_session(a)  # §12.5: a sender chain travels end to end only; with `k` the server could
    body = {"kind": "sender_key", "id": 1, "n": 0, "ck": sc.b64e(os.urandom(32))}  # read it
    send_body(a, body, to="user:" + a.my_name)
    return a.await_error()


@probe("e2e_fetch_with_known_device_answers_it_bare", "bare", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: a device in `known` comes back as {"device"} alone
    send_body(a, a.device.publish_body(0))
    server_answer(a, "opks_left")
    send_body(a, {"kind": "keys_fetch", "user": a.my_name, "known": [a.device.id]})
    devs = server_answer(a).get("devices")
    mine = [d for d in devs or [] if d.get("device") == a.device.id]
    return "bare" if mine == [{"device": a.device.id}] else f"devices {devs}"


@probe("e2e_publish_bundle_of_another_user", "peer:PROTOCOL_ERROR", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: bundle.user must be the sender's canonical name
    a.device.user = "bob"
    send_body(a, a.device.publish_body(0))
    return a.await_error()


@probe("e2e_publish_device_not_the_id_of_ik", "peer:PROTOCOL_ERROR", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: `device` must be the id of bundle.ik (§12.2)
    body = a.device.publish_body(0)
    body["device"] = sc.device_id(bytes(32))
    send_body(a, body)
    return a.await_error()


@probe("e2e_publish_101_one_time_prekeys", "peer:PROTOCOL_ERROR", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: `opks` holds 0-100 one-time prekeys
    send_body(a, a.device.publish_body(101))
    return a.await_error()


def e2e_envelope(a, rec):
    """A well-formed ratchet `e2e` for `rec`, to a made-up device."""
    return {"kind": "ratchet", "from": a.device.id, "wraps": [{
        "device": sc.device_id(os.urandom(32)), "dh": sc.b64e(os.urandom(32)), "pn": 0, "n": 0,
        "w": sc.b64e(os.urandom(48))}]}


@probe("e2e_record_to_server", "peer:PROTOCOL_ERROR", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: the server MUST refuse an e2e record to `server`
    rec, wire, _ = a.record(to="server", body={"kind": "who"})
    a.send_content(a.msg_of([(rec, wire, None)], [{"e2e": e2e_envelope(a, rec)}]))
    return a.await_error()


@probe("e2e_sender_envelope_on_a_private_record", "peer:PROTOCOL_ERROR", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: `sender` goes on a record to lobby only; the server refuses a misfit
    rec, wire, _ = a.record(to="user:" + a.my_name)
    a.send_content(a.msg_of([(rec, wire, None)], [{"e2e": {
        "kind": "sender", "from": sc.device_id(os.urandom(32)), "id": 1, "n": 0,
        "w": sc.b64e(os.urandom(48))}}]))
    return a.await_error()


@probe("e2e_ratchet_envelope_on_a_lobby_record", "peer:PROTOCOL_ERROR", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: `ratchet` goes on a record to user:x only
    rec, wire, _ = a.record(to="lobby")
    a.send_content(a.msg_of([(rec, wire, None)], [{"e2e": e2e_envelope(a, rec)}]))
    return a.await_error()


@probe("e2e_msg_with_both_k_and_e2e", "peer:PROTOCOL_ERROR", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: either k or e2e, never both
    rec, wire, k = a.record(to="user:" + a.my_name)
    a.send_content(a.msg_of([(rec, wire, k)], [{"k": sc.b64e(k), "e2e": e2e_envelope(a, rec)}]))
    return a.await_error()


def _mixed_msg(a, first, second):
    """One msg of two records of one batch, each (to, body, carrier kind): "bad k" a record with
    `k` whose ct does not open under it, "e2e to server" an end-to-end record to `server`, "k" a
    record with its `k`."""
    made, carriers = [], []
    for seqno, (to, body, kind) in enumerate((first, second), 1):
        k = os.urandom(32)
        made.append((sc.new_record(a.session_id, to, seqno, sc.now_ms(), sc.enc_json(body), k), k))
    sc.sign_batch(a.my_key, [rec for rec, _ in made])
    for (rec, k), (_, _, kind) in zip(made, (first, second)):
        carriers.append({"e2e": e2e_envelope(a, rec)} if kind == "e2e to server" else
                        {"k": sc.b64e(os.urandom(32) if kind == "bad k" else k)})
    a.send_msgs([a.msg_of([(rec, sc.record_wire(rec), k) for rec, k in made], carriers)])
    return a.await_notices(1, before=0)


_WHO = ("server", {"kind": "who"})
# §6.3's order (interop findings 111, 115 as spec16 9efd099 settles them): steps 1-3 each for
# every record, the envelope's fit with step 3, before any record's step 5
probe("e2e_msg_bad_k_then_e2e_to_server", "peer:PROTOCOL_ERROR", e2e=True)(
    lambda a: (e2e_session(a), _mixed_msg(a, (*_WHO, "bad k"), (*_WHO, "e2e to server")))[1])
probe("e2e_msg_e2e_to_server_then_bad_k", "peer:PROTOCOL_ERROR", e2e=True)(
    lambda a: (e2e_session(a), _mixed_msg(a, (*_WHO, "e2e to server"), (*_WHO, "bad k")))[1])


@probe("msg_step_1_for_every_record_before_step_2", "peer:TAMPERED")
def _(a):
    # §6.3: step 1 for every record before step 2 for any: record 1 dated before the skew
    # (step 2, STALE), record 2 of the other direction (step 1, TAMPERED)
    a.session()
    old = sc.now_ms() - sc.SKEW_MS - 60_000
    made = []
    for seqno, d in ((1, "c2s"), (2, "s2c")):
        k = os.urandom(32)
        rec = sc.new_record(a.session_id, "server", seqno, old, b'{"kind":"who"}', k)
        rec["dir"] = d
        made.append((rec, k))
    sc.sign_batch(a.my_key, [rec for rec, _ in made])
    a.send_msgs([a.msg_of([(rec, sc.record_wire(rec), k) for rec, k in made])])
    return a.await_notices(1, before=0)


def _bundle_msg(a, first, second):
    """A msg of two records to `server`, each a `who` ("who"), a `who` under another key ("bad
    k") or a keys_publish of bob's bundle from alice ("bob's bundle", §12.6: not hers)."""
    e2e_session(a)
    a.device.user = "bob"
    ts, made, carriers = sc.now_ms(), [], []
    for seqno, kind in enumerate((first, second), 1):
        k = os.urandom(32)
        body = (sc.enc_json(a.device.publish_body(0)) if kind == "bob's bundle"
                else b'{"kind":"who"}')
        made.append((sc.new_record(a.session_id, "server", seqno, ts, body, k), k))
        carriers.append({"k": sc.b64e(os.urandom(32) if kind == "bad k" else k)})
    sc.sign_batch(a.my_key, [rec for rec, _ in made])
    a.send_msgs([a.msg_of([(rec, sc.record_wire(rec), k) for rec, k in made], carriers)])
    return a.await_notices(1, before=0)


# §6.3 step 6 (review16 R1): a keys_publish of another user's bundle ends the session before
# anything of its msg is acted on (the `who` before it unanswered); steps 5-7 run record by record
# (R8, 9efd099), so a record before it whose ct does not open is reported first, and one after not
probe("e2e_msg_who_then_another_users_bundle", "peer:PROTOCOL_ERROR", e2e=True)(
    lambda a: _bundle_msg(a, "who", "bob's bundle"))
probe("e2e_msg_bad_k_then_another_users_bundle", "peer:DECRYPT_FAIL", e2e=True)(
    lambda a: _bundle_msg(a, "bad k", "bob's bundle"))
probe("e2e_msg_another_users_bundle_then_bad_k", "peer:PROTOCOL_ERROR", e2e=True)(
    lambda a: _bundle_msg(a, "bob's bundle", "bad k"))


@probe("e2e_private_to_self_relayed_byte_for_byte", "relayed as sent", e2e=True)
def _(a):
    e2e_session(a)  # §12.6: the server relays `e2e` byte for byte
    rec, wire, _ = a.record(to="user:" + a.my_name)
    e2e = e2e_envelope(a, rec)
    sent = a.msg_of([(rec, wire, None)], [{"e2e": e2e}])
    a.send_content(sent)
    a.seq_tx += 1
    while True:
        _, m = a.read_content()
        if m["type"] == "relay":  # §6.4: the msg's group members, its item's e2e as it was
            return "relayed as sent" if all(m.get(key) == sent[key] for key in (
                "sig", "first", "n", "proof", "records")) else f"relay {sorted(m)}"
        if m["type"] == "key_update":
            a.rx.update()
        elif m["type"] != "msg":
            return f"unexpected {m['type']}"


# ---- §6.3 step 7: the server's own check that a record's lone relay and stored fit one record
# dave (certs DIR/dave.pem, 12792 bytes of DER: the harness makes it with issue.py --der-bytes) is
# registered by the first of these probes that runs; a record of his to himself comes back to his
# own session as a relay when it passes
DAVE = set()


def dave_session(a):
    if not DAVE:
        a.args.register = "dave@example.com"
    a.session()
    DAVE.add(a.my_name)


def fake_ratchet(ik_sig_len, pn=0):
    """A `ratchet` envelope (§12.6) the schema takes: 8 wraps, each with a `pre` (§12.3) whose
    `ik_sig` is `ik_sig_len` bytes; the server cannot open one, so nothing in it need be real. The
    first wrap's `pn` is `pn` (its digits tune the size byte by byte)."""
    def b64(n):
        return sc.b64e(os.urandom(n))
    wraps = [{"device": f"{j:016x}", "dh": b64(32), "pn": pn if j == 0 else 0, "n": 0,
              "w": b64(48), "pre": {"ik": b64(32), "ik_sig": b64(ik_sig_len), "ek": b64(32),
                                    "spk_id": 1, "pq_id": 1, "kem_ct": b64(1088)}}
             for j in range(sc.E2E_MAX_DEVICES)]
    return {"kind": "ratchet", "from": "f" * 16, "wraps": wraps}


def lone_carriers(a, rec, e2e):
    """§6.3 step 7 as the docs write it: the bytes of the relay of `rec` alone (§6.4, binary since
    session 23: "A relay on the wire"; introducing the author's certificate, its proof as many
    entries as the record's path) and of its stored (§6.6, as it shows it: the hop's seqno and ts
    at 16 digits, no whitespace), each introducing the certificate, with `e2e`."""
    wire = sc.record_wire(rec)
    hop = {"seqno": 10**15, "ts": 10**15, "author_fp": sc.fingerprint(a.my_der),
           "cert": sc.b64e(a.my_der)}
    relay = {"type": "relay", **hop, "sig": wire["sig"], "first": rec["seqno"] - rec["batch"][0],
             "n": rec["batch"][1], "proof": wire["batch"]["path"],
             "records": [{"record": {k: v for k, v in wire.items() if k not in ("sig", "batch")},
                          "e2e": e2e}]}
    stored = {"type": "stored", **hop, "record": wire, "e2e": e2e}
    return len(sc.relay_wire(relay)), len(sc.enc_json(stored))


# a batch of 17 whose first record, leaf 0, has a path of 5 entries (§6.1: the most it can have):
# that record is the one sized, 16 `who`s to the server follow it (within §8.2's burst of 40)
STEP7_BATCH = 17


def lone_record_of(a, size):
    """A batch of STEP7_BATCH records of ours (§6.1): first one to ourselves with a fake `ratchet`
    envelope whose larger lone carrier (lone_carriers) is exactly `size` bytes — its `ct` (random:
    the server does not open a record with `e2e`, §6.3 step 5) as long as keeps it at most `size`,
    then the first wrap's `pn` one digit longer per byte left — then `who`s to the server with
    `k`. [(decoded, wire, k)] and the carriers, as Probe.msg_of takes them."""
    def made(ct_len, pn=0):
        first, ts = a.seq_tx + 1, sc.now_ms()
        recs = [{"sid": a.session_id, "dir": "c2s", "to": "user:" + a.my_name, "seqno": first,
                 "ts": ts, "ct": os.urandom(ct_len), "c": os.urandom(32), "sig": None,
                 "batch": None}]
        keys = [None] + [os.urandom(32) for _ in range(STEP7_BATCH - 1)]
        recs += [sc.new_record(a.session_id, "server", first + j, ts,
                               sc.enc_json({"kind": "who"}), keys[j])
                 for j in range(1, STEP7_BATCH)]
        sc.sign_batch(a.my_key, recs)
        e2e = fake_ratchet(1024, pn)
        carriers = [{"e2e": e2e}] + [{"k": sc.b64e(k)} for k in keys[1:]]
        made = [(rec, sc.record_wire(rec), k) for rec, k in zip(recs, keys)]
        return made, carriers, max(lone_carriers(a, recs[0], e2e))
    lo, hi = 16, sc.MAX_CT_BYTES
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if made(mid)[2] <= size else (lo, mid - 1)
    batch, carriers, got = made(lo)
    if got < size:
        batch, carriers, got = made(lo, 10 ** (size - got))
    if got != size or len(batch[0][0]["batch"][2]) != sc.MAX_PATH:
        raise Outcome(f"no record of {size} bytes alone with a path of {sc.MAX_PATH}: {got}")
    return batch, carriers


def lone_record_outcome(a, size):
    """"relayed" when the sized record comes back to our session (the `who`s' notices before it
    skipped), else the server's error."""
    dave_session(a)
    batch, carriers = lone_record_of(a, size)
    a.send_content(a.msg_of(batch, carriers))
    a.seq_tx = batch[-1][0]["seqno"]
    try:
        while True:
            _, m = a.read_content()
            if m["type"] == "key_update":
                a.rx.update()
            elif m["type"] == "relay":
                return "relayed"
            elif m["type"] != "msg":
                return f"unexpected {m['type']}"
    except sc.ProtoError as e:
        return peer_or_local(e)


@probe("step7_lone_carrier_of_65276_bytes_relayed", "relayed", user="dave", e2e=True)
def _(a):
    return lone_record_outcome(a, sc.MAX_CONTENT)  # §6.3 step 7: fits one record's content


@probe("step7_lone_carrier_of_65277_bytes_refused", "peer:PROTOCOL_ERROR", user="dave", e2e=True)
def _(a):
    return lone_record_outcome(a, sc.MAX_CONTENT + 1)


# ---- credentials (§5 server step 7); last, because failed logins slow the address down
@probe("register_invalid_email", "peer:INVALID_INPUT", user="carol")
def _(a):
    a.args.register = "not an e-mail address"
    a.session()


@probe("register_existing_user", "peer:USER_EXISTS")
def _(a):
    a.args.register = "alice@example.com"
    a.session()


@probe("login_name_is_not_the_certificate_cn", "peer:AUTH_FAIL")
def _(a):
    a.tampers["auth"] = lambda m: {**m, "username": "carol"}
    a.session()


@probe("login_wrong_password", "peer:AUTH_FAIL")
def _(a):
    a.tampers["auth"] = lambda m: {**m, "password": m["password"] + "x"}
    a.session()


@probe("login_unregistered_user", "peer:AUTH_FAIL", user="carol")
def _(a):
    a.session()


# ---- negative.json's server cases (tests/vectors/protocol/README.md), as data
def negative_case(case):
    """A probe for one `c2s …` case: a fresh valid record in a live session, edited as `set`
    says before or after signing, sent; the server must end the session with `code`."""
    def run(a):
        a.session()
        target, edits = case["target"], dict(case["set"])
        rec, wire, k = a.record(body=(json.loads(edits.pop("body")) if "body" in edits else None))
        if target in ("c2s record", "c2s k", "c2s body"):
            for field, value in edits.items():
                if field == "k":
                    k = bytes(b ^ 0xFF for b in k)
                    continue
                if value == "flip":
                    raw = bytearray(rec[field])
                    raw[-1] ^= 0x01
                    rec[field], wire[field] = bytes(raw), sc.b64e(bytes(raw))
                elif field == "sid":
                    rec[field], wire[field] = bytes.fromhex(value), value
                else:
                    rec[field], wire[field] = value, value
            if case["sign"] == "after edit":
                a.resign(rec, wire)
            a.send_msg(wire, k, rec=rec)
        elif target == "c2s twice":
            a.send_msg(wire, k, rec=rec)
            a.send_msg(wire, k, rec=rec)
        elif target == "c2s duplicate member":
            msg = a.msg_of([(rec, wire, k)])
            content = sc.enc_json(msg)
            a.send_content_raw(content[:-1] + b',"sig":' + json.dumps(msg["sig"]).encode() + b"}")
        elif target == "c2s frame twice":
            payload = a.tx.seal(sc.enc_json(a.msg_of([(rec, wire, k)])))
            a.conn.write_frame(payload)
            a.conn.write_frame(payload)
        elif target == "c2s plaintext":
            a.conn.write_frame(sc.enc_json(a.msg_of([(rec, wire, k)])))
        elif target == "c2s key_update not last":  # §3.2: a key_update ends its record
            a.conn.write_frame(a.tx.seal_inner(sc.pad_inner(
                sc.enc_json({"type": "key_update"}), sc.enc_json(a.msg_of([(rec, wire, k)])))))
        elif target == "c2s two in one record":  # §3.2: each message checked as if alone
            content = sc.enc_json(a.msg_of([(rec, wire, k)]))
            a.conn.write_frame(a.tx.seal_inner(sc.pad_inner(content, content)))
        elif target == "c2s padding":
            inner = bytearray(sc.pad_inner(sc.enc_json(a.msg_of([(rec, wire, k)]))))
            inner[-1] = 1
            a.conn.write_frame(a.tx.seal_inner(bytes(inner)))
        else:
            return f"unknown target {target!r}"
        return a.await_error()
    return run


def load_negative(path):
    with open(path) as f:
        for case in json.load(f)["cases"]:
            if case["target"].startswith("c2s"):
                name = "vector:" + re.sub(r"\W+", "_", case["name"]).strip("_")
                PROBES.append((name, "peer:" + case["code"], "alice", negative_case(case)))


# ---- a hostile end-to-end author, for a real recipient
# (`probe.py --hostile-e2e MODE CLIENT-ARGS`, CLIENT-ARGS with --e2e)
# client.py's own client, except that its first private (`ratchet`) or lobby (`sender`) line, its
# first `sender_key` record, or (the body-… modes) its first text body, carries the fault MODE names
# (§12.5, §12.6); later lines go as they should. What the recipient must do is the test's to check.

def _hostile_no_wrap(c, e2e):
    for w in e2e["wraps"]:
        w["device"] = sc.device_id(os.urandom(32))  # a device the recipient is not
    return e2e


def _hostile_wrap_flipped(c, e2e):
    for w in e2e["wraps"]:
        w["w"] = flip(w["w"])  # DECRYPT_FAIL at the recipient: shown as no key, session goes on
    return e2e


def _hostile_pre_ik_not_from(c, e2e):
    ik = sc.x25519_public(os.urandom(32))  # correctly certified, but not `from`'s key
    for w in e2e["wraps"]:
        w["pre"] = {**w["pre"], "ik": sc.b64e(ik),
                    "ik_sig": sc.b64e(sc.sign(c.my_key, sc.identity_statement(c.my_name, ik)))}
    return e2e


def _hostile_pre_ik_sig_flipped(c, e2e):
    for w in e2e["wraps"]:
        w["pre"] = {**w["pre"], "ik_sig": flip(w["pre"]["ik_sig"])}
    return e2e


def _hostile_pre_unknown_opk(c, e2e):
    for w in e2e["wraps"]:
        w["pre"] = {**w["pre"], "opk_id": 999999}  # §12.3 B 4: a prekey B does not hold: no key
    return e2e


def _hostile_sender_flipped(c, e2e):
    e2e["w"] = flip(e2e["w"])  # §12.5: the wrap does not open (DECRYPT_FAIL): no key
    return e2e


def _hostile_sender_other_id(c, e2e):
    e2e["id"] = (e2e["id"] + 1) % 2**32  # §12.5: a wrap under another id: no key
    return e2e


def _hostile_sender_from_other_device(c, e2e):
    e2e["from"] = sc.device_id(os.urandom(32))  # §12.5: no chain for (author, from): no key
    return e2e


def _hostile_sender_key_readable(c, e2e):
    return None  # the sender_key record goes with `k`: a chain key the server could read


def _hostile_body_text_4001(c, body):
    # §12.6 step 11: over §6.2's 4000 characters, signed and wrapped as it should be, so the server
    # (which cannot open it) relays it and the fault is provably the author's (interop finding 52)
    return sc.enc_json({"kind": "text", "text": "x" * 4001})


def _hostile_body_lone_surrogate(c, body):
    # valid UTF-8 bytes whose string is not Unicode text: §2 is silent (interop finding 53)
    return b'{"kind":"text","text":"the faulty line \\ud800 ends here"}'


# mode -> (the envelope kind it changes: the first of that kind, the first `sender_key` record's
# for "sender_key", or for "body" the first text body's JSON bytes; the fault)
HOSTILE_E2E = {"no-wrap-for-device": ("ratchet", _hostile_no_wrap),
               "wrap-flipped": ("ratchet", _hostile_wrap_flipped),
               "pre-ik-not-from": ("ratchet", _hostile_pre_ik_not_from),
               "pre-ik-sig-flipped": ("ratchet", _hostile_pre_ik_sig_flipped),
               "pre-unknown-opk": ("ratchet", _hostile_pre_unknown_opk),
               "sender-flipped": ("sender", _hostile_sender_flipped),
               "sender-other-id": ("sender", _hostile_sender_other_id),
               "sender-from-other-device": ("sender", _hostile_sender_from_other_device),
               "sender-key-readable": ("sender_key", _hostile_sender_key_readable),
               "body-text-4001": ("body", _hostile_body_text_4001),
               "body-lone-surrogate": ("body", _hostile_body_lone_surrogate)}


class HostileAuthor(sc.Client):
    mode = None

    def tamper(self, step, msg):
        if step not in ("e2e", "sender_key", "body") or self.mode is None:
            return msg
        kind, fault = HOSTILE_E2E[self.mode]
        if step == "body":  # the first text body (msg: its JSON bytes)
            if kind != "body" or json.loads(msg)["kind"] != "text":
                return msg
        elif (step == "sender_key") != (kind == "sender_key") or \
                (step == "e2e" and msg["kind"] != kind):
            return msg
        HostileAuthor.mode = None
        return fault(self, msg if step == "body" else json.loads(json.dumps(msg)))


def main():
    p = argparse.ArgumentParser(description="securechat server conformance probes (wire version 3)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--certs", required=True)
    p.add_argument("--password-env", required=True)
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--only", default="")
    p.add_argument("--e2e", action="store_true",
                   help="also run the end-to-end probes (PROTOCOL §12.6 key directory and records)")
    p.add_argument("--negative", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "vectors", "protocol", "negative.json"),
        help="negative.json whose `c2s …` cases run as probes too")
    args = p.parse_args()
    # before the credential probes, whose failed logins slow the address down
    first_credential = next(
        (i for i, pr in enumerate(PROBES) if pr[0] == "register_invalid_email"), len(PROBES))
    credential_probes = PROBES[first_credential:]
    del PROBES[first_credential:]
    load_negative(args.negative)
    PROBES.extend(credential_probes)
    only = set(filter(None, args.only.split(",")))
    failed = 0
    for name, expected, user, fn in PROBES:
        if (only and name not in only) or (name in E2E_PROBES and not args.e2e):
            continue
        pargs = argparse.Namespace(
            host=args.host, port=args.port, ca=args.ca, user=user,
            cert=os.path.join(args.certs, f"{user}.pem"),
            key=os.path.join(args.certs, f"{user}.key"), password_env=args.password_env,
            register=None, server_name=args.server_name, group="x25519", transcripts=None,
            key_update_every=0, certs=args.certs)
        a = Probe(pargs)
        started = time.monotonic()
        try:
            got = fn(a)
            if got is None:  # a handshake probe whose session unexpectedly completed
                got = "session"
        except Outcome as e:
            got = str(e)
        except sc.ProtoError as e:
            got = "local:" + e.code + " " + e.detail
        finally:
            if a.conn is not None:
                try:
                    a.conn.sock.close()
                except OSError:
                    pass
        ms = int((time.monotonic() - started) * 1000)
        if got == expected:
            print(f"PROBE {name} OK {got} ({ms} ms)", flush=True)
        elif KNOWN_DEVIATIONS.get(name, (None,))[0] == got:
            print(f"PROBE {name} KNOWN-DEVIATION expected {expected}, got {got} "
                  f"(interop finding {KNOWN_DEVIATIONS[name][1]}) ({ms} ms)", flush=True)
        else:
            failed += 1
            print(f"PROBE {name} FAIL expected {expected}, got {got} ({ms} ms)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--hostile-e2e":
        HostileAuthor.mode = sys.argv[2]
        if HostileAuthor.mode not in HOSTILE_E2E:
            sys.exit(f"--hostile-e2e: one of {', '.join(HOSTILE_E2E)}")
        sys.argv[1:3] = []
        sys.exit(sc.main(HostileAuthor))
    sys.exit(main())
