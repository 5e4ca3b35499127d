#!/usr/bin/python3
"""Unit checks of client.py where the real server cannot be made to reach a path on demand.

- PROTOCOL §6.5: a `sender_key` record answered `queued` did not reach its member now, so it
  retires the author's sender chain as a refused one does (the next lobby line starts a new
  chain); an answer to any other record leaves the chain alone. The server queues a sender key
  only when the member left between our membership list and the record, a race no live test pins.
- §6.5 "One answer per record": an answer to a record never sent, a `queued` for a record not to
  `user:` + a name, and a second answer are the server's PROTOCOL_ERROR (an honest server sends
  none of them; the live tests cover the one answer it does send, a line to oneself relayed back).
- §6.5 "One answer per record": a record of this session back as `stored`, or our own lobby record
  relayed back, is the server's PROTOCOL_ERROR (interop finding 63; an honest server sends neither).
- §6.5: a session ended `CLUSTER_UNAVAILABLE` shows the server's text, never parsed, and lists our
  unanswered lines of its last moments as of unknown fate (a cluster whose stream stops answering
  mid-publish; interop findings 60 and 64).
Prints `UNITS OK <n>` and exits 0, or the failures and exits 1.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client as sc  # noqa: E402


class ChainRecorder:
    """The device's side of the chain: counts retirements (Device.retire_chain's one caller)."""

    def __init__(self):
        self.retired = 0

    def retire_chain(self):
        self.retired += 1


def session_after(sent, sender_keys=(), private=None):
    """A client session that has sent c2s seqnos 1..`sent`, of which `sender_keys` carried a
    sender_key body and `private` (by default every one) went to `user:` + a name, and has
    received nothing yet."""
    c = sc.Client.__new__(sc.Client)
    c.seq_tx, c.seq_rx, c.ts_rx = sent, 0, 0
    c.sender_key_seqnos = set(sender_keys)
    c.private_seqnos = set(range(1, sent + 1) if private is None else private)
    c.answered = {}
    c.session_id = bytes(16)
    c.recent_tx = sc.deque((n, sc.now_ms()) for n in range(1, sent + 1))
    c.device = ChainRecorder()
    c.transcript = sc.Transcript(None, bytes(16), 0, "localhost", b"", b"")
    c.now = sc.now_ms
    return c


def queued(seqno, of):
    return {"type": "queued", "seqno": seqno, "ts": sc.now_ms(), "of": of}


def refused(seqno, of, code="NOT_ONLINE"):
    return {"type": "refused", "seqno": seqno, "ts": sc.now_ms(), "of": of, "code": code}


class SenderChainRetirement(unittest.TestCase):
    def test_queued_sender_key_retires_the_chain(self):
        c = session_after(3, sender_keys=[2])
        c.on_queued(queued(1, 2))
        self.assertEqual(c.device.retired, 1)

    def test_refused_sender_key_retires_the_chain(self):
        c = session_after(3, sender_keys=[2])
        c.on_refused(refused(1, 2))
        self.assertEqual(c.device.retired, 1)

    def test_queued_private_line_keeps_the_chain(self):
        c = session_after(3, sender_keys=[2])
        c.on_queued(queued(1, 3))
        self.assertEqual(c.device.retired, 0)

    def test_refused_private_line_keeps_the_chain(self):
        c = session_after(3, sender_keys=[2])
        c.on_refused(refused(1, 3, "QUEUE_FULL"))
        self.assertEqual(c.device.retired, 0)


class OneAnswerPerRecord(unittest.TestCase):
    """PROTOCOL §6.5 "One answer per record": each fault is the server's PROTOCOL_ERROR."""

    def assertProtocolError(self, answer):
        with self.assertRaises(sc.ProtoError) as caught:
            answer()
        self.assertEqual(caught.exception.code, "PROTOCOL_ERROR")

    def test_an_answer_to_a_record_never_sent(self):
        c = session_after(2)
        self.assertProtocolError(lambda: c.on_queued(queued(1, 3)))
        self.assertProtocolError(lambda: c.on_refused(refused(1, 3)))
        self.assertProtocolError(lambda: c.on_refused(refused(1, 0)))

    def test_queued_for_a_record_not_to_a_user(self):
        c = session_after(2, private=[1])  # 2 went to the lobby (or the server)
        self.assertProtocolError(lambda: c.on_queued(queued(1, 2)))
        c.on_refused(refused(1, 2, "RATE_LIMITED"))  # a refusal is for a record of any `to`

    def test_a_second_answer(self):
        for first, second in ((queued, queued), (queued, refused), (refused, queued),
                              (refused, refused)):
            c = session_after(2)
            handler = {queued: c.on_queued, refused: c.on_refused}
            handler[first](first(1, 2))
            self.assertProtocolError(lambda: handler[second](second(2, 2)))
            handler[second](second(2, 1))  # another record's answer is still welcome

    def test_an_answer_after_the_record_came_back(self):
        c = session_after(2)
        c.answered[2] = "relay"  # what on_relay records for our own record relayed back
        self.assertProtocolError(lambda: c.on_refused(refused(1, 2)))
        self.assertProtocolError(lambda: c.on_queued(queued(1, 2)))


