"""The engine against real bash: order, parallelism, rules, failures, checks, timeouts."""

from __future__ import annotations

import asyncio
import pathlib
import time
import uuid
from collections.abc import Callable

import pytest

from pgquartz.runner import loader
from pgquartz.runner.engine import events
from pgquartz.runner.engine import run as engine
from pgquartz.runner.engine.dispatch import Dispatcher
from pgquartz.runner.engine.summary import Outcome, Summary
from pgquartz.runner.executors.shell import ShellExecutor
from pgquartz.runner.model.results import StepState
from tests.conftest import processes_with_marker


class Recorder:
    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def __call__(self, event: events.Event) -> None:
        self.events.append(event)

    def of(self, kind: type[events.Event]) -> list[events.Event]:
        return [event for event in self.events if isinstance(event, kind)]


async def run_job(loaded: loader.LoadedJob, **options: object) -> tuple[Summary, Recorder]:
    recorder = Recorder()
    shell = ShellExecutor(workdir=loaded.workdir, kill_grace=1.0)
    summary = await engine.run(
        loaded,
        dispatcher=Dispatcher(workdir=loaded.workdir, shell=shell),
        emit=recorder,
        **options,  # type: ignore[arg-type]
    )
    return summary, recorder


Load = Callable[..., loader.LoadedJob]


async def test_dependencies_order_steps(load_job: Load, tmp_path: pathlib.Path) -> None:
    loaded = load_job("""
        parallel: 4
        steps:
          last:
            depends: [middle]
            commands: [{inline: "echo last >> order.txt"}]
          middle:
            depends: [first]
            commands: [{inline: "sleep 0.2; echo middle >> order.txt"}]
          first:
            commands: [{inline: "sleep 0.2; echo first >> order.txt"}]
        """)
    summary, _ = await run_job(loaded)
    assert summary.outcome is Outcome.SUCCEEDED
    assert (tmp_path / "order.txt").read_text().split() == ["first", "middle", "last"]


async def test_parallel_bounds_concurrency_and_instances_run_in_parallel(
    load_job: Load, tmp_path: pathlib.Path
) -> None:
    loaded = load_job("""
        parallel: 3
        steps:
          s:
            matrix: {n: [1, 2, 3, 4, 5, 6]}
            commands:
              - inline: |
                  echo "start $(date +%s.%N)" > "out.$PGQ_INSTANCE_N"
                  sleep 0.4
                  echo "end $(date +%s.%N)" >> "out.$PGQ_INSTANCE_N"
        """)
    started = time.monotonic()
    summary, _ = await run_job(loaded)
    elapsed = time.monotonic() - started
    assert summary.succeeded
    spans = []
    for n in range(1, 7):
        start_line, end_line = (tmp_path / f"out.{n}").read_text().split("\n")[:2]
        spans.append((float(start_line.split()[1]), float(end_line.split()[1])))
    max_overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert max_overlap == 3
    assert 0.75 < elapsed < 2.5  # two waves of 0.4 s, not six


async def test_an_instance_stops_at_its_first_failing_command(load_job: Load, tmp_path: pathlib.Path) -> None:
    loaded = load_job("""
        steps:
          s:
            matrix: {n: [ok, bad]}
            commands:
              - inline: 'echo one >> "$PGQ_INSTANCE_N"; [ "$PGQ_INSTANCE_N" = ok ]'
              - inline: 'echo two >> "$PGQ_INSTANCE_N"'
          other:
            commands: [{inline: "touch other-ran"}]
        """)
    summary, recorder = await run_job(loaded)
    assert (tmp_path / "ok").read_text() == "one\ntwo\n"
    assert (tmp_path / "bad").read_text() == "one\n"
    assert (tmp_path / "other-ran").exists()  # a failed step does not stop others
    # As in PgQuartz, step failures alone do not fail the run: checks decide.
    assert summary.outcome is Outcome.SUCCEEDED
    assert summary.failed_steps == ["s"]
    [finished] = [e for e in recorder.of(events.StepFinished) if e.step == "s"]  # type: ignore[attr-defined]
    assert finished.failed_instances == ({"n": "bad"},)  # type: ignore[attr-defined]
    assert finished.rc == 1  # type: ignore[attr-defined]


