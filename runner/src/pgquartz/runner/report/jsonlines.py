"""One JSON object per event, one per line, for log collectors (``--log-format json``)."""

from __future__ import annotations

import json
from typing import TextIO

from pgquartz.runner.engine import events


class JsonLinesReporter:
    def __init__(self, *, out: TextIO, debug: bool = False) -> None:
        self._out = out
        self._debug = debug

    def __call__(self, event: events.Event) -> None:
        data = event.to_dict()
        if isinstance(event, events.CommandFinished):
            result = event.result
            failed = not result.ok and event.step is not None
            if event.debug or failed:
                data["stdout"] = (
                    result.stdout.text if event.debug else "\n".join(result.stdout.last_lines(20))
                )
                data["stderr"] = (
                    result.stderr.text if event.debug else "\n".join(result.stderr.last_lines(20))
                )
        elif isinstance(event, events.CheckFinished) and not event.passed:
            data["stdout"] = "\n".join(event.result.stdout.last_lines(20))
            data["stderr"] = "\n".join(event.result.stderr.last_lines(20))
        self._out.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        self._out.flush()
