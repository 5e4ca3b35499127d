#!/usr/bin/python3
"""Unit checks of client.py where the real server cannot be made to reach a path on demand.

- PROTOCOL §6.5: a `sender_key` record answered `queued` did not reach its member now, so it
  retires the author's sender chain as a refused one does (the next lobby line starts a new
  chain); an answer to any other record leaves the chain alone. The server queues a sender key
  only when the member left between our membership list and the record, a race no live test pins.
- §6.5 "One answer per record": an answer to a record never sent, a `queued` for a record not to
  `user:` + a name, and a second answer are the server's PROTOCOL_ERROR (an honest server sends
  none of them; the live tests cover the one answer it does send, a line to oneself relayed back).
- §6.5: a session ended `CLUSTER_UNAVAILABLE` naming an unanswered record of ours tells the user
  its fate is unknown (a cluster whose stream stops answering mid-publish; interop finding 60).
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


class UnknownFate(unittest.TestCase):
    """§6.5: a session ended CLUSTER_UNAVAILABLE, its text naming an unanswered record."""

    def shown(self, c, message, code="CLUSTER_UNAVAILABLE"):
        lines = []
        real_out, sc.out = sc.out, lines.append
        try:
            c.unknown_fate({"type": "error", "code": code, "message": message})
        finally:
            sc.out = real_out
        return lines

    def test_the_named_unanswered_record(self):
        c = session_after(3)
        self.assertEqual(self.shown(c, "could not learn whether message 3 was stored"),
                         ["UNKNOWN_FATE 3"])

    def test_nothing_for_an_answered_unsent_or_unnamed_record(self):
        c = session_after(3)
        c.on_queued(queued(1, 2))
        self.assertEqual(self.shown(c, "message 2"), [])
        self.assertEqual(self.shown(c, "message 4"), [])
        self.assertEqual(self.shown(c, "the cluster is down"), [])
        self.assertEqual(self.shown(c, "message 3", code="DB_UNAVAILABLE"), [])


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=0).result
    ok = result.wasSuccessful() and result.testsRun > 0
    if ok:
        print(f"UNITS OK {result.testsRun}")
    sys.exit(0 if ok else 1)
