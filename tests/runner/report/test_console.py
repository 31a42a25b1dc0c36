from pgquartz.runner.engine import events
from pgquartz.runner.model.results import Captured, CommandResult, CommandState
from pgquartz.runner.report import console


def test_failures_go_to_stderr_with_the_tail_of_their_output() -> None:
    stderr = "".join(f"line {i}\n" for i in range(30))
    result = CommandResult(
        name="c", state=CommandState.FAILED, rc=2, stderr=Captured(text=stderr, total_bytes=len(stderr))
    )
    lines = console.render(
        events.CommandFinished(step="vacuum", instance={"db": "app"}, command="vacuum full", result=result)
    )
    assert lines[0][0] == "err" and "'vacuum' [db=app]: 'vacuum full' failed (exit 2)" in lines[0][1]
    shown = [text for _, text in lines]
    assert "        │ line 29" in shown and "        │ line 19" not in shown
    assert "        ┌ stderr, last 10 lines" in shown


def test_progress_goes_to_stdout() -> None:
    [(stream, text)] = console.render(events.StepStarted(step="s", instances=4))
    assert stream == "out" and "step 's' started (4 instances)" in text
