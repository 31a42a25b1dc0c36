"""The ``pgquartz`` command, run as a user runs it: flags, subcommands, exit codes, outputs, signals."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

import pytest

from pgquartz.runner import __version__
from tests.conftest import PGQUARTZ, processes_with_marker, run_pgquartz

Write = Callable[..., pathlib.Path]

OK_JOB = """
    steps:
      hello:
        matrix: {who: [world, moon]}
        commands: [{inline: 'echo "hello $PGQ_INSTANCE_WHO"'}]
    checks:
      - inline: "true"
    """


def test_version_flag(tmp_path: pathlib.Path) -> None:
    result = run_pgquartz("-v", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"pgquartz {__version__}"


def test_pgquartz_style_run_succeeds(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job(OK_JOB)
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "job job SUCCEEDED" in result.stdout
    assert "'hello' [who=moon]" in result.stdout
    assert result.stderr == ""


def test_pgquartz_config_environment_variable(write_job: Write, tmp_path: pathlib.Path) -> None:
    path = write_job(OK_JOB, name="from-env.yml")
    result = run_pgquartz(cwd=tmp_path, env={"PGQUARTZ_CONFIG": str(path)})
    assert result.returncode == 0 and "job from-env SUCCEEDED" in result.stdout


def test_run_subcommand(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job(OK_JOB)
    assert run_pgquartz("run", "job.yml", cwd=tmp_path).returncode == 0


def test_invalid_job_exits_2_listing_all_problems_and_runs_nothing(
    write_job: Write, tmp_path: pathlib.Path
) -> None:
    write_job("""
        steps:
          a:
            commands: [{inline: "touch ran"}]
            depends: [b]
          c:
            comands: []
        """)
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert "2 problems" in result.stderr
    assert "job.yml:6:5:" in result.stderr and "did you mean 'commands'?" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_missing_job_file_exits_2(tmp_path: pathlib.Path) -> None:
    result = run_pgquartz("-c", "nope.yml", cwd=tmp_path)
    assert result.returncode == 2 and "job file not found" in result.stderr


def test_failed_check_exits_1_with_the_reason_on_stderr(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job("""
        steps:
          s: {commands: [{inline: "echo output-line; echo oops >&2; exit 4"}]}
        checks:
          - name: must say ok
            inline: "echo nope"
            expected: ok
        """)
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 1
    assert "✗ check 'must say ok' failed: expected text 'ok' not found" in result.stderr
    assert "failed (exit 4)" in result.stderr and "│ oops" in result.stderr  # the failing command's tail
    assert "FAILED" in result.stderr


def test_timeout_exits_1(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job("""
        timeout: 500ms
        steps:
          s: {commands: [{inline: "sleep 30"}]}
        """)
    started = time.monotonic()
    result = run_pgquartz("-c", "job.yml", cwd=tmp_path)
    assert result.returncode == 1 and time.monotonic() - started < 10
    assert "timeout of 0:00:00.500000 expired" in result.stderr or "timeout" in result.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_stop_every_command_and_exit_with_the_signals_code(
    write_job: Write, tmp_path: pathlib.Path, sig: signal.Signals, code: int
) -> None:
    marker = f"pgq-test-{uuid.uuid4().hex}"
    write_job(f"""
        parallel: 2
        steps:
          a: {{commands: [{{inline: "(exec -a {marker} sleep 300) & exec -a {marker} sleep 301"}}]}}
          b: {{commands: [{{inline: "trap '' TERM; exec -a {marker} sleep 302"}}]}}
        """)
    process = subprocess.Popen(
        [*PGQUARTZ, "-c", "job.yml", "--kill-grace", "1", "--summary-file", "summary.json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    deadline = time.monotonic() + 10
    while len(processes_with_marker(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(processes_with_marker(marker)) == 3
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == code
    assert processes_with_marker(marker) == []
    assert "stopped by a signal" in stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exitCode"] == code


def test_json_log_format_prints_one_object_per_event(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job(OK_JOB)
    result = run_pgquartz("-c", "job.yml", "--log-format", "json", cwd=tmp_path)
    assert result.returncode == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [record["event"] for record in records]
    assert kinds[0] == "job_started" and kinds[-1] == "job_finished"
    assert kinds.count("command_finished") == 3
    assert kinds.count("command_started") == 3  # machines get every event, people only the lines
    assert records[-1]["summary"]["result"] == "succeeded"


def test_the_command_exits_at_once_without_losing_buffered_output(
    write_job: Write, tmp_path: pathlib.Path
) -> None:
    """It skips the interpreter's teardown: what it printed to files (block-buffered) all arrives."""
    write_job(
        "steps:\n  s:\n    matrix: {n: [" + ", ".join(map(str, range(300))) + "]}\n"
        "    commands: [{inline: 'true'}]\n"
    )
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    with (tmp_path / "events.jsonl").open("w") as out, (tmp_path / "schema.json").open("w") as schema:
        job = [*PGQUARTZ, "-c", "job.yml", "--log-format", "json"]
        ran = subprocess.run(job, cwd=tmp_path, stdout=out, env=buffered, check=False)
        printed = subprocess.run(
            [*PGQUARTZ, "schema"], cwd=tmp_path, stdout=schema, env=buffered, check=False
        )
    assert (ran.returncode, printed.returncode) == (0, 0)
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [record["event"] for record in records].count("command_finished") == 300
    assert records[-1]["event"] == "job_finished"
    text = (tmp_path / "schema.json").read_text()
    assert json.loads(text)["title"] == "PgQuartz job" and text.endswith("}\n")  # to the last byte
    invalid = run_pgquartz("-c", "missing.yml", cwd=tmp_path)
    assert invalid.returncode == 2 and invalid.stderr  # main's code, and its message


