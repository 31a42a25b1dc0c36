"""Bounded output capture: the head and tail of a stream, and its full size.

PgQuartz keeps all output in memory and warns users to limit it; a runaway
``psql`` or ``find`` then takes the node's memory. Here each stream keeps at
most ``head + tail`` bytes: the first ``head`` bytes as they come and a ring
of the last ``tail`` bytes, while counting every byte. Feeding is O(chunk).
"""

from __future__ import annotations

from pgquartz.runner.model import records
from pgquartz.runner.model.results import Captured

DEFAULT_HEAD = 1024 * 1024
DEFAULT_TAIL = 1024 * 1024


class Limits(records.Record):
    """How much of each stream to keep: ``head`` bytes from the start, ``tail`` from the end."""

    head: int = DEFAULT_HEAD
    tail: int = DEFAULT_TAIL

    @classmethod
    def total(cls, size: int) -> Limits:
        """Split a per-stream budget evenly between head and tail."""
        half = max(size, 0) // 2
        return cls(head=half, tail=max(size, 0) - half)


DEFAULT_LIMITS = Limits()


class BoundedCapture:
    """Accumulates one stream within :class:`Limits`."""

    def __init__(self, limits: Limits | None = None) -> None:
        self._limits = limits or DEFAULT_LIMITS
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    @property
    def total_bytes(self) -> int:
        return self._total

    def feed(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._limits.head - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if not chunk or self._limits.tail <= 0:
            return
        if len(chunk) >= self._limits.tail:
            self._tail[:] = chunk[-self._limits.tail :]
        else:
            self._tail += chunk
            excess = len(self._tail) - self._limits.tail
            if excess > 0:
                del self._tail[:excess]

    def result(self) -> Captured:
        if not self._total:
            return _NOTHING  # most streams of most commands: one shared record
        kept = len(self._head) + len(self._tail)
        dropped = self._total - kept
        if dropped <= 0:
            text = _decode(self._head + self._tail if self._tail else self._head)
            return Captured(text=text, total_bytes=self._total)
        head = _decode(bytes(self._head))
        tail = _decode(bytes(self._tail))
        separator = "" if not head or head.endswith("\n") else "\n"
        marker = f"{separator}[... {dropped} bytes not kept ...]\n"
        return Captured(text=head + marker + tail, total_bytes=self._total, dropped_bytes=dropped)


_NOTHING = Captured(text="", total_bytes=0)


def _decode(data: bytes | bytearray) -> str:
    return data.decode("utf-8", errors="replace")
