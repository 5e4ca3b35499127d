#!/usr/bin/python3
"""Clean-room securechat protocol v3 client, written from docs/PROTOCOL.md, docs/TRANSCRIPT.md and
docs/PKI.md only (no line of the TypeScript implementation was read).

Usage:
  client.py --host 127.0.0.1 --port P --ca ca.pem --cert user.pem --key user.key --user NAME
            --password-env VAR [--register EMAIL] [--server-name localhost] [--group x25519|p256]
            [--key-update-every N] [--transcripts DIR] [--e2e [--no-sender-keys]]
            [--msg-records N]

Every stdin line is one chat input: `/msg NAME text` (private), `/who`, `/quit`, anything else a
lobby `text`; the records of the lines between `/batch` and `/end` are signed as one batch (§6.1,
at most MAX_BATCH; sooner when we must wait for an answer) and leave in one `msg` (§6.3), or in
several with their proofs when that does not fit one record (or --msg-records N: at most N records
to a `msg`), every other line's record alone (a batch of one). End of input closes the
session (PROTOCOL §7). Output lines (stdout, flushed):
  SESSION <session_id> registered=<true|false>   after the handshake (PROTOCOL §5)
  DEVICE <id>                                    --e2e: this device (§12.2), its bundle published
  LOST_STATE ...                                 --e2e: the state file is gone, a new device (§12.7)
  KEYS published <n> one-time prekeys left       the server's answer to our publish (§12.6)
  <author>: <text>                               a relayed lobby line, author verified (§6.4)
  <author> (private): <text>                     a relayed private line, author verified
  <author> (private) e2e: <text>                 ... whose k came from our end-to-end wrap (§12.6)
  <author> (private) (stored): <text>            ... from our offline queue (§6.6)
  <author> e2e: <text>                           a lobby line whose k came from a sender key (§12.5)
  <author> (private): NO_KEY ...                 a genuine line this device has no key for (§12.6)
  <author>: NO_KEY ...                           ... a lobby line (no sender key from that device)
  MEMBERS <online|joined|left> <names> [(more)]  the lobby's membership (§12.5, with --e2e)
  SENDER_KEY <author> <device>                   a member's new sender chain arrived (§12.5)
  SENDER_KEYS <names>                            our new sender chain went to these members
  NOT_SENT <code>                                a line not sent (§12.6: NO_E2E_KEYS, TIMEOUT, ...;
                                                 §6.1: INVALID_INPUT, over a bound checked locally)
  KEYS_PARTS <user> <n> devices in <p> parts     a fetch's list came in p > 1 parts (§12.6)
  CANNOT_READ <users (why)>: ...                 members our new sender chain could not reach
  LATE_SENDER_KEY <name> <n>                     our current sender chain went to a member it had
                                                 left out, from position <n> (§12.5)
  NOTICE: <text> / OPERATOR: <text>              server bodies (§6.2)
  QUEUED <of>                                    our c2s seqno <of> waits in an offline queue (§6.6)
  REFUSED <of> <code>                            the server refused our c2s seqno <of> (§6.5; a
                                                 sender key's too: its member is left out)
  UNKNOWN_FATE <seqnos|-> <text>                 the session ended CLUSTER_UNAVAILABLE: our c2s
                                                 seqnos of its last OPEN_FATE_MS without an answer
                                                 may or may not have arrived; <text>: the server's
  KEY_UPDATE s2c                                 the server updated its traffic key (§4.4)
  SERVER_CLOSED <code>                           the server's close gave its reason (§5.2, §7.1:
                                                 SESSION_TAKEN_OVER, SERVER_CERT_*); receipts follow
  TRANSCRIPT <path>                              where our transcript went (TRANSCRIPT §2)
  BATCH <first> <n> [in <m> msgs]                our records first..first+n-1 left signed as one
                                                 batch of n ≥ 2 (§6.1), in one msg or m (§6.3)
  RECEIPT OK <transcript_sha256>                 the server's receipt matched our transcript
  ERROR <code>                                   fatal error (exit 1)
Diagnostics go to stderr. Section numbers below cite PROTOCOL.md unless they name another file.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections import OrderedDict, deque
import socket
import struct
import sys
import queue
import threading
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The wire's version (PROTOCOL §3.1's `hello` and `server_hello`, §5 client step 2 and server
# step 1, §11 "The wire's version is 3"): 3 since session 24, and any other is UNSUPPORTED. The
# hello cookie (§5.1, u16be(version)) and a transcript header's `protocol_version` (TRANSCRIPT
# §2.1, hashed as u32be in §3.3's final block) hold it too.
WIRE_VERSION = 3
# TRANSCRIPT §2.1 `protocol_version`: what a verifier takes, 3, or 2 in a transcript written before
# session 24 (the wire's version then)
TRANSCRIPT_PROTOCOL_VERSIONS = (2, WIRE_VERSION)
# PROTOCOL §6.1: the u32be(2) of `statement` and `batch_statement` is the statements' own version,
# not the wire's: their layout has not changed since version 2, so it stays 2
STATEMENT_VERSION = 2
MAX_FRAME_BYTES = 65536                      # §2
RECORD_PADDING = 256                         # §3.2
MAX_INNER = 65280                            # §3.2
MAX_CONTENT = MAX_INNER - 4                  # §3.2: one message's largest content, 65 276 bytes
RECORD_LIMIT = 2**24                         # §3.2: hard limit per key
RECORD_AAD = b"securechat/v2 record"         # §3.2
RECORD_KEY_BYTES = 32                        # §3.2, §4.1, §4.3: a ChaCha20-Poly1305 key
LABEL_PREFIX = b"securechat/v2 "             # §4 ExpandLabel
HS_SALT = b"securechat/v2"                   # §4.1
SERVER_SIG_LABEL = b"securechat/v2 server signature"   # §4.6
CLIENT_SIG_LABEL = b"securechat/v2 client signature"   # §4.6
MESSAGE_LABEL = b"securechat/v2 message"     # §6.1: a record's statement, a batch's leaf
BATCH_LABEL = b"securechat/v2 message batch"  # §6.1: what an author signs
MAX_BATCH = 32                               # §6.1: records one signature covers
MAX_PATH = 5                                 # §6.1: inclusion path entries (n ≤ 32)
CONTENT_KEY_LABEL = b"securechat/v2 content key"   # §6.1: ek, all 32 bytes of the HMAC
CONTENT_AAD = b"securechat/v2 content"       # §6.1: ct is ChaCha20-Poly1305 under ek, nonce 0^12
COMMITMENT_LABEL = b"securechat/v2 commitment"
TRANSCRIPT_LABEL = b"securechat/v2 transcript"   # TRANSCRIPT §3.3
# TRANSCRIPT §2.1: 7 since a group's line (a relay's, a client's msg's) hashes group_digest =
# SHA-256(group_enc) in place of group_enc (6 before; 5 before a client's msg carried a group of
# one batch's records, when only relays did; 4 before relays carried groups, 3 before the
# ChaCha20-Poly1305 content cipher, 2 before signed batches)
TRANSCRIPT_VERSION = 7
# TRANSCRIPT §3.1: the first byte of line_enc for a relay line and for a client's msg line
RELAY_LINE = b"\x02"
GROUP_MSG_LINE = b"\x06"
SKEW_MS = 5 * 60 * 1000                      # §8.2
# §6.5: a node gives up on a record 30 s after first publishing it (DEPLOY.md §4.1 OUTCOME_WAIT_MS),
# and records sent behind it may share its fate; 5 s more for the trips (interop finding 64)
OPEN_FATE_MS = 35 * 1000
MAX_STORED_AGE_MS = 30 * 24 * 3600 * 1000    # §6.6 MAX_STORED_AGE
CLOSE_TIMEOUT_S = 5                          # §7
# §7 "Ending with an error": after our `error`, what the peer still sends is read and dropped until
# it closes, LINGER_MAX_BYTES (framed bytes) are read, or LINGER_MS pass, whichever comes first
LINGER_S = 0.5                               # LINGER_MS
LINGER_MAX_BYTES = 1024 * 1024
# §5, §7 "A write that fails": a side whose write fails reads what the peer sent for this long and
# reports the peer's `error` code if one is there, else the lost connection
PEER_ERROR_GRACE_S = 1.0                     # PEER_ERROR_GRACE_MS
MAX_TEXT = 4000                              # §8.2
# §6.1 "Bounds", "Why MAX_CT_BYTES": a user's (c2s) record's ct, decoded, so that a relay or a
# `stored` of it alone fits one record; an s2c record's ct is bounded by the frame (64 KiB)
MAX_CT_BYTES = 24576
S2C_CT_BYTES = 64 * 1024  # §6.1: an s2c record's ct, "to 64 KiB"
# §6.1 "Why MAX_CT_BYTES": a client's local check for §6.3 step 7 (interop finding 108, settled by
# the formula): largest(to) = C + b64(len(cert)) + b64(len(ct)) + m × b64(S), the largest relay or
# `stored` the record alone could make with the largest carrier it could get — the `stored`, since
# a relay travels binary (session 23; the JSON relay was the larger, C 787 and 15376) — to `lobby`
# a `sender` envelope and the record's `sig` (m = 1), to `user:` 8 wraps each with a `pre` holding
# the author's `ik_sig`, and the record's `sig` (m = 9). Refused above MAX_CONTENT. (C as the docs'
# own members at their largest make it, units.py LargestLoneRecord: finding 116 had it 1 high.)
LARGEST_FIXED = {"lobby": (765, 1), "user": (15354, 9)}
SESSION_CERTS = 256                          # §6.4.1: author certificates a session's list holds
# §5.2, §7.1: the codes a server's `close` may carry, each a reason that holds (§8.1), and what the
# user is told; the session still ends cleanly with receipts, and nothing reconnects by itself
SERVER_CLOSE_CODES = {
    "SERVER_CERT_EXPIRED": "its own certificate lapses; a new session will be refused until its "
                           "operator acts",
    "SERVER_CERT_REVOKED": "its own certificate was revoked; a new session will be refused until "
                           "its operator acts",
    "SESSION_TAKEN_OVER": "this user logged in again elsewhere, and that newer session goes on",
}
GROUPS = ("x25519mlkem768", "x25519", "p256")  # §3.1, the preference order
HYBRID = "x25519mlkem768"


def phase2_group(group):
    """The group of dh_client and dh_server (§4.2): the hybrid's X25519 half, else the same."""
    return "x25519" if group == HYBRID else group
MAX_SHARE_BYTES = 1216                       # §3.1: the schema bound of a `pub`
DIR_CODE = {"c2s": 1, "s2c": 2}              # §6.1 statement, TRANSCRIPT §3.1
HEX32 = re.compile(r"[0-9a-f]{32}")  # every pattern is used with fullmatch: `$` takes a final "\n"
HEX64 = re.compile(r"[0-9a-f]{64}")
# §6.1 recipient rule: a canonical name is PKI.md's repertoire in lower case, 3-32 characters
CANONICAL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{2,31}")


class ProtoError(Exception):
    def __init__(self, code, detail=""):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class PeerError(ProtoError):
    """The peer's `error`: the code it ended with (its detail starts "from the peer")."""


class FetchAgain(Exception):
    """§12.6 sender step 2: a device the answer listed bare lost its sessions (its certificate no
    longer validates), so the contact's devices are fetched again without it in `known`."""


class WriteFailed(OSError):
    """A write to the peer failed. Not reported as it is: §5 and §7 "A write that fails" read what
    the peer sent first, whose `error`, if any, is the session's end."""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def safe(text):
    """Untrusted text never reaches a terminal raw: escape control characters."""
    return "".join(ch if ch.isprintable() else "\\u%04x" % ord(ch) for ch in text)


def now_ms():
    return int(time.time() * 1000)


# ---------------------------------------------------------------- encodings (§2)

def b64e(b):
    return base64.b64encode(b).decode("ascii")


def b64d(s, code="PROTOCOL_ERROR", size=None, max_size=None, min_size=None):
    """Standard padded base64, canonical (§2); optional exact, maximum or minimum decoded size
    (§3.3)."""
    if not isinstance(s, str):
        raise ProtoError(code, "binary field is not a string")
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise ProtoError(code, f"bad base64: {e}")
    if b64e(raw) != s:  # padding present, unused bits zero
        raise ProtoError(code, "non-canonical base64")
    if size is not None and len(raw) != size:
        raise ProtoError(code, f"binary field of {len(raw)} bytes, want {size}")
    if max_size is not None and len(raw) > max_size:
        raise ProtoError(code, f"binary field of {len(raw)} bytes, over {max_size}")
    if min_size is not None and len(raw) < min_size:
        raise ProtoError(code, f"binary field of {len(raw)} bytes, under {min_size}")
    return raw


def u8(n):
    return struct.pack(">B", n)


def u32(n):
    return struct.pack(">I", n)


def u64(n):
    return struct.pack(">Q", n)


def handshake_hash(msgs):
    """H(m1..mk) of §2: each message's JSON bytes exactly as sent, length-prefixed."""
    h = hashlib.sha256()
    for m in msgs:
        h.update(u32(len(m)) + m)
    return h.digest()


def enc_json(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**53 - 1


def utf16_len(s):
    """Text limits count UTF-16 code units (§3.3); a lone surrogate (an escaped `\ud800` that §2
    does not forbid, interop finding 53) is one unit, as in a JavaScript string."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def has_lone_surrogate(s):
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in s)


def strict(obj, required, optional=(), code="PROTOCOL_ERROR"):
    """Strict object (§2): no unknown and no missing member. Types are checked by the caller."""
    if not isinstance(obj, dict):
        raise ProtoError(code, "not an object")
    keys = set(obj)
    missing = set(required) - keys
    unknown = keys - set(required) - set(optional)
    if missing or unknown:
        raise ProtoError(code, f"missing {sorted(missing)} unknown {sorted(unknown)}")


def want_str(obj, name, max_chars=None, code="PROTOCOL_ERROR", text=False):
    """A string member. Only free text (`text`: shown escaped, never hashed or signed) may hold a
    lone surrogate, which `connect` shows as <U+D800> (interop finding 53); a name, code or id
    that is to be encoded as UTF-8 never can."""
    v = obj[name]
    if not isinstance(v, str):
        raise ProtoError(code, f"{name} is not a string")
    if not text and has_lone_surrogate(v):
        raise ProtoError(code, f"{name} is not Unicode text (a lone surrogate)")
    if max_chars is not None and utf16_len(v) > max_chars:
        raise ProtoError(code, f"{name} over {max_chars} characters")
    return v


def want_text(obj):
    """§6.2: a body's `text`, 1-4000 characters."""
    text = want_str(obj, "text", MAX_TEXT, text=True)
    if not text:
        raise ProtoError("PROTOCOL_ERROR", "empty text")
    return text


def want_int(obj, name, code="PROTOCOL_ERROR"):
    v = obj[name]
    if not is_int(v):
        raise ProtoError(code, f"{name} is not a non-negative integer")
    return v


def parse_json(payload, code="PROTOCOL_ERROR", tag="type"):
    """The one JSON chokepoint (§2): UTF-8, one object, no repeated member, a string `tag`."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(code, "not UTF-8")

    def no_dups(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ProtoError(code, f"repeated member {k!r}")
            d[k] = v
        return d

    def no_constants(name):
        raise ProtoError(code, f"non-JSON constant {name}")

    try:
        obj = json.loads(text, object_pairs_hook=no_dups, parse_constant=no_constants)
    except ValueError as e:
        raise ProtoError(code, f"bad JSON: {e}")
    if not isinstance(obj, dict) or not isinstance(obj.get(tag), str):
        raise ProtoError(code, f"no string member {tag!r}")
    return obj


# ---------------------------------------------------------------- key schedule (§4)

def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    outb, t, i = b"", b"", 1
    while len(outb) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        outb += t
        i += 1
    return outb[:length]


def expand_label(secret, label, context, length):
    """ExpandLabel of §4: info = utf8("securechat/v2 " || label) || 0x00 || context."""
    return hkdf_expand(secret, LABEL_PREFIX + label.encode() + b"\x00" + context, length)


class HandshakeSecrets:
    """§4.1: everything derived from ss1 and H1."""

    def __init__(self, ss1, h1):
        self.hs = hkdf_extract(HS_SALT, ss1)
        self.key_c2s = expand_label(self.hs, "hs c2s key", h1, RECORD_KEY_BYTES)
        self.iv_c2s = expand_label(self.hs, "hs c2s iv", h1, 12)
        self.key_s2c = expand_label(self.hs, "hs s2c key", h1, RECORD_KEY_BYTES)
        self.iv_s2c = expand_label(self.hs, "hs s2c iv", h1, 12)
        self.fin_server = expand_label(self.hs, "server finished", h1, 32)
        self.fin_client = expand_label(self.hs, "client finished", h1, 32)


class MasterSecrets:
    """§4.2: master from hs and ss2; Finished keys; then session id and application secrets."""

    def __init__(self, hs, ss2):
        self.derived = expand_label(hs, "derived", b"", 32)
        self.master = hkdf_extract(self.derived, ss2)
        self.fin2_server = expand_label(self.master, "server finished 2", b"", 32)
        self.fin2_client = expand_label(self.master, "client finished 2", b"", 32)

    def application(self, hfinal):
        self.session_id = expand_label(self.master, "session id", hfinal, 16)
        self.app_c2s_0 = expand_label(self.master, "app c2s", hfinal, 32)
        self.app_s2c_0 = expand_label(self.master, "app s2c", hfinal, 32)


def traffic_keys(secret):
    """§4.3."""
    return expand_label(secret, "key", b"", RECORD_KEY_BYTES), expand_label(secret, "iv", b"", 12)


def next_traffic_secret(secret):
    """§4.4."""
    return expand_label(secret, "traffic upd", b"", 32)


def finished_mac(key, h):
    return hmac.new(key, h, hashlib.sha256).digest()


# ---------------------------------------------------------------- ML-KEM-768 (FIPS 203), for §3.1's hybrid
# Written from FIPS 203 (algorithms cited by number); pure Python because the `cryptography`
# package has no ML-KEM. Speed is irrelevant for a test client (~0.1 s per operation).

MLKEM_Q, MLKEM_N, MLKEM_K, MLKEM_ETA, MLKEM_DU, MLKEM_DV = 3329, 256, 3, 2, 10, 4
MLKEM_EK_BYTES, MLKEM_CT_BYTES = 384 * MLKEM_K + 32, 32 * (MLKEM_DU * MLKEM_K + MLKEM_DV)


def _bitrev7(i):
    return int(f"{i:07b}"[::-1], 2)


_ZETAS = [pow(17, _bitrev7(i), MLKEM_Q) for i in range(128)]
_GAMMAS = [pow(17, 2 * _bitrev7(i) + 1, MLKEM_Q) for i in range(128)]


def _ntt(f):  # Algorithm 9
    f, i, length = list(f), 1, 128
    while length >= 2:
        for start in range(0, 256, 2 * length):
            zeta = _ZETAS[i]
            i += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % MLKEM_Q
                f[j + length] = (f[j] - t) % MLKEM_Q
                f[j] = (f[j] + t) % MLKEM_Q
        length //= 2
    return f


def _ntt_inv(f):  # Algorithm 10
    f, i, length = list(f), 127, 2
    while length <= 128:
        for start in range(0, 256, 2 * length):
            zeta = _ZETAS[i]
            i -= 1
            for j in range(start, start + length):
                t = f[j]
                f[j] = (t + f[j + length]) % MLKEM_Q
                f[j + length] = zeta * (f[j + length] - t) % MLKEM_Q
        length *= 2
    return [x * 3303 % MLKEM_Q for x in f]


def _ntt_mul(f, g):  # Algorithms 11, 12
    h = [0] * 256
    for i in range(128):
        a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * _GAMMAS[i]) % MLKEM_Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % MLKEM_Q
    return h


def _add(f, g):
    return [(a + b) % MLKEM_Q for a, b in zip(f, g)]


def _byte_encode(f, d):  # Algorithm 5
    bits = 0
    for i, x in enumerate(f):
        bits |= (x % (1 << d)) << (d * i)
    return bits.to_bytes(32 * d, "little")


def _byte_decode(b, d):  # Algorithm 6 (d = 12 reduces mod q)
    bits, m = int.from_bytes(b, "little"), (1 << d) if d < 12 else MLKEM_Q
    return [((bits >> (d * i)) & ((1 << d) - 1)) % m for i in range(256)]


def _compress(f, d):
    return [((x << d) + MLKEM_Q // 2) // MLKEM_Q % (1 << d) for x in f]


def _decompress(f, d):
    return [(y * MLKEM_Q + (1 << (d - 1))) >> d for y in f]


def _sample_ntt(seed):  # Algorithm 7
    out, length = [], 840
    while True:
        stream = hashlib.shake_128(seed).digest(length)
        out, pos = [], 0
        while len(out) < 256 and pos + 3 <= len(stream):
            c0, c1, c2 = stream[pos], stream[pos + 1], stream[pos + 2]
            pos += 3
            for d in (c0 + 256 * (c1 % 16), c1 // 16 + 16 * c2):
                if d < MLKEM_Q and len(out) < 256:
                    out.append(d)
        if len(out) == 256:
            return out
        length *= 2


def _cbd(b):  # Algorithm 8, eta = 2
    bits = int.from_bytes(b, "little")
    f = []
    for i in range(256):
        w = (bits >> (4 * i)) & 0xF
        f.append(((w & 1) + ((w >> 1) & 1) - ((w >> 2) & 1) - ((w >> 3) & 1)) % MLKEM_Q)
    return f


def _prf(s, n):
    return hashlib.shake_256(s + bytes([n])).digest(64 * MLKEM_ETA)


def _matrix(rho):
    return [[_sample_ntt(rho + bytes([j, i])) for j in range(MLKEM_K)] for i in range(MLKEM_K)]


def _pke_keygen(d):  # Algorithm 13
    g = hashlib.sha3_512(d + bytes([MLKEM_K])).digest()
    rho, sigma = g[:32], g[32:]
    a = _matrix(rho)
    s = [_ntt(_cbd(_prf(sigma, i))) for i in range(MLKEM_K)]
    e = [_ntt(_cbd(_prf(sigma, MLKEM_K + i))) for i in range(MLKEM_K)]
    t = []
    for i in range(MLKEM_K):
        acc = e[i]
        for j in range(MLKEM_K):
            acc = _add(acc, _ntt_mul(a[i][j], s[j]))
        t.append(acc)
    ek = b"".join(_byte_encode(x, 12) for x in t) + rho
    return ek, b"".join(_byte_encode(x, 12) for x in s)


def _pke_encrypt(ek, m, r):  # Algorithm 14
    t = [_byte_decode(ek[384 * i:384 * (i + 1)], 12) for i in range(MLKEM_K)]
    a = _matrix(ek[384 * MLKEM_K:])
    y = [_ntt(_cbd(_prf(r, i))) for i in range(MLKEM_K)]
    e1 = [_cbd(_prf(r, MLKEM_K + i)) for i in range(MLKEM_K)]
    e2 = _cbd(_prf(r, 2 * MLKEM_K))
    u = []
    for i in range(MLKEM_K):
        acc = [0] * 256
        for j in range(MLKEM_K):
            acc = _add(acc, _ntt_mul(a[j][i], y[j]))
        u.append(_add(_ntt_inv(acc), e1[i]))
    acc = [0] * 256
    for j in range(MLKEM_K):
        acc = _add(acc, _ntt_mul(t[j], y[j]))
    mu = _decompress(_byte_decode(m, 1), 1)
    v = _add(_add(_ntt_inv(acc), e2), mu)
    return b"".join(_byte_encode(_compress(x, MLKEM_DU), MLKEM_DU) for x in u) + \
        _byte_encode(_compress(v, MLKEM_DV), MLKEM_DV)


def _pke_decrypt(dk_pke, c):  # Algorithm 15
    step = 32 * MLKEM_DU
    u = [_decompress(_byte_decode(c[step * i:step * (i + 1)], MLKEM_DU), MLKEM_DU)
         for i in range(MLKEM_K)]
    v = _decompress(_byte_decode(c[step * MLKEM_K:], MLKEM_DV), MLKEM_DV)
    s = [_byte_decode(dk_pke[384 * i:384 * (i + 1)], 12) for i in range(MLKEM_K)]
    acc = [0] * 256
    for i in range(MLKEM_K):
        acc = _add(acc, _ntt_mul(s[i], _ntt(u[i])))
    w = [(a - b) % MLKEM_Q for a, b in zip(v, _ntt_inv(acc))]
    return _byte_encode(_compress(w, 1), 1)


def mlkem_keygen(seed):
    """ML-KEM.KeyGen_internal(d, z) (Algorithm 16) from the 64-byte seed d || z: (ek, dk)."""
    d, z = seed[:32], seed[32:]
    ek, dk_pke = _pke_keygen(d)
    return ek, dk_pke + ek + hashlib.sha3_256(ek).digest() + z


def mlkem_ek_ok(ek):
    """FIPS 203 §7.2 input checks: the length, and every coefficient of t̂ below q."""
    return len(ek) == MLKEM_EK_BYTES and all(
        _byte_encode(_byte_decode(ek[384 * i:384 * (i + 1)], 12), 12) == ek[384 * i:384 * (i + 1)]
        for i in range(MLKEM_K))


def mlkem_encaps(ek, m):
    """ML-KEM.Encaps_internal(ek, m) (Algorithm 17): (shared secret, ciphertext)."""
    g = hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()
    return g[:32], _pke_encrypt(ek, m, g[32:])


def mlkem_decaps(dk, c):
    """ML-KEM.Decaps_internal(dk, c) (Algorithm 18), with implicit rejection."""
    dk_pke, ek = dk[:384 * MLKEM_K], dk[384 * MLKEM_K:768 * MLKEM_K + 32]
    h, z = dk[768 * MLKEM_K + 32:768 * MLKEM_K + 64], dk[768 * MLKEM_K + 64:]
    m = _pke_decrypt(dk_pke, c)
    g = hashlib.sha3_512(m + h).digest()
    k_bar = hashlib.shake_256(z + c).digest(32)
    return g[:32] if hmac.compare_digest(_pke_encrypt(ek, m, g[32:]), c) else k_bar


# ---------------------------------------------------------------- key agreement (§4.5)

def _x25519_agree(priv, peer_pub):
    """§4.5 X25519: 32 bytes, and never the all-zero secret."""
    if len(peer_pub) != 32:
        raise ProtoError("BAD_KEY_SHARE", "x25519 share is not 32 bytes")
    try:
        ss = priv.exchange(x25519.X25519PublicKey.from_public_bytes(peer_pub))
    except ValueError:  # OpenSSL refuses the all-zero result itself
        raise ProtoError("BAD_KEY_SHARE", "all-zero x25519 secret")
    if hmac.compare_digest(ss, bytes(32)):
        raise ProtoError("BAD_KEY_SHARE", "all-zero x25519 secret")
    return ss


def _x25519_key(scalar):
    priv = (x25519.X25519PrivateKey.from_private_bytes(scalar) if scalar
            else x25519.X25519PrivateKey.generate())
    return priv, priv.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)


def hybrid_respond(client_pub, private=None):
    """The server side of x25519mlkem768 (§3.1, §4.5), for checking vectors: encapsulate to the
    client's ek and answer with ct || X25519 pub. private = m (32) || X25519 scalar (32)."""
    if len(client_pub) != MLKEM_EK_BYTES + 32 or not mlkem_ek_ok(client_pub[:MLKEM_EK_BYTES]):
        raise ProtoError("BAD_KEY_SHARE", "hybrid client share")
    m = private[:32] if private else os.urandom(32)
    ss_kem, ct = mlkem_encaps(client_pub[:MLKEM_EK_BYTES], m)
    xpriv, xpub = _x25519_key(private[32:] if private else None)
    return ct + xpub, ss_kem + _x25519_agree(xpriv, client_pub[MLKEM_EK_BYTES:])


class KeyShare:
    """The client's side of one group (§3.1, §4.5): a share to send, then the secret from the
    server's answer."""

    def __init__(self, group, private=None):
        self.group = group
        if group == HYBRID:  # private = ML-KEM seed d || z (64) || X25519 scalar (32)
            self.dk_ek = mlkem_keygen(private[:64] if private else os.urandom(64))
            self.priv, xpub = _x25519_key(private[64:] if private else None)
            self.pub = self.dk_ek[0] + xpub
        elif group == "x25519":
            self.priv, self.pub = _x25519_key(private)
        elif group == "p256":
            self.priv = (ec.derive_private_key(int.from_bytes(private, "big"), ec.SECP256R1())
                         if private else ec.generate_private_key(ec.SECP256R1()))
            self.pub = self.priv.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        else:
            raise ProtoError("UNSUPPORTED", f"group {group!r}")

    def wire(self):
        return {"group": self.group, "pub": b64e(self.pub)}

    def agree(self, peer_pub):
        """§4.5 checks; the private key is used once and dropped."""
        priv, self.priv = self.priv, None
        if priv is None:
            raise ProtoError("INTERNAL", "ephemeral key reused")
        if self.group == HYBRID:  # ss = ss_ML-KEM || ss_X25519
            if len(peer_pub) != MLKEM_CT_BYTES + 32:
                raise ProtoError("BAD_KEY_SHARE", "hybrid server share is not 1120 bytes")
            (_, dk), self.dk_ek = self.dk_ek, None
            return mlkem_decaps(dk, peer_pub[:MLKEM_CT_BYTES]) + \
                _x25519_agree(priv, peer_pub[MLKEM_CT_BYTES:])
        if self.group == "x25519":
            return _x25519_agree(priv, peer_pub)
        if len(peer_pub) != 65 or peer_pub[0] != 4:
            raise ProtoError("BAD_KEY_SHARE", "p256 share is not a 65-byte uncompressed point")
        try:  # from_encoded_point refuses points off the curve
            pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_pub)
            return priv.exchange(ec.ECDH(), pk)
        except ValueError as e:
            raise ProtoError("BAD_KEY_SHARE", f"p256 point: {e}")