def test_summary_file_is_short_json(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job("""
        steps:
          good: {commands: [{inline: "true"}]}
          bad: {commands: [{inline: "false"}]}
        checks:
          - inline: "exit 2"
            name: the check
        """)
    result = run_pgquartz("-c", "job.yml", "--summary-file", "out.json", cwd=tmp_path)
    assert result.returncode == 1
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["result"] == "check-failed" and summary["exitCode"] == 1
    assert summary["failedSteps"] == ["bad"]
    assert summary["failedCheck"] == "the check: exit code 2, expected 0"
    assert {step["name"] for step in summary["steps"]} == {"good", "bad"}


def test_log_file_directory_gets_a_dated_file_per_job(write_job: Write, tmp_path: pathlib.Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write_job(
        f"""
        logFile: {logs}
        steps:
          s: {{commands: [{{inline: "exit 5"}}]}}
        """,
        name="nightly.yml",
    )
    run_pgquartz("-c", "nightly.yml", cwd=tmp_path)
    run_pgquartz("-c", "nightly.yml", cwd=tmp_path)
    today = datetime.date.today().isoformat()
    content = (logs / f"{today}_nightly.log").read_text()
    assert content.count("▶ job nightly") == 2  # appended, not overwritten
    assert "ERROR" in content and "failed (exit 5)" in content


def test_debug_shows_command_output(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job("""
        steps:
          s: {commands: [{inline: "echo debug-$((40 + 2))"}]}
        """)
    assert "debug-42" not in run_pgquartz("-c", "job.yml", cwd=tmp_path).stdout
    assert "│ debug-42" in run_pgquartz("-c", "job.yml", "-d", cwd=tmp_path).stdout


def test_validate_reports_ok_or_problems(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job(OK_JOB)
    ok = run_pgquartz("validate", "job.yml", cwd=tmp_path)
    assert ok.returncode == 0 and "valid: job 'job', 1 steps, 2 instances, 1 checks" in ok.stdout
    write_job("steps: {a: {commands: [{inline: x}], when: ['eq .Steps[\"zz\"].Rc 0']}}\n", name="bad.yml")
    bad = run_pgquartz("validate", "-c", "bad.yml", cwd=tmp_path)
    assert bad.returncode == 2 and "rule reads unknown step 'zz'" in bad.stderr


def test_plan_shows_order_instances_and_gates_without_running(
    write_job: Write, tmp_path: pathlib.Path
) -> None:
    write_job("""
        steps:
          load:
            matrix: {db: [a, b]}
            commands: [{inline: "touch ran"}]
          report:
            when: ['eq .Steps["load"].Instances.Rc 0']
            commands: [{inline: "touch ran"}]
        """)
    result = run_pgquartz("plan", "job.yml", cwd=tmp_path)
    assert result.returncode == 0
    assert "after (read by its rules, added automatically): 'load'" in result.stdout
    assert 'runs only if [go-template]: eq .Steps["load"].Instances.Rc 0' in result.stdout
    assert "instance db=b" in result.stdout
    assert not (tmp_path / "ran").exists()
    data = json.loads(run_pgquartz("plan", "job.yml", "--json", cwd=tmp_path).stdout)
    assert data["order"] == ["load", "report"]
    assert data["steps"][1]["impliedDepends"] == ["load"]


def test_schema_is_json_schema_of_job_files(tmp_path: pathlib.Path) -> None:
    result = run_pgquartz("schema", cwd=tmp_path)
    schema = json.loads(result.stdout)
    assert result.returncode == 0 and "steps" in schema["required"]


def test_max_output_bounds_what_is_kept(write_job: Write, tmp_path: pathlib.Path) -> None:
    write_job("""
        steps:
          s: {commands: [{inline: "seq 1 100000; exit 1"}]}
        """)
    result = run_pgquartz("-c", "job.yml", "--max-output", "1k", "--log-format", "json", cwd=tmp_path)
    finished = next(
        json.loads(line)
        for line in result.stdout.splitlines()
        if json.loads(line)["event"] == "command_finished"
    )
    assert finished["result"]["stdout_bytes"] == len("\n".join(str(i) for i in range(1, 100001))) + 1
    assert finished["stdout"].endswith("100000")
    bad = run_pgquartz("-c", "job.yml", "--max-output", "lots", cwd=tmp_path)
    assert bad.returncode == 2 and "not a size" in bad.stderr


def test_bad_command_line_exits_2(tmp_path: pathlib.Path) -> None:
    assert run_pgquartz("--no-such-flag", cwd=tmp_path).returncode == 2
