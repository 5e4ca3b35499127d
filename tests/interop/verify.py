#!/usr/bin/python3
"""Clean-room transcript verifier, written from docs/TRANSCRIPT.md §2–§5 and PROTOCOL.md alone
(no line of lib/transcript was read). It checks a `<base>.log` of either role, client or server,
with only the CA certificate (and a CRL), and its receipts beside it. Author certificates are
resolved as TRANSCRIPT §2.2 says: the session's list of PROTOCOL §6.4.1 (client.SessionCerts, the
one the live client runs) over the `relay` and `stored` lines in file order. Format 7: a relay line,
and a c2s msg line, carries a group of one author batch's records and the batch's `sig`, `first`,
`n` and `proof` once (PROTOCOL §6.3, §6.4's ROOT, client.group_statement); a c2s msg line covers
its records' seqnos; and such a line's line_enc (TRANSCRIPT §3.1) holds group_digest, the SHA-256
of its group_enc, computed here from the line's own records (format 6 hashed group_enc itself).

Usage: verify.py LOG --ca ca.pem [--crl ca.crl] [--receipt FILE ...]
       verify.py LOG --ca ca.pem --reveal N[:J] [--keys FILE] [--out FILE]
                                           (TRANSCRIPT §6: the transcript checked, then the opening
                                            of line N, record J of a relay or c2s msg line, with its
                                            key from <base>.keys, checked, then written to FILE
                                            (mode 0600) alone, or to stdout after the report,
                                            pretty-printed)
       verify.py --opening FILE --ca ca.pem [--crl ca.crl]   (TRANSCRIPT §6: RESULT, OPENING,
                                                               BODY lines)
Prints, on stdout:
  RESULT VALID <confirmed by both|confirmed by the client only|confirmed by the server only|
               unconfirmed>                         exit 0
  RESULT INVALID <code> line <n> <detail>           exit 1 (or `receipt <file>` for a receipt;
                                                     `opening`, whose code may be PROTOCOL_ERROR
                                                     for a body that is none, §6 step 5)
  RESULT UNSUPPORTED_FORMAT <line 1|opening> <detail>  exit 2: a format this verifier does not
                                                     read, not judged either way (§5 step 1, §6)
  LINES c2s <n> s2c <m>
  AUTHOR <cn> <fingerprint> <count>                  records carrying an author's valid
                                                     signature: the client's c2s records, relayed
                                                     and stored ones (each record of a relay line;
                                                     the client's relayed back count again)
  RECEIPT <role> c2s 1..<a> s2c 1..<b>               per valid receipt
  NOT_ATTRIBUTED line <n>[:<j>] <why>                a signed record at or after its author's
                                                     revocation (j: which record of a relay line)
  REFUSED <of> <code>                                a c2s seqno the server refused (PROTOCOL §6.5)
  QUEUED <of>                                        a c2s seqno put in an offline queue (§6.6)
  STORED line <n> <cn> <fingerprint> <record ts>     a line from the offline queue, its author's time
  REVOKED <client|server> <cn> <fingerprint> <time>  a party revoked after the session (step 3)
  WARNING <text>                                     a stale CRL (step 3); session_time unconfirmed
                                                     without a valid receipt (§5.1)
Usage or I/O errors exit 2. A --reveal this transcript cannot answer is `RESULT NOT_OPENED USAGE
<why>`, exit 2 (N alone on a line of several records, N:J on a line of one record whole), or
`RESULT NOT_OPENED INVALID_INPUT <why>`, exit 1 (a line that holds no signed record, or a record
whose key the keys file does not hold; TRANSCRIPT §6 as interop finding 112 settled it).
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client as sc  # noqa: E402  (one home for the primitives, the record and the PKI checks)

from cryptography import x509  # noqa: E402

TRANSCRIPT_VERSION = sc.TRANSCRIPT_VERSION  # §2.1 `version`: 7 (6, 5, 4, 3, 2, 1 before, below)
RECEIPT_VERSION = 2          # §4.1
OPENING_VERSION = 3          # §6: 3 since the ChaCha20-Poly1305 content cipher (2, 1 before)
# §5 step 1, §6 step 1: each earlier format, what wrote it and which securechat reads it (the
# table of formats in §2.1, by commit; interop finding 74)
READERS = {
    "protocol v1": "securechat before 5607e35",
    "signed batches": "securechat 5607e35 up to before 9c9d09a",
    "AES-128-GCM": "securechat 9c9d09a to 75c258e (sessions 8-10)",
    "relay groups": "securechat sessions 11-14 (up to 82c2781)",
    "msg groups": "securechat session 15 (up to ed384f7)",
    "group digests": "securechat sessions 16-21 (up to 1ac3ad3)",
}
EARLIER_TRANSCRIPTS = {
    1: ("written by protocol v1", READERS["protocol v1"]),
    2: ("written before signed batches", READERS["signed batches"]),
    3: ("written before the ChaCha20-Poly1305 content cipher: its ct fields are AES-128-GCM",
        READERS["AES-128-GCM"]),
    4: ("written before relays carried groups: a relay line holds one record with its own sig "
        "and batch", READERS["relay groups"]),
    5: ("written before a client's msg carried a group: a c2s msg line holds one record with its "
        "own sig and batch", READERS["msg groups"]),
    6: ("written before a group's lines hashed its digest: a relay or c2s msg line's line_enc "
        "holds its group_enc, not SHA-256(group_enc)", READERS["group digests"]),
}
EARLIER_OPENINGS = {
    1: ("made before signed batches", READERS["signed batches"]),
    2: ("made before the ChaCha20-Poly1305 content cipher: its ct is AES-128-GCM",
        READERS["AES-128-GCM"]),
}
MAX_LINE_BYTES = 160 * 1024  # §5: memory bounded by one line


class Unsupported(Exception):
    """§5 step 1, §6 step 1: a file of another format number: not judged (UNSUPPORTED_FORMAT)."""
    def __init__(self, where, detail):
        super().__init__(f"UNSUPPORTED_FORMAT {where}: {detail}")
        self.where, self.detail = where, detail


def other_format(version):
    """True for a format number (an integer >= 1) that is not ours; anything else is TAMPERED."""
    return type(version) is int and version >= 1


def unsupported(what, version, ours, earlier):
    """§5 step 1's reason: the format, what reads it, and only what this verifier knows: an
    earlier format is an older securechat's and no evidence of tampering; a later one is newer than
    this verifier or its header was edited to say so (the number is under no signature)."""
    if version < ours:
        made, reader = earlier[version]
        why = f"{made}; {reader} reads it; not evidence of tampering"
    else:
        why = "newer than this verifier, or edited to say so: the format number is not signed"
    return f"{what} format {version} ({why}): this verifier reads format {ours} only"


class Invalid(Exception):
    def __init__(self, code, where, detail):
        if isinstance(where, Record):  # §5: a fault is reported at its line; the detail says
            where, detail = where.line, f"record {where.item} of the line: {detail}"  # which record
        super().__init__(f"{code} {where}: {detail}")
        self.code, self.where, self.detail = code, where, detail


class Record:
    """Where a fault in record `item` (from 1) of relay line `n` is: the line (§5's exit: the
    first bad line number), the record named in the detail."""
    def __init__(self, n, item):
        self.line, self.item = f"line {n}", item


def at_ms(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)


def strict_line(raw, n, required, optional=()):
    """§2: one strict JSON object per line; any schema fault is TAMPERED at that line."""
    try:
        obj = sc.parse_json(raw, code="TAMPERED")
        sc.strict(obj, required, optional, code="TAMPERED")
    except sc.ProtoError as e:
        raise Invalid("TAMPERED", f"line {n}", e.detail)
    return obj


def field(fn, n, *args, **kwargs):
    """A schema check of one member: its failure is TAMPERED at line n."""
    try:
        return fn(*args, **kwargs)
    except sc.ProtoError as e:
        raise Invalid("TAMPERED", f"line {n}", e.detail)


def subject_cn(der):
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return cns[0].value if cns else "-"


def iso(when):
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def has_dns_or_ip_san(der):
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return any(isinstance(name, (x509.DNSName, x509.IPAddress)) for name in san)


class Verifier:
    def __init__(self, trust):
        self.trust = trust
        self.d = {"c2s": hashlib.sha256(), "s2c": hashlib.sha256()}
        # per direction, the digest and the latest ts at each count that ends a line (§3.2: a c2s
        # msg line covers its records' seqnos, so a count inside one ends no line)
        self.digests = {"c2s": {0: hashlib.sha256().digest()}, "s2c": {0: hashlib.sha256().digest()}}
        self.ts_upto = {"c2s": {0: None}, "s2c": {0: None}}
        self.n = {"c2s": 0, "s2c": 0}
        self.last_ts = {"c2s": 0, "s2c": 0}
        self.certs = sc.SessionCerts()  # the session's author certificates (PROTOCOL §6.4.1)
        self.batches = sc.BatchCache()  # batch signatures verified already (PROTOCOL §6.1)
        self.marks = {}          # (author fingerprint, author sid) -> highest record seqno
        self.authors = {}        # fingerprint -> [cn, lines carrying its valid signature]
        self.not_attributed = []
        self.of_lines = []       # (line number, of, refusal code or None for queued)
        self.answers = []        # (line number, c2s seqno, kind): queued, refused, own record back
        self.private = set()     # c2s seqnos whose record went to `user:` + a name
        self.stored = []         # (line number, author cn, fingerprint, record ts) of stored lines
        self.warnings = []
        self.reveal_line = None  # --reveal N: the line number N
        self.revealed = None     # ... and what the opening needs of it, once checked

    # ---- header (§2.1, §5 steps 1-3)

    def header(self, raw):
        try:  # §5 step 1: another format is known by its type and version before its members
            obj = sc.parse_json(raw, code="TAMPERED")
        except sc.ProtoError as e:
            raise Invalid("TAMPERED", "line 1", e.detail)
        if (isinstance(obj, dict) and obj.get("type") == "securechat-transcript"
                and obj.get("version") != TRANSCRIPT_VERSION and other_format(obj.get("version"))):
            raise Unsupported("line 1", unsupported("transcript", obj["version"],
                                                    TRANSCRIPT_VERSION, EARLIER_TRANSCRIPTS))
        h = strict_line(raw, 1, ["type", "version", "protocol_version", "session_id", "role",
                                 "session_time", "started_at", "client_cert", "server_cert"],
                        ["server_name"])
        if h["type"] != "securechat-transcript":
            raise Invalid("TAMPERED", "line 1", "not a transcript header")
        if h["version"] != TRANSCRIPT_VERSION:
            raise Invalid("TAMPERED", "line 1", f"transcript version {sc.safe(str(h['version']))}")
        # §2.1: the wire's version, 3, or 2 in a transcript written before session 24; an
        # integer (2.0 is no version), hashed as it stands (§3.3). Another integer is a later
        # wire's file, which §2.1 lets a verifier refuse as UNSUPPORTED_FORMAT (interop finding
        # 125, answered in the text).
        if not sc.is_int(h["protocol_version"]) or h["role"] not in ("client", "server"):
            raise Invalid("TAMPERED", "line 1", "protocol version or role")
        if h["protocol_version"] not in sc.TRANSCRIPT_PROTOCOL_VERSIONS:
            raise Unsupported("line 1", f"wire version {h['protocol_version']}")
        self.protocol_version = h["protocol_version"]
        sid = field(sc.want_str, 1, h, "session_id")
        if not sc.HEX32.fullmatch(sid):
            raise Invalid("TAMPERED", "line 1", "session_id is not 32 lowercase hex")
        self.session_id = bytes.fromhex(sid)
        self.session_time = field(sc.want_int, 1, h, "session_time")
        field(sc.want_int, 1, h, "started_at")
        self.client_der = field(sc.b64d, 1, h["client_cert"], max_size=16 * 1024)
        self.server_der = field(sc.b64d, 1, h["server_cert"], max_size=16 * 1024)
        server_name = field(sc.want_str, 1, h, "server_name") if "server_name" in h else None
        when = at_ms(self.session_time)
        try:
            self.client_pub, cn = self.trust.validate(self.client_der, "client", at=when)
            # §5 step 2: a recorded server_name is matched as the client matched it; without
            # one, the certificate must carry a DNS or IP SAN and no name is matched
            self.trust.validate(self.server_der, "server", server_name, at=when)
            if server_name is None and not has_dns_or_ip_san(self.server_der):
                raise sc.ProtoError("BAD_CERT", "server certificate without a DNS or IP SAN")
        except sc.ProtoError as e:
            raise Invalid("BAD_CERT", "line 1", e.detail)
        self.revoked_later = []  # (role, cn, fingerprint, effective revocation time)
        for der, who in ((self.client_der, "client"), (self.server_der, "server")):
            revoked = self.trust.revoked_at(der)
            if revoked is not None and revoked <= when:
                raise Invalid("BAD_CERT", "line 1", f"the {who} was revoked before the session")
            if revoked is not None:  # step 3: valid, and the report says when it was revoked
                self.revoked_later.append((who, subject_cn(der), sc.fingerprint(der), revoked))
        self.client_name = sc.canonical(cn)
        self.client_revoked = self.trust.revoked_at(self.client_der)

    # ---- lines (§2.2, §5 step 4)

    def line(self, raw, n):
        base = strict_line(raw, n, ["dir", "type"], ["record", "seqno", "ts", "author_fp", "cert",
                                                     "of", "code", "sig", "first", "n", "proof",
                                                     "records"])
        kind, d = base["type"], base["dir"]
        if d not in ("c2s", "s2c"):
            raise Invalid("TAMPERED", f"line {n}", "unknown line direction")
        shapes = {  # (required, optional)
            "msg": ((["dir", "type", "sig", "first", "n", "proof", "records"], []) if d == "c2s"
                    else (["dir", "type", "record"], [])),  # §2.2: the form follows the direction
            "relay": (["dir", "type", "seqno", "ts", "author_fp", "sig", "first", "n", "proof",
                       "records"], ["cert"]),
            "stored": (["dir", "type", "seqno", "ts", "author_fp", "record"], ["cert"]),
            "refused": (["dir", "type", "seqno", "ts", "of", "code"], []),
            "queued": (["dir", "type", "seqno", "ts", "of"], []),
        }
        if kind not in shapes:
            raise Invalid("TAMPERED", f"line {n}", "unknown line type")
        m = strict_line(raw, n, *shapes[kind])
        if kind != "msg" and d != "s2c":
            raise Invalid("TAMPERED", f"line {n}", f"a {kind} line is s2c only")
        rec = field(sc.parse_record, n, m["record"]) if "record" in m else None
        if kind == "relay":  # §5 step 4's first check of a relay line, before its seqno and ts
            group = field(sc.parse_group, n, m, carriers=False, code="TAMPERED")
        elif kind == "msg" and d == "c2s":  # likewise the group of a client's msg line
            group = field(sc.parse_author_msg, n, m, carriers=False, code="TAMPERED")
        if kind == "msg" and d == "c2s":
            recs = [r for r, _ in group[4]]
            covered = [(r["seqno"], r["ts"]) for r in recs]
        elif kind == "msg":
            covered = [(rec["seqno"], rec["ts"])]
        else:
            covered = [(field(sc.want_int, n, m, "seqno"), field(sc.want_int, n, m, "ts"))]
        seqno, ts = covered[0]
        if seqno != self.n[d] + 1:
            raise Invalid("TAMPERED", f"line {n}", f"{d} seqno {seqno}, expected {self.n[d] + 1}")
        for before, (_, t) in zip([self.last_ts[d]] + [t for _, t in covered], covered):
            if t < before:
                raise Invalid("TAMPERED", f"line {n}", f"{d} ts goes backwards")
        if kind == "msg" and d == "c2s":
            sig, first, size, proof, _ = group
            self.author_msg(sig, first, size, proof, recs, n)
            enc = sc.msg_line_enc(sig, first, size, proof, recs)
        elif kind == "msg":
            enc = b"\x01" + self.msg(rec, d, n)
        elif kind == "relay":
            fp, introduced = field(sc.parse_author_fp, n, m, code="TAMPERED")
            sig, first, size, proof, items = group
            recs = [r for r, _ in items]
            cert = self.relay(ts, fp, introduced, sig, first, size, proof, recs, n)
            enc = sc.relay_line_enc(seqno, ts, fp, introduced, sig, first, size, proof, recs)
        elif kind == "stored":
            fp, introduced = field(sc.parse_author_fp, n, m, code="TAMPERED")
            cert = self.stored_record(ts, fp, introduced, rec, n)
            enc = sc.stored_line_enc(seqno, ts, fp, introduced, rec)
        else:
            of = field(sc.want_int, n, m, "of")
            if kind == "refused":
                code = field(sc.want_str, n, m, "code")
                self.of_lines.append((n, of, code))
                self.answers.append((n, of, "refused"))
                raw_code = code.encode("utf-8")
                enc = (b"\x03" + sc.u64(seqno) + sc.u64(ts) + sc.u64(of) + sc.u32(len(raw_code))
                       + raw_code)
            else:
                self.of_lines.append((n, of, None))
                self.answers.append((n, of, "queued"))
                enc = b"\x04" + sc.u64(seqno) + sc.u64(ts) + sc.u64(of)
        if n == self.reveal_line:  # TRANSCRIPT §6: what the opening of this line needs
            grouped = kind == "relay" or (kind, d) == ("msg", "c2s")
            self.revealed = {"kind": kind, "dir": d, "seqno": seqno,
                             "group": group[:4] if grouped else None,
                             "recs": recs if grouped else [rec] if rec is not None else [],
                             "cert": cert if kind in ("relay", "stored") else self.client_der}
        self.n[d], self.last_ts[d] = covered[-1]
        self.d[d].update(enc)
        self.digests[d][self.n[d]] = self.d[d].copy().digest()
        self.ts_upto[d][self.n[d]] = self.last_ts[d]

    def author_msg(self, sig, first, size, proof, recs, n):
        """§5 step 4's c2s `msg` (a group since format 6), after its schema and its seqnos and
        dates: record by record its session, direction and recipient (TAMPERED), then once for the
        line the
        root from its records and `proof` (TAMPERED when the proof does not fit) and `sig` over
        the batch statement under the client certificate (SIG_FAIL). A fault in a record is
        reported at its line, the record named in the detail."""
        for j, rec in enumerate(recs, 1):
            if rec["sid"] != self.session_id or rec["dir"] != "c2s":
                raise Invalid("TAMPERED", Record(n, j), "a record of another session or direction")
            if not sc.is_recipient(rec["to"]):  # PROTOCOL §6.1's recipient rule
                raise Invalid("TAMPERED", Record(n, j), "c2s record to no valid recipient")
        try:
            stmt = sc.group_statement(recs[0]["sid"], first, size, proof, recs, code="TAMPERED")
        except sc.ProtoError as e:
            raise Invalid(e.code, f"line {n}", e.detail)
        fp = sc.fingerprint(self.client_der)
        if not self.batches.verified(fp, self.client_pub, stmt, sig):
            raise Invalid("SIG_FAIL", f"line {n}", "the client's batch signature over the line's "
                                                   "records")
        for j, rec in enumerate(recs, 1):
            if self.client_revoked is not None and at_ms(rec["ts"]) >= self.client_revoked:
                self.not_attributed.append((f"line {n}:{j}",
                                            "signed at or after its author's revocation"))
            else:  # §5 report: the client is the author of its own c2s records
                self.authors.setdefault(fp, [subject_cn(self.client_der), 0])[1] += 1
            if rec["to"].startswith("user:"):
                self.private.add(rec["seqno"])

    def msg(self, rec, d, n):
        """§5 step 4's s2c `msg`: the server's own record, unsigned, to the client."""
        if rec["sid"] != self.session_id or rec["dir"] != d:
            raise Invalid("TAMPERED", f"line {n}", "a record of another session or direction")
        if rec["sig"] is not None:
            raise Invalid("TAMPERED", f"line {n}", "an s2c record carries a signature")
        if rec["to"] != "user:" + self.client_name:
            raise Invalid("TAMPERED", f"line {n}", "s2c record to someone else")
        return sc.record_enc(rec)

    def signed(self, fp, pub, rec, n, what):
        """PROTOCOL §6.1's check of a signed record: its inclusion path proves its statement into
        a batch root (TAMPERED when the path does not fit `i`, `n`), and the batch signature
        verifies under the certificate (SIG_FAIL), once per batch (the cache)."""
        if rec["sig"] is None:
            raise Invalid("SIG_FAIL", f"line {n}", what + ": none")
        try:
            ok = self.batches.check(fp, pub, rec, root_code="TAMPERED")
        except sc.ProtoError as e:
            raise Invalid(e.code, f"line {n}", e.detail)
        if not ok:
            raise Invalid("SIG_FAIL", f"line {n}", what)

    def author_cert(self, fp, introduced, n):
        """§2.2 "Author certificates": the session's list (PROTOCOL §6.4.1) over the relay and
        stored lines in file order resolves `author_fp` to an earlier line's certificate bytes."""
        try:
            held = self.certs.resolve(fp, introduced, list_code="TAMPERED")
        except sc.ProtoError as e:
            raise Invalid(e.code, f"line {n}", e.detail)
        cert = introduced if held is None else held
        self.certs.commit(fp, cert)  # a bad line ends the walk, so committing early is harmless
        return cert

    def author_recipient(self, stored, rec, where):
        """§5 step 4.3: a user's record to the lobby or to the client; stored: to the client."""
        allowed = ("user:" + self.client_name,) if stored else ("lobby", "user:" + self.client_name)
        if rec["dir"] != "c2s" or rec["to"] not in allowed:
            raise Invalid("TAMPERED", where, "author record moved to another recipient")

    def author_valid(self, cert, rec, where):
        """§5 step 4.5: the author certificate at `record.ts` (BAD_CERT). Returns (key, CN)."""
        try:
            return self.trust.validate(cert, "client", at=at_ms(rec["ts"]))
        except sc.ProtoError as e:
            raise Invalid("BAD_CERT", where, f"author certificate: {e.detail}")

    def author_fresh(self, stored, hop_ts, fp, rec, where):
        """§5 step 4: the record's ts against the session (a relay) or the hop (stored), and its
        seqno above every earlier record of its author and author session in this file."""
        if stored:
            if rec["ts"] < hop_ts - sc.MAX_STORED_AGE_MS - sc.SKEW_MS:
                raise Invalid("REPLAY", where, "stored record older than any queue keeps")
            if rec["ts"] > hop_ts + sc.SKEW_MS:
                raise Invalid("STALE", where, "stored record dated after its hop")
        else:
            if rec["ts"] < self.session_time - sc.SKEW_MS:
                raise Invalid("REPLAY", where, "relayed record older than the session")
            if rec["ts"] > hop_ts + sc.SKEW_MS:
                raise Invalid("STALE", where, "relayed record dated after its hop")
        key = (fp, rec["sid"])
        if key in self.marks and rec["seqno"] <= self.marks[key]:
            raise Invalid("REPLAY", where, "author record repeated in this transcript")
        self.marks[key] = rec["seqno"]

    def attribute(self, cert, fp, cn, rec, where, n, stored):
        """§5's report: one record attributed to its author, unless signed at or after the
        author's revocation; a record of this session come back is its answer (step 4's end)."""
        revoked = self.trust.revoked_at(cert)
        if revoked is not None and at_ms(rec["ts"]) >= revoked:
            self.not_attributed.append((where, f"{cn} was revoked at {revoked.isoformat()}"))
        else:
            self.authors.setdefault(fp, [cn, 0])[1] += 1
        if rec["sid"] == self.session_id:  # the client's own record came back: its answer
            kind = "stored" if stored else "lobby relay" if rec["to"] == "lobby" else "relay"
            self.answers.append((n, rec["seqno"], kind))

    def relay(self, hop_ts, fp, introduced, sig, first, size, proof, recs, n):
        """§5 step 4's `relay` (a group since format 5), after its schema: the certificate list,
        each record's recipient, each record's dates and seqno, the certificate at each record's
        ts, then once
        for the line the root from its records and `proof` (PROTOCOL §6.4's ROOT: TAMPERED when
        the proof does not fit) and `sig` over the batch statement (SIG_FAIL). A fault in a record
        is reported at `line N:J`."""
        cert = self.author_cert(fp, introduced, n)
        for j, rec in enumerate(recs, 1):
            self.author_recipient(False, rec, Record(n, j))
        for j, rec in enumerate(recs, 1):
            self.author_fresh(False, hop_ts, fp, rec, Record(n, j))
        author_pub, cn = [self.author_valid(cert, rec, Record(n, j))
                          for j, rec in enumerate(recs, 1)][0]
        try:
            stmt = sc.group_statement(recs[0]["sid"], first, size, proof, recs, code="TAMPERED")
        except sc.ProtoError as e:
            raise Invalid(e.code, f"line {n}", e.detail)
        if not self.batches.verified(fp, author_pub, stmt, sig):
            raise Invalid("SIG_FAIL", f"line {n}", "author batch signature over the line's records")
        for j, rec in enumerate(recs, 1):
            self.attribute(cert, fp, cn, rec, f"line {n}:{j}", n, False)
        return cert

    def stored_record(self, hop_ts, fp, introduced, rec, n):
        """§5 step 4's `stored`: as a relay of its one record, which carries its own `sig` and
        `batch` (TAMPERED without, with the recipient) and passes PROTOCOL §6.1's check in place
        of the root and the relay's signature."""
        cert = self.author_cert(fp, introduced, n)
        where = f"line {n}"
        self.author_recipient(True, rec, where)
        if rec["sig"] is None:
            raise Invalid("TAMPERED", where, "stored record without its sig and batch")
        self.author_fresh(True, hop_ts, fp, rec, where)
        author_pub, cn = self.author_valid(cert, rec, where)
        self.signed(fp, author_pub, rec, n, "author record signature")
        self.attribute(cert, fp, cn, rec, where, n, True)
        self.stored.append((n, cn, fp, rec["ts"]))
        return cert

    def end(self):
        """§5 step 4, checked at the end (PROTOCOL §6.5 "One answer per record"): each answer in
        file order, so the first line at fault is the one reported. A record of this session comes
        back only while its author is online, and never a lobby one (relayed to every other user):
        the step's bullet judges those lines with the answers (interop finding 66)."""
        c2s = self.n["c2s"]
        answered = {}
        for n, of, kind in self.answers:
            if kind in ("stored", "lobby relay"):
                what = "came back stored" if kind == "stored" else "is a lobby record relayed back"
                raise Invalid("TAMPERED", f"line {n}", f"the client's own record {what}")
            if kind in ("queued", "refused") and not 1 <= of <= c2s:
                raise Invalid("TAMPERED", f"line {n}", f"`of` {of} names no c2s line")
            if kind == "queued" and of not in self.private:
                raise Invalid("TAMPERED", f"line {n}", f"queued for c2s {of}, not to user: a name")
            if of in answered:
                raise Invalid("TAMPERED", f"line {n}",
                              f"a second answer to c2s {of} ({kind} after {answered[of]})")
            answered[of] = kind

    # ---- the hash (§3) and receipts (§4.2)

    def transcript_hash(self, n_c2s, n_s2c):
        return hashlib.sha256(
            sc.TRANSCRIPT_LABEL + b"\x00" + sc.u32(self.protocol_version) + self.session_id
            + sc.u64(self.session_time) + hashlib.sha256(self.client_der).digest()
            + hashlib.sha256(self.server_der).digest()
            + sc.u64(n_c2s) + self.digests["c2s"][n_c2s]
            + sc.u64(n_s2c) + self.digests["s2c"][n_s2c]).digest()

    def receipt(self, path):
        where = f"receipt {path}"
        try:
            with open(path, "rb") as f:
                r = sc.parse_json(f.read(), code="TAMPERED")
            sc.strict(r, ["type", "version", "session_id", "signer_role", "signer", "c2s_count",
                          "s2c_count", "transcript_sha256", "sig"], code="TAMPERED")
            if r["type"] != "receipt" or r["version"] != RECEIPT_VERSION:
                raise sc.ProtoError("TAMPERED", "not a v2 receipt")
            role = sc.want_str(r, "signer_role", code="TAMPERED")
            if role not in ("client", "server"):
                raise sc.ProtoError("TAMPERED", "signer_role")
            a = sc.want_int(r, "c2s_count", code="TAMPERED")
            b = sc.want_int(r, "s2c_count", code="TAMPERED")
            th_hex = sc.want_str(r, "transcript_sha256", code="TAMPERED")
            signer = sc.want_str(r, "signer", code="TAMPERED")
            sig = sc.b64d(r["sig"], code="TAMPERED", max_size=1024)
            if not sc.HEX64.fullmatch(th_hex) or not sc.HEX64.fullmatch(signer):
                raise sc.ProtoError("TAMPERED", "hex fields")
        except sc.ProtoError as e:                                                    # 1
            raise Invalid("TAMPERED", where, e.detail)
        if r["session_id"] != self.session_id.hex():                                  # 2
            raise Invalid("TAMPERED", where, "another session's receipt")
        der = self.client_der if role == "client" else self.server_der
        if signer != sc.fingerprint(der):                                             # 3
            raise Invalid("TAMPERED", where, "signer is not that party's certificate")
        if a > self.n["c2s"] or b > self.n["s2c"]:                                    # 4
            raise Invalid("TAMPERED", where, "the receipt names lines the transcript lacks")
        if a not in self.digests["c2s"]:  # a count inside a msg line: no prefix of lines hashes so
            raise Invalid("TAMPERED", where, f"c2s_count {a} ends inside a msg line")
        th = self.transcript_hash(a, b)
        if not hmac.compare_digest(th.hex(), th_hex):                                 # 5
            raise Invalid("TAMPERED", where, "transcript hash mismatch")
        pub = x509.load_der_x509_certificate(der).public_key()
        if not sc.verify(pub, sig, sc.receipt_signed_input(role, th)):                # 6
            raise Invalid("SIG_FAIL", where, "receipt signature")
        # 7: made after every line it covers, so no earlier than the latest of their ts (less the
        # skew between the two clocks); by then the signer's certificate and the CA must be valid
        covered = [t for t in (self.ts_upto["c2s"][a], self.ts_upto["s2c"][b]) if t is not None]
        if covered:
            signer_cert = x509.load_der_x509_certificate(der)
            lapse = min(sc.utc(signer_cert, "not_valid_after"), sc.utc(self.trust.ca,
                                                                      "not_valid_after"))
            if at_ms(max(covered) - sc.SKEW_MS) > lapse:
                raise Invalid("BAD_CERT", where, "signed after its signer's certificate lapsed")
        return role, a, b