class OwnRecordBack(unittest.TestCase):
    """§6.5: only a private record of ours comes back, and only as a `relay`."""

    def own_back(self, kind, to):
        c = session_after(2)
        key = sc.ed25519.Ed25519PrivateKey.generate()
        _, wire = sc.make_record(key, c.session_id, to, 2, sc.now_ms(), b"{}", bytes(32))
        m = {"type": kind, "seqno": 1, "ts": sc.now_ms(), "author_fp": "ab" * 32,
             "record": wire, "k": sc.b64e(bytes(32))}
        with self.assertRaises(sc.ProtoError) as caught:
            c.on_relay(m)
        self.assertEqual(caught.exception.code, "PROTOCOL_ERROR")
        self.assertIn("our own", caught.exception.detail)
        self.assertEqual(c.answered, {})

    def test_our_private_record_back_stored(self):
        self.own_back("stored", "user:alice")

    def test_our_lobby_record_relayed_back(self):
        self.own_back("relay", "lobby")


class UnknownFate(unittest.TestCase):
    """§6.5: a session ended CLUSTER_UNAVAILABLE: its text shown, our recent unanswered lines."""

    def shown(self, c, message, code="CLUSTER_UNAVAILABLE"):
        lines = []
        real_out, sc.out = sc.out, lines.append
        real_log, sc.log = sc.log, lambda *a: None
        try:
            c.unknown_fate({"type": "error", "code": code, "message": message})
        finally:
            sc.out, sc.log = real_out, real_log
        return lines

    def test_recent_unanswered_lines_and_the_text(self):
        c = session_after(4)
        c.on_queued(queued(1, 2))
        c.answered[3] = "relay"  # our own private record came back: answered
        # the text is shown, never read for a number: "message 2" names an answered line
        self.assertEqual(self.shown(c, "could not learn whether message 2 was stored"),
                         ["UNKNOWN_FATE 1,4 could not learn whether message 2 was stored"])

    def test_lines_before_the_last_moments_are_not_listed(self):
        c = session_after(3)
        c.recent_tx = sc.deque([(1, sc.now_ms() - sc.OPEN_FATE_MS - 1000), (2, sc.now_ms()),
                                (3, sc.now_ms())])
        c.on_refused(refused(1, 3, "RATE_LIMITED"))
        self.assertEqual(self.shown(c, "the cluster is down"),
                         ["UNKNOWN_FATE 2 the cluster is down"])
        c.answered[2] = "queued"
        self.assertEqual(self.shown(c, "\x1b[2J"), ["UNKNOWN_FATE - \\u001b[2J"])

    def test_only_for_cluster_unavailable(self):
        c = session_after(3)
        self.assertEqual(self.shown(c, "message 3", code="DB_UNAVAILABLE"), [])


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=0).result
    ok = result.wasSuccessful() and result.testsRun > 0
    if ok:
        print(f"UNITS OK {result.testsRun}")
    sys.exit(0 if ok else 1)
