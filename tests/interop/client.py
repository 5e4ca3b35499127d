#!/usr/bin/python3
"""Clean-room securechat v1 client, written from docs/PROTOCOL.md and docs/TRANSCRIPT.md only.

Usage:
  client.py --host 127.0.0.1 --port P --ca ca.pem --cert user.pem --key user.key --user NAME
            --password-env VAR [--register EMAIL] [--server-name localhost] [--group x25519|p256]
            [--key-update-every N]

Every stdin line is sent as a lobby `text` message.  Output lines (stdout, flushed):
  SESSION <session_id> <registered>      after the handshake
  <AUTHOR>: <text>                      a relay whose author signature and certificate verified
  NOTICE: <text> / OPERATOR: <text>      server bodies
  KEY_UPDATE s2c                         the server updated its chat secret
  RECEIPT OK <transcript_sha256>         the server's receipt matched our own transcript hash
  ERROR <code>                           fatal error (exit 1)
Diagnostics go to stderr.
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
import socket
import struct
import sys
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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_FRAME = 65536
SEALED_AAD = b"securechat/v1 sealed"
SKEW_MS = 5 * 60 * 1000
MAX_REJECTIONS = 16


class ProtoError(Exception):
    def __init__(self, code, detail=""):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- encodings (PROTOCOL §2)

def b64e(b):
    return base64.b64encode(b).decode("ascii")


def b64d(s, code="PROTOCOL_ERROR"):
    if not isinstance(s, str):
        raise ProtoError(code, "binary field is not a string")
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise ProtoError(code, f"bad base64: {e}")
    if base64.b64encode(raw).decode("ascii") != s:  # canonical: padding present, unused bits zero
        raise ProtoError(code, "non-canonical base64")
    return raw


def u32(n):
    return struct.pack(">I", n)


def u64(n):
    return struct.pack(">Q", n)


def hh(*msgs):
    """Handshake hash H(m1..mk) of §2."""
    h = hashlib.sha256()
    for m in msgs:
        h.update(u32(len(m)) + m)
    return h.digest()


def enc_json(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**53 - 1


def strict(obj, required, optional=()):
    """Strict object check of §2: no unknown, no missing member; types checked by caller."""
    if not isinstance(obj, dict):
        raise ProtoError("PROTOCOL_ERROR", "not an object")
    keys = set(obj)
    missing = set(required) - keys
    unknown = keys - set(required) - set(optional)
    if missing or unknown:
        raise ProtoError("PROTOCOL_ERROR", f"missing {sorted(missing)} unknown {sorted(unknown)}")


def parse_json(payload):
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError("PROTOCOL_ERROR", "payload is not UTF-8")

    def no_dups(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ProtoError("PROTOCOL_ERROR", f"duplicate member {k}")
            d[k] = v
        return d

    try:
        obj = json.loads(text, object_pairs_hook=no_dups)
    except ValueError as e:
        raise ProtoError("PROTOCOL_ERROR", f"bad JSON: {e}")
    if not isinstance(obj, dict) or not isinstance(obj.get("type", obj.get("kind")), str):
        raise ProtoError("PROTOCOL_ERROR", "no type")
    return obj


# ---------------------------------------------------------------- key schedule (PROTOCOL §4)

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
    return hkdf_expand(secret, b"securechat/v1 " + label.encode() + b"\x00" + context, length)


class KeyShare:
    def __init__(self, group):
        self.group = group
        if group == "x25519":
            self.priv = x25519.X25519PrivateKey.generate()
            self.pub = self.priv.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        elif group == "p256":
            self.priv = ec.generate_private_key(ec.SECP256R1())
            self.pub = self.priv.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        else:
            raise ProtoError("UNSUPPORTED", group)

    def wire(self):
        return {"group": self.group, "pub": b64e(self.pub)}

    def agree(self, peer_pub):
        """§4.5 checks; the private key is used once and dropped."""
        priv, self.priv = self.priv, None
        if priv is None:
            raise ProtoError("INTERNAL", "ephemeral key reused")
        if self.group == "x25519":
            if len(peer_pub) != 32:
                raise ProtoError("BAD_KEY_SHARE", "x25519 share length")
            try:
                ss = priv.exchange(x25519.X25519PublicKey.from_public_bytes(peer_pub))
            except ValueError:  # OpenSSL refuses an all-zero result itself
                raise ProtoError("BAD_KEY_SHARE", "all-zero x25519 secret")
            if hmac.compare_digest(ss, bytes(32)):
                raise ProtoError("BAD_KEY_SHARE", "all-zero x25519 secret")
            return ss
        if len(peer_pub) != 65 or peer_pub[0] != 4:
            raise ProtoError("BAD_KEY_SHARE", "p256 share must be 65-byte uncompressed")
        try:  # from_encoded_point checks the point is on the curve
            pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_pub)
            return priv.exchange(ec.ECDH(), pk)
        except ValueError as e:
            raise ProtoError("BAD_KEY_SHARE", f"p256 point: {e}")


def parse_share(obj, group):
    strict(obj, ["group", "pub"])
    if not isinstance(obj["group"], str):
        raise ProtoError("PROTOCOL_ERROR", "group")
    if obj["group"] != group:
        raise ProtoError("UNSUPPORTED", f"group {obj['group']} != {group}")
    return b64d(obj["pub"])


# ---------------------------------------------------------------- signatures (PROTOCOL §4.6, CRYPTO.md)

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
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
        return True
    except (InvalidSignature, ValueError):
        return False


# ---------------------------------------------------------------- PKI (PKI.md "Validation")

class Trust:
    def __init__(self, ca_path):
        with open(ca_path, "rb") as f:
            self.ca = x509.load_pem_x509_certificate(f.read())
        try:
            self.ca_ski = self.ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            raise ProtoError("BAD_CERT", "CA without SKI")
        bc = self.ca.extensions.get_extension_for_class(x509.BasicConstraints)
        if not bc.critical or not bc.value.ca:
            raise ProtoError("BAD_CERT", "CA basicConstraints")
        self.crl = None
        crl_path = os.path.join(os.path.dirname(os.path.abspath(ca_path)), "ca.crl")
        if os.path.exists(crl_path):
            with open(crl_path, "rb") as f:
                crl = x509.load_pem_x509_crl(f.read())
            if crl.issuer != self.ca.subject or not crl.is_signature_valid(self.ca.public_key()):
                raise ProtoError("BAD_CERT", "CRL not signed by CA")
            self.crl = crl

    def _check_sig(self, cert):
        pub = self.ca.public_key()
        try:
            if isinstance(pub, rsa.RSAPublicKey):
                pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                           cert.signature_hash_algorithm)
            elif isinstance(pub, ec.EllipticCurvePublicKey):
                pub.verify(cert.signature, cert.tbs_certificate_bytes,
                           ec.ECDSA(cert.signature_hash_algorithm))
            elif isinstance(pub, ed25519.Ed25519PublicKey):
                pub.verify(cert.signature, cert.tbs_certificate_bytes)
            else:
                raise ProtoError("BAD_CERT", "CA key type")
        except InvalidSignature:
            raise ProtoError("BAD_CERT", "certificate signature does not verify under the CA")

    def validate(self, der, role, expected_name=None):
        """Returns (certificate, public key, CN). Every failure is BAD_CERT."""
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
        # chain: issued directly by our CA
        if cert.issuer != self.ca.subject:
            raise ProtoError("BAD_CERT", "issuer is not the CA")
        try:
            aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound:
            raise ProtoError("BAD_CERT", "no AKI")
        if aki.key_identifier != self.ca_ski:
            raise ProtoError("BAD_CERT", "AKI does not match the CA SKI")
        self._check_sig(cert)
        now = datetime.datetime.utcnow().replace(microsecond=0)
        for c, what in ((cert, "certificate"), (self.ca, "CA")):
            if not (c.not_valid_before <= now <= c.not_valid_after):
                raise ProtoError("BAD_CERT", f"{what} not valid now")
        # not a CA
        try:
            bc = exts.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
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
            raise ProtoError("BAD_CERT", "no EKU")
        want = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        if want not in eku:
            raise ProtoError("BAD_CERT", f"EKU lacks {role}Auth")
        for e in exts:
            if e.critical and not isinstance(e.value, (x509.BasicConstraints, x509.KeyUsage,
                                                       x509.ExtendedKeyUsage, x509.SubjectAlternativeName,
                                                       x509.NameConstraints)):
                raise ProtoError("BAD_CERT", f"unknown critical extension {e.oid.dotted_string}")
        pub = cert.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            if pub.key_size < 2048:
                raise ProtoError("BAD_CERT", "RSA key under 2048 bits")
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            if not isinstance(pub.curve, ec.SECP256R1):
                raise ProtoError("BAD_CERT", "EC curve is not P-256 (the only protocol signature curve)")
        elif not isinstance(pub, ed25519.Ed25519PublicKey):
            raise ProtoError("BAD_CERT", "key type")
        if role == "server" and expected_name is not None:
            self._match_name(exts, expected_name)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = cns[0].value if len(cns) == 1 else None
        if role == "client" and expected_name is not None and cn != expected_name:
            raise ProtoError("BAD_CERT", "CN is not the user name")
        if self.crl is not None:
            if self.crl.next_update is None or self.crl.next_update < now:
                raise ProtoError("BAD_CERT", "CRL is out of date")
            if self.crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise ProtoError("BAD_CERT", "certificate revoked")
        return cert, pub, cn

    @staticmethod
    def _match_name(exts, name):
        try:
            san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise ProtoError("BAD_CERT", "no SAN")
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


# ---------------------------------------------------------------- transport

class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.send_lock = threading.Lock()

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ProtoError("PROTOCOL_ERROR", "connection closed by peer")
            buf += chunk
        return buf

    def read_frame(self):
        (length,) = struct.unpack(">I", self._read_exact(4))
        if length == 0 or length > MAX_FRAME:
            raise ProtoError("FRAME_TOO_LARGE", str(length))
        payload = self._read_exact(length)
        return payload, parse_json(payload)

    def write_frame(self, payload):
        if not 1 <= len(payload) <= MAX_FRAME:
            raise ProtoError("INTERNAL", "frame size")
        with self.send_lock:
            self.sock.sendall(u32(len(payload)) + payload)


class Sealer:
    """One direction of sealed records (§3.2): AES-128-GCM, counter nonces."""

    def __init__(self, key, iv):
        self.aead = AESGCM(key)
        self.iv = iv
        self.n = 0

    def nonce(self):
        if self.n >= 2**24:
            raise ProtoError("INTERNAL", "record limit")
        ctr = bytes(4) + u64(self.n)
        self.n += 1
        return bytes(a ^ b for a, b in zip(self.iv, ctr))

    def seal(self, pt):
        return self.aead.encrypt(self.nonce(), pt, SEALED_AAD)

    def open(self, ct):
        try:
            return self.aead.decrypt(self.nonce(), ct, SEALED_AAD)
        except (InvalidTag, ValueError):
            raise ProtoError("DECRYPT_FAIL", "sealed frame")


def ctl_keys(secret):
    return Sealer(expand_label(secret, "key", b"", 16), expand_label(secret, "iv", b"", 12))


# ---------------------------------------------------------------- transcript (TRANSCRIPT.md §3)

class Transcript:
    def __init__(self):
        self.d = {"c2s": hashlib.sha256(), "s2c": hashlib.sha256()}
        self.n = {"c2s": 0, "s2c": 0}
        self.lock = threading.Lock()

    def add(self, direction, seqno, ts, ct, sig):
        # TRANSCRIPT §3.1: a relay's author record is not part of the hash.
        enc = (b"\x01" if direction == "c2s" else b"\x02") + u64(seqno) + u64(ts) + \
            u32(len(ct)) + ct + u32(len(sig)) + sig
        with self.lock:
            if seqno != self.n[direction] + 1:
                raise ProtoError("INTERNAL", "transcript out of order")
            self.n[direction] += 1
            self.d[direction].update(enc)

    def final(self, session_id, client_der, server_der, protocol_version=1):
        with self.lock:
            return hashlib.sha256(
                b"securechat/transcript/v1\x00" + u32(protocol_version) + session_id
                + hashlib.sha256(client_der).digest() + hashlib.sha256(server_der).digest()
                + u64(self.n["c2s"]) + self.d["c2s"].digest()
                + u64(self.n["s2c"]) + self.d["s2c"].digest()
            ).digest()


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
        self.password = os.environ.get(args.password_env)
        if self.password is None:
            raise ProtoError("USAGE", f"${args.password_env} is not set")
        self.transcript = Transcript()
        self.state_lock = threading.Lock()
        self.closing = False           # we sent close
        self.close_started = None
        self.peer_closed = threading.Event()
        self.peer_receipt = threading.Event()
        self.receipt_ok = None
        self.fatal = None
        self.relay_last = {}           # author cert fingerprint -> (ts, seqno)
        self.rejections = 0
        self._last_inner = None  # exact plaintext of the last sealed message read

    # -- sealed channel
    def send_sealed(self, obj, hashed=None):
        pt = enc_json(obj)
        with self.conn.send_lock:
            ct = self.tx.seal(pt)
            payload = enc_json({"type": "sealed", "ct": b64e(ct)})
            self.conn.sock.sendall(u32(len(payload)) + payload)
        if hashed is not None:
            hashed.append(pt)
        return pt

    def read_sealed(self, expect, hashed=None):
        _, frame = self.conn.read_frame()
        if frame.get("type") == "error":
            self._raise_peer_error(frame)
        if frame.get("type") != "sealed":
            raise ProtoError("PROTOCOL_ERROR", f"expected sealed {expect}, got {frame.get('type')}")
        strict(frame, ["type", "ct"])
        pt = self.rx.open(b64d(frame["ct"]))
        inner = parse_json(pt)
        if inner.get("type") == "error":
            self._raise_peer_error(inner)
        if inner.get("type") != expect:
            raise ProtoError("PROTOCOL_ERROR", f"expected {expect}, got {inner.get('type')}")
        self._last_inner = pt  # exact bytes, for hashing after the check
        if hashed is not None:
            hashed.append(pt)
        return inner

    @staticmethod
    def _raise_peer_error(obj):
        strict(obj, ["type", "code"], ["message"])
        raise ProtoError(str(obj["code"]), "peer: " + str(obj.get("message", "")))

    def send_error(self, code):
        try:
            if getattr(self, "tx", None) is not None:
                self.send_sealed({"type": "error", "code": code})
            elif getattr(self, "conn", None) is not None:
                self.conn.write_frame(enc_json({"type": "error", "code": code}))
        except Exception:
            pass

    # -- handshake (§5, client side)
    def handshake(self):
        a = self.args
        groups = [a.group] + [g for g in ("x25519", "p256") if g != a.group]
        self.group = a.group
        share1 = KeyShare(self.group)
        hello = enc_json({"type": "hello", "version": 1, "nonce": b64e(os.urandom(32)),
                          "groups": groups, "key_share": share1.wire()})
        self.conn.write_frame(hello)
        hashed = [hello]
        # 2. server_hello
        sh_bytes, sh = self.conn.read_frame()
        if sh.get("type") == "error":
            self._raise_peer_error(sh)
        if sh.get("type") != "server_hello":
            raise ProtoError("PROTOCOL_ERROR", f"expected server_hello, got {sh.get('type')}")
        strict(sh, ["type", "version", "nonce", "key_share"])
        if sh["version"] != 1 or not is_int(sh["version"]):
            raise ProtoError("UNSUPPORTED", f"version {sh['version']}")
        if len(b64d(sh["nonce"])) != 32:
            raise ProtoError("PROTOCOL_ERROR", "nonce length")
        ss1 = share1.agree(parse_share(sh["key_share"], self.group))
        hashed.append(sh_bytes)
        h1 = hh(*hashed)
        hs = hkdf_extract(b"securechat/v1", ss1)
        self.tx = Sealer(expand_label(hs, "hs c2s key", h1, 16), expand_label(hs, "hs c2s iv", h1, 12))
        self.rx = Sealer(expand_label(hs, "hs s2c key", h1, 16), expand_label(hs, "hs s2c iv", h1, 12))
        fin_server = expand_label(hs, "server finished", h1, 32)
        fin_client = expand_label(hs, "client finished", h1, 32)
        # 3. server certificate
        m = self.read_sealed("certificate", hashed)
        strict(m, ["type", "cert"])
        self.server_der = b64d(m["cert"])
        _, self.server_pub, _ = self.trust.validate(self.server_der, "server", a.server_name)
        # 4. certificate_verify (server, phase 1)
        h = hh(*hashed)
        m = self.read_sealed("certificate_verify")
        strict(m, ["type", "sig"])
        if not verify(self.server_pub, b64d(m["sig"]), b"securechat/v1 server signature phase1\x00" + h):
            raise ProtoError("SIG_FAIL", "server phase 1 certificate_verify")
        hashed.append(self._last_inner)
        # 5. finished
        h = hh(*hashed)
        m = self.read_sealed("finished")
        strict(m, ["type", "mac"])
        if not hmac.compare_digest(b64d(m["mac"]), hmac.new(fin_server, h, hashlib.sha256).digest()):
            raise ProtoError("HANDSHAKE_FAIL", "server finished")
        hashed.append(self._last_inner)
        # 6. our certificate, certificate_verify, finished
        self.send_sealed({"type": "certificate", "cert": b64e(self.my_der)}, hashed)
        sig = sign(self.my_key, b"securechat/v1 client signature phase1\x00" + hh(*hashed))
        self.send_sealed({"type": "certificate_verify", "sig": b64e(sig)}, hashed)
        mac = hmac.new(fin_client, hh(*hashed), hashlib.sha256).digest()
        self.send_sealed({"type": "finished", "mac": b64e(mac)}, hashed)
        # 7. login / register (not hashed)
        if a.register:
            self.send_sealed({"type": "register", "email": a.register, "username": a.user,
                              "password": self.password})
        else:
            self.send_sealed({"type": "login", "username": a.user, "password": self.password})
        # 8. auth_ok
        m = self.read_sealed("auth_ok", hashed)
        strict(m, ["type", "username", "registered"])
        if m["username"] != a.user or not isinstance(m["registered"], bool):
            raise ProtoError("PROTOCOL_ERROR", "auth_ok username")
        self.registered = m["registered"]
        # 9. phase 2
        share2 = KeyShare(self.group)
        self.send_sealed({"type": "dh_client", "key_share": share2.wire()}, hashed)
        sig = sign(self.my_key, b"securechat/v1 client signature phase2\x00" + hh(*hashed))
        self.send_sealed({"type": "certificate_verify", "sig": b64e(sig)}, hashed)
        # 10. dh_server, certificate_verify
        m = self.read_sealed("dh_server", hashed)
        strict(m, ["type", "key_share"])
        peer2 = parse_share(m["key_share"], self.group)
        h = hh(*hashed)
        m = self.read_sealed("certificate_verify")
        strict(m, ["type", "sig"])
        if not verify(self.server_pub, b64d(m["sig"]), b"securechat/v1 server signature phase2\x00" + h):
            raise ProtoError("SIG_FAIL", "server phase 2 certificate_verify")
        hashed.append(self._last_inner)
        ss2 = share2.agree(peer2)
        hfinal = hh(*hashed)
        master = hkdf_extract(expand_label(hs, "derived", b"", 32), ss2)
        self.session_id = expand_label(master, "session id", hfinal, 16)
        self.chat_tx = expand_label(master, "chat c2s", hfinal, 32)
        self.chat_rx = expand_label(master, "chat s2c", hfinal, 32)
        self.tx = ctl_keys(expand_label(master, "ctl c2s", hfinal, 32))
        self.rx = ctl_keys(expand_label(master, "ctl s2c", hfinal, 32))
        self.seq_tx, self.ts_tx = 0, 0
        self.seq_rx, self.ts_rx = 0, 0
        self.sent_since_update = 0

    # -- chat (§6)
    def send_body(self, body):
        with self.state_lock:
            if self.closing:
                return
            self.seq_tx += 1
            seq = self.seq_tx
            ts = max(int(time.time() * 1000), self.ts_tx)
            self.ts_tx = ts
            k = expand_label(self.chat_tx, "msg key", u64(seq), 16)
            ct = AESGCM(k).encrypt(bytes(12), enc_json(body), b"securechat/v1 msg" + u64(seq) + u64(ts))
            sig = sign(self.my_key, hashlib.sha256(u64(seq) + u64(ts) + ct).digest())
            self.conn.write_frame(enc_json({"type": "msg", "seqno": seq, "ts": ts,
                                            "ct": b64e(ct), "sig": b64e(sig)}))
            self.transcript.add("c2s", seq, ts, ct, sig)
            if body.get("kind") == "key_update":
                self.chat_tx = expand_label(self.chat_tx, "traffic upd", b"", 32)
                self.sent_since_update = 0
            else:
                self.sent_since_update += 1

    def send_text(self, text):
        self.send_body({"kind": "text", "text": text})
        every = self.args.key_update_every
        if every and self.sent_since_update >= every:
            self.send_body({"kind": "key_update"})

    def reject(self, code, detail):
        log(f"rejected msg: {code} {detail}")
        self.rejections += 1
        if self.rejections >= MAX_REJECTIONS:
            raise ProtoError(code, "too many rejected messages")

    def on_msg(self, frame):
        if self.peer_closed.is_set():
            raise ProtoError("PROTOCOL_ERROR", "msg after the peer's close")
        strict(frame, ["type", "seqno", "ts", "ct", "sig"])
        seq, ts = frame["seqno"], frame["ts"]
        if not is_int(seq) or not is_int(ts):
            raise ProtoError("PROTOCOL_ERROR", "seqno/ts")
        ct, sig = b64d(frame["ct"]), b64d(frame["sig"])
        # 1. seqno
        if seq <= self.seq_rx:
            return self.reject("REPLAY", f"seqno {seq}")
        if seq > self.seq_rx + 1:
            raise ProtoError("PROTOCOL_ERROR", f"sequence gap: {seq} after {self.seq_rx}")
        # 2. ts
        now = int(time.time() * 1000)
        if abs(now - ts) > SKEW_MS or ts < self.ts_rx:
            return self.reject("STALE", f"ts {ts}")
        # 3. signature
        if not verify(self.server_pub, sig, hashlib.sha256(u64(seq) + u64(ts) + ct).digest()):
            return self.reject("SIG_FAIL", f"seqno {seq}")
        # 4. decrypt
        k = expand_label(self.chat_rx, "msg key", u64(seq), 16)
        try:
            pt = AESGCM(k).decrypt(bytes(12), ct, b"securechat/v1 msg" + u64(seq) + u64(ts))
        except InvalidTag:
            return self.reject("DECRYPT_FAIL", f"seqno {seq}")
        # 5. body
        body = parse_json(pt)
        kind = body.get("kind")
        shown = None
        if kind == "relay":
            strict(body, ["kind", "cert", "seqno", "ts", "ct", "sig", "key"])
            _, shown = self.check_relay(body)
        elif kind in ("operator",):
            strict(body, ["kind", "text"], ["to"])
            if not isinstance(body["text"], str):
                raise ProtoError("PROTOCOL_ERROR", "operator text")
            shown = "OPERATOR: " + body["text"]
        elif kind == "notice":
            strict(body, ["kind", "text"])
            if not isinstance(body["text"], str):
                raise ProtoError("PROTOCOL_ERROR", "notice text")
            shown = "NOTICE: " + body["text"]
        elif kind == "key_update":
            strict(body, ["kind"])
        else:
            raise ProtoError("PROTOCOL_ERROR", f"body kind {kind!r} from the server")
        # accepted
        self.seq_rx, self.ts_rx = seq, ts
        self.transcript.add("s2c", seq, ts, ct, sig)
        if kind == "key_update":
            self.chat_rx = expand_label(self.chat_rx, "traffic upd", b"", 32)
            out("KEY_UPDATE s2c")
        if shown is not None:
            out(shown)

    def check_relay(self, body):
        """§6.4. Returns (author record or None, line to print or None)."""
        try:
            cert_der = b64d(body["cert"])
            a_seq, a_ts = body["seqno"], body["ts"]
            if not is_int(a_seq) or not is_int(a_ts):
                raise ProtoError("PROTOCOL_ERROR", "relay seqno/ts")
            a_ct, a_sig, key = b64d(body["ct"]), b64d(body["sig"]), b64d(body["key"])
        except ProtoError as e:
            raise ProtoError("PROTOCOL_ERROR", "relay fields: " + e.detail)
        record = (cert_der, a_seq, a_ts, a_ct, a_sig)
        try:
            _, pub, cn = self.trust.validate(cert_der, "client")
            if cn is None:
                raise ProtoError("BAD_CERT", "author certificate without a single CN")
            if not verify(pub, a_sig, hashlib.sha256(u64(a_seq) + u64(a_ts) + a_ct).digest()):
                raise ProtoError("SIG_FAIL", "author signature")
            if len(key) != 16:
                raise ProtoError("DECRYPT_FAIL", "relay key length")
            try:
                pt = AESGCM(key).decrypt(bytes(12), a_ct, b"securechat/v1 msg" + u64(a_seq) + u64(a_ts))
            except InvalidTag:
                raise ProtoError("DECRYPT_FAIL", "relay ciphertext")
            inner = parse_json(pt)
            if inner.get("kind") != "text":
                raise ProtoError("PROTOCOL_ERROR", "relayed body is not text")
            strict(inner, ["kind", "text"], ["to"])
            if not isinstance(inner["text"], str) or not 1 <= len(inner["text"]) <= 4000:
                raise ProtoError("PROTOCOL_ERROR", "relayed text")
            fp = hashlib.sha256(cert_der).hexdigest()
            last = self.relay_last.get(fp)
            if last is not None and (a_ts, a_seq) <= last:
                raise ProtoError("REPLAY", "relay not after the last one from this author")
            self.relay_last[fp] = (a_ts, a_seq)
        except ProtoError as e:
            # The hop message itself is genuine: recorded, but (per §6.4) without an author record.
            log(f"relay rejected: {e.code} {e.detail}")
            return None, None
        to = " (private)" if "to" in inner else ""
        return record, f"{cn}: {inner['text']}{to}"

    # -- close and receipts (§7, TRANSCRIPT §4)
    def make_receipt(self, th):
        n_s2c = self.transcript.n["s2c"]
        return {
            "type": "receipt", "version": 1, "session_id": self.session_id.hex(), "peer": "client",
            "signer": hashlib.sha256(self.my_der).hexdigest(),
            "first_seq": 1 if n_s2c else 0, "last_seq": n_s2c,
            "c2s_count": self.transcript.n["c2s"], "s2c_count": n_s2c,
            "transcript_sha256": th.hex(), "sig": b64e(sign(self.my_key, th)),
        }

    def check_receipt(self, r, th):
        fields = ["type", "version", "session_id", "peer", "signer", "first_seq", "last_seq",
                  "c2s_count", "s2c_count", "transcript_sha256", "sig"]
        try:
            strict(r, fields)
        except ProtoError:
            raise ProtoError("TAMPERED", "receipt schema")
        for f in ("version", "first_seq", "last_seq", "c2s_count", "s2c_count"):
            if not is_int(r[f]):
                raise ProtoError("TAMPERED", f"receipt {f}")
        if r["version"] != 1:
            raise ProtoError("TAMPERED", "receipt version")
        if r["session_id"] != self.session_id.hex():
            raise ProtoError("TAMPERED", "receipt is for another session")
        certs = {"client": self.my_der, "server": self.server_der}
        if r["peer"] not in certs or r["signer"] != hashlib.sha256(certs[r["peer"]]).hexdigest():
            raise ProtoError("TAMPERED", "receipt signer is not the certificate of its role")
        if r["peer"] != "server":
            raise ProtoError("BAD_CERT", "receipt not made by the server")
        n_c2s, n_s2c = self.transcript.n["c2s"], self.transcript.n["s2c"]
        if (r["first_seq"], r["last_seq"]) != ((1 if n_c2s else 0), n_c2s):
            raise ProtoError("TAMPERED", "receipt first_seq/last_seq")
        if (r["c2s_count"], r["s2c_count"]) != (n_c2s, n_s2c):
            raise ProtoError("TAMPERED", f"receipt counts {r['c2s_count']}/{r['s2c_count']} "
                                         f"vs ours {n_c2s}/{n_s2c}")
        if not isinstance(r["transcript_sha256"], str) or not hmac.compare_digest(
                r["transcript_sha256"].encode(), th.hex().encode()):
            raise ProtoError("TAMPERED", "receipt hash differs from our transcript")
        if not verify(self.server_pub, b64d(r["sig"], "TAMPERED"), th):
            raise ProtoError("SIG_FAIL", "receipt signature")

    def on_sealed(self, frame):
        strict(frame, ["type", "ct"])
        pt = self.rx.open(b64d(frame["ct"]))
        inner = parse_json(pt)
        t = inner.get("type")
        if t == "error":
            self._raise_peer_error(inner)
        if t == "close":
            strict(inner, ["type"])
            if self.peer_closed.is_set():
                raise ProtoError("PROTOCOL_ERROR", "second close")
            self.peer_closed.set()
            self.start_close()  # answer with our own close unless already sent
            self.send_receipt()
        elif t == "receipt":
            if not self.peer_closed.is_set() or not self.closing:
                raise ProtoError("PROTOCOL_ERROR", "receipt before the close exchange")
            th = self.transcript.final(self.session_id, self.my_der, self.server_der)
            self.check_receipt(inner, th)
            self.receipt_ok = th.hex()
            self.peer_receipt.set()
        else:
            raise ProtoError("PROTOCOL_ERROR", f"unexpected sealed {t}")

    def start_close(self):
        with self.state_lock:
            if self.closing:
                return
            self.closing = True
            self.close_started = time.monotonic()
            self.send_sealed({"type": "close"})

    def send_receipt(self):
        th = self.transcript.final(self.session_id, self.my_der, self.server_der)
        self.send_sealed(self.make_receipt(th))

    def stdin_loop(self):
        try:
            for line in sys.stdin:
                if self.fatal is not None or self.closing:
                    return
                line = line.rstrip("\n").rstrip("\r")
                if line:
                    self.send_text(line)
            if self.fatal is None:
                self.start_close()
        except ProtoError as e:
            self.fatal = e
            self.peer_receipt.set()
        except OSError as e:
            self.fatal = ProtoError("PROTOCOL_ERROR", f"socket: {e}")
            self.peer_receipt.set()

    def reader(self):
        try:
            while not self.peer_receipt.is_set():
                _, frame = self.conn.read_frame()
                t = frame.get("type")
                if t == "msg":
                    self.on_msg(frame)
                elif t == "sealed":
                    self.on_sealed(frame)
                elif t == "error":
                    self._raise_peer_error(frame)
                else:
                    raise ProtoError("PROTOCOL_ERROR", f"unexpected frame {t}")
        except ProtoError as e:
            self.fatal = e
        except OSError as e:
            self.fatal = ProtoError("PROTOCOL_ERROR", f"socket: {e}")
        except Exception as e:  # a bug
            self.fatal = ProtoError("INTERNAL", repr(e))
        finally:
            self.peer_receipt.set()

    def run(self):
        a = self.args
        sock = socket.create_connection((a.host, a.port), timeout=15)
        sock.settimeout(None)
        self.conn = Conn(sock)
        self.handshake()
        out(f"SESSION {self.session_id.hex()} registered={str(self.registered).lower()}")
        threading.Thread(target=self.reader, daemon=True).start()
        threading.Thread(target=self.stdin_loop, daemon=True).start()
        # Either end of input (ours) or a close from the server starts the close (§7).
        while not self.peer_receipt.wait(timeout=0.1):
            if self.close_started is not None and time.monotonic() - self.close_started > 10:
                raise ProtoError("TIMEOUT", "close/receipt exchange")
        if self.fatal is not None:
            raise self.fatal
        # Both receipts are exchanged (ours went out when the server's close arrived).
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(3)
            while sock.recv(4096):
                pass
        except OSError:
            pass
        sock.close()
        out(f"RECEIPT OK {self.receipt_ok}")


def main():
    p = argparse.ArgumentParser(description="clean-room securechat v1 client")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-env", required=True)
    p.add_argument("--register", metavar="EMAIL")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--group", choices=["x25519", "p256"], default="x25519")
    p.add_argument("--key-update-every", type=int, default=0,
                   help="send a key_update after this many of our messages (0: never)")
    args = p.parse_args()
    client = None
    try:
        client = Client(args)
        client.run()
        return 0
    except ProtoError as e:
        log(f"error: {e.code}: {e.detail}")
        if client is not None and e.code not in ("USAGE",):
            client.send_error(e.code)
        out(f"ERROR {e.code}")
        return 1
    except OSError as e:
        log(f"error: {e}")
        out("ERROR IO")
        return 1


if __name__ == "__main__":
    sys.exit(main())