def verify(log_path, trust, receipt_paths, reveal_line=None):
    """Returns (verifier, [(role, a, b)]) or raises Invalid (the first bad line wins: lines are
    checked in order and the first failure stops the walk). With `reveal_line`, the verifier
    keeps what TRANSCRIPT §6's opening of that line needs (Verifier.revealed)."""
    v = Verifier(trust)
    v.reveal_line = reveal_line
    with open(log_path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    torn = lines.pop()  # after the final "\n" nothing; anything else is a torn final line
    if not lines:
        raise Invalid("TAMPERED", "line 1", "missing or torn header")
    for i, raw in enumerate(lines):
        if len(raw) > MAX_LINE_BYTES:
            raise Invalid("TAMPERED", f"line {i + 1}", "line over 160 KiB")
        if i == 0:
            v.header(raw)
        else:
            v.line(raw, i + 1)
    if torn:
        raise Invalid("TAMPERED", f"line {len(lines) + 1}", "truncated final line")
    v.end()
    return v, [v.receipt(p) for p in receipt_paths]


def verify_opening(path, trust):
    """TRANSCRIPT §6 `verify --opening`, steps 1-5 in order; returns (cn, fingerprint, record,
    body) or raises Invalid (where: `opening`)."""
    with open(path, "rb") as f:
        return check_opening(f.read(), trust)


def check_opening(raw, trust):
    """verify_opening on the opening's bytes."""
    def fail(code, detail):
        raise Invalid(code, "opening", detail)
    try:                                                                                   # 1
        obj = sc.parse_json(raw.rstrip(b"\n"), code="TAMPERED")
        if (isinstance(obj, dict) and obj.get("type") == "securechat-opening"
                and obj.get("version") != OPENING_VERSION and other_format(obj.get("version"))):
            raise Unsupported("opening", unsupported("opening", obj["version"], OPENING_VERSION,
                                                     EARLIER_OPENINGS))
        sc.strict(obj, ["type", "version", "cert", "record", "k"], code="TAMPERED")
        if obj["type"] != "securechat-opening":
            fail("TAMPERED", "not a securechat-opening")
        if obj["version"] != OPENING_VERSION:
            fail("TAMPERED", f"opening version {sc.safe(str(obj['version']))}")
        der = sc.b64d(obj["cert"], code="TAMPERED", max_size=16 * 1024)
        k = sc.b64d(obj["k"], code="TAMPERED", size=32)
        rec = sc.parse_record(obj["record"])
    except sc.ProtoError as e:
        fail("TAMPERED", e.detail)
    if rec["sig"] is None:
        fail("TAMPERED", "the record carries no signature: only signed records open")
    if rec["dir"] != "c2s" or not sc.is_recipient(rec["to"]):
        fail("TAMPERED", "not a user's record (PROTOCOL §6.1: c2s, a valid recipient)")
    try:                                                                                   # 2
        pub, cn = trust.validate(der, "client", at=at_ms(rec["ts"]))
    except sc.ProtoError as e:
        fail("BAD_CERT", f"author certificate: {e.detail}")
    revoked = trust.revoked_at(der)
    if revoked is not None and at_ms(rec["ts"]) >= revoked:
        fail("BAD_CERT", f"signed at or after its author's revocation ({revoked.isoformat()})")
    try:                                                                                   # 3
        ok = sc.BatchCache().check(sc.fingerprint(der), pub, rec, root_code="TAMPERED")
    except sc.ProtoError as e:
        fail(e.code, e.detail)
    if not ok:
        fail("SIG_FAIL", "the batch signature over the record's batch statement")
    try:                                                                                   # 4
        plain = sc.check_content(rec, k)
    except sc.ProtoError as e:
        fail(e.code, e.detail)  # DECRYPT_FAIL, or TAMPERED for the commitment
    try:                                                                                   # 5
        # the live code: the author signed these bytes and they are no body (interop finding 77);
        # whether the kind fits dir and `to` is not judged here
        body = sc.check_body_schema(sc.parse_body(plain))
    except sc.ProtoError as e:
        fail("PROTOCOL_ERROR", f"the body: {e.detail}")
    return cn, sc.fingerprint(der), rec, body


class NotOpened(Exception):
    """TRANSCRIPT §6: a --reveal this transcript cannot answer: a usage error (USAGE, exit 2: N
    alone on a line of several records, N:J on a line of one record whole), or a line with no
    signed record or a record without its key (INVALID_INPUT, exit 1)."""
    def __init__(self, code, detail):
        super().__init__(f"{code} {detail}")
        self.code, self.detail = code, detail


def read_keys(path):
    """TRANSCRIPT §6's `.keys` lines: {(dir, seqno, item or None): k}. Every whole line must be a
    strict key line (`item` 1-32 only on an s2c key), else TAMPERED (where: `keys <file>`); a torn
    final line (without its newline) is skipped."""
    keys = {}
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines.pop()  # after the final newline nothing; anything else is a torn final line
    for number, raw in enumerate(lines, 1):
        try:
            kl = sc.parse_json(raw, code="TAMPERED", tag="dir")
            sc.strict(kl, ["dir", "seqno", "k"], ["item"], code="TAMPERED")
            d, seqno = kl["dir"], sc.want_int(kl, "seqno", code="TAMPERED")
            item = sc.want_int(kl, "item", code="TAMPERED") if "item" in kl else None
            if d not in ("c2s", "s2c") or seqno < 1:
                raise sc.ProtoError("TAMPERED", "dir or seqno")
            if item is not None and (d == "c2s" or not 1 <= item <= sc.MAX_BATCH):
                raise sc.ProtoError("TAMPERED", "an item off a relay's key, or out of 1-32")
            keys[(d, seqno, item)] = sc.b64d(kl["k"], code="TAMPERED", size=32)
        except sc.ProtoError as e:
            raise Invalid("TAMPERED", f"keys {path}", f"line {number}: {e.detail}")
    return keys


def reveal(v, target, keys):
    """TRANSCRIPT §6 `--reveal N[:J]` on a checked transcript: the opening object of record J (or
    the line's one record) of line N, its record whole as its author signed it."""
    n, j = target
    line = v.revealed
    if line is None:
        raise NotOpened("INVALID_INPUT", f"line {n} is no message line of the transcript")
    if line["kind"] in ("refused", "queued") or (line["kind"], line["dir"]) == ("msg", "s2c"):
        raise NotOpened("INVALID_INPUT", f"line {n} is no signed record (a {line['dir']} "
                        f"{line['kind']} line: the server's receipt proves it)")
    recs = line["recs"]
    if line["group"] is None:  # a stored line: one record whole
        if j is not None:
            raise NotOpened("USAGE", f"line {n} holds one record whole: --reveal {n}, not "
                            f"{n}:{j}")
        whole, key_at = recs[0], ("s2c", line["seqno"], None)
        wrong = [at for at in keys if at[:2] == key_at[:2] and at[2] is not None]
    else:
        if j is None and len(recs) > 1:
            raise NotOpened("USAGE", f"line {n} holds {len(recs)} records: --reveal {n}:J, J "
                            f"from 1 to {len(recs)}")
        j = j or 1
        if not 1 <= j <= len(recs):
            raise NotOpened("USAGE", f"line {n} holds {len(recs)} records: J from 1 to "
                            f"{len(recs)}")
        rec = recs[j - 1]
        whole = sc.whole_record(*line["group"], recs, rec)
        if line["kind"] == "relay":
            key_at = ("s2c", line["seqno"], j)
            wrong = [at for at in keys if at[:2] == key_at[:2] and
                     (at[2] is None or at[2] > len(recs))]
        else:
            key_at, wrong = ("c2s", rec["seqno"], None), []  # an item on c2s: read_keys
    if wrong:
        raise Invalid("TAMPERED", "keys", f"a key of line {n} that names no record of it")
    if key_at not in keys:
        raise NotOpened("INVALID_INPUT", f"the keys hold no key of line {n}" +
                        (f" record {j}" if j else "") + ": this device cannot open it")
    opening = {"type": "securechat-opening", "version": OPENING_VERSION,
               "cert": sc.b64e(line["cert"]), "record": sc.record_wire(whole),
               "k": sc.b64e(keys[key_at])}
    check_opening(sc.enc_json(opening), v.trust)  # §6: checked before it is written
    return opening


def reveal_target(text):
    """`N` or `N:J` (N ≥ 2: a line after the header; J ≥ 1)."""
    n, _, j = text.partition(":")
    if not n.isdigit() or int(n) < 2 or (j and (not j.isdigit() or int(j) < 1)):
        raise argparse.ArgumentTypeError(f"--reveal N or N:J, not {text!r}")
    return int(n), int(j) if j else None


def judged(check):
    """(check()'s result, None), or (None, the exit status) once RESULT INVALID (1), RESULT
    UNSUPPORTED_FORMAT (2) or the I/O or usage error (2) has been reported."""
    try:
        return check(), None
    except Invalid as e:
        print(f"RESULT INVALID {e.code} {e.where} {sc.safe(e.detail)}")
        return None, 1
    except Unsupported as e:
        print(f"RESULT UNSUPPORTED_FORMAT {e.where} {sc.safe(e.detail)}")
        return None, 2
    except NotOpened as e:
        print(f"RESULT NOT_OPENED {e.code} {sc.safe(e.detail)}")
        return None, 2 if e.code == "USAGE" else 1
    except (OSError, sc.ProtoError) as e:
        sc.log(f"error: {e}")
        return None, 2


def main_opening(args):
    opened, status = judged(lambda: verify_opening(args.opening, sc.Trust(args.ca, args.crl)))
    if status is not None:
        return status
    cn, fp, rec, body = opened
    i, n, _ = rec["batch"]
    print("RESULT VALID opening")
    print(f"OPENING {sc.safe(cn)} {fp} to={sc.safe(rec['to'])} sid={rec['sid'].hex()} "
          f"seqno={rec['seqno']} ts={iso(at_ms(rec['ts']))} batch={i}/{n}")
    text = body.get("text")
    print(f"BODY {sc.safe(body['kind'])}" + (f" {sc.safe(text)}" if isinstance(text, str) else ""))
    return 0


def main():
    p = argparse.ArgumentParser(description="verify a securechat transcript (TRANSCRIPT.md §5) "
                                            "or an opening (§6)")
    p.add_argument("log", nargs="?")
    p.add_argument("--ca", required=True)
    p.add_argument("--crl")
    p.add_argument("--receipt", action="append", default=None)
    p.add_argument("--opening", metavar="FILE", help="check an opening (TRANSCRIPT §6) instead")
    p.add_argument("--reveal", metavar="N[:J]", type=reveal_target,
                   help="then open line N (record J of a relay or c2s msg line): TRANSCRIPT §6")
    p.add_argument("--keys", metavar="FILE", help="the keys for --reveal (default <base>.keys)")
    p.add_argument("--out", metavar="FILE", help="write the opening here (mode 0600)")
    args = p.parse_args()
    if args.opening is not None:
        return main_opening(args)
    if args.log is None:
        p.error("a transcript LOG or --opening FILE")
    base = args.log[:-4] if args.log.endswith(".log") else args.log
    if args.receipt is None:
        args.receipt = [base + s for s in (".receipt.json", ".peer-receipt.json")
                        if os.path.exists(base + s)]
    trust, status = judged(lambda: sc.Trust(args.ca, args.crl))
    if status is not None:
        return status
    verified, status = judged(lambda: verify(args.log, trust, args.receipt,
                                             args.reveal and args.reveal[0]))
    if status is not None:
        return status
    v, receipts = verified
    opening = None
    if args.reveal is not None:  # TRANSCRIPT §6: opened only from a valid transcript
        opening, status = judged(lambda: reveal(v, args.reveal,
                                                read_keys(args.keys or base + ".keys")))
        if status is not None:
            return status
        if args.out is not None:
            sc.write_private(args.out, sc.enc_json(opening) + b"\n")
            opening = None
    full = {role for role, a, b in receipts if (a, b) == (v.n["c2s"], v.n["s2c"])}
    confirmed = ("confirmed by both" if full == {"client", "server"} else
                 f"confirmed by the {full.pop()} only" if full else "unconfirmed")
    print(f"RESULT VALID {confirmed}")
    print(f"LINES c2s {v.n['c2s']} s2c {v.n['s2c']}")
    for fp, (cn, count) in sorted(v.authors.items(), key=lambda kv: kv[1][0]):
        print(f"AUTHOR {sc.safe(cn)} {fp} {count}")
    for role, a, b in receipts:
        print(f"RECEIPT {role} c2s 1..{a} s2c 1..{b}")
    for where, why in v.not_attributed:
        print(f"NOT_ATTRIBUTED {where} {sc.safe(why)}")
    for _, of, code in v.of_lines:
        print(f"QUEUED {of}" if code is None else f"REFUSED {of} {sc.safe(code)}")
    for n, cn, fp, ts in v.stored:
        print(f"STORED line {n} {sc.safe(cn)} {fp} {iso(at_ms(ts))}")
    for role, cn, fp, when in v.revoked_later:
        print(f"REVOKED {role} {sc.safe(cn)} {fp} {iso(when)}")
    crl = trust.crl
    if crl is not None:
        next_update = sc.utc(crl, "next_update")
        if next_update is None or next_update < sc.utcnow():  # step 3: applied, with a warning
            due = iso(next_update) if next_update else "absent"
            print(f"WARNING the CRL is stale (nextUpdate {due}): revocations after "
                  f"{iso(sc.utc(crl, 'last_update'))} are unknown")
    if not receipts:  # §5.1: session_time is signed only through the receipts
        print("WARNING no valid receipt: session_time and the line counts are unconfirmed")
    if opening is not None:  # §6: without --out, the opening after the report, pretty-printed
        print(json.dumps(opening, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
