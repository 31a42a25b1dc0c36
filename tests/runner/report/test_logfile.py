import datetime
import io
import pathlib

from pgquartz.runner.engine import events
from pgquartz.runner.report import Fanout, console, jsonlines, logfile


def test_a_directory_gets_a_dated_file_named_after_the_job(tmp_path: pathlib.Path) -> None:
    day = datetime.date(2026, 11, 23)
    assert logfile.resolve(str(tmp_path), job="job1", today=day) == tmp_path / "2026-11-23_job1.log"
    assert logfile.resolve("/var/log/pgquartz/", job="job1", today=day) == pathlib.Path(
        "/var/log/pgquartz/2026-11-23_job1.log"
    )


def test_a_file_path_is_used_as_is(tmp_path: pathlib.Path) -> None:
    assert logfile.resolve(str(tmp_path / "pgquartz.log"), job="x") == tmp_path / "pgquartz.log"


def test_only_machines_want_each_command_s_start() -> None:
    people = [
        console.ConsoleReporter(out=io.StringIO(), err=io.StringIO()),
        logfile.LogFileReporter(io.StringIO()),
    ]
    assert not Fanout(people).wants(events.CommandStarted)
    assert Fanout(people).wants(events.CommandFinished)
    machines = Fanout([*people, jsonlines.JsonLinesReporter(out=io.StringIO(), debug=False)])
    assert machines.wants(events.CommandStarted)
    assert Fanout([*people, lambda event: None]).wants(events.CommandStarted)  # says nothing: wants all
