"""The command starts without the cyclic collector and runs with it, past what start-up made."""

from __future__ import annotations

import pathlib
import subprocess
import sys

PROBE = """
import gc, sys
from pgquartz.runner.cli import collector, main
{pause}
print("start", gc.isenabled())
code = main.main(["-c", sys.argv[1]])
print("end", code, gc.isenabled(), gc.get_freeze_count() > 0)
"""


def _probe(job: pathlib.Path, *, pause: bool) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(pause="collector.pause()" if pause else ""), str(job)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if line.startswith(("start", "end"))]


def test_the_command_runs_with_the_collector_after_a_start_up_without_it(tmp_path: pathlib.Path) -> None:
    job = tmp_path / "job.yml"
    job.write_text("git: {disable: true}\nsteps:\n  s:\n    commands: [{inline: 'true'}]\n")
    assert _probe(job, pause=True) == ["start False", "end 0 True True"]


def test_callers_of_main_keep_their_collector_as_it_was(tmp_path: pathlib.Path) -> None:
    job = tmp_path / "job.yml"
    job.write_text("git: {disable: true}\nsteps:\n  s:\n    commands: [{inline: 'true'}]\n")
    assert _probe(job, pause=False) == ["start True", "end 0 True False"]


def test_cycles_a_run_makes_are_collected(tmp_path: pathlib.Path) -> None:
    probe = """
import gc, sys, weakref
from pgquartz.runner.cli import collector
collector.pause()
class Node: pass
made_at_start = Node(); made_at_start.me = made_at_start
start = weakref.ref(made_at_start); del made_at_start
collector.resume()
made_later = Node(); made_later.me = made_later
later = weakref.ref(made_later); del made_later
gc.collect()
print("seen", start() is not None, later() is None)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    # a cycle dropped during start-up stays (frozen with the rest); one dropped in the run goes
    assert result.stdout.split() == ["seen", "True", "True"]