async def test_rules_gate_steps_and_skipped_steps_count_as_done(
    load_job: Load, tmp_path: pathlib.Path
) -> None:
    loaded = load_job("""
        parallel: 2
        steps:
          step 1:
            commands: [{inline: "exit 3"}]
          step 2:
            commands: [{inline: "echo '{datname}={mydb}'"}]
          on success:
            when: ['eq .Steps["step 1"].Instances.Rc 0']
            commands: [{inline: "touch success-ran"}]
          on failure:
            when:
              - 'ne .Steps["step 1"].Instances.Rc 0'
              - '.Steps["step 2"].Instances.StdOut.Contains "{datname}={mydb}"'
            commands: [{inline: "touch failure-ran"}]
          after skipped:
            depends: [on success]
            commands: [{inline: "touch after-skipped-ran"}]
        """)
    summary, recorder = await run_job(loaded)
    assert not (tmp_path / "success-ran").exists()
    assert (tmp_path / "failure-ran").exists()
    assert (tmp_path / "after-skipped-ran").exists()
    skipped = {e.step for e in recorder.of(events.StepSkipped)}  # type: ignore[attr-defined]
    assert skipped == {"on success"}
    states = {step.name: step.state for step in summary.steps}
    assert states["on success"] is StepState.SKIPPED
    assert states["after skipped"] is StepState.DONE


async def test_rules_wait_for_the_steps_they_read_even_without_depends(
    load_job: Load, tmp_path: pathlib.Path
) -> None:
    # Without automatic dependencies, PgQuartz would evaluate this rule before
    # `slow` ran, read an empty StdOut and wrongly skip the step.
    loaded = load_job("""
        parallel: 4
        steps:
          slow:
            commands: [{inline: "sleep 0.3; echo READY"}]
          gated:
            when: ['.Steps["slow"].Instances.StdOut.Contains "READY"']
            commands: [{inline: "touch gated-ran"}]
        """)
    await run_job(loaded)
    assert (tmp_path / "gated-ran").exists()


async def test_a_rule_that_cannot_be_evaluated_skips_its_step_loudly(load_job: Load) -> None:
    loaded = load_job("""
        steps:
          a: {commands: [{inline: "echo x"}]}
          b:
            when: ['.Steps["a"].StdOut.RegExpContains "("']
            commands: [{inline: "true"}]
        """)
    _, recorder = await run_job(loaded)
    [skipped] = recorder.of(events.StepSkipped)
    assert skipped.rule_error  # type: ignore[attr-defined]
    assert "invalid regular expression" in skipped.reason  # type: ignore[attr-defined]


async def test_checks_run_in_order_after_steps_and_the_first_failure_ends_the_run(
    load_job: Load, tmp_path: pathlib.Path
) -> None:
    loaded = load_job("""
        steps:
          s: {commands: [{inline: "echo done > state"}]}
        checks:
          - name: state written
            inline: 'cat state; echo "check1 $PGQ_INSTANCE_X" >> checks.log'
            expected: done
            matrix: {x: [a, b]}
          - name: exits 1 as expected
            inline: 'echo check2 >> checks.log; exit 1'
            rc: 1
          - name: fails
            inline: 'echo check3 >> checks.log; echo "ERROR: bad"'
            unexpected: "ERROR"
          - name: never runs
            inline: 'echo check4 >> checks.log'
        """)
    summary, recorder = await run_job(loaded)
    assert (tmp_path / "checks.log").read_text().split("\n")[:-1] == [
        "check1 a",
        "check1 b",
        "check2",
        "check3",
    ]
    assert summary.outcome is Outcome.CHECK_FAILED
    assert int(summary.exit_code) == 1
    assert summary.failed_check == "fails: unexpected text 'ERROR' found in output"
    results = [(e.check, e.passed) for e in recorder.of(events.CheckFinished)]  # type: ignore[attr-defined]
    assert results == [
        ("state written", True),
        ("state written", True),
        ("exits 1 as expected", True),
        ("fails", False),
    ]


async def test_timeout_stops_everything_and_leaves_no_process(load_job: Load) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    loaded = load_job(f"""
        parallel: 3
        timeout: 1s
        steps:
          s:
            matrix: {{n: [1, 2, 3]}}
            commands:
              - inline: "(exec -a {marker} sleep 300) & exec -a {marker}-main sleep 301"
        checks:
          - inline: "true"
        """)
    started = time.monotonic()
    summary, recorder = await run_job(loaded)
    assert 0.9 < time.monotonic() - started < 4
    assert summary.outcome is Outcome.TIMED_OUT and int(summary.exit_code) == 1
    assert processes_with_marker(marker) == []
    assert recorder.of(events.CheckFinished) == []


