"""Whether a check passed: its exit code and its ``expected``/``unexpected`` text.

PgQuartz's Go version lets a check with ``rc: 1`` pass when the command exits 0
(it only compares when the command failed); the manual says the exit code is
compared, and so it is here, exactly.
"""

from __future__ import annotations

from pgquartz.runner.model.job import Check
from pgquartz.runner.model.results import CommandResult, CommandState


def failure(check: Check, result: CommandResult) -> str | None:
    """Why the check failed, or None when it passed."""
    if result.state is CommandState.SKIPPED:
        return None
    if result.state is CommandState.CANCELLED:
        return result.error or "cancelled"
    if result.error and result.rc == 0:
        return result.error
    if result.rc != check.rc:
        reason = f"exit code {result.rc}, expected {check.rc}"
        return f"{reason} ({result.error})" if result.error else reason
    outputs = (result.stdout.text, result.stderr.text)
    if check.expected is not None and not any(check.expected in output for output in outputs):
        return f"expected text {check.expected!r} not found in stdout or stderr"
    if check.unexpected is not None and any(check.unexpected in output for output in outputs):
        return f"unexpected text {check.unexpected!r} found in output"
    return None