def parse_share(obj, group):
    """A `{group, pub}` object; its group must be the session's (§4.5, UNSUPPORTED)."""
    strict(obj, ["group", "pub"])
    g = want_str(obj, "group")
    if g != group:
        raise ProtoError("UNSUPPORTED", f"group {g!r}, the session's is {group!r}")
    return b64d(obj["pub"], max_size=MAX_SHARE_BYTES)


# ---------------------------------------------------------------- signatures (§4.6, CRYPTO.md)

def sign(priv, data):
    if isinstance(priv, ed25519.Ed25519PrivateKey):
        return priv.sign(data)
    if isinstance(priv, rsa.RSAPrivateKey):
        return priv.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(priv, ec.EllipticCurvePrivateKey) and isinstance(priv.curve, ec.SECP256R1):
        r, s = decode_dss_signature(priv.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    raise ProtoError("UNSUPPORTED", "signing key type")


def verify(pub, sig, data):
    """True iff sig is a valid signature; a wrong length is a failed verification (§4.6)."""
    try:
        if isinstance(pub, ed25519.Ed25519PublicKey):
            if len(sig) != 64:
                return False
            pub.verify(sig, data)
        elif isinstance(pub, rsa.RSAPublicKey):
            if len(sig) != (pub.key_size + 7) // 8:
                return False
            pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1):
            if len(sig) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                       int.from_bytes(sig[32:], "big"))
            pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
        return True
    except (InvalidSignature, ValueError):
        return False


# ---------------------------------------------------------------- PKI (PKI.md "Validation")

def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def utc(obj, name):
    """An X.509 time as an aware UTC datetime, on cryptography before and after 42 (`*_utc`)."""
    aware = getattr(obj, name + "_utc", None)
    if aware is not None:
        return aware
    naive = getattr(obj, name)
    return None if naive is None else naive.replace(tzinfo=datetime.timezone.utc)


class Trust:
    def __init__(self, ca_path, crl_path=None):
        with open(ca_path, "rb") as f:
            self.ca = x509.load_pem_x509_certificate(f.read())
        try:
            self.ca_ski = self.ca.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier).value.digest
            bc = self.ca.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound as e:
            raise ProtoError("BAD_CERT", f"CA certificate: {e}")
        if not bc.critical or not bc.value.ca:
            raise ProtoError("BAD_CERT", "CA basicConstraints")
        self.crl = None
        if crl_path is None:  # §5 client step 3: by default ca.crl beside the CA certificate
            crl_path = os.path.join(os.path.dirname(os.path.abspath(ca_path)), "ca.crl")
            if not os.path.exists(crl_path):
                crl_path = None
        if crl_path is not None:
            with open(crl_path, "rb") as f:
                crl = x509.load_pem_x509_crl(f.read())
            if crl.issuer != self.ca.subject:
                raise ProtoError("BAD_CERT", "CRL not issued by the CA")
            # by hand, as a certificate's: the installed cryptography's is_signature_valid()
            # takes no Ed25519 CA key (it raised TypeError on every CRL of an Ed25519 CA)
            self._check_sig(crl.signature, crl.tbs_certlist_bytes, crl.signature_hash_algorithm,
                            "CRL")
            self.crl = crl

    def _check_sig(self, signature, tbs, hash_algorithm, what="certificate"):
        pub = self.ca.public_key()
        try:
            if isinstance(pub, rsa.RSAPublicKey):
                pub.verify(signature, tbs, padding.PKCS1v15(), hash_algorithm)
            elif isinstance(pub, ec.EllipticCurvePublicKey):
                pub.verify(signature, tbs, ec.ECDSA(hash_algorithm))
            elif isinstance(pub, ed25519.Ed25519PublicKey):
                pub.verify(signature, tbs)
            else:
                raise ProtoError("BAD_CERT", "CA key type")
        except (InvalidSignature, TypeError, ValueError):
            raise ProtoError("BAD_CERT", f"{what} signature does not verify under the CA")

    def validate(self, der, role, expected_name=None, at=None):
        """Returns (public key, CN). Every failure is BAD_CERT (PKI.md, §5 step 3, §6.4 step 2).
        With `at` (an aware datetime) the certificate is judged at that time and the CRL is left
        to the caller, who judges revocation by date (TRANSCRIPT §5 steps 2 and 3)."""
        if len(der) > 16 * 1024:
            raise ProtoError("BAD_CERT", "certificate over 16 KiB")
        try:
            cert = x509.load_der_x509_certificate(der)
            if cert.public_bytes(serialization.Encoding.DER) != der:
                raise ValueError("not canonical DER")
            exts = cert.extensions
        except ValueError as e:
            raise ProtoError("BAD_CERT", f"malformed: {e}")
        if cert.version != x509.Version.v3:
            raise ProtoError("BAD_CERT", "not v3")
        if cert.issuer != self.ca.subject:
            raise ProtoError("BAD_CERT", "issuer is not the CA")
        try:
            aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound:
            raise ProtoError("BAD_CERT", "no authorityKeyIdentifier")
        if aki.key_identifier != self.ca_ski:
            raise ProtoError("BAD_CERT", "AKI is not the CA's SKI")
        self._check_sig(cert.signature, cert.tbs_certificate_bytes, cert.signature_hash_algorithm)
        now = utcnow() if at is None else at
        for c, what in ((cert, "certificate"), (self.ca, "CA")):
            if not (utc(c, "not_valid_before") <= now <= utc(c, "not_valid_after")):
                raise ProtoError("BAD_CERT", f"{what} not valid {'now' if at is None else 'then'}")
        try:
            if exts.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise ProtoError("BAD_CERT", "certificate is a CA")
        except x509.ExtensionNotFound:
            pass
        try:
            ku = exts.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise ProtoError("BAD_CERT", "no keyUsage")
        if not ku.digital_signature or ku.key_cert_sign:
            raise ProtoError("BAD_CERT", "keyUsage")
        try:
            eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            raise ProtoError("BAD_CERT", "no extKeyUsage")
        want = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        if want not in eku:
            raise ProtoError("BAD_CERT", f"EKU lacks {role}Auth")
        understood = (x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage,
                      x509.SubjectAlternativeName, x509.NameConstraints)
        for e in exts:
            if e.critical and not isinstance(e.value, understood):
                raise ProtoError("BAD_CERT", f"unknown critical extension {e.oid.dotted_string}")
        pub = cert.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            if pub.key_size < 2048:
                raise ProtoError("BAD_CERT", "RSA key under 2048 bits")
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            if not isinstance(pub.curve, ec.SECP256R1):  # §4.6: the only EC peer key type
                raise ProtoError("BAD_CERT", "EC key is not P-256")
        elif not isinstance(pub, ed25519.Ed25519PublicKey):
            raise ProtoError("BAD_CERT", "key type")
        if role == "server" and expected_name is not None:
            self._match_name(exts, expected_name)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = cns[0].value if len(cns) == 1 else None
        if role == "client" and cn is None:
            raise ProtoError("BAD_CERT", "client certificate without exactly one CN")
        if self.crl is not None and at is None:
            nu = utc(self.crl, "next_update")
            if nu is None or nu < now:
                raise ProtoError("BAD_CERT", "CRL is out of date")
            if self.crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise ProtoError("BAD_CERT", "certificate revoked")
        return pub, cn

    def lapsed(self, der):
        """§12.6 sender step 2: why a contact certificate has lapsed (revoked in our CRL, or past
        its notAfter or the CA's), or None: what says the contact's keys are done, unlike a
        validation failure of our own (a CRL past its nextUpdate)."""
        now = utcnow()
        if self.revoked_at(der) is not None:
            return "certificate revoked"
        if utc(x509.load_der_x509_certificate(der), "not_valid_after") < now:
            return "certificate expired"
        if utc(self.ca, "not_valid_after") < now:
            return "CA certificate expired"
        return None

    def revoked_at(self, der):
        """The effective revocation time of a certificate in our CRL, or None (TRANSCRIPT §5 step
        3: the entry's invalidityDate if present, else its revocationDate)."""
        if self.crl is None:
            return None
        entry = self.crl.get_revoked_certificate_by_serial_number(
            x509.load_der_x509_certificate(der).serial_number)
        if entry is None:
            return None
        try:
            return entry.extensions.get_extension_for_class(
                x509.InvalidityDate).value.invalidity_date.replace(tzinfo=datetime.timezone.utc)
        except x509.ExtensionNotFound:
            return utc(entry, "revocation_date")

    @staticmethod
    def _match_name(exts, name):
        try:
            san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise ProtoError("BAD_CERT", "no subjectAltName")
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            ip = None
        if ip is not None:
            if ip in san.get_values_for_type(x509.IPAddress):
                return
            raise ProtoError("BAD_CERT", f"no IP SAN {name}")
        want = name.lower().rstrip(".").split(".")
        for dns in san.get_values_for_type(x509.DNSName):
            labels = dns.lower().split(".")
            if len(labels) != len(want):
                continue
            if labels[0] == "*" and len(labels) > 2 and labels[1:] == want[1:]:
                return
            if labels == want:
                return
        raise ProtoError("BAD_CERT", f"no DNS SAN {name}")


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


class SessionCerts:
    """§6.4.1: a session's list of the author certificates introduced in it, least recently used
    first, at most SESSION_CERTS, run over the `relay` and `stored` messages in s2c seqno order — by
    the recipient as they arrive and by a verifier over the transcript's lines (TRANSCRIPT §5 step
    4), the same way the server runs it when sending. `resolve` checks one message against the list
    and changes nothing; `commit` applies it once the message is accepted."""

    def __init__(self, limit=SESSION_CERTS):
        self.limit = limit
        self.entries = OrderedDict()  # fingerprint -> what the owner keeps for it

    def resolve(self, fp, cert_der, list_code="PROTOCOL_ERROR"):
        """The kept value for a reference, or None for a certificate introduced here (the caller
        validates it). `list_code` is the code of a list fault: PROTOCOL_ERROR live (§6.4.1),
        TAMPERED in a transcript (TRANSCRIPT §5)."""
        if cert_der is not None:
            if fingerprint(cert_der) != fp:
                raise ProtoError("TAMPERED", "certificate introduced under another fingerprint")
            if fp in self.entries:
                raise ProtoError(list_code, "author certificate introduced again in this session")
            return None
        if fp not in self.entries:
            raise ProtoError(list_code, "names an author certificate this session was never sent "
                             "(or has dropped since)")
        return self.entries[fp]

    def commit(self, fp, value):
        if fp in self.entries:
            self.entries.move_to_end(fp)
            return
        self.entries[fp] = value
        if len(self.entries) > self.limit:
            self.entries.popitem(last=False)


def parse_author_fp(m, code="PROTOCOL_ERROR"):
    """§6.4 `author_fp` (64 lowercase hex) and the optional `cert` (base64 DER, ≤ 16 KiB)."""
    fp = want_str(m, "author_fp", code=code)
    if not HEX64.fullmatch(fp):
        raise ProtoError(code, "author_fp is not 64 lowercase hex")
    cert_der = b64d(m["cert"], code=code, max_size=16 * 1024) if "cert" in m else None
    return fp, cert_der


def stored_line_enc(seqno, ts, fp, cert_der, rec):
    """TRANSCRIPT §3.1 line_enc of a `stored` line (0x05): its one record whole (a relay line's
    is relay_line_enc)."""
    cert = cert_der or b""
    return (b"\x05" + u64(seqno) + u64(ts) + bytes.fromhex(fp) + u32(len(cert)) + cert
            + record_enc(rec))


