"""PyMeasure-style exact protocol checking: a scripted transport that holds the exact list of
(command, reply) pairs a driver must produce, fails on any other or extra command, and is
checked for full consumption at the end.

A reply of ``None`` means the command has no reply (a setting). A reply that is an exception
instance is raised by ``read`` (a timeout, a dropped link).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

OK = '0,"No error"'


class ScriptedTransport:
    def __init__(self, pairs: Sequence[tuple[str, object]], fail_opens: int = 0):
        self.pairs = list(pairs)
        self.i = 0
        self.pending: object = None
        self.opens = 0
        self.fail_opens = fail_opens  # refuse this many open() calls after the first

    def extend(self, pairs: Sequence[tuple[str, object]]) -> None:
        self.pairs.extend(pairs)

    def open(self) -> None:
        self.opens += 1
        if self.opens > 1 and self.fail_opens > 0:
            self.fail_opens -= 1
            raise ConnectionError("refused (scripted)")
        self.pending = None

    def close(self) -> None:
        self.pending = None

    def write(self, text: str) -> None:
        assert self.pending is None, f"sent {text!r} before reading the reply to the last query"
        assert self.i < len(self.pairs), f"unexpected extra command {text!r}"
        cmd, reply = self.pairs[self.i]
        assert text == cmd, f"command #{self.i}: expected {cmd!r}, driver sent {text!r}"
        self.i += 1
        self.pending = reply
        if isinstance(reply, BaseException) and cmd.endswith("!write"):
            raise reply

    def read(self) -> str:
        reply, self.pending = self.pending, None
        assert reply is not None, "read with no reply pending (the command has no reply)"
        if isinstance(reply, BaseException):
            raise reply
        return str(reply)

    def assert_consumed(self) -> None:
        left = self.pairs[self.i:]
        assert not left, f"commands expected but never sent: {left}"


@contextmanager
def expected_protocol(make, pairs: Sequence[tuple[str, object]], **kw) -> Iterator[object]:
    """``make(transport, **kw)`` builds a driver; it is connected, used, and every pair must
    have been consumed when the block ends."""
    t = ScriptedTransport(pairs)
    drv = make(t, **kw)
    drv.connect()
    yield drv
    t.assert_consumed()