async def test_cancelling_the_run_stops_commands_and_reports(load_job: Load) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    loaded = load_job(f"""
        steps:
          s: {{commands: [{{inline: "exec -a {marker} sleep 300"}}]}}
        """)
    recorder = Recorder()
    shell = ShellExecutor(workdir=loaded.workdir, kill_grace=1.0)
    task = asyncio.ensure_future(
        engine.run(
            loaded,
            dispatcher=Dispatcher(workdir=loaded.workdir, shell=shell),
            emit=recorder,
            cancelled_outcome=lambda: Outcome.TERMINATED,
        )
    )
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with_marker(marker) == []
    [finished] = recorder.of(events.JobFinished)
    assert finished.summary.outcome is Outcome.TERMINATED  # type: ignore[attr-defined]


async def test_the_steps_guard_wraps_steps_but_not_checks(load_job: Load, tmp_path: pathlib.Path) -> None:
    import contextlib
    from collections.abc import AsyncIterator, Mapping

    log: list[str] = []

    @contextlib.asynccontextmanager
    async def guard() -> AsyncIterator[Mapping[str, str]]:
        log.append("enter")
        yield {"PGQ_LOCK_REVISION": "42"}
        log.append(f"exit, state: {(tmp_path / 'step').read_text().strip()}")

    loaded = load_job("""
        steps:
          s: {commands: [{inline: 'echo "rev $PGQ_LOCK_REVISION" > step'}]}
        checks:
          - inline: 'echo checked > check'
        """)
    summary, _ = await run_job(loaded, steps_guard=guard)
    assert summary.succeeded
    assert log == ["enter", "exit, state: rev 42"]
    assert (tmp_path / "check").exists()


async def test_a_guard_that_fails_ends_the_run_with_its_outcome(
    load_job: Load, tmp_path: pathlib.Path
) -> None:
    import contextlib
    from collections.abc import AsyncIterator, Mapping

    @contextlib.asynccontextmanager
    async def guard() -> AsyncIterator[Mapping[str, str]]:
        raise engine.GuardFailed(Outcome.LOCK_NOT_ACQUIRED, "lock held by someone else")
        yield {}

    loaded = load_job("""
        steps:
          s: {commands: [{inline: "touch ran"}]}
        """)
    summary, _ = await run_job(loaded, steps_guard=guard)
    assert summary.outcome is Outcome.LOCK_NOT_ACQUIRED and int(summary.exit_code) == 4
    assert not (tmp_path / "ran").exists()


async def test_command_starts_are_left_out_when_no_reporter_renders_them(load_job: Load) -> None:
    loaded = load_job("""
        steps:
          s: {matrix: {n: [1, 2]}, commands: [{inline: "true"}, {inline: "true"}]}
        checks:
          - {inline: "true", rc: 0}
        """)
    _, announced = await run_job(loaded)
    summary, quiet = await run_job(loaded, announce_commands=False)
    assert summary.outcome is Outcome.SUCCEEDED
    assert len(announced.of(events.CommandStarted)) == 5
    assert quiet.of(events.CommandStarted) == []
    assert len(quiet.of(events.CommandFinished)) == len(announced.of(events.CommandFinished)) == 5
    assert [type(e) for e in quiet.events] == [
        type(e) for e in announced.events if not isinstance(e, events.CommandStarted)
    ]


async def test_many_instances_all_run_once(load_job: Load, tmp_path: pathlib.Path) -> None:
    loaded = load_job("""
        parallel: 8
        steps:
          s:
            matrix: {a: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], b: [0, 1, 2, 3, 4]}
            commands: [{inline: 'echo "$PGQ_INSTANCE_A$PGQ_INSTANCE_B" >> ran.txt'}]
        """)
    summary, _ = await run_job(loaded)
    assert summary.succeeded
    ran = sorted((tmp_path / "ran.txt").read_text().split())
    assert ran == sorted(f"{a}{b}" for a in range(10) for b in range(5))