def b64_len(n):
    """§6.1: the base64 characters of n bytes, 4 × ⌈n / 3⌉."""
    return 4 * -(-n // 3)


def signature_length(key):
    """§4.6, §6.1: S, the length of a signature by `key` (a certificate's, public or private):
    RSA the modulus length, ECDSA P-256 64 (raw r || s), Ed25519 64."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return (key.key_size + 7) // 8
    return 64


def largest_lone(to, cert_len, ct_len, sig_len):
    """§6.1: largest(to), the largest relay or `stored` a record to `to` with a `ct` of `ct_len`
    bytes could make alone, by an author whose certificate is `cert_len` bytes of DER and whose
    signatures are `sig_len` bytes; None for a record to `server` (never relayed or stored)."""
    if to == "server":
        return None
    fixed, sigs = LARGEST_FIXED["lobby" if to == "lobby" else "user"]
    return fixed + b64_len(cert_len) + b64_len(ct_len) + sigs * b64_len(sig_len)


def canonical(name):
    """§6.1: the certificate CN in ASCII lower case."""
    return name.lower()


def is_canonical_name(name):
    """§6.1's recipient rule for the name after `user:` (and every name the server sends us)."""
    return CANONICAL_NAME.fullmatch(name) is not None


def is_recipient(to):
    """§6.1 recipient rule: exactly `lobby`, exactly `server`, or `user:` + a canonical name."""
    return to in ("lobby", "server") or (to.startswith("user:") and is_canonical_name(to[5:]))


# ---------------------------------------------------------------- message records (§6.1)

def content_key(k):
    """§6.1 `ek`: the whole HMAC, a 32-byte ChaCha20-Poly1305 key (before session 11, §11, its
    first 16 bytes were an AES-128-GCM key)."""
    return hmac.new(k, CONTENT_KEY_LABEL + b"\x00", hashlib.sha256).digest()


def commitment(k, body):
    return hmac.new(k, COMMITMENT_LABEL + b"\x00" + body, hashlib.sha256).digest()


def seal_body(k, body):
    """§6.1 `ct`: the ciphertext followed by the 16-byte tag (RFC 8439 §2.8), nonce 0^12: every k
    seals exactly one body."""
    return ChaCha20Poly1305(content_key(k)).encrypt(bytes(12), body, CONTENT_AAD)


def open_body(k, ct):
    try:
        return ChaCha20Poly1305(content_key(k)).decrypt(bytes(12), ct, CONTENT_AAD)
    except (InvalidTag, ValueError):
        raise ProtoError("DECRYPT_FAIL", "content does not open under k")


def statement(rec):
    """§6.1 record statement, a batch's leaf; `rec` holds decoded values (sid/ct/c as bytes)."""
    to = rec["to"].encode("utf-8")
    return (MESSAGE_LABEL + b"\x00" + u32(STATEMENT_VERSION) + rec["sid"] + u8(DIR_CODE[rec["dir"]])
            + u32(len(to)) + to + u64(rec["seqno"]) + u64(rec["ts"])
            + rec["c"] + hashlib.sha256(rec["ct"]).digest())


# ---------------------------------------------------------------- signed batches (§6.1)
# One author signature covers a batch of 1..MAX_BATCH records of one session and direction with
# consecutive seqnos: it signs the RFC 9162 Merkle Tree Hash of their statements, and each record
# carries its index, the batch size and its inclusion path.

def leaf_hash(leaf):
    """RFC 9162 §2.1.1: MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left, right):
    """RFC 9162 §2.1.1: SHA-256(0x01 || MTH(left) || MTH(right))."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n):
    """RFC 9162 §2.1.1: k, the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def tree_hash(hashes):
    """RFC 9162 §2.1.1 Merkle Tree Hash, by its recursive definition, over leaf hashes (n ≥ 1)."""
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(tree_hash(hashes[:k]), tree_hash(hashes[k:]))


def inclusion_path(m, hashes):
    """RFC 9162 §2.1.3.1 PATH(m, D[n]) over leaf hashes, leaf to root."""
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if m < k:
        return inclusion_path(m, hashes[:k]) + [tree_hash(hashes[k:])]
    return inclusion_path(m - k, hashes[k:]) + [tree_hash(hashes[:k])]


def root_from_path(lh, i, n, path):
    """RFC 9162 §2.1.3.2 steps 1-6 without the final comparison: the root that `path` proves leaf
    hash `lh` at index `i` of a tree of `n` leaves into, or None when the path is too long or too
    short for (i, n) (the caller's PROTOCOL_ERROR / TAMPERED)."""
    if not 0 <= i < n:
        return None
    fn, sn, r = i, n - 1, lh
    for p in path:
        if sn == 0:
            return None  # path too long
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None  # sn > 0: path too short


def path_length(i, n):
    """How many entries RFC 9162 gives PATH(i, D[n]) (0 for n = 1; at most 5 for n ≤ 32)."""
    if n == 1:
        return 0
    k = _split(n)
    return 1 + (path_length(i, k) if i < k else path_length(i - k, n - k))


def batch_statement(sid, first, n, root):
    """§6.1: what the author signs once for the batch of records first .. first + n − 1. Its
    direction byte is c2s's, always: only users sign records (interop finding 70)."""
    return (BATCH_LABEL + b"\x00" + u32(STATEMENT_VERSION) + sid + u8(DIR_CODE["c2s"])
            + u64(first) + u32(n) + root)


def parse_batch(obj, seqno):
    """A record's `batch` member (§6.1 bounds) to (i, n, [path entries]); PROTOCOL_ERROR."""
    strict(obj, ["i", "n", "path"])
    i, n = want_int(obj, "i"), want_int(obj, "n")
    if not 1 <= n <= MAX_BATCH:
        raise ProtoError("PROTOCOL_ERROR", f"batch n {n} outside 1-{MAX_BATCH}")
    if i >= n:
        raise ProtoError("PROTOCOL_ERROR", f"batch i {i} not below n {n}")
    if i >= seqno:
        raise ProtoError("PROTOCOL_ERROR", f"batch i {i} puts the batch's first seqno below 1")
    path = obj["path"]
    if not isinstance(path, list) or len(path) > MAX_PATH:
        raise ProtoError("PROTOCOL_ERROR", f"batch path is not a list of at most {MAX_PATH}")
    return i, n, [b64d(p, size=32) for p in path]


def batch_of(rec, code="PROTOCOL_ERROR"):
    """The batch statement a record's `batch` proves it into (check step 1), or `code` when its
    path does not fit (i, n)."""
    i, n, path = rec["batch"]
    root = root_from_path(leaf_hash(statement(rec)), i, n, path)
    if root is None:
        raise ProtoError(code, f"batch path of {len(path)} entries does not fit i={i} n={n}")
    return batch_statement(rec["sid"], rec["seqno"] - i, n, root)


class BatchCache:
    """§6.1 check step 2: batch signatures already verified, so a batch costs one verification
    per verifier. Keyed on the certificate's fingerprint, the batch statement and the signature
    bytes together: a record carrying another signature over the same statement is checked on
    its own. Bounded (least recently used dropped): a miss only costs a verification."""

    def __init__(self, limit=4 * MAX_BATCH):
        self.limit = limit
        self.seen = OrderedDict()

    def check(self, fp, pub, rec, root_code="PROTOCOL_ERROR"):
        """True iff the record's signature verifies through its batch (a `root_code` ProtoError
        when the path does not fit); the record's `sig` must be present."""
        return self.verified(fp, pub, batch_of(rec, root_code), rec["sig"])

    def verified(self, fp, pub, stmt, sig):
        """True iff `sig` verifies over the batch statement `stmt` under the certificate `fp`
        (its key `pub`): a relay's (§6.4, the same cache) or a record's."""
        key = (fp, stmt, sig)
        if key in self.seen:
            self.seen.move_to_end(key)
            return True
        if not verify(pub, sig, stmt):
            return False
        self.seen[key] = True
        if len(self.seen) > self.limit:
            self.seen.popitem(last=False)
        return True


# ---------------------------------------------------------------- relays (§6.4)
# A relay carries a group of one author batch's records without their `sig` and `batch`, and once
# for them all the batch's `sig`, `first`, `n` and a `proof`: the hashes of the largest subtrees of
# the batch's tree that hold none of the relay's records, left to right.

def relay_subtrees(leaves, n, proof):
    """§6.4 "A batch's root from some of its records": ROOT(0, n) over `leaves` ({i: leaf hash},
    each i in 0..n-1) and `proof` (32-byte entries, taken in order), as the docs define it. Returns
    every subtree ROOT went through, {(lo, hi): hash} ((0, n) is the root), or None when the proof
    does not fit the records and n (an entry missing, or one left unused)."""
    hashes = {}
    entries = iter(proof)

    def root(lo, hi):
        if not any(lo <= i < hi for i in leaves):
            h = next(entries, None)  # entries are bytes: None only when none is left
            if h is None:
                raise LookupError
        elif hi - lo == 1:
            h = leaves[lo]
        else:
            k = _split(hi - lo)
            left = root(lo, lo + k)  # the left part first: it takes the earlier entries
            h = node_hash(left, root(lo + k, hi))
        hashes[(lo, hi)] = h
        return h

    try:
        root(0, n)
    except LookupError:
        return None
    return hashes if next(entries, None) is None else None


def relay_root(leaves, n, proof):
    """ROOT(0, n) (§6.4), or None when the proof does not fit."""
    subtrees = relay_subtrees(leaves, n, proof)
    return None if subtrees is None else subtrees[(0, n)]


def sibling_ranges(i, n):
    """The subtrees (lo, hi) of a tree of n leaves whose hashes make leaf i's RFC 9162 path (§6.1),
    the one nearest the root first: the sibling of each subtree on the leaf's way down."""
    ranges, lo, hi = [], 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        if i < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    return ranges


def relay_path(subtrees, n, i):
    """TRANSCRIPT §6: leaf i's path (leaf to root) out of the subtrees ROOT went through for a
    relay holding leaf i: each entry is the sibling of a subtree on the leaf's way up, which ROOT
    either took from the proof or computed."""
    return [subtrees[r] for r in reversed(sibling_ranges(i, n))]


def whole_record(sig, first, n, proof, recs, rec):
    """TRANSCRIPT §6: record `rec` of a group (a relay's or a c2s msg's: its sig, first, n, proof
    and records `recs`) made whole as its author signed it: the group's `sig`, and `batch` =
    (seqno − first, n, its path made from the group, relay_path)."""
    subtrees = relay_subtrees({r["seqno"] - first: leaf_hash(statement(r)) for r in recs}, n,
                              proof)
    i = rec["seqno"] - first
    return dict(rec, sig=sig, batch=(i, n, relay_path(subtrees, n, i)))


def group_of(recs):
    """The group members (§6.4's table: `sig`, `first`, `n`, `proof`, `records`) of `recs`, signed
    records of one batch, each with its own `sig` and `batch`, in seqno order, as §6.4 "Making the
    proof" says a server makes a relay's and a client a `msg`'s (§6.3): (sig, first, n, proof, the
    records without `sig` and `batch`). Every subtree ROOT takes from the proof is the sibling of
    a subtree holding one of the records, so its hash is an entry of that record's path."""
    i0, n, _ = recs[0]["batch"]
    first = recs[0]["seqno"] - i0
    known = {}
    for r in recs:
        i, _, path = r["batch"]
        known.update(zip(reversed(sibling_ranges(i, n)), path))
    indices = [r["seqno"] - first for r in recs]
    proof = []

    def walk(lo, hi):
        if not any(lo <= i < hi for i in indices):
            proof.append(known[(lo, hi)])
        elif hi - lo > 1:
            k = _split(hi - lo)
            walk(lo, lo + k)
            walk(lo + k, hi)

    walk(0, n)
    return recs[0]["sig"], first, n, proof, [dict(r, sig=None, batch=None) for r in recs]


def group_members(group, carriers):
    """The group members of group_of's result as JSON, each record with its carrier ({"k": …} or
    {"e2e": …}), or only its `record` (a transcript line) where the carrier is None."""
    sig, first, n, proof, recs = group
    return {"sig": b64e(sig), "first": first, "n": n, "proof": [b64e(p) for p in proof],
            "records": [{"record": record_wire(r), **(c or {})} for r, c in zip(recs, carriers)]}


def author_msgs(signed, most=None):
    """§6.3: a batch's signed records (in seqno order, each (record, k, e2e)) as the `msg`s that
    carry them: one `msg` when it fits one record's content (§3.2), otherwise as many of the next
    records as fit in each, with its own proof; at most `most` records to a `msg` when given (any
    client MAY send smaller groups). Returns [(msg object, group_of result, its items)]."""
    msgs, at = [], 0
    while at < len(signed):
        end = at + 1  # a record alone always fits (§6.1 MAX_CT_BYTES, §6.3 step 7)
        best = _author_msg(signed[at:end])
        while end < len(signed) and (most is None or end - at < most):
            wider = _author_msg(signed[at:end + 1])
            if len(enc_json(wider[0])) > MAX_CONTENT:
                break
            best, end = wider, end + 1
        msgs.append(best + (signed[at:end],))
        at = end
    return msgs


def _author_msg(items):
    group = group_of([rec for rec, _, _ in items])
    carriers = [{"e2e": e2e} if e2e is not None else {"k": b64e(k)} for _, k, e2e in items]
    return {"type": "msg", **group_members(group, carriers)}, group


def msg_line(msg):
    """TRANSCRIPT §2.2: a client's msg line, the msg without its carriers, plus `dir`."""
    return {"dir": "c2s", **msg, "records": [{"record": it["record"]} for it in msg["records"]]}


def relay_message(seqno, ts, author_der, relay, carriers, introduce=True):
    """The `relay` message (§6.4) of group_of's result, each record with its carrier; `cert` when
    `introduce`."""
    m = {"type": "relay", "seqno": seqno, "ts": ts, "author_fp": fingerprint(author_der)}
    if introduce:
        m["cert"] = b64e(author_der)
    m.update(group_members(relay, carriers))
    return m


def parse_group(m, carriers=True, code="PROTOCOL_ERROR"):
    """The group members of a relay (§6.4's table and the paragraph after it) or of a client's
    `msg` (§6.3, the same members): `sig`, `first`, `n`, `proof` and `records` (TRANSCRIPT §2.2
    for a line: `carriers` False, each item only its `record`): (sig, first, n, proof, [(record,
    item object)]), records in their order; `code` otherwise. The caller checked the message's
    other members."""
    sig = b64d(m["sig"], code=code, min_size=1, max_size=1024)
    first, n = want_int(m, "first", code), want_int(m, "n", code)
    if first < 1:
        raise ProtoError(code, "relay first is below 1")
    if not 1 <= n <= MAX_BATCH:
        raise ProtoError(code, f"relay n {n} outside 1-{MAX_BATCH}")
    proof, items = m["proof"], m["records"]
    if not isinstance(proof, list) or len(proof) > MAX_BATCH - 1:
        raise ProtoError(code, f"relay proof is not a list of at most {MAX_BATCH - 1}")
    proof = [b64d(p, code=code, size=32) for p in proof]
    if not isinstance(items, list) or not 1 <= len(items) <= n:
        raise ProtoError(code, f"relay records is not a list of 1-{n} items")
    records = []
    for item in items:
        if carriers:
            strict(item, ["record"], ["k", "e2e"], code=code)
            if ("k" in item) == ("e2e" in item):
                raise ProtoError(code, "an item carries either k or e2e (§12.6)")
        else:
            strict(item, ["record"], code=code)
        try:
            rec = parse_record(item["record"])
        except ProtoError as e:
            raise ProtoError(code, e.detail)
        if rec["sig"] is not None:  # parse_record: a batch goes with its sig
            raise ProtoError(code, "a record of a group carries sig or batch")
        if records and rec["sid"] != records[0][0]["sid"]:
            raise ProtoError(code, "the records of a group are of more than one author session")
        if records and rec["seqno"] <= records[-1][0]["seqno"]:
            raise ProtoError(code, "the records of a group are not in strictly increasing seqno")
        if not first <= rec["seqno"] <= first + n - 1:
            raise ProtoError(code, f"record seqno {rec['seqno']} outside the batch "
                             f"{first}..{first + n - 1}")
        records.append((rec, item))
    return sig, first, n, proof, records


def parse_author_msg(m, carriers=True, code="PROTOCOL_ERROR"):
    """§6.3: a client's `msg` (or its transcript line, `carriers` False): the group members of a
    relay (parse_group) and the one rule a relay does not have, consecutive seqnos; `code`
    otherwise. The caller checked the message's other members."""
    group = parse_group(m, carriers, code)
    recs = [rec for rec, _ in group[4]]
    for before, rec in zip(recs, recs[1:]):
        if rec["seqno"] != before["seqno"] + 1:
            raise ProtoError(code, f"the records of a msg are not consecutive: {rec['seqno']} "
                             f"after {before['seqno']}")
    return group


def group_statement(sid, first, n, proof, recs, code="PROTOCOL_ERROR"):
    """§6.4: the batch statement a group's records and proof prove (ROOT, then §6.1's
    batch_statement), a relay's or a client msg's (§6.3 step 4), or `code` when the proof does not
    fit: PROTOCOL_ERROR live, TAMPERED in a transcript."""
    root = relay_root({r["seqno"] - first: leaf_hash(statement(r)) for r in recs}, n, proof)
    if root is None:
        raise ProtoError(code, f"proof of {len(proof)} entries does not fit its "
                         f"{len(recs)} records in a batch of {n}")
    return batch_statement(sid, first, n, root)


def group_enc(sig, first, n, proof, recs):
    """TRANSCRIPT §3.1 group_enc: what a group's line hashes through group_digest, a relay's and a
    c2s msg's, one encoder for both: the records without `sig` and `batch`."""
    return (u32(len(sig)) + sig + u64(first) + u32(n) + u8(len(proof)) + b"".join(proof)
            + u8(len(recs)) + b"".join(record_enc(r) for r in recs))


def group_digest(sig, first, n, proof, recs):
    """TRANSCRIPT §3.1 (format 7): group_digest = SHA-256(group_enc), 32 bytes, the group part of
    line_enc(relay) and of line_enc of a c2s msg, computed from the line's own records."""
    return hashlib.sha256(group_enc(sig, first, n, proof, recs)).digest()


def relay_line_enc(seqno, ts, fp, cert_der, sig, first, n, proof, recs):
    """TRANSCRIPT §3.1 line_enc(relay): its hop, author and certificate, then group_digest."""
    cert = cert_der or b""
    return (RELAY_LINE + u64(seqno) + u64(ts) + bytes.fromhex(fp) + u32(len(cert)) + cert
            + group_digest(sig, first, n, proof, recs))


def msg_line_enc(sig, first, n, proof, recs):
    """TRANSCRIPT §3.1 line_enc of a c2s msg: 0x06 then group_digest (format 7; format 6 hashed
    group_enc itself), exactly the bytes line_enc(relay) has after its `cert`."""
    return GROUP_MSG_LINE + group_digest(sig, first, n, proof, recs)


# ---------------------------------------------------------------- a relay on the wire (§6.4)
# Session 23: a relay travels binary (§6.4 "A relay on the wire"): a head (the hop's seqno and ts,
# author_fp, cert: line_enc(relay)'s bytes up to its cert), group_enc (TRANSCRIPT §3.1) and one
# carrier per record. Its JSON form (§6.4's JSON) is what a transcript line records and how the
# docs name its parts; a relay in JSON is PROTOCOL_ERROR (§3.3: each message has one encoding).
RELAY_FIRST = 0x02                           # §3.3, §6.4: a relay in its binary layout
RELAY_HEAD_BYTES = 53                        # §6.4: 0x02, seqno, ts, author_fp, u32(len(cert))
CARRIER_K, CARRIER_RATCHET, CARRIER_SENDER = 0x00, 0x01, 0x02   # §6.4 carrier's first byte
MAX_CERT_BYTES = 16 * 1024                   # §3.3 `certificate`, §6.4 `cert`
MAX_SIG_BYTES = 1024                         # §6.1, §6.4 `sig`
MAX_TO_BYTES = 80                            # §6.4: `to` 1-80 bytes of UTF-8 on the wire
MAX_JSON_INT = 2**53 - 1                     # §2: every integer of the JSON form
SENDER_WRAP_BYTES = 48                       # §12.5, §12.6: a `sender` envelope's `w`


class WireReader:
    """Reads a relay's content front to back (§6.4 "A relay on the wire"): every length is bounded
    by what is left of the content, so one that runs past its end is PROTOCOL_ERROR."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, size, what):
        if size > len(self.data) - self.at:
            raise ProtoError("PROTOCOL_ERROR", f"relay: {what} of {size} bytes runs past the "
                             f"content's end ({len(self.data) - self.at} left at {self.at})")
        got = self.data[self.at:self.at + size]
        self.at += size
        return got

    def u8(self, what):
        return self.take(1, what)[0]

    def u32(self, what):
        return struct.unpack(">I", self.take(4, what))[0]

    def u64(self, what):
        return struct.unpack(">Q", self.take(8, what))[0]

    def json_int(self, what, least=0):
        """A u64 that the JSON form holds as an integer: `least` to 2^53 − 1 (§2, §6.4)."""
        v = self.u64(what)
        if not least <= v <= MAX_JSON_INT:
            raise ProtoError("PROTOCOL_ERROR", f"relay: {what} {v} outside {least}-2^53-1")
        return v

    def left(self):
        return len(self.data) - self.at


def _bounded(v, lo, hi, what):
    if not lo <= v <= hi:
        raise ProtoError("PROTOCOL_ERROR", f"relay: {what} {v} outside {lo}-{hi}")
    return v


def _wire_record(r):
    """§6.4 record_enc(R) in a relay: a record of §6.1 without `sig` and `batch` (the four
    fields after `c` zero), `to` 1-80 bytes of valid UTF-8, `ct` bounded by dir; as its JSON
    object (the JSON form's `record`)."""
    sid = r.take(16, "a record's sid")
    d = r.u8("a record's dir")
    if d not in (1, 2):
        raise ProtoError("PROTOCOL_ERROR", f"relay: a record's dir byte 0x{d:02x}")
    to_len = _bounded(r.u32("a record's to length"), 1, MAX_TO_BYTES, "a record's to length")
    try:
        to = r.take(to_len, "a record's to").decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError("PROTOCOL_ERROR", "relay: a record's to is not UTF-8")
    seqno = r.json_int("a record's seqno", least=1)
    ts = r.json_int("a record's ts")
    # §6.4 (binrelay 6d4ae45, interop finding 121): ct as §6.1 bounds it by dir, 16-MAX_CT_BYTES
    # in a c2s record, to 64 KiB in an s2c one (whose refusal is then step 3's, TAMPERED)
    ct_len = _bounded(r.u32("a record's ct length"), 16, MAX_CT_BYTES if d == 1 else S2C_CT_BYTES,
                      "a record's ct length")
    ct = r.take(ct_len, "a record's ct")
    c = r.take(32, "a record's c")
    # u32(len(sig)) || u32(i) || u32(n) || u8(len(path)), all zero: no `sig`, no `batch`
    for what, size in (("sig length", 4), ("batch i", 4), ("batch n", 4), ("path length", 1)):
        if any(r.take(size, f"a record's {what}")):
            raise ProtoError("PROTOCOL_ERROR", f"relay: a record's {what} is not zero (a record "
                             "in a relay carries no sig or batch)")
    return {"sid": sid.hex(), "dir": "c2s" if d == 1 else "s2c", "to": to, "seqno": seqno,
            "ts": ts, "ct": b64e(ct), "c": b64e(c)}


def parse_ratchet_envelope(raw):
    """§6.4 carrier 0x01: `e`, one strict JSON object (§2), §12.6's envelope of kind `ratchet`
    with its members and bounds — `from` a device id, `wraps` 1-8 entries `{"device", "dh" (32
    bytes), "pn", "n" (u32), "w" (48 bytes), "pre"?}` (§12.3's header), no device twice. A `sender`
    envelope in JSON is refused (it has its own carrier, 0x02). §6.4 (binrelay 6d4ae45, interop
    finding 122): §2's rules for JSON text and objects, discriminator `kind`, UTF-8 exactly (a
    byte-order mark is not skipped: JSON refuses it), whitespace, member order and escapes free
    (a carrier is not hashed). The object, or PROTOCOL_ERROR."""
    e = parse_json(raw, tag="kind")
    if e["kind"] != "ratchet":
        raise ProtoError("PROTOCOL_ERROR", f"relay: a carrier 0x01 of kind {safe(e['kind'])!r} "
                         "(only a ratchet envelope travels as JSON)")
    strict(e, ["kind", "from", "wraps"])
    want_device(e, "from")
    wraps = e["wraps"]
    if not isinstance(wraps, list) or not 1 <= len(wraps) <= E2E_MAX_DEVICES:
        raise ProtoError("PROTOCOL_ERROR", f"relay: wraps is not a list of 1-{E2E_MAX_DEVICES}")
    devices = set()
    for w in wraps:
        if not isinstance(w, dict):
            raise ProtoError("PROTOCOL_ERROR", "relay: a wrap is not an object")
        strict(w, ["device", "dh", "pn", "n", "w"], ["pre"])
        d = want_device(w)
        if d in devices:
            raise ProtoError("PROTOCOL_ERROR", "relay: a device wrapped twice")
        devices.add(d)
        b64d(w["dh"], size=32)
        want_u32(w, "pn")
        want_u32(w, "n")
        b64d(w["w"], size=48)
        if "pre" in w:
            parse_pre(w["pre"])
    return e


def _wire_carrier(r):
    """§6.4 carrier: the item's carrier member of the JSON form, {"k": …} or {"e2e": …}."""
    kind = r.u8("a carrier's first byte")
    if kind == CARRIER_K:
        return {"k": b64e(r.take(32, "a carrier's k"))}
    if kind == CARRIER_RATCHET:
        return {"e2e": parse_ratchet_envelope(r.take(r.u32("a ratchet envelope's length"),
                                                      "a ratchet envelope"))}
    if kind == CARRIER_SENDER:
        sender = r.take(8, "a sender envelope's from").hex()
        chain_id, n = r.u32("a sender envelope's id"), r.u32("a sender envelope's n")
        w = r.take(SENDER_WRAP_BYTES, "a sender envelope's w")
        return {"e2e": {"kind": "sender", "from": sender, "id": chain_id, "n": n, "w": b64e(w)}}
    raise ProtoError("PROTOCOL_ERROR", f"relay: a carrier's first byte 0x{kind:02x}")


def decode_relay(content):
    """A relay's content (§6.4 "A relay on the wire") to its JSON form (§6.4's table: the members
    a transcript line records, each item with its carrier), every bound of the layout checked:
    PROTOCOL_ERROR. The record rules of §6.4's paragraph (one sid, increasing seqnos within first
    .. first + n − 1) too; on_relay checks the JSON form again as every relay's."""
    r = WireReader(content)
    if r.u8("the first byte") != RELAY_FIRST:
        raise ProtoError("PROTOCOL_ERROR", "relay: the first byte is not 0x02")
    m = {"type": "relay", "seqno": r.json_int("seqno", least=1), "ts": r.json_int("ts"),
         "author_fp": r.take(32, "author_fp").hex()}
    cert_len = r.u32("cert length")
    if cert_len > MAX_CERT_BYTES:
        raise ProtoError("PROTOCOL_ERROR", f"relay: cert of {cert_len} bytes, over "
                         f"{MAX_CERT_BYTES}")
    if cert_len:  # 0: no `cert` (§6.4.1: the certificate was introduced earlier)
        m["cert"] = b64e(r.take(cert_len, "cert"))
    # group_enc (TRANSCRIPT §3.1)
    sig = r.take(_bounded(r.u32("sig length"), 1, MAX_SIG_BYTES, "sig length"), "sig")
    first = r.json_int("first", least=1)
    n = _bounded(r.u32("n"), 1, MAX_BATCH, "n")
    proof_len = _bounded(r.u8("proof length"), 0, MAX_BATCH - 1, "proof length")
    proof = [r.take(32, "a proof entry") for _ in range(proof_len)]
    count = _bounded(r.u8("m (records)"), 1, n, "m (records)")
    records = [_wire_record(r) for _ in range(count)]
    for before, rec in zip([None] + records, records):
        if before is not None and rec["sid"] != before["sid"]:
            raise ProtoError("PROTOCOL_ERROR", "relay: records of more than one author session")
        if before is not None and rec["seqno"] <= before["seqno"]:
            raise ProtoError("PROTOCOL_ERROR", "relay: records not in strictly increasing seqno")
        if not first <= rec["seqno"] <= first + n - 1:
            raise ProtoError("PROTOCOL_ERROR", f"relay: record seqno {rec['seqno']} outside the "
                             f"batch {first}..{first + n - 1}")
    items = [{"record": rec, **_wire_carrier(r)} for rec in records]
    if r.left():
        raise ProtoError("PROTOCOL_ERROR", f"relay: {r.left()} bytes after the last carrier")
    m.update(sig=b64e(sig), first=first, n=n, proof=[b64e(p) for p in proof], records=items)
    return m


def _raw_b64(s):
    return base64.b64decode(s) if isinstance(s, str) else s


def relay_wire(m):
    """The content of a relay (§6.4 "A relay on the wire") from its JSON form with carriers, as
    the server lays it out: head, group_enc, carriers. It writes what it is given and checks
    nothing (a record's `sig` and `batch`, if the JSON form has them, go into the four fields
    after `c`, as TRANSCRIPT's record_enc lays them out), so a test can make any fault; each
    item's carrier as carrier_wire lays it out."""
    cert = _raw_b64(m["cert"]) if "cert" in m else b""
    head = (bytes([RELAY_FIRST]) + u64(m["seqno"]) + u64(m["ts"]) + bytes.fromhex(m["author_fp"])
            + u32(len(cert)) + cert)
    recs = []
    for item in m["records"]:
        w = item["record"]
        batch = w.get("batch")
        recs.append({"sid": bytes.fromhex(w["sid"]), "dir": w["dir"], "to": w["to"],
                     "seqno": w["seqno"], "ts": w["ts"], "ct": _raw_b64(w["ct"]),
                     "c": _raw_b64(w["c"]), "sig": _raw_b64(w["sig"]) if "sig" in w else None,
                     "batch": (batch["i"], batch["n"], [_raw_b64(p) for p in batch["path"]])
                     if batch is not None else None})
    group = group_enc(_raw_b64(m["sig"]), m["first"], m["n"], [_raw_b64(p) for p in m["proof"]],
                      recs)
    return head + group + b"".join(carrier_wire(item) for item in m["records"])


def carrier_wire(item):
    """§6.4 carrier of an item of a relay's JSON form: `k` 0x00, a `sender` envelope 0x02 (its
    fields raw), any other `e2e` 0x01 with its JSON; `e2e_raw` (a test's) 0x01 with those bytes,
    whatever else the item holds."""
    if "e2e_raw" in item:
        return bytes([CARRIER_RATCHET]) + u32(len(item["e2e_raw"])) + item["e2e_raw"]
    if "k" in item:
        return bytes([CARRIER_K]) + _raw_b64(item["k"])
    e = item["e2e"]
    if e.get("kind") == "sender":
        return (bytes([CARRIER_SENDER]) + bytes.fromhex(e["from"]) + u32(e["id"]) + u32(e["n"])
                + _raw_b64(e["w"]))
    raw = enc_json(e)
    return bytes([CARRIER_RATCHET]) + u32(len(raw)) + raw


def parse_content(content, code="PROTOCOL_ERROR"):
    """§3.3 "JSON or binary" (binrelay 6d4ae45): a record's content (§3.2) read by its first byte —
    0x02 a relay in its binary layout, returned in its JSON form (decode_relay); any other content
    read as JSON (§2), a relay in JSON refused (a relay has one encoding). What a JSON reader
    allows before the `{` is the receiver's: this one takes JSON's whitespace (RFC 8259: space,
    tab, LF, CR) and refuses a byte-order mark (§2: a sender writes none, a receiver MAY refuse
    it), as it refuses any other first byte (PROTOCOL_ERROR)."""
    if content[:1] == bytes([RELAY_FIRST]):
        return decode_relay(content)
    m = parse_json(content, code)
    if m["type"] == "relay":
        raise ProtoError(code, "a relay in JSON (§3.3: a relay travels binary, §6.4)")
    return m


def sign_batch(author_key, recs):
    """Signs records of one session and direction with consecutive seqnos (in order, at most
    MAX_BATCH) as one batch: sets each one's `sig` and `batch` (§6.1)."""
    assert 1 <= len(recs) <= MAX_BATCH
    assert all(r["seqno"] == recs[0]["seqno"] + j for j, r in enumerate(recs))
    hashes = [leaf_hash(statement(r)) for r in recs]
    sig = sign(author_key, batch_statement(recs[0]["sid"], recs[0]["seqno"], len(recs),
                                           tree_hash(hashes)))
    for j, r in enumerate(recs):
        r["sig"] = sig
        r["batch"] = (j, len(recs), inclusion_path(j, hashes))


def parse_record(obj):
    """A message record (§6.1, TRANSCRIPT §2.2 limits) to decoded values; PROTOCOL_ERROR. A
    `batch` goes with a `sig` (both on every c2s record, neither on an s2c one: the caller checks
    the direction)."""
    strict(obj, ["sid", "dir", "to", "seqno", "ts", "ct", "c"], ["sig", "batch"])
    sid = want_str(obj, "sid")
    if not HEX32.fullmatch(sid):
        raise ProtoError("PROTOCOL_ERROR", "record sid is not 32 lowercase hex")
    d = want_str(obj, "dir")
    if d not in DIR_CODE:
        raise ProtoError("PROTOCOL_ERROR", "record dir")
    rec = {
        "sid": bytes.fromhex(sid), "dir": d, "to": want_str(obj, "to", 80),
        "seqno": want_int(obj, "seqno"), "ts": want_int(obj, "ts"),
        # at least a ChaCha20-Poly1305 tag (interop finding 73)
        "ct": b64d(obj["ct"], min_size=16, max_size=S2C_CT_BYTES), "c": b64d(obj["c"], size=32),
        "sig": b64d(obj["sig"], min_size=1, max_size=1024) if "sig" in obj else None,
    }
    if rec["to"] == "":
        raise ProtoError("PROTOCOL_ERROR", "record to is empty")
    if rec["seqno"] < 1:
        raise ProtoError("PROTOCOL_ERROR", "record seqno 0")
    if d == "c2s" and len(rec["ct"]) > MAX_CT_BYTES:
        raise ProtoError("PROTOCOL_ERROR", f"a user's record's ct of {len(rec['ct'])} bytes, "
                         f"over {MAX_CT_BYTES}")
    if ("batch" in obj) != ("sig" in obj):
        raise ProtoError("PROTOCOL_ERROR", "a record's batch goes with its sig (§6.1)")
    rec["batch"] = parse_batch(obj["batch"], rec["seqno"]) if "batch" in obj else None
    return rec


def new_record(sid, to, seqno, ts, body, k):
    """A c2s record (§6.1), sealed and committed, not yet signed (sign_batch)."""
    return {"sid": sid, "dir": "c2s", "to": to, "seqno": seqno, "ts": ts,
            "ct": seal_body(k, body), "c": commitment(k, body), "sig": None, "batch": None}


def make_record(author_key, sid, to, seqno, ts, body, k):
    """A c2s record signed alone, a batch of one (§6.1): (decoded values, wire JSON object)."""
    rec = new_record(sid, to, seqno, ts, body, k)
    sign_batch(author_key, [rec])
    return rec, record_wire(rec)


def record_wire(rec):
    """The record's JSON object (§6.1)."""
    wire = {"sid": rec["sid"].hex(), "dir": rec["dir"], "to": rec["to"], "seqno": rec["seqno"],
            "ts": rec["ts"], "ct": b64e(rec["ct"]), "c": b64e(rec["c"])}
    if rec["sig"] is not None:
        i, n, path = rec["batch"]
        wire["sig"] = b64e(rec["sig"])
        wire["batch"] = {"i": i, "n": n, "path": [b64e(p) for p in path]}
    return wire


def check_content(rec, k):
    """§6.3 step 5 / §6.4 step 5: open ct under k, compare the commitment; returns the body."""
    body = open_body(k, rec["ct"])
    if not hmac.compare_digest(commitment(k, body), rec["c"]):
        raise ProtoError("TAMPERED", "commitment does not match the content")
    return body


def parse_body(body):
    """§6.2 body; see interop finding 2 for the member name of the kind."""
    return parse_json(body, tag="kind")


# §12.6: a keys_fetch's `user`, a user name in any case
FETCH_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _flag(obj, name):
    """An optional member that is only ever `true` (§6.2 `private`, §12.5/§12.6 `lobby`, `more`)."""
    if name in obj and obj[name] is not True:
        raise ProtoError("PROTOCOL_ERROR", f"{name} is not true")
    return name in obj


def _list(obj, name, lo, hi):
    v = obj[name]
    if not isinstance(v, list) or not lo <= len(v) <= hi:
        raise ProtoError("PROTOCOL_ERROR", f"{name} is not a list of {lo}-{hi} entries")
    return v


def _opk(obj):
    """§12.2: a one-time prekey `{"id","pub"}`."""
    strict(obj, ["id", "pub"])
    want_u32(obj, "id")
    b64d(obj["pub"], size=32)


def check_body_schema(body):
    """The strict schema of a body's kind, PROTOCOL §6.2 and §12.6 (PROTOCOL_ERROR, also for a
    kind neither defines); not whether the kind fits its record's `dir` and `to`. TRANSCRIPT §6
    step 5 (interop finding 77): what an opening's body must be."""
    kind = body["kind"]
    if kind in ("text", "notice"):
        strict(body, ["kind", "text"])
        want_text(body)
    elif kind == "who":
        strict(body, ["kind"])
    elif kind == "operator":
        strict(body, ["kind", "text"], ["private"])
        want_text(body)
        _flag(body, "private")
    elif kind == "received":                                              # §6.6
        strict(body, ["kind", "upto"], ["unread"])
        if want_int(body, "upto") < 1:
            raise ProtoError("PROTOCOL_ERROR", "received upto 0")
        if "unread" in body and not all(is_int(s) and s >= 1
                                        for s in _list(body, "unread", 0, 1000)):
            raise ProtoError("PROTOCOL_ERROR", "received unread: an entry is not a seqno")
    elif kind == "keys_publish":
        strict(body, ["kind", "device", "opks"], ["bundle", "lobby"])
        want_device(body)
        if "bundle" in body:
            parse_bundle(body["bundle"])
        for o in _list(body, "opks", 0, 100):
            _opk(o)
        _flag(body, "lobby")
    elif kind == "keys_fetch":
        strict(body, ["kind", "user"], ["known"])
        if not FETCH_USER.fullmatch(want_str(body, "user")):
            raise ProtoError("PROTOCOL_ERROR", "keys_fetch user is not a user name")
        if "known" in body:
            known = _list(body, "known", 0, E2E_MAX_DEVICES)
            for j in range(len(known)):
                want_device(known, j)
    elif kind == "keys":
        strict(body, ["kind", "user"], ["devices", "device", "opks_left", "more"])
        want_str(body, "user", 64)
        if "device" in body or "opks_left" in body:   # to a publish, or prekeys low
            strict(body, ["kind", "user", "device", "opks_left"])
            want_device(body)
            want_int(body, "opks_left")
        if _flag(body, "more"):  # §12.6 "A list in parts": only beside 1-8 devices
            if "devices" not in body:
                raise ProtoError("PROTOCOL_ERROR", "keys more without devices")
            _list(body, "devices", 1, E2E_MAX_DEVICES)
        for e in _list(body, "devices", 0, E2E_MAX_DEVICES) if "devices" in body else []:
            strict(e, ["device"], ["cert", "bundle", "opk", "lobby"])
            want_device(e)
            if ("cert" in e) != ("bundle" in e) or ("opk" in e and "bundle" not in e):
                raise ProtoError("PROTOCOL_ERROR", "device entry: cert and bundle go together")
            if "cert" in e:
                b64d(e["cert"], max_size=16 * 1024)
                parse_bundle(e["bundle"])
            if "opk" in e:
                _opk(e["opk"])
            _flag(e, "lobby")
    elif kind == "members":
        strict(body, ["kind", "event", "users"], ["more"])
        if want_str(body, "event") not in ("online", "joined", "left"):
            raise ProtoError("PROTOCOL_ERROR", "members event")
        if not all(isinstance(u, str) and is_canonical_name(u)
                   for u in _list(body, "users", 1, 1000)):
            raise ProtoError("PROTOCOL_ERROR", "members: not a canonical name")
        if _flag(body, "more") and body["event"] != "online":
            raise ProtoError("PROTOCOL_ERROR", "members: more only on online")
    elif kind == "sender_key":                                            # §12.5
        strict(body, ["kind", "id", "n", "ck"])
        want_u32(body, "id")
        want_u32(body, "n")
        b64d(body["ck"], size=32)
    else:
        raise ProtoError("PROTOCOL_ERROR", f"body kind {safe(kind)!r} is no body of §6.2 or §12.6")
    return body


def record_enc(rec):
    """TRANSCRIPT §3.1."""
    to = rec["to"].encode("utf-8")
    sig = rec["sig"] or b""
    i, n, path = rec["batch"] or (0, 0, [])  # an s2c record has neither: zeros
    return (rec["sid"] + u8(DIR_CODE[rec["dir"]]) + u32(len(to)) + to + u64(rec["seqno"])
            + u64(rec["ts"]) + u32(len(rec["ct"])) + rec["ct"] + rec["c"] + u32(len(sig)) + sig
            + u32(i) + u32(n) + u8(len(path)) + b"".join(path))


# ---------------------------------------------------------------- end-to-end layer (§12)
# §12.1: labels are ASCII; a 0x00 ends those followed by variable data. Integers are big-endian.

E2E_IDENTITY_LABEL = b"securechat/e2e identity"    # §12.2
E2E_BUNDLE_LABEL = b"securechat/e2e bundle"        # §12.2
E2E_PQXDH_LABEL = b"securechat/e2e pqxdh"          # §12.3
E2E_ROOT_LABEL = b"securechat/e2e ratchet root"    # §12.4 KDF_RK info (no variable data)
E2E_WRAP_KEY_LABEL = b"securechat/e2e wrap key"    # §12.4 wrap
E2E_WRAP_IV_LABEL = b"securechat/e2e wrap iv"
E2E_RATCHET_AAD_LABEL = b"securechat/e2e ratchet"  # §12.4 ratchet aad
E2E_SENDER_AAD_LABEL = b"securechat/e2e sender key"  # §12.5 sender aad
E2E_MAX_SKIP = 1000      # §12.4: message keys derived ahead for one message
E2E_MAX_SKIPPED = 2000   # §12.4: skipped keys kept (oldest dropped)


def hkdf(salt, ikm, info, length):
    """§12.1 HKDF(salt, ikm, info, L): Extract then Expand (RFC 5869)."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def x25519_public(private):
    """The 32-byte public key of a raw X25519 private key."""
    return _x25519_key(private)[1]


def x25519_dh(private, public):
    """§12.1: X25519 of raw keys; an all-zero output is BAD_KEY_SHARE."""
    return _x25519_agree(x25519.X25519PrivateKey.from_private_bytes(private), public)


def identity_statement(user, ik):
    """§12.2: what `ik_sig` signs."""
    name = user.encode("utf-8")
    return E2E_IDENTITY_LABEL + b"\x00" + u32(len(name)) + name + ik


def bundle_statement(user, created, ik, spk_id, spk, pq_id, pq_ek):
    """§12.2: what a bundle's `sig` signs."""
    name = user.encode("utf-8")
    return (E2E_BUNDLE_LABEL + b"\x00" + u32(len(name)) + name + u64(created) + ik
            + u32(spk_id) + spk + u32(pq_id) + pq_ek)


def pqxdh_ad(cert_a, cert_b, ik_a, ik_b):
    """§12.3 AD (128 bytes): both certificates' SHA-256, then both identity keys, initiator first."""
    return hashlib.sha256(cert_a).digest() + hashlib.sha256(cert_b).digest() + ik_a + ik_b


def pqxdh_sk(dhs, ss, ad):
    """§12.3 SK from DH1..DH3 [DH4] and the ML-KEM secret."""
    return hkdf(bytes(32), b"\xff" * 32 + b"".join(dhs) + ss, E2E_PQXDH_LABEL + b"\x00" + ad, 32)


def pqxdh_initiate(ik_a_priv, ek_priv, bundle, opk, kem_m, cert_a, cert_b):
    """§12.3, the initiator A. `bundle` holds B's verified ik, spk, pq (bytes); `opk` B's one-time
    prekey (bytes) or None; `kem_m` the ML-KEM encapsulation randomness (None: fresh).
    Returns (SK, AD, kem_ct)."""
    dhs = [x25519_dh(ik_a_priv, bundle["spk"]), x25519_dh(ek_priv, bundle["ik"]),
           x25519_dh(ek_priv, bundle["spk"])]
    if opk is not None:
        dhs.append(x25519_dh(ek_priv, opk))
    if not mlkem_ek_ok(bundle["pq"]):
        raise ProtoError("BAD_KEY_SHARE", "PQ prekey fails the FIPS 203 input check")
    ss, kem_ct = mlkem_encaps(bundle["pq"], kem_m if kem_m is not None else os.urandom(32))
    ad = pqxdh_ad(cert_a, cert_b, x25519_public(ik_a_priv), bundle["ik"])
    return pqxdh_sk(dhs, ss, ad), ad, kem_ct


def pqxdh_respond(ik_b_priv, spk_priv, opk_priv, pq_dk, ik_a, ek_a, kem_ct, cert_a, cert_b):
    """§12.3, the responder B, from A's prekey header. Returns (SK, AD)."""
    if len(kem_ct) != MLKEM_CT_BYTES:
        raise ProtoError("PROTOCOL_ERROR", "kem_ct is not 1088 bytes")
    dhs = [x25519_dh(spk_priv, ik_a), x25519_dh(ik_b_priv, ek_a), x25519_dh(spk_priv, ek_a)]
    if opk_priv is not None:
        dhs.append(x25519_dh(opk_priv, ek_a))
    ad = pqxdh_ad(cert_a, cert_b, ik_a, x25519_public(ik_b_priv))
    return pqxdh_sk(dhs, mlkem_decaps(pq_dk, kem_ct), ad), ad


def kdf_rk(rk, dh_out):
    """§12.4 KDF_RK: (rk', ck)."""
    out = hkdf(rk, dh_out, E2E_ROOT_LABEL, 64)
    return out[:32], out[32:]


def kdf_ck(ck):
    """§12.4 KDF_CK: (mk, ck')."""
    return hmac.new(ck, b"\x01", hashlib.sha256).digest(), hmac.new(ck, b"\x02", hashlib.sha256).digest()


def _wrap_aead(mk):
    return (AESGCM(hkdf_expand(mk, E2E_WRAP_KEY_LABEL, 32)), hkdf_expand(mk, E2E_WRAP_IV_LABEL, 12))


def wrap(mk, aad, k):
    """§12.4 wrap(mk, aad, k): 32 + 16 bytes."""
    aead, iv = _wrap_aead(mk)
    return aead.encrypt(iv, k, aad)


def unwrap(mk, aad, wrapped):
    """The inverse of wrap; a wrap that does not open is DECRYPT_FAIL, a k of the wrong size too."""
    aead, iv = _wrap_aead(mk)
    try:
        k = aead.decrypt(iv, wrapped, aad)
    except (InvalidTag, ValueError):
        raise ProtoError("DECRYPT_FAIL", "the key wrap does not open")
    if len(k) != 32:
        raise ProtoError("DECRYPT_FAIL", "the wrapped content key is not 32 bytes")
    return k


def header_enc(dh, pn, n):
    """§12.4: dh (32) || u32be(pn) || u32be(n)."""
    return dh + u32(pn) + u32(n)


def parse_header_enc(h):
    if len(h) != 40:
        raise ProtoError("PROTOCOL_ERROR", "ratchet header is not 40 bytes")
    pn, n = struct.unpack(">II", h[32:])
    return h[:32], pn, n


def ratchet_aad(ad, header, binding):
    """§12.4 ratchet aad."""
    return E2E_RATCHET_AAD_LABEL + b"\x00" + ad + header + binding


def sender_aad(author, chain_id, n, binding):
    """§12.5 sender aad."""
    name = author.encode("utf-8")
    return (E2E_SENDER_AAD_LABEL + b"\x00" + u32(len(name)) + name + u32(chain_id) + u32(n)
            + binding)


def binding_of(rec):
    """§12.4 binding: SHA-256 of the record's signed statement (§6.1)."""
    return hashlib.sha256(statement(rec)).digest()


class Ratchet:
    """§12.4 Double Ratchet state for one peer. `new_key()` gives a fresh X25519 private key
    (raw bytes); a test passes its fixed keys. Every receive computes into a copy and commits only
    when the wrap opened."""

    def __init__(self, sk, ad, new_key=None):
        self.ad, self.rk = ad, sk
        self.new_key = new_key or (lambda: os.urandom(32))
        self.dhs = self.dhs_pub = self.dhr = None
        self.cks = self.ckr = None
        self.ns = self.nr = self.pn = 0
        self.skipped = {}           # (dh, n) -> mk, oldest first (dict order)
        self.old_dhr = set()        # ratchet keys of finished receiving chains: REPLAY, not a step

    @classmethod
    def initiator(cls, sk, ad, spk_b, new_key=None):
        r = cls(sk, ad, new_key)
        r.dhr = spk_b
        r._new_sending(r.dhr)
        return r

    @classmethod
    def responder(cls, sk, ad, spk_priv, new_key=None):
        r = cls(sk, ad, new_key)
        r.dhs, r.dhs_pub = spk_priv, x25519_public(spk_priv)
        return r

    def _new_sending(self, dhr):
        self.dhs = self.new_key()
        self.dhs_pub = x25519_public(self.dhs)
        self.rk, self.cks = kdf_rk(self.rk, x25519_dh(self.dhs, dhr))

    def encrypt(self, k, binding):
        """Wraps k for the record whose statement hashes to `binding`: (header_enc, wrapped)."""
        if self.cks is None:
            raise ProtoError("INTERNAL", "no sending chain before the first message opened")
        mk, self.cks = kdf_ck(self.cks)
        header = header_enc(self.dhs_pub, self.pn, self.ns)
        self.ns += 1
        return header, wrap(mk, ratchet_aad(self.ad, header, binding), k)

    def decrypt(self, header, wrapped, binding):
        """Unwraps k (§12.4); REPLAY, DECRYPT_FAIL or PROTOCOL_ERROR, the state unchanged then."""
        dh, pn, n = parse_header_enc(header)
        aad = ratchet_aad(self.ad, header, binding)
        if (dh, n) in self.skipped:
            k = unwrap(self.skipped[(dh, n)], aad, wrapped)
            del self.skipped[(dh, n)]
            return k
        if dh in self.old_dhr or (dh == self.dhr and n < self.nr):
            raise ProtoError("REPLAY", "ratchet message already opened (or its key dropped)")
        trial = Ratchet.__new__(Ratchet)
        trial.__dict__.update(self.__dict__)
        trial.skipped = dict(self.skipped)
        trial.old_dhr = set(self.old_dhr)
        if dh != trial.dhr:
            trial._skip(pn)
            if trial.dhr is not None:
                trial.old_dhr.add(trial.dhr)
            trial.pn, trial.ns, trial.nr, trial.dhr = trial.ns, 0, 0, dh
            trial.rk, trial.ckr = kdf_rk(trial.rk, x25519_dh(trial.dhs, dh))
            trial._new_sending(dh)
        trial._skip(n)
        mk, trial.ckr = kdf_ck(trial.ckr)
        trial.nr += 1
        k = unwrap(mk, aad, wrapped)
        self.__dict__.update(trial.__dict__)
        return k

    def _skip(self, until):
        if self.ckr is None:
            return
        if until - self.nr > E2E_MAX_SKIP:
            raise ProtoError("PROTOCOL_ERROR", f"ratchet message {until - self.nr} keys ahead")
        while self.nr < until:
            mk, self.ckr = kdf_ck(self.ckr)
            self.skipped[(self.dhr, self.nr)] = mk
            self.nr += 1
            while len(self.skipped) > E2E_MAX_SKIPPED:
                del self.skipped[next(iter(self.skipped))]


class SenderChain:
    """§12.5: one author's sender chain, on the author's side (ck random, id a random u32) or a
    receiver's (from the `{id, n, ck}` the author sent, n its first position)."""

    def __init__(self, author, chain_id=None, n=0, ck=None):
        self.author = author
        self.id = chain_id if chain_id is not None else struct.unpack(">I", os.urandom(4))[0]
        self.n = n
        self.ck = ck if ck is not None else os.urandom(32)
        self.skipped = {}   # n -> mk, receiver side
        self.queued = False  # author side: one of its sender keys was answered `queued` (§6.5)
        # author side, §12.5 catch-up rounds: the members the chain does not reach (no device
        # that takes sender keys, a failed fetch, a `sender_key` refused), and when it was made or
        # last made a round (monotonic time; set by Device.lobby_chain)
        self.left_out, self.last_round = set(), None

    def state(self):
        """The `{id, n, ck}` sent to members (§12.5), at the current position."""
        return {"id": self.id, "n": self.n, "ck": b64e(self.ck)}

    def encrypt(self, k, binding):
        """The author wraps k at position n: (n, wrapped)."""
        mk, self.ck = kdf_ck(self.ck)
        n, self.n = self.n, self.n + 1
        return n, wrap(mk, sender_aad(self.author, self.id, n, binding), k)

    def decrypt(self, chain_id, n, wrapped, binding):
        """A receiver unwraps; the state changes only when the wrap opened."""
        if chain_id != self.id:                                                 # §12.5 1
            raise ProtoError("DECRYPT_FAIL", "not the author's current sender chain")
        aad = sender_aad(self.author, chain_id, n, binding)
        if n in self.skipped:
            k = unwrap(self.skipped[n], aad, wrapped)
            del self.skipped[n]
            return k
        if n < self.n:                                                          # 3
            raise ProtoError("REPLAY", "sender-key message already opened, or before the chain")
        if n - self.n > E2E_MAX_SKIP:
            raise ProtoError("PROTOCOL_ERROR", f"sender-key message {n - self.n} keys ahead")
        ck, skipped, pos = self.ck, {}, self.n
        while pos < n:
            mk, ck = kdf_ck(ck)
            skipped[pos] = mk
            pos += 1
        mk, ck = kdf_ck(ck)
        k = unwrap(mk, aad, wrapped)
        self.skipped.update(skipped)
        while len(self.skipped) > E2E_MAX_SKIPPED:
            del self.skipped[next(iter(self.skipped))]
        self.ck, self.n = ck, n + 1
        return k



E2E_CHAINS_KEPT = 4          # §12.5: the latest chains a receiver keeps per (author, device)
E2E_LEFT_KEEP_S = 5 * 60     # §12.5: a departed member's chains, kept after their `left`
E2E_CATCH_UP_S = 2           # §12.5: at most one catch-up round of a chain every 2 s


class SenderKeyring:
    """§12.5, a receiver's chains: per (author, author device) the 4 latest handed to it, the
    latest first (a line under a replaced chain may still arrive: sent before a membership change
    and delivered after, or replayed after a cluster node failed), and a departed member's for
    5 minutes after their `left` (their lines on the way)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.chains = {}   # (author, device) -> [SenderChain], the latest first
        self.left = {}     # author -> when their `left` came

    def take(self, author, device, chain):
        kept = [c for c in self.chains.get((author, device), []) if c.id != chain.id]
        self.chains[(author, device)] = ([chain] + kept)[:E2E_CHAINS_KEPT]

    def joined(self, user):
        self.left.pop(user, None)

    def departed(self, user):
        self.left[user] = self.clock()

    def find(self, author, device, chain_id):
        """The kept chain of (author, device) with this id, or None (no key for the line)."""
        now = self.clock()
        for user, when in list(self.left.items()):
            if now - when > E2E_LEFT_KEEP_S:
                for key in [key for key in self.chains if key[0] == user]:
                    del self.chains[key]
                del self.left[user]
        return next((c for c in self.chains.get((author, device), []) if c.id == chain_id), None)


# ---------------------------------------------------------------- end-to-end on the wire (§12.2, §12.6)

E2E_DEVICE_LABEL = b"securechat/e2e device"   # §12.2 device id
E2E_MAX_DEVICES = 8                           # §12.6 MAX_DEVICES
E2E_DEVICE_LIST_MAX_AGE_S = 60                # §12.6 DEVICE_LIST_MAX_AGE
E2E_FETCH_TIMEOUT_S = 10                      # §12.6: wait for a `keys` answer, else TIMEOUT
E2E_OPKS = 20                                 # §12.6: prekeys published on a new state
E2E_SESSIONS_PER_DEVICE = 4                   # §12.6
HEX16 = re.compile(r"[0-9a-f]{16}")


def device_id(ik):
    """§12.2: the first 8 bytes of SHA-256(label || 0x00 || IK), lowercase hex."""
    return hashlib.sha256(E2E_DEVICE_LABEL + b"\x00" + ik).digest()[:8].hex()


def want_device(obj, name="device"):
    d = want_str(obj, name)
    if not HEX16.fullmatch(d):
        raise ProtoError("PROTOCOL_ERROR", f"{name} is not a 16-hex device id")
    return d


def want_u32(obj, name):
    v = want_int(obj, name)
    if not 0 <= v < 2**32:
        raise ProtoError("PROTOCOL_ERROR", f"{name} is not a u32")
    return v


def parse_bundle(obj):
    """A bundle's JSON (§12.2) to decoded values; PROTOCOL_ERROR on its schema."""
    if not isinstance(obj, dict):
        raise ProtoError("PROTOCOL_ERROR", "bundle is not an object")
    strict(obj, ["user", "created", "ik", "spk_id", "spk", "pq_id", "pq", "ik_sig", "sig"])
    return {"user": want_str(obj, "user", 64), "created": want_int(obj, "created"),
            "ik": b64d(obj["ik"], size=32), "spk_id": want_u32(obj, "spk_id"),
            "spk": b64d(obj["spk"], size=32), "pq_id": want_u32(obj, "pq_id"),
            "pq": b64d(obj["pq"], size=MLKEM_EK_BYTES), "ik_sig": b64d(obj["ik_sig"], max_size=1024),
            "sig": b64d(obj["sig"], max_size=1024)}


def check_bundle(trust, user, entry):
    """§12.2's receiver checks, in order, for one `devices` entry of a `keys` answer for `user`;
    then §12.6's: `device` is the id of `bundle.ik`. Returns the decoded bundle."""
    cert_der = b64d(entry["cert"], max_size=16 * 1024)
    b = parse_bundle(entry["bundle"])
    pub, cn = trust.validate(cert_der, "client")                                     # BAD_CERT
    if cn is None or canonical(cn) != b["user"] or b["user"] != user:
        raise ProtoError("BAD_CERT", "bundle owner is not the certificate's canonical name")
    statement_b = bundle_statement(b["user"], b["created"], b["ik"], b["spk_id"], b["spk"],
                                   b["pq_id"], b["pq"])
    if not verify(pub, b["sig"], statement_b) or \
            not verify(pub, b["ik_sig"], identity_statement(b["user"], b["ik"])):
        raise ProtoError("SIG_FAIL", "bundle signature")
    if not mlkem_ek_ok(b["pq"]):
        raise ProtoError("BAD_KEY_SHARE", "PQ prekey fails the FIPS 203 input check")
    if device_id(b["ik"]) != entry["device"]:
        raise ProtoError("PROTOCOL_ERROR", "device is not the id of bundle.ik")
    b["cert"] = cert_der
    return b


def parse_pre(obj):
    """The prekey header of §12.3."""
    if not isinstance(obj, dict):
        raise ProtoError("PROTOCOL_ERROR", "pre is not an object")
    strict(obj, ["ik", "ik_sig", "ek", "spk_id", "pq_id", "kem_ct"], ["opk_id"])
    return {"ik": b64d(obj["ik"], size=32), "ik_sig": b64d(obj["ik_sig"], max_size=1024),
            "ek": b64d(obj["ek"], size=32), "spk_id": want_u32(obj, "spk_id"),
            "pq_id": want_u32(obj, "pq_id"),
            "opk_id": want_u32(obj, "opk_id") if "opk_id" in obj else None,
            "kem_ct": b64d(obj["kem_ct"], size=MLKEM_CT_BYTES)}


class E2ESession:
    """One Double Ratchet session with one contact device (§12.3/§12.4); `pre` is the prekey
    header we send until the contact has answered; `cert` the contact's certificate (DER) it was
    made with (the bundle's, or the first message's author's), checked against our CRL whenever
    the contact's devices are fetched (§12.6 sender step 2, "Never readable"); None in a state
    saved before it was kept."""

    def __init__(self, ratchet, pre=None, ek=None, cert=None):
        self.ratchet, self.pre = ratchet, pre
        self.ek = ek  # the initiator's `pre.ek` this session answered (§12.3 B 2), responder only
        self.cert = cert


E2E_STATE_AAD = b"securechat/e2e state"      # §12.7
E2E_SCRYPT = {"n": 32768, "r": 8, "p": 1}     # §12.7


def open_state(path, password):
    """§12.7: the JSON inside a device's state file (any implementation's: the envelope is the
    format). A wrong password, a damaged file or parameters other than §12.7's (a planted n = 2^40
    would be a denial of service) are DECRYPT_FAIL."""
    hint = f"{path}: wrong password or damaged; move it away to start a new device"
    with open(path, "rb") as f:
        env = parse_json(f.read(), code="DECRYPT_FAIL", tag="kdf")
    try:
        strict(env, ["version", "kdf", "n", "r", "p", "salt", "nonce", "ct"], code="DECRYPT_FAIL")
        if env["version"] != 1 or env["kdf"] != "scrypt" or \
                any(env[x] != E2E_SCRYPT[x] for x in E2E_SCRYPT):
            raise ProtoError("DECRYPT_FAIL", hint + " (not §12.7's version and parameters)")
        key = hashlib.scrypt(password.encode(), salt=b64d(env["salt"], code="DECRYPT_FAIL"),
                             maxmem=256 * 1024 * 1024, dklen=32, **E2E_SCRYPT)
        plain = AESGCM(key).decrypt(b64d(env["nonce"], code="DECRYPT_FAIL", size=12),
                                    b64d(env["ct"], code="DECRYPT_FAIL"), E2E_STATE_AAD)
        state = json.loads(plain)
    except (InvalidTag, TypeError, ValueError):
        raise ProtoError("DECRYPT_FAIL", hint)
    if not isinstance(state, dict):
        raise ProtoError("DECRYPT_FAIL", hint)
    return state


def _ratchet_state(r):
    h = lambda b: None if b is None else b.hex()  # noqa: E731
    return {"ad": h(r.ad), "rk": h(r.rk), "dhs": h(r.dhs), "dhr": h(r.dhr), "cks": h(r.cks),
            "ckr": h(r.ckr), "ns": r.ns, "nr": r.nr, "pn": r.pn,
            "skipped": [[dh.hex(), n, mk.hex()] for (dh, n), mk in r.skipped.items()],
            "old_dhr": sorted(d.hex() for d in r.old_dhr)}


def _ratchet_from(s):
    u = lambda v: None if v is None else bytes.fromhex(v)  # noqa: E731
    r = Ratchet(u(s["rk"]), u(s["ad"]))
    r.dhs, r.dhr, r.cks, r.ckr = u(s["dhs"]), u(s["dhr"]), u(s["cks"]), u(s["ckr"])
    r.dhs_pub = None if r.dhs is None else x25519_public(r.dhs)
    r.ns, r.nr, r.pn = s["ns"], s["nr"], s["pn"]
    r.skipped = {(bytes.fromhex(dh), n): bytes.fromhex(mk) for dh, n, mk in s["skipped"]}
    r.old_dhr = {bytes.fromhex(d) for d in s["old_dhr"]}
    return r


def _locked(method):
    """Runs a Device method under the device's lock: the reader thread opens lines while the
    input thread wraps them, and both change (and save) the one state."""
    def run(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)
    return run


class Device:
    """This installation's end-to-end keys and sessions (§12.2, §12.6), kept in `state_path`
    (§12.7's envelope: scrypt from the login password, AES-256-GCM; the JSON inside is this
    client's own) or, without a path, in memory only (every run a new device)."""

    def __init__(self, user, cert_der, cert_key, state_path=None, password=None, lobby=False):
        self.user, self.cert_der, self.cert_key = user, cert_der, cert_key
        self.state_path, self.password = state_path, password
        self.lobby = lobby      # §12.5 on the wire: this device takes sender keys
        self.lock = threading.RLock()
        # §12.5: sender chains live in memory only (a restart is a new login, a membership change)
        self.chains = SenderKeyring()  # the receiver's side
        self.my_chain = None    # ours; a `members` body retires it
        self.clock = time.monotonic  # when our chain's next catch-up round is due (§12.5)
        self.lobby_devices = {}  # (user, device) -> True when a fetch listed it with "lobby"
        self.opks = {}          # id -> private key, unused one-time prekeys
        self.sessions = {}      # (user, device) -> [E2ESession], the one that last opened first
        self.lists = {}         # user -> (monotonic time, [device ids]) from the last fetch
        self.restart = set()    # (user, device) whose line we could not open: new session next
        self.new = not (state_path and os.path.exists(state_path))
        if self.new:
            self.ik, self.spk, self.pq_seed = os.urandom(32), os.urandom(32), os.urandom(64)
            self.spk_id, self.pq_id, self.next_opk = 1, 1, 1
        else:
            self._load()
        self.ik_pub = x25519_public(self.ik)
        self.id = device_id(self.ik_pub)
        self.pq_ek, self.pq_dk = mlkem_keygen(self.pq_seed)
        self.ik_sig = sign(cert_key, identity_statement(user, self.ik_pub))

    def _load(self):
        state = open_state(self.state_path, self.password)
        u = bytes.fromhex
        self.ik, self.spk, self.pq_seed = u(state["ik"]), u(state["spk"]), u(state["pq_seed"])
        self.spk_id, self.pq_id, self.next_opk = state["spk_id"], state["pq_id"], state["next_opk"]
        self.opks = {int(i): u(k) for i, k in state["opks"].items()}
        for user, dev, sessions in state["sessions"]:
            self.sessions[(user, dev)] = [
                E2ESession(_ratchet_from(s["ratchet"]), s["pre"],
                           bytes.fromhex(s["ek"]) if s.get("ek") else None,
                           bytes.fromhex(s["cert"]) if s.get("cert") else None)
                for s in sessions]

    @_locked
    def save(self):
        """§12.7: durably, before anything that depends on it is sent."""
        if self.state_path is None:
            return
        state = {"ik": self.ik.hex(), "spk": self.spk.hex(), "pq_seed": self.pq_seed.hex(),
                 "spk_id": self.spk_id, "pq_id": self.pq_id, "next_opk": self.next_opk,
                 "opks": {str(i): k.hex() for i, k in self.opks.items()},
                 "sessions": [[u, d, [{"ratchet": _ratchet_state(s.ratchet), "pre": s.pre,
                                       "ek": s.ek.hex() if s.ek else None,
                                       "cert": s.cert.hex() if s.cert else None} for s in ss]]
                              for (u, d), ss in self.sessions.items()]}
        salt, nonce = os.urandom(16), os.urandom(12)
        key = hashlib.scrypt(self.password.encode(), salt=salt, maxmem=256 * 1024 * 1024,
                             dklen=32, **E2E_SCRYPT)
        env = {"version": 1, "kdf": "scrypt", **E2E_SCRYPT, "salt": b64e(salt),
               "nonce": b64e(nonce),
               "ct": b64e(AESGCM(key).encrypt(nonce, enc_json(state), E2E_STATE_AAD))}
        tmp = self.state_path + ".tmp"
        write_private(tmp, enc_json(env))
        os.replace(tmp, self.state_path)
        dfd = os.open(os.path.dirname(os.path.abspath(self.state_path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def bundle(self):
        created = now_ms()
        spk = x25519_public(self.spk)
        sig = sign(self.cert_key, bundle_statement(self.user, created, self.ik_pub, self.spk_id,
                                                   spk, self.pq_id, self.pq_ek))
        return {"user": self.user, "created": created, "ik": b64e(self.ik_pub),
                "spk_id": self.spk_id, "spk": b64e(spk), "pq_id": self.pq_id,
                "pq": b64e(self.pq_ek), "ik_sig": b64e(self.ik_sig), "sig": b64e(sig)}

    def new_opks(self, count):
        out_ = []
        for _ in range(count):
            priv = os.urandom(32)
            self.opks[self.next_opk] = priv
            out_.append({"id": self.next_opk, "pub": b64e(x25519_public(priv))})
            self.next_opk += 1
        return out_

    @_locked
    def publish_body(self, with_opks, with_bundle=True):
        body = {"kind": "keys_publish", "device": self.id}
        if with_bundle:
            body["bundle"] = self.bundle()
            if self.lobby:  # §12.5: the flag goes with a bundle
                body["lobby"] = True
        body["opks"] = self.new_opks(with_opks)
        self.save()
        return body

    # -- the sender (§12.6 "What a sender does before a private line")
    def needs_fetch(self, user):
        got = self.lists.get(user)
        return got is None or time.monotonic() - got[0] > E2E_DEVICE_LIST_MAX_AGE_S

    @_locked
    def forget_list(self, user):
        """The next line to or for `user` fetches their devices again, whatever the list's age
        (§12.5: a member who `joined`, a catch-up round)."""
        self.lists.pop(user, None)

    def known(self, user):
        """`known` of a fetch: devices we have a session with, except those whose line we could
        not open (§12.6: the next line to them starts a new session, kept in front)."""
        return sorted({d for (u, d) in self.sessions if u == user and (u, d) not in self.restart})

    @_locked
    def take_list(self, trust, user, devices, warn, again=False):
        """Applies a `keys` answer's `devices` (§12.6 sender steps 2-3): drops sessions with
        devices no longer listed and with devices whose certificate no longer validates, starts
        §12.3 with each new device whose keys pass §12.2. Returns the devices to wrap for; raises
        the first failure's code when every listed device failed, and FetchAgain (once: not when
        `again`) when a device listed bare lost its sessions, so its current keys are asked for."""
        dropped = self.drop_unvalidated(trust, user, warn)
        # An empty list is never kept: it is NO_E2E_KEYS (§12.6 "never readable": cache nothing,
        # ask again before every line). The server must not list a device under a revoked
        # certificate, so when every device we had a conversation with no longer validates the
        # answer is that (BAD_CERT); any still valid may be hidden by the server: said loudly.
        if not devices:
            held = sorted({d for (u, d) in self.sessions if u == user})
            self.lists.pop(user, None)
            if held:
                warn(f"the server now lists no device of {user}, though this device has a "
                     f"conversation with {len(held)} of them")
            elif dropped:
                raise ProtoError("BAD_CERT", f"the certificate of every device of {user} this "
                                             "device had a conversation with no longer validates")
            return []
        if not again and any("bundle" not in e and e["device"] in dropped for e in devices):
            # step 2: no longer in `known`, so the next answer carries its current cert and bundle
            # and step 3 decides (a key rotation gets a new session, a revoked one is refused)
            self.lists.pop(user, None)
            raise FetchAgain()
        listed, usable, first_error = [], [], None
        for entry in devices:
            d = entry["device"]
            listed.append(d)
            # §12.5: every entry of a device that takes sender keys says so, a bare `known` one
            # too (what the server does; §12.6's "{"device"} alone" omits it: finding 40)
            self.lobby_devices[(user, d)] = entry.get("lobby") is True
            if "bundle" not in entry and self.sessions.get((user, d)) and \
                    (user, d) not in self.restart:  # one we have a session with (`known`)
                usable.append(d)
                continue
            if "bundle" not in entry and d in dropped:  # step 2 again, on the answer fetched again
                first_error = first_error or ProtoError("BAD_CERT", "certificate no longer valid")
                continue
            if "bundle" not in entry or "cert" not in entry:  # §12.6 sender step 3
                warn(f"device {d} of {user} left out: PROTOCOL_ERROR: listed bare, but this "
                     "device has no session with it")
                first_error = first_error or ProtoError("PROTOCOL_ERROR", "a bare device entry")
                continue
            try:
                b = check_bundle(trust, user, entry)
                opk = b64d(entry["opk"]["pub"], size=32) if "opk" in entry else None
                opk_id = entry["opk"]["id"] if "opk" in entry else None
                self._initiate(user, d, b, opk, opk_id)
                usable.append(d)
            except ProtoError as e:
                warn(f"device {d} of {user} left out: {e.code}: {e.detail}")
                first_error = first_error or e
        for (u, d) in list(self.sessions):
            if u == user and d not in listed:
                del self.sessions[(u, d)]
        self.restart = {(u, d) for (u, d) in self.restart if u != user}
        if not usable:
            self.lists.pop(user, None)
            raise first_error
        self.lists[user] = (time.monotonic(), usable)
        return usable

    def drop_unvalidated(self, trust, user, warn):
        """§12.6 sender step 2 and "Never readable", per device: the certificate of its first
        session (the one step 6 wraps with, §12.7's) is checked. When it has lapsed (revoked in
        our CRL, or past its notAfter or the CA's), all that device's sessions go. Returns those
        devices, each told to the user; the state is saved when any went. One that has not lapsed
        but fails §6.4.1's validation for a reason that says nothing about the contact (our own
        CRL past its nextUpdate) drops nothing: BAD_CERT, the line not sent. A session saved
        before certificates were kept is not checked."""
        gone, refused = set(), None
        for (u, d) in sorted(k for k in self.sessions if k[0] == user):
            cert = self.sessions[(u, d)][0].cert
            if cert is None:
                continue
            lapsed = trust.lapsed(cert)
            if lapsed is not None:
                del self.sessions[(u, d)]
                gone.add(d)
                warn(f"device {d} of {user}: BAD_CERT: the certificate its session was made "
                     f"under has lapsed ({lapsed}); all its sessions are dropped")
                continue
            try:
                trust.validate(cert, "client")
            except ProtoError as e:
                refused = refused or e
        if gone:
            self.save()
        if refused is not None:
            raise ProtoError("BAD_CERT", f"{refused.detail}: no session dropped, nothing sent "
                                         "(a current CRL is needed)")
        return gone

    def _initiate(self, user, d, b, opk, opk_id):
        ek = os.urandom(32)
        sk, ad, kem_ct = pqxdh_initiate(self.ik, ek, b, opk, None, self.cert_der, b["cert"])
        pre = {"ik": b64e(self.ik_pub), "ik_sig": b64e(self.ik_sig), "ek": b64e(x25519_public(ek)),
               "spk_id": b["spk_id"], "pq_id": b["pq_id"], "kem_ct": b64e(kem_ct)}
        if opk_id is not None:
            pre["opk_id"] = opk_id
        s = E2ESession(Ratchet.initiator(sk, ad, b["spk"]), pre, cert=b["cert"])
        self.sessions[(user, d)] = ([s] + self.sessions.get((user, d), []))[:E2E_SESSIONS_PER_DEVICE]

    @_locked
    def wrap_for(self, user, devices, k, binding):
        """The `e2e` member of a private record (§12.6): one wrap per device."""
        wraps = []
        for d in devices:
            s = self.sessions[(user, d)][0]
            header, w = s.ratchet.encrypt(k, binding)
            dh, pn, n = parse_header_enc(header)
            wrap_ = {"device": d, "dh": b64e(dh), "pn": pn, "n": n, "w": b64e(w)}
            if s.pre is not None:
                wrap_["pre"] = s.pre
            wraps.append(wrap_)
        self.save()  # §12.6: before the line leaves, so no message key is ever used twice
        return {"kind": "ratchet", "from": self.id, "wraps": wraps}

    # -- sender keys (§12.5)
    @_locked
    def retire_chain(self):
        """§12.5: any `members` body retires our chain: the next lobby line starts a new one."""
        self.my_chain = None

    @_locked
    def chain_sent(self, chain, user, reached):
        """§12.5: our chain goes to `user` now (`reached`: marked before the record leaves, so a
        refusal finds them in), or leaves them out until a catch-up round reaches them."""
        if reached:
            chain.left_out.discard(user)
        else:
            chain.left_out.add(user)

    @_locked
    def catch_up_round(self, chain):
        """§12.5: the members our chain left out, to fetch again and send the chain before the
        next line, when 2 s have passed since the chain was made or its last round (one clock
        for all of them; a refusal starts none); else none. A round is made only when someone is
        left out (the docs leave open whether an empty one counts: interop finding 87)."""
        now = self.clock()
        if not chain.left_out or now - chain.last_round < E2E_CATCH_UP_S:
            return []
        chain.last_round = now
        return sorted(chain.left_out)

    @_locked
    def sender_key_refused(self, chain_id, user):
        """§6.5: a `sender_key` of the chain `chain_id` to `user` was refused: it reached no one,
        so only `user` is left out of the chain, if it is still ours (a replaced chain's key
        changes nothing), until a catch-up round (§12.5)."""
        if self.my_chain is not None and self.my_chain.id == chain_id:
            self.my_chain.left_out.add(user)

    @_locked
    def sender_key_queued(self, chain_id):
        """§6.5: a `sender_key` of the chain `chain_id` was answered `queued`. It reaches its
        member before our later lines, so the chain stays, but it wraps at most MAX_SKIP lines:
        the member opens at most that far ahead of the key (§12.5 step 4), and a replay carries
        only the newest 1000 records; counted from the chain's n = 0, not from the key's n. A
        replaced chain's key changes nothing."""
        if self.my_chain is not None and self.my_chain.id == chain_id:
            self.my_chain.queued = True

    @_locked
    def lobby_chain(self):
        """(chain, new): our current sender chain, or a new one (random ck and id, n = 0) that the
        caller must distribute before it wraps under it. A chain with a queued key has wrapped
        its last line at n = MAX_SKIP - 1 (the 1000th): the next line starts a new one (§6.5)."""
        if self.my_chain is not None and not (self.my_chain.queued
                                              and self.my_chain.n >= E2E_MAX_SKIP):
            return self.my_chain, False
        self.my_chain = SenderChain(self.user)
        self.my_chain.last_round = self.clock()  # §12.5: its first catch-up round 2 s on
        return self.my_chain, True

    @_locked
    def sender_wrap(self, chain, k, binding):
        """The `e2e` member of a lobby record (§12.5): `k` wrapped once for every member."""
        n, w = chain.encrypt(k, binding)
        return {"kind": "sender", "from": self.id, "id": chain.id, "n": n, "w": b64e(w)}

    @_locked
    def take_sender_key(self, author, sender, body):
        """An accepted `sender_key` record (§12.5): the latest chain of (author, `from`)."""
        strict(body, ["kind", "id", "n", "ck"])
        self.chains.take(author, sender, SenderChain(author, want_u32(body, "id"),
                                                     want_u32(body, "n"),
                                                     b64d(body["ck"], size=32)))

    @_locked
    def open_sender(self, author, e2e, binding):
        """k from a lobby record's `sender` envelope (§12.5), or None when this device has no key
        for it: no kept chain of (author, `from`) with that id, or a wrap that does not open."""
        strict(e2e, ["kind", "from", "id", "n", "w"])
        sender, chain_id = want_device(e2e, "from"), want_u32(e2e, "id")
        n, wrapped = want_u32(e2e, "n"), b64d(e2e["w"], size=48)
        chain = self.chains.find(author, sender, chain_id)
        if chain is None:
            return None, "no sender key from this device of the author under this id"
        try:
            return chain.decrypt(chain_id, n, wrapped, binding), None
        except ProtoError as e:
            if e.code not in ("DECRYPT_FAIL", "REPLAY"):
                raise  # a wrap more than 1000 ahead (PROTOCOL_ERROR): the session ends
            return None, f"{e.code}: {e.detail}"  # §12.6 step 9: no key

    # -- the recipient (§12.6 "The recipient")
    @_locked
    def open_ratchet(self, author, author_pub, cert_der, e2e, binding):
        """k from a private record's `e2e`, or None when this device has no key for it (not an
        error: §12.6). A bad `pre` ends the session (PROTOCOL_ERROR / SIG_FAIL)."""
        strict(e2e, ["kind", "from", "wraps"])
        sender = want_device(e2e, "from")
        wraps = e2e["wraps"]
        if not isinstance(wraps, list) or not 1 <= len(wraps) <= E2E_MAX_DEVICES:
            raise ProtoError("PROTOCOL_ERROR", "wraps is not a list of 1-8")
        mine, seen = None, set()
        for w in wraps:
            if not isinstance(w, dict):
                raise ProtoError("PROTOCOL_ERROR", "wrap is not an object")
            strict(w, ["device", "dh", "pn", "n", "w"], ["pre"])
            d = want_device(w)
            if d in seen:
                raise ProtoError("PROTOCOL_ERROR", "a device wrapped twice")
            seen.add(d)
            if d == self.id:
                mine = w
        if mine is None:
            return None, "no wrap for this device"
        header = header_enc(b64d(mine["dh"], size=32), want_u32(mine, "pn"), want_u32(mine, "n"))
        wrapped = b64d(mine["w"], size=48)
        pre = parse_pre(mine["pre"]) if "pre" in mine else None
        key = (author, sender)
        if pre is not None:
            if device_id(pre["ik"]) != sender:                                    # §12.3 B 1
                raise ProtoError("PROTOCOL_ERROR", "pre.ik is not the sending device's key")
            if not any(s.ek == pre["ek"] for s in self.sessions.get(key, [])):    # B 2
                return self._respond(key, author, author_pub, cert_der, pre, header, wrapped,
                                     binding)
        replay = False  # B 2's repeat, or no `pre`: the sessions, the one that last opened first
        for s in self.sessions.get(key, []):
            try:
                k = s.ratchet.decrypt(header, wrapped, binding)
            except ProtoError as e:  # any code counts as not opening (§12.6 step 8), and a
                replay = replay or e.code == "REPLAY"  # failed try leaves the session as it was
                continue
            s.pre = None  # the contact has answered on this session: no more prekey header
            self.sessions[key] = [s] + [x for x in self.sessions[key] if x is not s]
            self.save()
            return k, None
        self.restart.add(key)  # §12.6: the next line to the author starts a new session
        return None, ("REPLAY: its message key was used already" if replay
                      else "DECRYPT_FAIL: no session of this device opens it")

    def _respond(self, key, author, author_pub, cert_der, pre, header, wrapped, binding):
        """§12.3, B's steps 3-6 for a prekey header that starts a session."""
        if not verify(author_pub, pre["ik_sig"], identity_statement(author, pre["ik"])):
            raise ProtoError("SIG_FAIL", "pre.ik_sig")                            # B 3
        if pre["spk_id"] != self.spk_id or pre["pq_id"] != self.pq_id or \
                (pre["opk_id"] is not None and pre["opk_id"] not in self.opks):    # B 4
            self.restart.add(key)
            return None, "DECRYPT_FAIL: the prekey header names a prekey this device does not hold"
        opk = self.opks.get(pre["opk_id"]) if pre["opk_id"] is not None else None
        sk, ad = pqxdh_respond(self.ik, self.spk, opk, self.pq_dk, pre["ik"], pre["ek"],
                               pre["kem_ct"], cert_der, self.cert_der)            # B 5
        r = Ratchet.responder(sk, ad, self.spk)
        try:
            k = r.decrypt(header, wrapped, binding)
        except ProtoError as e:
            if e.code not in ("DECRYPT_FAIL", "REPLAY"):
                raise  # a first message more than 1000 keys ahead ends the session
            self.restart.add(key)
            return None, f"{e.code}: {e.detail}"
        if pre["opk_id"] is not None:                                            # B 6
            del self.opks[pre["opk_id"]]
        self.sessions[key] = ([E2ESession(r, ek=pre["ek"], cert=cert_der)]
                              + self.sessions.get(key, []))[:E2E_SESSIONS_PER_DEVICE]
        self.save()
        return k, None


# ---------------------------------------------------------------- transport and records (§2, §3.2)

class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.send_lock = threading.Lock()
        self.error_sent = False  # our `error` left: it is our last frame (§7 "Ending with an error")

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ProtoError("PROTOCOL_ERROR", "connection closed by the peer")
            buf += chunk
        return buf

    def read_frame(self):
        (length,) = struct.unpack(">I", self._read_exact(4))
        if length == 0 or length > MAX_FRAME_BYTES:  # before reading the payload (§2)
            raise ProtoError("FRAME_TOO_LARGE", str(length))
        return self._read_exact(length)

    def write_frame(self, payload):
        if not 1 <= len(payload) <= MAX_FRAME_BYTES:
            raise ProtoError("INTERNAL", "frame size")
        with self.send_lock:
            self.send_locked(u32(len(payload)) + payload)

    def send_locked(self, data):
        """Every write to the peer; the caller holds send_lock. A failed write is WriteFailed."""
        if self.error_sent:
            raise ProtoError("INTERNAL", "a frame after our error")
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise WriteFailed(e.errno, e.strerror or str(e)) from e

    def linger(self, clock=None):
        """§7 "Ending with an error", after our `error` left (step 1's sendall returned: the kernel
        has it, last): the FIN follows it, then what the peer still sends is read and dropped, acted
        on by no one, until the peer closes, LINGER_MAX_BYTES are read or LINGER_S pass since the
        half-close began; then the socket is closed. Returns why the reading stopped."""
        clock = clock or time.monotonic
        start = clock()
        why = "io"
        try:
            self.sock.shutdown(socket.SHUT_WR)
            read = 0
            while True:
                left = LINGER_S - (clock() - start)
                if left <= 0:
                    why = "time"
                    break
                if read >= LINGER_MAX_BYTES:
                    why = "bytes"
                    break
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(min(65536, LINGER_MAX_BYTES - read))
                except socket.timeout:
                    why = "time"
                    break
                if not chunk:
                    why = "closed"
                    break
                read += len(chunk)
        except OSError:
            pass
        self.sock.close()
        return why


def pad_inner(*contents):
    """§3.2: each content behind its u32be length, then zeros to the smallest multiple of 256 that
    holds them, padded once. (This client sends one message per record; probes send several.)"""
    body = b"".join(u32(len(c)) + c for c in contents)
    size = -(-len(body) // RECORD_PADDING) * RECORD_PADDING
    if size > MAX_INNER:
        raise ProtoError("INTERNAL", f"contents of {len(body)} bytes do not fit a record")
    return body + bytes(size - len(body))


def unpad_contents(inner):
    """§3.2 "Reading inner": one or more contents, each behind its u32be length, read from offset 0
    while 4 bytes remain; a zero length, or fewer than 4 bytes left, starts the padding, which is
    all zeros. Any fault is PROTOCOL_ERROR."""
    if not inner or len(inner) % RECORD_PADDING != 0:
        raise ProtoError("PROTOCOL_ERROR", "inner length is not a non-zero multiple of 256")
    contents, at = [], 0
    while len(inner) - at >= 4:
        (n,) = struct.unpack(">I", inner[at:at + 4])
        if n == 0:
            break
        if n > len(inner) - at - 4:
            raise ProtoError("PROTOCOL_ERROR", "content length beyond the record")
        contents.append(inner[at + 4:at + 4 + n])
        at += 4 + n
    if any(inner[at:]):
        raise ProtoError("PROTOCOL_ERROR", "non-zero padding")
    if not contents:
        raise ProtoError("PROTOCOL_ERROR", "a record without a message")
    return contents


def counter_nonce(iv, n):
    return bytes(a ^ b for a, b in zip(iv, bytes(4) + u64(n)))


class RecordDirection:
    """One direction of sealed records (§3.2): ChaCha20-Poly1305, counter nonces, key updates
    (§4.4)."""

    def __init__(self, key, iv, secret=None, handshake=True):
        self._set(key, iv)
        self.secret = secret  # the traffic secret, for application keys only
        self.handshake = handshake  # handshake keys: a record holds exactly one message (§3.2)

    def _set(self, key, iv):
        self.aead = ChaCha20Poly1305(key)
        self.iv = iv
        self.n = 0

    def switch(self, secret):
        """Application keys from a traffic secret, counter back at 0 (§4.3)."""
        self.secret, self.handshake = secret, False
        self._set(*traffic_keys(secret))

    def update(self):
        """§4.4: S_{n+1} = ExpandLabel(S_n, "traffic upd", "", 32); the old secret is dropped."""
        self.switch(next_traffic_secret(self.secret))

    def seal(self, content):
        return self.seal_inner(pad_inner(content))

    def seal_inner(self, inner):
        if self.n >= RECORD_LIMIT:
            raise ProtoError("INTERNAL", "record counter limit; a key_update was due")
        payload = self.aead.encrypt(counter_nonce(self.iv, self.n), inner, RECORD_AAD)
        self.n += 1
        return payload

    def open(self, payload):
        """The record's contents, in order (§3.2). Under handshake keys a record holds exactly
        one: handshake records are never grouped."""
        if self.n >= RECORD_LIMIT:
            raise ProtoError("PROTOCOL_ERROR", "record beyond the counter limit")
        try:
            inner = self.aead.decrypt(counter_nonce(self.iv, self.n), payload, RECORD_AAD)
        except (InvalidTag, ValueError):
            raise ProtoError("DECRYPT_FAIL", "record does not open")
        self.n += 1
        contents = unpad_contents(inner)
        if self.handshake and len(contents) > 1:
            raise ProtoError("PROTOCOL_ERROR", "a handshake record of several messages")
        return contents


# ---------------------------------------------------------------- transcript (TRANSCRIPT.md)

def write_private(path, data, mode="wb"):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC),
                 0o600)
    with os.fdopen(fd, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Transcript:
    """The client's transcript (TRANSCRIPT §2), its running hash (§3) and the `.keys` file (§6)."""

    def __init__(self, directory, session_id, session_time, server_name, client_der, server_der,
                 protocol_version=WIRE_VERSION):
        """`protocol_version`: the header's (§2.1), hashed (§3.3); the wire's version this client
        speaks, or another a test vector records (tests/vectors/transcript/hash_v2.json: 2)."""
        self.protocol_version = protocol_version
        self.session_id = session_id
        self.session_time = session_time
        self.client_der = client_der
        self.server_der = server_der
        self.d = {"c2s": hashlib.sha256(), "s2c": hashlib.sha256()}
        self.n = {"c2s": 0, "s2c": 0}
        self.last_ts = {"c2s": 0, "s2c": 0}
        self.lock = threading.Lock()
        self.base = None
        if directory is not None:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            started_at = now_ms()
            stamp = datetime.datetime.fromtimestamp(started_at / 1000, datetime.timezone.utc)
            self.base = os.path.join(
                directory, f"{stamp.strftime('%Y%m%dT%H%M%SZ')}-{session_id.hex()}-client")
            header = {
                "type": "securechat-transcript", "version": TRANSCRIPT_VERSION,
                "protocol_version": self.protocol_version, "session_id": session_id.hex(),
                "role": "client", "session_time": session_time, "started_at": started_at,
                "server_name": server_name, "client_cert": b64e(client_der),
                "server_cert": b64e(server_der),
            }
            write_private(self.base + ".log", enc_json(header) + b"\n")
            write_private(self.base + ".keys", b"")

    def add(self, direction, seqno, ts, line_obj, line_bytes, k=None, items=None, records=None):
        """Append one accepted session message; the caller checked seqno and ts already. `k` is
        an s2c `msg` or a `stored` line's key; `items` a relay line's, one per record in order
        (None where this device has none), written with `item` J from 1 (§6). A c2s msg line
        covers the seqnos of its `records`, [(seqno, ts, k)] in order (`seqno` and `ts` are the
        first's), each key under its record's own seqno (§2.2, §3.2, §6)."""
        covered = records or [(seqno, ts, k)]
        with self.lock:
            for j, (s, t, _) in enumerate(covered):
                if s != self.n[direction] + 1 + j or t < (covered[j - 1][1] if j else
                                                            self.last_ts[direction]):
                    raise ProtoError("INTERNAL", "transcript line out of order")
            self.n[direction], self.last_ts[direction] = covered[-1][0], covered[-1][1]
            self.d[direction].update(line_bytes)
            if self.base is not None:
                write_private(self.base + ".log", enc_json(line_obj) + b"\n", "ab")
                keys = [{"dir": direction, "seqno": seqno, "item": j, "k": b64e(item)}
                        for j, item in enumerate(items or (), 1) if item is not None]
                keys += [{"dir": direction, "seqno": s, "k": b64e(key)}
                         for s, _, key in covered if key is not None]
                if keys:
                    write_private(self.base + ".keys",
                                  b"".join(enc_json(key) + b"\n" for key in keys), "ab")

    def counts(self):
        with self.lock:
            return self.n["c2s"], self.n["s2c"]

    def final_hash(self):
        """TRANSCRIPT §3.3 over every line."""
        with self.lock:
            return hashlib.sha256(
                TRANSCRIPT_LABEL + b"\x00" + u32(self.protocol_version) + self.session_id
                + u64(self.session_time)
                + hashlib.sha256(self.client_der).digest() + hashlib.sha256(self.server_der).digest()
                + u64(self.n["c2s"]) + self.d["c2s"].digest()
                + u64(self.n["s2c"]) + self.d["s2c"].digest()
            ).digest()

    def store_receipt(self, suffix, receipt):
        if self.base is not None:
            write_private(self.base + suffix,
                          (json.dumps(receipt, indent=2, ensure_ascii=False) + "\n").encode())


def receipt_signed_input(role, th):
    """TRANSCRIPT §4.1 `sig` row; the cell is cut off after the label (interop finding 1)."""
    return f"securechat/v2 {role} receipt".encode() + b"\x00" + th


class SeenMarks:
    """Relay high-water marks (§6.4 steps 6 and 7): per author fingerprint and author session, the
    highest accepted record seqno and that record's ts (for expiry). Marks of this session make a
    record at or below them a REPLAY; marks that outlive earlier sessions make it a duplicate:
    recorded, never shown again."""

    def __init__(self, path):
        self.path = path
        self.marks = {}
        self.this_session = {}
        self.dirty = False
        self.last_save = 0.0
        if path is not None and os.path.exists(path):
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
            now = now_ms()
            for key, mark in data.items():
                seqno, ts, private = mark[0], mark[1], len(mark) > 2 and mark[2]
                # §6.4 step 7 / §6.6: marks of author sessions that sent us a private record
                # are kept for MAX_STORED_AGE + 2 skew (it could come back stored), others 2 skew
                if ts >= now - 2 * SKEW_MS - (MAX_STORED_AGE_MS if private else 0):
                    self.marks[key] = (seqno, ts, private)

    def check(self, fp, sid_hex, seqno):
        """REPLAY within this session (step 6); True for a record accepted in an earlier one
        (step 7); False for a new record."""
        key = f"{fp}:{sid_hex}"
        here = self.this_session.get(key)
        if here is not None and seqno <= here:
            raise ProtoError("REPLAY", f"author record seqno {seqno} not above {here}")
        last = self.marks.get(key)
        return last is not None and seqno <= last[0]

    def accept(self, fp, sid_hex, seqno, ts, private):
        key = f"{fp}:{sid_hex}"
        self.this_session[key] = seqno
        old = self.marks.get(key)
        if old is not None and old[0] >= seqno:  # a duplicate of an earlier session
            self.marks[key] = (old[0], old[1], old[2] or private)
        else:
            self.marks[key] = (seqno, ts, private or (old is not None and old[2]))
        self.dirty = True
        if time.monotonic() - self.last_save >= 1:
            self.save()

    def save(self, force=False):
        if self.path is None or not (self.dirty or force):
            return
        tmp = self.path + ".tmp"
        write_private(tmp, enc_json({k: list(v) for k, v in self.marks.items()}))
        os.replace(tmp, self.path)
        dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.dirty = False
        self.last_save = time.monotonic()


# ---------------------------------------------------------------- the client

class Client:
    def __init__(self, args):
        self.args = args
        self.trust = Trust(args.ca)
        with open(args.cert, "rb") as f:
            self.my_cert = x509.load_pem_x509_certificate(f.read())
        self.my_der = self.my_cert.public_bytes(serialization.Encoding.DER)
        with open(args.key, "rb") as f:
            self.my_key = serialization.load_pem_private_key(f.read(), None)
        cns = self.my_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.my_name = canonical(cns[0].value) if cns else None
        self.password = os.environ.get(args.password_env)
        if self.password is None:
            raise ProtoError("USAGE", f"${args.password_env} is not set")
        seen = None
        if args.transcripts:
            os.makedirs(args.transcripts, mode=0o700, exist_ok=True)
            seen = os.path.join(args.transcripts, f"{args.user}.seen.json")
        self.seen = SeenMarks(seen)
        self.certs = SessionCerts()   # §6.4.1: this session's author certificates (s2c)
        self.conn = None
        self.tx = None           # our sending direction, once we have keys
        self.rx = None
        self.peer_record_opened = False
        self.unread = deque()  # the messages of the last record opened not yet read (§3.2)
        self.state_lock = threading.Lock()   # our sending side: tx, seqnos, close
        self.close_sent = False
        self.close_started = None
        self.peer_closed = False
        self.done = threading.Event()
        self.receipt_hash = None
        self.fatal = None
        self.sent_since_update = 0
        self.device = None       # §12: made after the handshake unless --no-e2e
        self.key_answers = queue.Queue()   # `keys` answers to our fetches, in order (§12.6)
        self.keys_parts = {}     # user -> (devices so far, parts) while a list comes in parts
        # §12.6: every keys_fetch is answered once, in order; a list for x is the oldest
        # unanswered fetch's for x, and a fetch we gave up on keeps its place (its answer dropped)
        self.fetch_lock = threading.Lock()
        self.fetches_out = {}    # user -> deque of our unanswered keys_fetch c2s seqnos, oldest first
        self.fetch_users = {}    # unanswered keys_fetch c2s seqno -> its user
        self.given_up = set()    # unanswered keys_fetch c2s seqnos whose fetch ended TIMEOUT
        self.members = set()     # §12.5: the lobby's membership, from `members` bodies
        self.members_known = threading.Event()   # the whole `online` list came (§12.5)
        self.sender_key_seqnos = {}  # our c2s seqno that carried a sender_key -> (chain id, member)
        self.private_seqnos = set()  # our c2s seqnos to `user:` + a name: `queued` is for these
        self.answered = {}  # our c2s seqno -> its one answer (§6.5 "One answer per record")
        self.recent_tx = deque()  # (c2s seqno, ts) of our last OPEN_FATE_MS, for unknown_fate
        self.batches = BatchCache()  # §6.1 check step 2: batch signatures verified already
        self.pending = []  # (record, k, e2e) numbered and sealed, not yet signed (§6.1 batches)
        self.batching = False  # between `/batch` and `/end`: records wait for one signature
        self.ending = False  # our `error` is sent or going: nothing read is acted on (§7)
        # §7 "A write that fails": (the lost connection to report, monotonic time) of our first
        # failed write in the session; the peer's `error`, read within PEER_ERROR_GRACE_S, wins
        self.write_failure = None

    # -- records (§3.2, §3.3)
    def send_content(self, obj):
        """Seal one message under our current key; returns the exact content bytes."""
        content = enc_json(obj)
        self.send_contents([content])
        return content

    def send_contents(self, contents):
        """Session messages in order, as many to a sealed record as fit its largest `inner`
        (§3.2), one frame per record."""
        frames, group, size = [], [], 0
        for c in contents:
            if group and size + 4 + len(c) > MAX_INNER:
                frames.append(group)
                group, size = [], 0
            group.append(c)
            size += 4 + len(c)
        frames.append(group)
        with self.conn.send_lock:
            for group in frames:
                payload = self.tx.seal_inner(pad_inner(*group))
                self.conn.send_locked(u32(len(payload)) + payload)

    def read_content(self):
        """The peer's next message: (content bytes, parsed message). §3.2: a record holds one or
        more, processed in order as if each had its own record, so the rest of the last record
        comes first; a `key_update` is the last of its record (the next record is under the new
        key). A plaintext `error` is accepted only before the first peer record opened (§3.3)."""
        if not self.unread:
            payload = self.conn.read_frame()
            try:
                contents = self.rx.open(payload)
            except ProtoError as e:
                if e.code == "DECRYPT_FAIL" and not self.peer_record_opened:
                    self._plaintext_error(payload, e)
                raise
            self.peer_record_opened = True
            self.unread.extend(contents)
        content = self.unread.popleft()
        msg = parse_content(content)  # §3.3: JSON, or a relay in its binary layout
        if msg["type"] == "error":
            self.unknown_fate(msg)
            self._raise_peer_error(msg)  # what follows an error in its record is not read
        if msg["type"] == "key_update" and self.unread:
            raise ProtoError("PROTOCOL_ERROR", "key_update before another message of its record")
        return content, msg

    def _plaintext_error(self, payload, cause):
        try:
            msg = parse_json(payload)
        except ProtoError:
            raise cause
        if msg["type"] != "error":
            raise cause
        self._raise_peer_error(msg, authenticated=False)

    def unknown_fate(self, msg):
        """§6.5: a cluster node that cannot learn within 30 s whether a record was stored ends the
        session with `CLUSTER_UNAVAILABLE` and leaves it unanswered; records sent just before it may
        be open too. Its text is display only (we never parse it, interop finding 60): we show it
        and list every line of ours of the last OPEN_FATE_MS that has no answer (a record relayed
        live gets none either, so this names more than the open ones, never fewer)."""
        if msg.get("code") != "CLUSTER_UNAVAILABLE":
            return
        text = msg.get("message")
        text = safe(text) if isinstance(text, str) and len(text) <= 256 else ""
        since = self.now() - OPEN_FATE_MS
        open_ = [n for n, ts in self.recent_tx if ts >= since and n not in self.answered]
        log("the session ended because the cluster could not confirm delivery"
            + (f" ({text})" if text else "") + "; our unanswered lines of its last "
            f"{OPEN_FATE_MS // 1000} s may or may not have reached their recipients")
        out(f"UNKNOWN_FATE {','.join(map(str, open_)) or '-'} {text}".rstrip())

    def answer(self, of, kind):
        """§6.5 "One answer per record": `of` is a seqno we sent, a `queued` only for a record to
        `user:` + a name, and no record gets a second answer (`queued`, `refused`, or the record
        itself relayed back to us). Checks only; `answered` is set by the caller once the whole
        message passed (check first, commit after)."""
        if not 1 <= of <= self.seq_sent:
            raise ProtoError("PROTOCOL_ERROR", f"{kind} names c2s seqno {of} we never sent")
        if kind == "queued" and of not in self.private_seqnos:
            raise ProtoError("PROTOCOL_ERROR", f"queued for c2s seqno {of}, not to user: a name")
        if of in self.answered:
            raise ProtoError("PROTOCOL_ERROR",
                             f"a second answer ({kind} after {self.answered[of]}) to c2s seqno {of}")

    @staticmethod
    def _raise_peer_error(msg, authenticated=True):
        strict(msg, ["type", "code"], ["message"])
        code = want_str(msg, "code", 64)
        text = ""
        if authenticated and "message" in msg:
            text = safe(want_str(msg, "message", 256, text=True))
        raise PeerError(code, "from the peer" + (f": {text}" if text else
                                                  " (unauthenticated)" if not authenticated else ""))

    def expect(self, msg_type, fields, optional=()):
        content, msg = self.read_content()
        if msg["type"] != msg_type:
            raise ProtoError("PROTOCOL_ERROR", f"expected {msg_type}, got {safe(msg['type'])}")
        strict(msg, ["type"] + fields, optional)
        return content, msg

    def send_error(self, code):
        """On a failure: `error`, sealed whenever we have keys, as our last frame, then the linger
        of §7 "Ending with an error" (the reader thread, if any, acts on nothing more). Returns
        why the linger stopped, or None when the `error` could not be sent."""
        if self.conn is None:
            return None
        self.ending = True
        try:
            with self.conn.send_lock:
                if self.tx is not None:
                    payload = self.tx.seal(enc_json({"type": "error", "code": code}))
                else:
                    payload = enc_json({"type": "error", "code": code})
                self.conn.send_locked(u32(len(payload)) + payload)
                self.conn.error_sent = True
        except (OSError, ProtoError):
            self.conn.sock.close()
            return None
        return self.conn.linger()

    # Time and randomness; tests/interop/check_vectors.py replaces them with a vector's inputs.
    def now(self):
        return now_ms()

    def random(self, n):
        return os.urandom(n)

    def offered_groups(self):
        """hello.groups: ours in preference order, the one we send a share for first (§4.5)."""
        return [self.group] + [g for g in GROUPS if g != self.group]

    def ephemeral(self, phase):
        """A fresh key share for phase 1 or 2 (§4.2, §4.5)."""
        return KeyShare(self.group if phase == 1 else phase2_group(self.group))

    def tamper(self, step, msg):
        """Hook for tests/interop/probe.py, which sends doc-defined faults; the client sends `msg`."""
        return msg

    @staticmethod
    def lost(e):
        """The lost connection, reported when no `error` of the peer's explains it."""
        return ProtoError("PROTOCOL_ERROR", f"socket: {e}")

    def read_peer_error(self, lost):
        """§5, §7 "A write that fails", when no reader thread runs: our write failed, so for up to
        PEER_ERROR_GRACE_S read what the peer sent before going and raise its `error` (PeerError)
        if one is there, else `lost`. Nothing read meanwhile is acted on but a `key_update` (so the
        records after it open)."""
        deadline = time.monotonic() + PEER_ERROR_GRACE_S
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.conn.sock.settimeout(left)
                if self.rx is None:  # no server_hello yet: a refusal comes plaintext (§5.2)
                    msg = parse_json(self.conn.read_frame())
                    if msg["type"] == "error":
                        self._raise_peer_error(msg, authenticated=False)
                    continue
                _, m = self.read_content()  # raises the peer's `error`
                if m["type"] == "key_update":
                    strict(m, ["type"])
                    self.rx.update()
        except PeerError:
            raise
        except (ProtoError, OSError):
            pass
        raise lost

    def handshake(self):
        """§5, client side. Our certificate, certificate_verify, finished and login leave without
        waiting, so a write can fail before we read the server's refusal: a failed write reads
        what the server sent first (§5 after step 11), and an OSError when it sent no `error`."""
        try:
            self._handshake()
        except WriteFailed as e:
            self.read_peer_error(e)

    # -- handshake (§5, client side), one step per message
    def _handshake(self):
        a = self.args
        self.group = a.group
        groups = self.offered_groups()
        hashed = []

        # 1. hello
        share1 = self.ephemeral(1)
        hello = enc_json(self.tamper("hello", {
            "type": "hello", "version": WIRE_VERSION, "nonce": b64e(self.random(32)),
            "groups": groups, "key_share": share1.wire()}))
        self.conn.write_frame(hello)
        hashed.append(hello)

        # 2. server_hello (plaintext)
        sh_bytes = self.conn.read_frame()
        sh = parse_json(sh_bytes)
        if sh["type"] == "error":
            self._raise_peer_error(sh, authenticated=False)
        if sh["type"] != "server_hello":
            raise ProtoError("PROTOCOL_ERROR", f"expected server_hello, got {safe(sh['type'])}")
        strict(sh, ["type", "version", "nonce", "time", "key_share"])
        # §5 client step 2: another integer is UNSUPPORTED; another type, §2's PROTOCOL_ERROR
        # (interop finding 127, answered in the text)
        if not is_int(sh["version"]) or sh["version"] > 0xFFFF:  # §3.1: 0–65535
            raise ProtoError("PROTOCOL_ERROR", f"version {safe(repr(sh['version']))}")
        if sh["version"] != WIRE_VERSION:
            raise ProtoError("UNSUPPORTED", f"version {sh['version']!r}")
        b64d(sh["nonce"], size=32)
        self.session_time = want_int(sh, "time")
        server_pub1 = parse_share(sh["key_share"], self.group)
        if abs(self.now() - self.session_time) > SKEW_MS:
            raise ProtoError("STALE", "server_hello time outside the allowed skew")
        ss1 = share1.agree(server_pub1)
        hashed.append(sh_bytes)
        hs = HandshakeSecrets(ss1, handshake_hash(hashed))
        self.tx = RecordDirection(hs.key_c2s, hs.iv_c2s)
        self.rx = RecordDirection(hs.key_s2c, hs.iv_s2c)

        # 3. server certificate
        content, m = self.expect("certificate", ["cert"])
        self.server_der = b64d(m["cert"], max_size=16 * 1024)
        self.server_pub, _ = self.trust.validate(self.server_der, "server", a.server_name)
        hashed.append(content)

        # 4. server certificate_verify
        content, m = self.expect("certificate_verify", ["sig"])
        if not verify(self.server_pub, b64d(m["sig"], max_size=1024),
                      SERVER_SIG_LABEL + b"\x00" + handshake_hash(hashed)):
            raise ProtoError("SIG_FAIL", "server certificate_verify")
        hashed.append(content)

        # 5. server finished (phase 1)
        content, m = self.expect("finished", ["mac"])
        if not hmac.compare_digest(b64d(m["mac"], size=32),
                                   finished_mac(hs.fin_server, handshake_hash(hashed))):
            raise ProtoError("HANDSHAKE_FAIL", "server finished")
        hashed.append(content)

        # 6. our certificate, certificate_verify, finished
        hashed.append(self.send_content(self.tamper("certificate", {
            "type": "certificate", "cert": b64e(self.my_der)})))
        sig = sign(self.my_key, CLIENT_SIG_LABEL + b"\x00" + handshake_hash(hashed))
        hashed.append(self.send_content(self.tamper("certificate_verify", {
            "type": "certificate_verify", "sig": b64e(sig)})))
        mac = finished_mac(hs.fin_client, handshake_hash(hashed))
        hashed.append(self.send_content(self.tamper("finished", {
            "type": "finished", "mac": b64e(mac)})))

        # 7. login or register: not hashed
        if a.register:
            auth = {"type": "register", "email": a.register, "username": a.user,
                    "password": self.password}
        else:
            auth = {"type": "login", "username": a.user, "password": self.password}
        self.send_content(self.tamper("auth", auth))

        # 8. auth_ok
        content, m = self.expect("auth_ok", ["username", "registered"])
        if want_str(m, "username") != a.user or not isinstance(m["registered"], bool):
            raise ProtoError("PROTOCOL_ERROR", "auth_ok is not for the user name we sent")
        self.registered = m["registered"]
        hashed.append(content)

        # 9. dh_client
        share2 = self.ephemeral(2)
        hashed.append(self.send_content(self.tamper("dh_client", {
            "type": "dh_client", "key_share": share2.wire()})))

        # 10. dh_server; ss2 and master
        content, m = self.expect("dh_server", ["key_share"])
        server_pub2 = parse_share(m["key_share"], share2.group)
        ms = MasterSecrets(hs.hs, share2.agree(server_pub2))
        hashed.append(content)

        # 11. server finished (phase 2); Hfinal; s2c switches to app_s2c_0
        content, m = self.expect("finished", ["mac"])
        if not hmac.compare_digest(b64d(m["mac"], size=32),
                                   finished_mac(ms.fin2_server, handshake_hash(hashed))):
            raise ProtoError("HANDSHAKE_FAIL", "server phase 2 finished")
        hashed.append(content)
        hfinal = handshake_hash(hashed)
        ms.application(hfinal)
        self.session_id = ms.session_id
        self.rx.switch(ms.app_s2c_0)

        # 12. our phase 2 finished under the handshake key; then c2s switches to app_c2s_0
        with self.state_lock:
            self.send_content(self.tamper("finished2", {
                "type": "finished", "mac": b64e(finished_mac(ms.fin2_client, hfinal))}))
            self.tx.switch(ms.app_c2s_0)
        self.seq_tx, self.ts_tx = 0, 0
        self.seq_sent = 0   # the last c2s seqno that left (a batch's records are numbered first)
        self.seq_rx, self.ts_rx = 0, 0
        self.transcript = Transcript(a.transcripts, self.session_id, self.session_time,
                                     a.server_name, self.my_der, self.server_der)

    # -- sending session messages (§6.1)
    def send_record(self, to, body, devices=None, hold=False):
        """One record (§6.1). A user's line always goes end to end (§12.6 "never readable"):
        a private one wrapped for the recipient's devices (or for `devices`, a `sender_key`'s),
        a lobby one under our sender chain; when there is nothing to wrap for, it is not sent.
        The record is numbered, sealed and committed now and joins our pending batch; it is
        signed and sent when the batch is (`flush`: at once unless `hold`, the `/batch` input)."""
        ct_len = len(enc_json(body)) + 16
        if ct_len > MAX_CT_BYTES:  # §6.1: refused here, before a seqno
            log(f"warning: a {safe(body['kind'])} body over {MAX_CT_BYTES - 16} bytes: not sent")
            out("NOT_SENT INVALID_INPUT")
            return
        largest = largest_lone(to, len(self.my_der), ct_len, signature_length(self.my_key))
        if largest is not None and largest > MAX_CONTENT:  # §6.1, for §6.3 step 7: here too
            log(f"warning: a {safe(body['kind'])} body this long could make a relay of "
                f"{largest} bytes with this certificate ({len(self.my_der)} bytes), over "
                f"{MAX_CONTENT}: not sent")
            out("NOT_SENT INVALID_INPUT")
            return
        chain = None
        if self.device is not None and to.startswith("user:") and devices is None:
            user = to[len("user:"):]
            devices, code = self.devices_of(user)
            if code:
                if code == "NO_E2E_KEYS":
                    log(f"warning: {safe(user)} has published no end-to-end keys: nothing was "
                        "sent (the server could have read it)")
                out(f"NOT_SENT {code}")
                return
        elif self.device is not None and to == "lobby":
            chain = self.prepare_lobby(hold)
            if chain is None:
                return
        with self.state_lock:
            if self.close_sent:
                return
            e2e = None
            self.seq_tx += 1
            ts = max(self.now(), self.ts_tx)  # never backwards (§6)
            self.ts_tx = ts
            k = self.random(32)
            rec = new_record(self.session_id, to, self.seq_tx, ts,
                             self.tamper("body", enc_json(body)), k)
            if devices or chain:  # §12.6: an end-to-end record carries e2e instead of k
                # the binding is SHA-256 of the record's own statement (§12.6), known unsigned
                if chain:
                    e2e = self.device.sender_wrap(chain, k, binding_of(rec))
                else:
                    e2e = self.device.wrap_for(to[len("user:"):], devices, k, binding_of(rec))
                e2e = self.tamper("e2e", e2e)
                if body["kind"] == "sender_key":
                    e2e = self.tamper("sender_key", e2e)  # probe.py: None sends it with k
            # known before the record leaves: the reader thread may take its answer at once
            if body["kind"] == "sender_key":
                self.sender_key_seqnos[self.seq_tx] = (body["id"], to[len("user:"):])
            if body["kind"] == "keys_fetch":
                with self.fetch_lock:
                    self.fetches_out.setdefault(body["user"], deque()).append(self.seq_tx)
                    self.fetch_users[self.seq_tx] = body["user"]
            if to.startswith("user:"):
                self.private_seqnos.add(self.seq_tx)
            self.recent_tx.append((self.seq_tx, ts))
            while self.recent_tx[0][1] < ts - OPEN_FATE_MS:
                self.recent_tx.popleft()
            self.pending.append((rec, k, e2e))
            if not hold or len(self.pending) == MAX_BATCH:
                self._flush()

    def flush(self):
        """Signs and sends our pending records (the end of a `/batch`, before we wait for an
        answer, before our close)."""
        with self.state_lock:
            self._flush()

    def _flush(self):
        """§6.1: the pending records (consecutive seqnos of this session's c2s direction) signed
        as one batch, one signature over the Merkle tree of their statements, sent as one `msg`
        (§6.3), or several with their proofs when it does not fit one record (or --msg-records
        asks for smaller ones), in as few sealed records as hold them (§3.2); each `msg` is one
        transcript line, written as it leaves. Caller holds state_lock."""
        if not self.pending:
            return
        batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
        sign_batch(self.my_key, [rec for rec, _, _ in batch])
        contents = []
        for msg, group, items in author_msgs(batch, getattr(self.args, "msg_records", None)):
            msg = self.tamper("msg", msg)
            contents.append(enc_json(msg))
            self.transcript.add("c2s", items[0][0]["seqno"], items[0][0]["ts"], msg_line(msg),
                                msg_line_enc(*group),
                                records=[(rec["seqno"], rec["ts"], k) for rec, k, _ in items])
        # sent from here on: the reader thread may take an answer before send_contents returns
        self.seq_sent = batch[-1][0]["seqno"]
        self.send_contents(contents)
        if len(batch) > 1:
            out(f"BATCH {batch[0][0]['seqno']} {len(batch)}" +
                (f" in {len(contents)} msgs" if len(contents) > 1 else ""))
        self.sent_since_update += len(batch)
        every = self.args.key_update_every
        if every and self.sent_since_update >= every:
            self.send_content({"type": "key_update"})  # the last content of its record (§3.2)
            self.tx.update()
            self.sent_since_update = 0
        if self.pending:
            self._flush()

    def publish_keys(self):
        """§12.6: the device's bundle (and, on a new state, its one-time prekeys) first."""
        self.send_record("server", self.device.publish_body(E2E_OPKS if self.device.new else 0))

    def devices_of(self, user):
        """§12.6 `prepare`: (the devices of `user` to wrap for, None), or ([], code) when there is
        none: NO_E2E_KEYS (no device published), DB_UNAVAILABLE (the store failed), TIMEOUT (no
        answer in 10 s), or the first failure's code when every listed device failed a check.
        A device whose session's certificate no longer validates is fetched again (step 2)."""
        if self.device.needs_fetch(user):
            again = False
            while True:
                devices, code = self.fetch_devices(user)
                if code:
                    return [], code
                try:
                    self.device.take_list(self.trust, user, devices,
                                          lambda w: log("warning: " + safe(w)), again)
                    break
                except FetchAgain:
                    again = True
                except ProtoError as e:
                    return [], e.code
        got = self.device.lists.get(user)
        return (got[1], None) if got else ([], "NO_E2E_KEYS")

    def fetch_devices(self, user):
        """§12.6 sender step 1: a `keys_fetch` with `known` as it stands now; (the answer's
        `devices`, None), or (None, TIMEOUT / DB_UNAVAILABLE / PROTOCOL_ERROR)."""
        while not self.key_answers.empty():  # an answer no fetch of ours was waiting for
            self.key_answers.get_nowait()
        self.send_record("server", {"kind": "keys_fetch", "user": user,
                                    "known": self.device.known(user)})
        deadline = time.monotonic() + E2E_FETCH_TIMEOUT_S
        while True:  # answers pair with fetches by canonical name (§12.6): another's is not ours
            try:
                answer = self.key_answers.get(timeout=max(0, deadline - time.monotonic()))
            except queue.Empty:
                with self.fetch_lock:  # an answer paired meanwhile is ours; else it is dropped
                    try:
                        answer = self.key_answers.get_nowait()
                    except queue.Empty:
                        self.give_up_fetch(user)
                        return None, "TIMEOUT"
            if answer["user"] == user:
                break
            log(f"note: a list of {safe(answer['user'])}'s devices, not asked for now: ignored")
        if "refused" in answer:  # a list in parts that failed its checks (on_keys)
            return None, answer["refused"]
        if "devices" not in answer:
            return None, "DB_UNAVAILABLE"
        return answer["devices"], None

    def prepare_lobby(self, hold=False):
        """§12.5 before a lobby line: the sender chain to wrap it under, or None when not sent.
        A new chain goes first to every member with a device that takes sender keys, in a private
        end-to-end `sender_key` wrapped for those devices only; a member without one gets none
        and cannot read the line (we say who, once per chain). The members the chain left out
        (that, or a `sender_key` refused, §6.5) are fetched again in a catch-up round before a
        later line, at most every 2 s, and sent the chain from its current position once they
        have such a device. A `members` body while a chain goes out retires it: another round,
        at most 3, then the last chain is used."""
        if not self.members_known.wait(E2E_FETCH_TIMEOUT_S):
            log("warning: the server told us no lobby membership: not sent (TIMEOUT)")
            out("NOT_SENT TIMEOUT")
            return None
        for _ in range(3):
            chain, new = self.device.lobby_chain()
            if new:
                users = sorted(self.members - {self.my_name})
            else:
                users = self.device.catch_up_round(chain)
                if not users:
                    return chain
            sent, cannot = [], []
            for user in users:
                code = self.send_chain(chain, user, hold, fresh=not new)
                if code is None:
                    sent.append(user)
                    if not new:  # from the `n` of the next line on (§12.5)
                        out(f"LATE_SENDER_KEY {safe(user)} {chain.n}")
                else:
                    cannot.append(f"{user} ({code})")
            if new:
                out(f"SENDER_KEYS {','.join(sent)}")
                if cannot:
                    out(f"CANNOT_READ {safe(', '.join(cannot))}: no sender key, this lobby line "
                        "is unreadable to them")
            if self.device.my_chain is chain:
                return chain
        return chain

    def send_chain(self, chain, user, hold, fresh):
        """§12.5: `user`'s devices (§12.6 `prepare`; `fresh`, in a catch-up round: a new
        `keys_fetch` whatever the age of the list we hold), then our chain at its current
        position, wrapped for their devices that take sender keys; None when it went, else why
        not (the member is left out of the chain)."""
        if fresh:
            self.device.forget_list(user)
        devices, code = self.devices_of(user)
        lobby = [d for d in devices if self.device.lobby_devices.get((user, d))]
        self.device.chain_sent(chain, user, reached=bool(lobby))
        if not lobby:
            return code or "no device takes sender keys"
        self.send_record("user:" + user, {"kind": "sender_key", **chain.state()}, lobby, hold)
        return None

    def on_input(self, line):
        hold = self.batching
        if line == "/quit" or line == "!!exit":
            return False
        if line == "/batch":  # the lines up to `/end` are signed as one batch (§6.1)
            self.batching = True
        elif line == "/end":
            self.batching = False
            self.flush()
        elif line == "/who":
            self.send_record("server", {"kind": "who"}, hold=hold)
        elif line.startswith("/msg "):
            parts = line.split(" ", 2)
            if len(parts) < 3 or not parts[2]:
                log("usage: /msg NAME text")
            elif not is_canonical_name(canonical(parts[1])):
                # §6.3 step 3: a name the recipient rule does not allow is refused here
                log(f"warning: {safe(parts[1])} is no user name (3-32 of a-z 0-9 _ . -): not sent")
                out("NOT_SENT INVALID_INPUT")
            else:
                self.send_record("user:" + canonical(parts[1]), {"kind": "text", "text": parts[2]},
                                 hold=hold)
        else:
            self.send_record("lobby", {"kind": "text", "text": line}, hold=hold)
        return True

    # -- receiving session messages (§6)
    def check_hop(self, seqno, ts):
        """§6: exactly the next seqno, ts not backwards and within the skew."""
        if seqno <= self.seq_rx:
            raise ProtoError("REPLAY", f"s2c seqno {seqno} after {self.seq_rx}")
        if seqno > self.seq_rx + 1:
            raise ProtoError("PROTOCOL_ERROR", f"s2c seqno gap: {seqno} after {self.seq_rx}")
        if ts < self.ts_rx or abs(self.now() - ts) > SKEW_MS:
            raise ProtoError("STALE", f"s2c ts {ts}")

    def accept_hop(self, seqno, ts):
        self.seq_rx, self.ts_rx = seqno, ts

    def on_msg(self, m):
        """§6.3, checks in the order given there."""
        strict(m, ["type", "record", "k"])
        rec = parse_record(m["record"])
        k = b64d(m["k"], size=32)
        if rec["sid"] != self.session_id or rec["dir"] != "s2c":                 # 1
            raise ProtoError("TAMPERED", "record of another session or direction")
        self.check_hop(rec["seqno"], rec["ts"])                                   # 2
        if rec["to"] != "user:" + self.my_name:                                   # 3
            raise ProtoError("TAMPERED", "server record for another recipient")
        if rec["sig"] is not None:                                                # 4
            raise ProtoError("PROTOCOL_ERROR", "s2c record carries a signature")
        body = parse_body(check_content(rec, k))                                  # 5, 6
        kind = body["kind"]
        if kind == "notice":
            strict(body, ["kind", "text"])
            shown = "NOTICE: " + safe(want_text(body))
        elif kind == "operator":
            strict(body, ["kind", "text"], ["private"])
            if "private" in body and body["private"] is not True:
                raise ProtoError("PROTOCOL_ERROR", "operator private must be true")
            shown = ("OPERATOR (private): " if "private" in body else "OPERATOR: ") + \
                safe(want_text(body))
        elif kind == "keys" and self.device is not None:
            shown = self.on_keys(body)
        elif kind == "members" and self.device is not None and self.device.lobby:
            shown = self.on_members(body)
        else:
            raise ProtoError("PROTOCOL_ERROR", f"body kind {safe(kind)!r} from the server")
        self.accept_hop(rec["seqno"], rec["ts"])
        self.transcript.add("s2c", rec["seqno"], rec["ts"],
                            {"dir": "s2c", "type": "msg", "record": m["record"]},
                            b"\x01" + record_enc(rec), k)
        if shown is not None:
            out(shown)

    def give_up_fetch(self, user):
        """§12.6: our newest fetch for `user` (fetches go one at a time, from one thread) keeps
        its place among the unanswered ones; its list, when it comes, is dropped, not taken by
        the next fetch for `user` (it was made for another `known`). Caller holds fetch_lock."""
        pending = self.fetches_out.get(user)
        if pending:
            self.given_up.add(pending[-1])

    def pair_fetch(self, user, answer, seqno=None):
        """§12.6: `answer` (a whole list, a store failure, or a fetch refused) is for the fetch
        `seqno` (a `refused` names it) or else the oldest unanswered fetch for `user`. Handed to
        fetch_devices, or dropped when that fetch was given up. An answer for a user we have no
        fetch out for is handed on as before; fetch_devices ignores it."""
        with self.fetch_lock:
            pending = self.fetches_out.get(user)
            if seqno is None and pending:
                seqno = pending[0]
            if pending and seqno in pending:
                pending.remove(seqno)
                if not pending:
                    del self.fetches_out[user]
            self.fetch_users.pop(seqno, None)
            if seqno in self.given_up:
                self.given_up.discard(seqno)
                log(f"note: the answer to a fetch of {safe(user)}'s devices we gave up on "
                    "(TIMEOUT) came late: dropped")
                return
            self.key_answers.put(answer)

    def on_keys(self, body):
        """A `keys` body (§12.6): the answer to a publish or to a fetch. A fetch's list may come
        in parts (§12.6 "A list in parts": each but the last with `more`), joined here by their
        `user`: what comes between is handled as always and leaves the list open, a store failure
        for that user ends it (the fetch: DB_UNAVAILABLE); the fetch sees the whole list, or
        PROTOCOL_ERROR for a list of more than 8 devices in all or one that names a device twice,
        in parts or in one body (the line is not sent; the session goes on: interop findings 117,
        118 as fix17 ec755e1 settles them)."""
        strict(body, ["kind", "user"], ["devices", "device", "opks_left", "more"])
        user = want_str(body, "user", 64)
        more = _flag(body, "more")
        if more and (not isinstance(body.get("devices"), list) or not body["devices"]):
            raise ProtoError("PROTOCOL_ERROR", "keys: more only beside 1-8 devices")
        if "opks_left" in body or "device" in body:
            strict(body, ["kind", "user", "device", "opks_left"])
            left = want_int(body, "opks_left")
            if want_device(body) != self.device.id:
                # §12.6 PREKEYS_LOW goes to the device's *user*: with the user online on this
                # device, another device's low count comes here. That device tops up at its own
                # next login (interop finding 36).
                log(f"note: another device of ours, {body['device']}, has {left} one-time "
                    "prekeys left")
                return None
            if left < E2E_OPKS // 2:  # §12.6: top up to 20 when fewer than 10 remain
                self.send_record("server", self.device.publish_body(E2E_OPKS - left, False))
            return f"KEYS published {left} one-time prekeys left"
        if "devices" in body:
            devs = body["devices"]
            if not isinstance(devs, list) or len(devs) > E2E_MAX_DEVICES:
                raise ProtoError("PROTOCOL_ERROR", "devices is not a list of at most 8")
            for e in devs:
                if not isinstance(e, dict):
                    raise ProtoError("PROTOCOL_ERROR", "device entry is not an object")
                strict(e, ["device"], ["cert", "bundle", "opk", "lobby"])
                want_device(e)
                if "lobby" in e and e["lobby"] is not True:  # §12.5 on the wire: a flag, true
                    raise ProtoError("PROTOCOL_ERROR", "device entry lobby is not true")
                if ("cert" in e) != ("bundle" in e) or ("opk" in e and "bundle" not in e):
                    raise ProtoError("PROTOCOL_ERROR", "device entry: cert and bundle go together")
                if "opk" in e:
                    if not isinstance(e["opk"], dict):
                        raise ProtoError("PROTOCOL_ERROR", "opk is not an object")
                    strict(e["opk"], ["id", "pub"])
                    want_u32(e["opk"], "id")
            devices, parts = self.keys_parts.pop(user, ([], 0))
            devices, parts = devices + devs, parts + 1
            if more:
                self.keys_parts[user] = (devices, parts)
                return None
            ids = [e["device"] for e in devices]
            if len(devices) > E2E_MAX_DEVICES or len(set(ids)) != len(ids):
                log(f"warning: the server listed {len(devices)} devices of {safe(user)} in "
                    f"{parts} parts, {len(set(ids))} of them distinct: more than "
                    f"{E2E_MAX_DEVICES} or one twice, the fetch is refused")
                self.pair_fetch(user, {"kind": "keys", "user": user, "refused": "PROTOCOL_ERROR"})
                return None
            body = {"kind": "keys", "user": user, "devices": devices}
            if parts > 1:
                self.pair_fetch(user, body)
                return f"KEYS_PARTS {safe(user)} {len(devices)} devices in {parts} parts"
        elif self.keys_parts.pop(user, None) is not None:  # the store failed: the list ends
            log(f"warning: the server's list of {safe(user)}'s devices ended in a store failure")
        self.pair_fetch(user, body)
        return None

    def on_members(self, body):
        """§12.5 on the wire: the lobby's membership; any such body retires our sender chain,
        and a member who joined is fetched again before our next lobby line. The `online` list
        comes first, once, in chunks: every one but the last says `"more": true`."""
        strict(body, ["kind", "event", "users"], ["more"])
        event, users = want_str(body, "event"), body["users"]
        if event not in ("online", "joined", "left"):
            raise ProtoError("PROTOCOL_ERROR", "members event")
        more = "more" in body
        if more and (body["more"] is not True or event != "online"):
            raise ProtoError("PROTOCOL_ERROR", "members: `more` is only ever true, on online")
        # the chunks come before any joined or left, and the list once; other messages (relays,
        # notices) may come between the chunks, each handled as always (§12.5, §8.2) (interop
        # finding 51: what a client does otherwise is unsaid; this one takes it as the server's
        # protocol error)
        if (event == "online") == self.members_known.is_set():
            raise ProtoError("PROTOCOL_ERROR", f"members {event} "
                             f"{'after' if event == 'online' else 'before'} the whole online list")
        # §12.6's table: 1-1000 names for every event (interop finding 45: §12.5 shows one name
        # for joined/left, the table allows a batch; `online` always holds at least the receiver)
        if not isinstance(users, list) or not 1 <= len(users) <= 1000:
            raise ProtoError("PROTOCOL_ERROR", "members users")
        for u in users:
            if not isinstance(u, str) or not is_canonical_name(u):
                raise ProtoError("PROTOCOL_ERROR", "members: not a canonical name")
        if event == "left":
            self.members.difference_update(users)
            for u in users:
                self.device.chains.departed(u)
        else:
            self.members.update(users)
            for u in users:
                self.device.chains.joined(u)
        if event == "joined":
            for u in users:
                self.device.forget_list(u)
        self.device.retire_chain()
        if not more:
            self.members_known.set()
        return f"MEMBERS {event} {safe(','.join(users))}{' (more)' if more else ''}"

    def on_relay(self, m):
        """§6.4 (with §12.6's recipient steps for records that carry `e2e`): a group of one author
        batch's records, the batch's `sig`, `first`, `n` and `proof` once. The schema on parsing,
        then steps 1-6 for the whole relay, each of its records included, then steps 7-11 for each
        record in seqno order (a failure at record j leaves the end-to-end state changes of the
        records before it, and shows and marks nothing); the relay is one transcript line, and
        nothing of it is shown before that line is written."""
        strict(m, ["type", "seqno", "ts", "author_fp", "sig", "first", "n", "proof", "records"],
               ["cert"])
        seqno, ts = want_int(m, "seqno"), want_int(m, "ts")
        fp, introduced = parse_author_fp(m)
        # the schema (the table and the paragraph after it) on parsing, before step 1
        sig, first, n, proof, items = parse_group(m)
        for _, item in items:
            if "e2e" in item and (self.device is None or not isinstance(item["e2e"], dict)):
                raise ProtoError("PROTOCOL_ERROR", "e2e relay to a client without the layer")
        self.check_hop(seqno, ts)                                                 # 1
        author_cert = self.author_cert(fp, introduced)                            # 2, §6.4.1
        cert_der, author_pub, author = author_cert
        recs = [rec for rec, _ in items]
        own = recs[0]["sid"] == self.session_id  # our own records relayed back (§6.5): answers
        for rec in recs if own else ():
            if rec["to"] == "lobby":  # §6.5: never comes back honestly
                raise ProtoError("PROTOCOL_ERROR",
                                 f"our own lobby record came back (c2s seqno {rec['seqno']})")
            self.answer(rec["seqno"], "relay")
        for rec in recs:
            self.check_recipient(rec, stored=False)                               # 3
        for rec, item in items:  # every record's addressing first, then every envelope
            self.check_envelope(rec, item)                                        # §12.6 4
        stmt = group_statement(recs[0]["sid"], first, n, proof, recs)             # 4
        if not self.batches.verified(fp, author_pub, stmt, sig):
            raise ProtoError("SIG_FAIL", "author batch signature over the relay's records")
        duplicates = [self.check_fresh(fp, rec, ts, stored=False) for rec in recs]  # 6, 7
        taken = [self.take_record(author_cert, rec, item, dup)                    # 5, §12.6 7-11
                 for (rec, item), dup in zip(items, duplicates)]
        self.accept_hop(seqno, ts)
        for rec in recs if own else ():
            self.answered[rec["seqno"]] = "relay"
        self.certs.commit(fp, author_cert)
        for rec in recs:
            self.seen.accept(fp, rec["sid"].hex(), rec["seqno"], rec["ts"], rec["to"] != "lobby")
        # TRANSCRIPT §2.2: the relay as it travelled, `cert` only on the introducing line, each
        # item only its `record`; the key of each record whose content opened goes to `.keys`
        line = {"dir": "s2c", "type": "relay", "seqno": seqno, "ts": ts, "author_fp": fp,
                **({"cert": m["cert"]} if introduced is not None else {}),
                "sig": m["sig"], "first": first, "n": n, "proof": m["proof"],
                "records": [{"record": item["record"]} for _, item in items]}
        enc = relay_line_enc(seqno, ts, fp, introduced, sig, first, n, proof, recs)
        self.transcript.add("s2c", seqno, ts, line, enc, items=[t[0] for t in taken])
        for (rec, item), dup, t in zip(items, duplicates, taken):
            self.show_record(author, rec, item, dup, t, stored=False)

    def on_stored(self, m):
        """§6.6: a `stored` is checked as a `relay` of its one record (§6.4 steps 1-7, §12.6 for
        `e2e`), with steps 3', 4' and 6': the record carries its own `sig` and `batch`."""
        strict(m, ["type", "seqno", "ts", "author_fp", "record"], ["cert", "k", "e2e"])
        if ("k" in m) == ("e2e" in m):
            raise ProtoError("PROTOCOL_ERROR", "a stored carries either k or e2e (§12.6)")
        seqno, ts = want_int(m, "seqno"), want_int(m, "ts")
        fp, introduced = parse_author_fp(m)
        rec = parse_record(m["record"])
        if "e2e" in m and (self.device is None or not isinstance(m["e2e"], dict)):
            raise ProtoError("PROTOCOL_ERROR", "e2e stored to a client without the layer")
        self.check_hop(seqno, ts)                                                 # 1
        if rec["sid"] == self.session_id:  # §6.5: a record of ours never comes back stored
            raise ProtoError("PROTOCOL_ERROR",
                             f"our own record came back stored (c2s seqno {rec['seqno']})")
        author_cert = self.author_cert(fp, introduced)                            # 2, §6.4.1
        _, author_pub, author = author_cert
        self.check_recipient(rec, stored=True)                                    # 3'
        self.check_envelope(rec, m)                                               # §12.6 4
        if rec["sig"] is None:                                                    # 4'
            raise ProtoError("PROTOCOL_ERROR", "stored record without its sig and batch")
        if not self.batches.check(fp, author_pub, rec):  # §6.1: path to root, then the batch
            raise ProtoError("SIG_FAIL", "author batch signature")
        duplicate = self.check_fresh(fp, rec, ts, stored=True)                    # 6', 7
        k, no_key, text, sender_key, unshowable = self.take_record(author_cert, rec, m, duplicate)
        self.accept_hop(seqno, ts)
        self.certs.commit(fp, author_cert)
        self.seen.accept(fp, rec["sid"].hex(), rec["seqno"], rec["ts"], True)
        # TRANSCRIPT §2.2: the message as it travelled, `cert` only on the introducing line
        line = {"dir": "s2c", "type": "stored", "seqno": seqno, "ts": ts, "author_fp": fp,
                **({"cert": m["cert"]} if introduced is not None else {}), "record": m["record"]}
        enc = stored_line_enc(seqno, ts, fp, introduced, rec)
        self.transcript.add("s2c", seqno, ts, line, enc, k)
        # §6.6: acknowledged once the line, the marks (and e2e state) are durable
        self.seen.save(force=True)
        ack = {"kind": "received", "upto": seqno}
        if no_key is not None:  # wrapped for our other devices: keep it queued
            ack["unread"] = [seqno]
        self.send_record("server", ack)
        self.show_record(author, rec, m, duplicate, (k, no_key, text, sender_key, unshowable),
                         stored=True)

    def author_cert(self, fp, introduced):
        """§6.4 step 2 (§6.4.1): (DER, key, CN) of the certificate `author_fp` names, introduced
        here (validated now) or held from an earlier relay or stored of this session."""
        held = self.certs.resolve(fp, introduced)
        if held is not None:
            return held
        return (introduced, *self.trust.validate(introduced, "client"))

    def check_recipient(self, rec, stored):
        """§6.4 step 3 (§6.6 step 3'): a user's record to the lobby or to us; stored: to us."""
        allowed = ("user:" + self.my_name,) if stored else ("lobby", "user:" + self.my_name)
        if rec["dir"] != "c2s" or rec["to"] not in allowed:
            raise ProtoError("TAMPERED", "relayed record for another recipient or direction")

    @staticmethod
    def check_envelope(rec, carrier):
        """§12.6 recipient step 4: `ratchet` only to user:x, `sender` only to lobby."""
        if "e2e" in carrier:
            fits = "sender" if rec["to"] == "lobby" else "ratchet"
            if carrier["e2e"].get("kind") != fits:
                raise ProtoError("PROTOCOL_ERROR", "the end-to-end envelope does not fit the record")

    def check_fresh(self, fp, rec, hop_ts, stored):
        """§6.4 step 6 (§6.6 step 6') and this session's marks (REPLAY, STALE); then step 7: True
        for a record accepted in an earlier session (recorded, never shown again)."""
        if stored and rec["ts"] < hop_ts - MAX_STORED_AGE_MS - SKEW_MS:
            raise ProtoError("REPLAY", "stored record older than any queue keeps one")
        if not stored and rec["ts"] < self.session_time - SKEW_MS:
            raise ProtoError("REPLAY", "relayed record older than this session")
        if rec["ts"] > hop_ts + SKEW_MS:
            raise ProtoError("STALE", "relayed record from the future")
        return self.seen.check(fp, rec["sid"].hex(), rec["seqno"])

    def take_record(self, author_cert, rec, carrier, duplicate):
        """§6.4 step 5, or §12.6 steps 7-11 for a record that carries `e2e`, after steps 1-6
        passed for the whole message (steps 6 and 7 come before the content: an end-to-end
        record can be unwrapped once only, so a replayed or re-delivered one must be known as
        such before its wrap is tried, interop finding 29). Returns (k for `.keys` or None,
        why this device has no key or None, text, sender_key body, unshowable code)."""
        cert_der, author_pub, author = author_cert
        k = b64d(carrier["k"], size=32) if "k" in carrier else None
        no_key = None
        if k is None and not duplicate:                                           # §12.6 7-9
            k, no_key = self.open_e2e(author, author_pub, cert_der, carrier["e2e"], rec)
        text = sender_key = unshowable = None
        if k is not None:
            try:
                body = parse_body(check_content(rec, k))                          # 10
                if body["kind"] == "sender_key" and "e2e" in carrier and rec["to"] != "lobby":
                    # §12.6 step 11: a chain (private and end to end only) goes to §12.5 now, not
                    # when the relay is shown: a later record of the same relay (the author's
                    # next lobby line, signed in the same batch) may be wrapped under it
                    self.device.take_sender_key(author, carrier["e2e"]["from"], body)
                    sender_key = body
                elif body["kind"] != "text":
                    raise ProtoError("PROTOCOL_ERROR", "relayed body is not text")
                else:
                    strict(body, ["kind", "text"])
                    text = want_text(body)
            except ProtoError as e:
                if "e2e" not in carrier:  # with k the server checked the content: its fault
                    raise                 # (§6.4 step 5)
                # §12.6 steps 10-11: the wrap opened and the signature verified, so the content
                # is the author's doing: recorded, never shown, no k kept, and the session goes on
                unshowable, k = e.code, None
        return k, no_key, text, sender_key, unshowable

    def show_record(self, author, rec, carrier, duplicate, taken, stored):
        """§6.4, §12.6 step 12: what the user sees of one accepted record, once its message's
        transcript line is written."""
        _, no_key, text, sender_key, unshowable = taken
        private = " (private)" if rec["to"] != "lobby" else ""
        private += " (stored)" if stored else ""
        if sender_key is not None:  # §12.5: taken by the end-to-end layer, nothing shown
            out(f"SENDER_KEY {safe(author)} {carrier['e2e']['from']}")
        elif duplicate:  # §6.4 step 7: accepted in an earlier session; recorded, not shown again
            log(f"a record of {safe(author)} seen in an earlier session, recorded, not shown")
        elif unshowable is not None:  # §12.6 steps 10-11: the author's fault, not the server's
            out(f"{safe(author)}{private}: UNSHOWABLE {unshowable} the author sent a line this "
                "client cannot show")
        elif text is None:  # §12.6: recorded, never shown as text, never dropped silently
            what = "message" if private else "lobby line"
            out(f"{safe(author)}{private}: NO_KEY this device has no key for this {what} "
                f"({safe(no_key)})")
            self.device.lists.pop(author, None)  # the next line to the author refetches
        else:
            out(f"{safe(author)}{private}{' e2e' if 'e2e' in carrier else ''}: {safe(text)}")

    def open_e2e(self, author, author_pub, cert_der, e2e, rec):
        """§12.6 step 5: (k, None), or (None, why) when this device has no key for it."""
        kind = e2e.get("kind")  # it fits the record (checked at step 4)
        if kind == "ratchet":
            return self.device.open_ratchet(author, author_pub, cert_der, e2e, binding_of(rec))
        if kind == "sender":
            return self.device.open_sender(author, e2e, binding_of(rec))
        raise ProtoError("PROTOCOL_ERROR", f"e2e kind {safe(str(kind))!r}")

    def on_queued(self, m):
        """§6.6: our record `of` waits in the recipient's offline queue."""
        strict(m, ["type", "seqno", "ts", "of"])
        seqno, ts, of = want_int(m, "seqno"), want_int(m, "ts"), want_int(m, "of")
        self.check_hop(seqno, ts)
        self.answer(of, "queued")
        self.accept_hop(seqno, ts)
        self.answered[of] = "queued"
        if of in self.sender_key_seqnos:  # §6.5: it reaches the member before our later lines
            self.device.sender_key_queued(self.sender_key_seqnos[of][0])
        self.transcript.add("s2c", seqno, ts, {"dir": "s2c", **{k: m[k] for k in m}},
                            b"\x04" + u64(seqno) + u64(ts) + u64(of))
        out(f"QUEUED {of}")

    def on_refused(self, m):
        """§6.5, §6.6."""
        strict(m, ["type", "seqno", "ts", "of", "code"])
        seqno, ts, of = want_int(m, "seqno"), want_int(m, "ts"), want_int(m, "of")
        code = want_str(m, "code")
        if code not in ("RATE_LIMITED", "NOT_ONLINE", "QUEUE_FULL", "DB_UNAVAILABLE",
                        "CLUSTER_UNAVAILABLE"):
            raise ProtoError("PROTOCOL_ERROR", "refused code")
        self.check_hop(seqno, ts)
        self.answer(of, "refused")
        self.accept_hop(seqno, ts)
        self.answered[of] = "refused"
        enc = (b"\x03" + u64(seqno) + u64(ts) + u64(of) + u32(len(code.encode())) + code.encode())
        self.transcript.add("s2c", seqno, ts, {"dir": "s2c", **{k: m[k] for k in m}}, enc)
        out(f"REFUSED {of} {code}")
        with self.fetch_lock:
            fetched = self.fetch_users.get(of)
        if fetched is not None:  # §12.6: a fetch's refused is its only answer, failing it
            self.pair_fetch(fetched, {"kind": "keys", "user": fetched, "refused": code}, of)
        if of in self.sender_key_seqnos:  # §6.5: it did not reach its member, and only them
            self.device.sender_key_refused(*self.sender_key_seqnos[of])

    # -- close and receipts (§7, TRANSCRIPT §4)
    def start_close(self):
        with self.state_lock:
            if self.close_sent:
                return
            self._flush()  # what we numbered leaves before our close
            self.close_sent = True
            self.close_started = time.monotonic()
            self.send_content({"type": "close"})

    def make_receipt(self):
        th = self.transcript.final_hash()
        n_c2s, n_s2c = self.transcript.counts()
        return th, {
            "type": "receipt", "version": 2, "session_id": self.session_id.hex(),
            "signer_role": "client", "signer": fingerprint(self.my_der),
            "c2s_count": n_c2s, "s2c_count": n_s2c, "transcript_sha256": th.hex(),
            "sig": b64e(sign(self.my_key, receipt_signed_input("client", th))),
        }

    def check_receipt(self, r, th):
        """TRANSCRIPT §4.2 in its order; the writer at close requires the counts equal."""
        fields = ["type", "version", "session_id", "signer_role", "signer", "c2s_count",
                  "s2c_count", "transcript_sha256", "sig"]
        strict(r, fields, code="TAMPERED")
        for f in ("version", "c2s_count", "s2c_count"):
            want_int(r, f, code="TAMPERED")
        for f in ("session_id", "signer_role", "signer", "transcript_sha256"):
            want_str(r, f, code="TAMPERED")
        if r["version"] != 2 or r["signer_role"] != "server" or not HEX64.fullmatch(r["signer"]) \
                or not HEX64.fullmatch(r["transcript_sha256"]):
            raise ProtoError("TAMPERED", "receipt schema")
        sig = b64d(r["sig"], code="TAMPERED", max_size=1024)
        if r["session_id"] != self.session_id.hex():
            raise ProtoError("TAMPERED", "receipt is for another session")
        if r["signer"] != fingerprint(self.server_der):
            raise ProtoError("TAMPERED", "receipt signer is not the server certificate")
        n_c2s, n_s2c = self.transcript.counts()
        if (r["c2s_count"], r["s2c_count"]) != (n_c2s, n_s2c):
            raise ProtoError("TAMPERED", f"receipt counts {r['c2s_count']}/{r['s2c_count']}, "
                                         f"ours {n_c2s}/{n_s2c}")
        if not hmac.compare_digest(r["transcript_sha256"].encode(), th.hex().encode()):
            raise ProtoError("TAMPERED", "receipt hash differs from our transcript")
        if not verify(self.server_pub, sig, receipt_signed_input("server", th)):
            raise ProtoError("SIG_FAIL", "server receipt signature")

    def on_close(self, m):
        """§7 step 2; §5.2, §7.1: the server's `close` may say why it ends the session, a reason
        that holds (its certificate lapses or was revoked; this user logged in again elsewhere,
        which is the only signal of a takeover: never a notice's words): still a clean close with
        receipts, reported as the server's reason."""
        strict(m, ["type"], ["code"])
        if self.peer_closed:
            raise ProtoError("PROTOCOL_ERROR", "second close")
        if "code" in m:
            if m["code"] not in SERVER_CLOSE_CODES:
                raise ProtoError("PROTOCOL_ERROR", "close with an unknown code")
            log(f"the server closed the session: {m['code']}: {SERVER_CLOSE_CODES[m['code']]}; "
                "receipts follow")
            out(f"SERVER_CLOSED {m['code']}")
        self.peer_closed = True
        self.start_close()  # answer with our own close unless we already sent one
        th, receipt = self.make_receipt()  # both closes exchanged: the record is fixed (§7 step 3)
        self.my_receipt_hash = th
        self.send_content(receipt)
        self.transcript.store_receipt(".receipt.json", receipt)

    def on_receipt(self, m):
        if not (self.peer_closed and self.close_sent):
            raise ProtoError("PROTOCOL_ERROR", "receipt before the close exchange")
        self.check_receipt(m, self.my_receipt_hash)
        self.transcript.store_receipt(".peer-receipt.json", m)
        self.receipt_hash = self.my_receipt_hash.hex()

    def write_failed(self, e):
        """§7 "A write that fails", from any thread: the first failed write of the session starts
        the grace. The reader thread goes on reading but acts on nothing but a `key_update` and
        the peer's `error`, which ends the session; `run` ends it with the lost connection when
        PEER_ERROR_GRACE_S pass without one."""
        if self.write_failure is None:
            self.write_failure = (self.lost(e), time.monotonic())

    def dispatch(self, m):
        handlers = {"msg": self.on_msg, "relay": self.on_relay, "stored": self.on_stored,
                    "queued": self.on_queued, "refused": self.on_refused}
        t = m["type"]
        if t in handlers:
            if self.peer_closed:
                raise ProtoError("PROTOCOL_ERROR", f"{t} after the server's close")
            handlers[t](m)
        elif t == "key_update":
            strict(m, ["type"])
            self.rx.update()
            out("KEY_UPDATE s2c")
        elif t == "close":
            self.on_close(m)
        elif t == "receipt":
            self.on_receipt(m)
        else:
            raise ProtoError("PROTOCOL_ERROR", f"unexpected {safe(t)} in the session")

    def reader(self):
        try:
            while self.receipt_hash is None and not self.ending:
                _, m = self.read_content()  # the peer's `error` raises PeerError
                if self.ending:  # our `error` went: nothing more is acted on (§7)
                    break
                if self.write_failure is not None:  # §7 "A write that fails"
                    if m["type"] == "key_update":
                        strict(m, ["type"])
                        self.rx.update()
                    continue
                try:
                    self.dispatch(m)
                except WriteFailed as e:  # our answer (a receipt, a top-up) could not leave
                    self.write_failed(e)
        except PeerError as e:
            self.fatal = e
        except (ProtoError, OSError) as e:
            if self.write_failure is not None:
                self.fatal = self.write_failure[0]
            elif isinstance(e, ProtoError):
                self.fatal = e
            else:
                self.fatal = self.lost(e)
        except Exception as e:  # a bug in this client
            self.fatal = ProtoError("INTERNAL", repr(e))
        finally:
            self.done.set()

    def stdin_loop(self):
        try:
            for line in sys.stdin:
                if self.fatal is not None or self.close_sent:
                    return
                line = line.rstrip("\n").rstrip("\r")
                if line and not self.on_input(line):
                    break
            if self.fatal is None:
                self.start_close()
        except WriteFailed as e:
            self.write_failed(e)  # the reader thread looks for the peer's `error` meanwhile
        except ProtoError as e:
            self.fatal = e
            self.done.set()
        except OSError as e:
            self.fatal = self.lost(e)
            self.done.set()

    def wait_end(self):
        """Until the reader thread ends the session (both receipts, or a failure: raised), the
        close exchange times out, or PEER_ERROR_GRACE_S pass after a failed write without the
        peer's `error` (§7 "A write that fails": the lost connection)."""
        while not self.done.wait(timeout=0.05):
            failure = self.write_failure
            if failure is not None and time.monotonic() - failure[1] > PEER_ERROR_GRACE_S:
                raise failure[0]
            if self.close_started is not None and \
                    time.monotonic() - self.close_started > CLOSE_TIMEOUT_S:
                raise ProtoError("TIMEOUT", "close/receipt exchange")
        if self.fatal is not None:
            raise self.fatal

    def run(self):
        a = self.args
        state = os.path.join(a.transcripts, f"{a.user}.e2e") if a.e2e and a.transcripts else None
        if state and not os.path.exists(state) and self.seen.path and \
                os.path.exists(self.seen.path):
            # §12.7 lost state: said before the session starts
            out("LOST_STATE this device's end-to-end state is missing: this client starts as a new "
                "device; messages to the old device cannot be read here, and the next message to "
                "each contact starts a new conversation")
        sock = socket.create_connection((a.host, a.port), timeout=15)
        self.conn = Conn(sock)
        self.handshake()
        sock.settimeout(None)
        out(f"SESSION {self.session_id.hex()} registered={str(self.registered).lower()}")
        if self.transcript.base:
            out(f"TRANSCRIPT {self.transcript.base}.log")
        if a.e2e:  # §12.6: the device's bundle is the first message of every session
            self.device = Device(self.my_name, self.my_der, self.my_key, state, self.password,
                                 lobby=not a.no_sender_keys)
            try:
                self.publish_keys()
            except WriteFailed as e:
                self.read_peer_error(self.lost(e))
            out(f"DEVICE {self.device.id}")
        threading.Thread(target=self.reader, daemon=True).start()
        threading.Thread(target=self.stdin_loop, daemon=True).start()
        try:
            self.wait_end()
        finally:
            self.seen.save()
        try:  # both receipts exchanged: close TCP after the server does
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(1)
            while sock.recv(4096):
                pass
        except OSError:
            pass
        sock.close()
        out(f"RECEIPT OK {self.receipt_hash}")


def main(client_class=None):
    """Runs the client; probe.py passes a subclass that sends faults (its --hostile-e2e)."""
    p = argparse.ArgumentParser(description="clean-room securechat v3 client")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-env", required=True)
    p.add_argument("--register", metavar="EMAIL")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--group", choices=list(GROUPS), default="x25519")
    p.add_argument("--transcripts", metavar="DIR", help="write the client transcript here")
    p.add_argument("--key-update-every", type=int, default=0,
                   help="send a key_update after this many of our records (0: never)")
    p.add_argument("--e2e", action="store_true",
                   help="the end-to-end layer (PROTOCOL §12): a device with its keys in "
                        "<transcripts>/<user>.e2e, private lines wrapped for the recipient's devices, "
                        "lobby lines under sender keys (§12.5)")
    p.add_argument("--msg-records", type=int, metavar="N",
                   help="at most N records to a msg: a batch leaves in several msgs, each with "
                        "its proof (PROTOCOL §6.3; default: as many as fit one record)")
    p.add_argument("--no-sender-keys", action="store_true",
                   help="with --e2e: a device that does not take sender keys (no \"lobby\": true)")
    args = p.parse_args()
    client = None
    try:
        client = (client_class or Client)(args)
        client.run()
        return 0
    except ProtoError as e:
        log(f"error: {e.code}: {e.detail}")
        if client is not None and e.code != "USAGE" and not isinstance(e, PeerError):
            client.send_error(e.code)
        out(f"ERROR {e.code}")
        return 1
    except OSError as e:
        log(f"error: {e}")
        out("ERROR IO")
        return 1


if __name__ == "__main__":
    sys.exit(main())
