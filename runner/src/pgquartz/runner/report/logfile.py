"""``logFile``: a copy of the human report in a file, as PgQuartz's ``logFile`` does.

A path naming a directory (an existing one, or one written with a trailing
``/``) gets one file per job and day, ``<YYYY-MM-DD>_<job>.log``, appended to;
any other path is appended to as is. The file gets everything, errors and
progress alike, so it reads as the whole story of each run.
"""

from __future__ import annotations

import datetime
import pathlib
from typing import ClassVar, TextIO

from pgquartz.runner.engine import events
from pgquartz.runner.report import console


def resolve(log_file: str, *, job: str, today: datetime.date | None = None) -> pathlib.Path:
    path = pathlib.Path(log_file).expanduser()
    if log_file.endswith("/") or path.is_dir():
        day = (today or datetime.date.today()).isoformat()
        return path / f"{day}_{job}.log"
    return path


class LogFileReporter:
    ignores: ClassVar[frozenset[type[events.Event]]] = console.SILENT
    """What the engine need not emit for it: lines are the console's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: events.Event) -> None:
        for stream, line in console.render(event):
            prefix = "ERROR " if stream == "err" else ""
            self._stream.write(prefix + line + "\n")
        self._stream.flush()


def open_log(path: pathlib.Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")