async def test_summary_json_fits_a_termination_message(load_job: Load) -> None:
    import json

    steps = "\n".join(f"  step-{i:03d}-{'x' * 40}: {{commands: [{{inline: 'exit 1'}}]}}" for i in range(150))
    loaded = load_job("parallel: 8\nsteps:\n" + steps + "\n")
    summary, _ = await run_job(loaded)
    assert len(summary.failed_steps) == 150
    text = summary.to_json(max_bytes=4096)
    assert len(text.encode()) <= 4096
    data = json.loads(text)
    assert data["exitCode"] == 0 and data["failedStepsTotal"] == 150


async def test_a_shell_command_is_retried_on_a_listed_exit_code_only(
    load_job: Load, tmp_path: pathlib.Path
) -> None:
    loaded = load_job("""
        steps:
          flaky:
            commands:
              - name: third time lucky
                inline: 'n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; [ "$n" -ge 2 ] || exit 75'
                retry: {exitCodes: [75], attempts: 5, backoff: 10ms}
          broken:
            commands:
              - inline: 'echo x >> broken; exit 3'
                retry: {exitCodes: [75], attempts: 5, backoff: 10ms}
        """)
    summary, recorder = await run_job(loaded)
    assert (tmp_path / "n").read_text() == "3\n"  # failed twice with 75, then succeeded
    assert (tmp_path / "broken").read_text() == "x\n"  # exit 3 is not listed: run once
    retried = recorder.of(events.CommandRetried)
    assert [(e.step, e.attempt, e.attempts) for e in retried] == [("flaky", 1, 5), ("flaky", 2, 5)]  # type: ignore[attr-defined]
    steps = {step.name: step for step in summary.steps}
    assert steps["flaky"].retries == (("third time lucky", 2),)
    assert steps["flaky"].failed_instances == 0 and steps["broken"].failed_instances == 1
    assert summary.retries == 2 and summary.to_dict()["retries"] == 2


async def test_attempts_are_bounded_by_the_jobs_timeout(load_job: Load, tmp_path: pathlib.Path) -> None:
    loaded = load_job("""
        timeout: 1s
        steps:
          s:
            commands:
              - {inline: 'echo x >> tries; exit 75', retry: {exitCodes: [75], attempts: 100, backoff: 200ms}}
        """)
    started = time.monotonic()
    summary, _ = await run_job(loaded)
    assert summary.outcome is Outcome.TIMED_OUT and time.monotonic() - started < 3
    assert 1 < len((tmp_path / "tries").read_text().split()) < 10


async def test_a_closed_step_gate_fails_the_step_with_fail_and_the_rest_goes_on(
    load_job: Load, tmp_path: pathlib.Path
) -> None:
    loaded = load_job("""
        steps:
          gated:
            matrix: {i: [a, b]}
            gates:
              onTimeout: fail
              wait: 300ms
              interval: 100ms
              require:
                - {name: flag file, inline: 'test -f flag'}
            commands: [{inline: touch ran-$PGQ_INSTANCE_I}]
          after:
            depends: [gated]
            commands: [{inline: touch after}]
        """)
    summary, recorder = await run_job(loaded)
    assert summary.outcome is Outcome.SUCCEEDED  # a failed step does not fail the run: checks decide
    steps = {step.name: step for step in summary.steps}
    assert steps["gated"].failed_instances == 2 and steps["gated"].state is StepState.DONE
    assert not (tmp_path / "ran-a").exists() and not (tmp_path / "ran-b").exists()
    assert (tmp_path / "after").exists()
    [closed] = recorder.of(events.GatesClosed)
    assert closed.step == "gated" and closed.reasons[0].startswith("flag file: ")  # type: ignore[attr-defined]


async def test_job_gates_that_stay_closed_end_the_run_as_gated_before_steps_and_checks(
    load_job: Load, tmp_path: pathlib.Path
) -> None:
    loaded = load_job("""
        gates:
          require:
            - {inline: 'echo closed', expected: open}
        steps:
          s: {commands: [{inline: touch ran}]}
        checks:
          - inline: touch checked
        """)
    summary, _ = await run_job(loaded)
    assert summary.outcome is Outcome.GATED and int(summary.exit_code) == 0
    assert not (tmp_path / "ran").exists() and not (tmp_path / "checked").exists()
    [reason] = summary.to_dict()["gated"]
    assert "open" in reason and summary.message.startswith("gated: ")
