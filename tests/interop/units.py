#!/usr/bin/python3
"""Unit checks of client.py where the real server cannot be made to reach a path on demand.

PROTOCOL §6.5: a `sender_key` record answered `queued` did not reach its member now, so it retires
the author's sender chain as a refused one does (the next lobby line starts a new chain); a queued
or refused answer to any other record leaves the chain alone. The server sends `queued` for a
sender key only when the member left between our membership list and the record, a race a live
test cannot pin. Prints `UNITS OK <n>` and exits 0, or a traceback and exits 1.
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


def session_after(sent, sender_keys):
    """A client session that has sent c2s seqnos 1..`sent`, of which `sender_keys` carried a
    sender_key body, and has received nothing yet."""
    c = sc.Client.__new__(sc.Client)
    c.seq_tx, c.seq_rx, c.ts_rx = sent, 0, 0
    c.sender_key_seqnos = set(sender_keys)
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


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=0).result
    ok = result.wasSuccessful() and result.testsRun > 0
    if ok:
        print(f"UNITS OK {result.testsRun}")
    sys.exit(0 if ok else 1)
