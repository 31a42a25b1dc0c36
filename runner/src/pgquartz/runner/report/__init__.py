"""Reporters: render engine events for people (console, log file) and machines (JSON lines)."""

from __future__ import annotations

from collections.abc import Sequence

from pgquartz.runner.engine import events


class Fanout:
    """Sends each event to several reporters."""

    def __init__(self, reporters: Sequence[events.Emit]) -> None:
        self._reporters = list(reporters)

    def add(self, reporter: events.Emit) -> None:
        self._reporters.append(reporter)

    def __call__(self, event: events.Event) -> None:
        for reporter in self._reporters:
            reporter(event)

    def wants(self, kind: type[events.Event]) -> bool:
        """Whether any reporter renders events of ``kind``: one that never does says so in a class
        attribute ``ignores`` (the console ignores ``CommandStarted``, which a command's end says)."""
        return any(kind not in getattr(reporter, "ignores", ()) for reporter in self._reporters)
