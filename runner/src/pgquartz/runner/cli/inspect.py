"""``pgquartz validate`` and ``pgquartz plan``: look at a job without running anything."""

from __future__ import annotations

import json
import sys
from typing import Any

from pgquartz.runner import loader
from pgquartz.runner.model import durations
from pgquartz.runner.model.exitcodes import ExitCode
from pgquartz.runner.model.gates import Gates
from pgquartz.runner.model.job import Command, Job
from pgquartz.runner.model.problems import JobFileError
from pgquartz.runner.model.retry import Retry
from pgquartz.runner.plan import matrix
from pgquartz.runner.plan.graph import Plan

SHOWN_INSTANCES = 8


def load_or_report(path: str) -> loader.LoadedJob | None:
    try:
        return loader.load(path)
    except JobFileError as error:
        report_problems(error)
        return None


def report_problems(error: JobFileError) -> None:
    count = len(error.problems)
    print(f"pgquartz: the job file is invalid ({count} problem{'s' if count != 1 else ''}):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def validate(path: str) -> int:
    loaded = load_or_report(path)
    if loaded is None:
        return ExitCode.INVALID_JOB
    plan = loaded.plan
    checks = sum(len(check.instances) for check in plan.checks)
    print(
        f"{path}: valid: job {loaded.name!r}, {len(plan.steps)} steps, {plan.instance_count} instances,"
        f" {checks} checks"
    )
    return ExitCode.SUCCESS


def plan(path: str, *, as_json: bool) -> int:
    loaded = load_or_report(path)
    if loaded is None:
        return ExitCode.INVALID_JOB
    if as_json:
        print(json.dumps(plan_data(loaded.name, loaded.plan), indent=2))
    else:
        print("\n".join(describe(loaded.name, loaded.plan)))
    return ExitCode.SUCCESS


def _budget_data(job: Job) -> dict[str, Any] | None:
    budget = job.etcd_config.budget if job.etcd_config is not None else None
    if budget is None:
        return None
    return {"slots": budget.slots, "key": budget.key, "clusterOf": job.budget_connection()}


def plan_data(name: str, plan: Plan) -> dict[str, Any]:
    job = plan.job
    return {
        "job": name,
        "parallel": job.parallel,
        "timeout": job.timeout.total_seconds() if job.timeout else None,
        "lock": None
        if job.etcd_config is None
        else {
            "key": job.etcd_config.lock_key or name,
            "endpoints": job.etcd_config.endpoints,
            "ttl": job.etcd_config.lock_timeout.total_seconds(),
            "budget": _budget_data(job),
        },
        "connections": {
            name: {
                "role": connection.role.value,
                "onFailover": connection.failover_policy.value,
                "retry": _retry_data(connection.retry),
                "conn_params": {
                    key: "***" if "password" in key.lower() else value
                    for key, value in connection.conn_params.items()
                },
            }
            for name, connection in job.connections.items()
        },
        "gates": _gates_data(job, job.gates),
        "order": list(plan.order),
        "steps": [
            {
                "name": step.name,
                "depends": list(step.depends),
                "impliedDepends": list(step.implied),
                "when": [
                    {"rule": rule.source, "syntax": rule.syntax.value, "reads": sorted(rule.reads)}
                    for rule in step.rules
                ],
                "gates": _gates_data(job, step.step.gates),
                "instances": [dict(args) for args in step.instances],
                "commands": [
                    {"name": c.label, "type": c.type, "retry": _retry_data(job.retry_of(c))}
                    for c in step.step.commands
                ],
            }
            for step in (plan.steps[name] for name in plan.order)
        ],
        "checks": [
            {
                "name": check.check.label,
                "type": check.check.type,
                "rc": check.check.rc,
                "retry": _retry_data(job.retry_of(check.check)),
                "instances": [dict(args) for args in check.instances],
            }
            for check in plan.checks
        ],
    }


def _retry_data(retry: Retry | None) -> dict[str, Any] | None:
    if retry is None:
        return None
    return {
        "on": list(retry.on),
        "exitCodes": list(retry.exit_codes),
        "attempts": retry.attempts,
        "backoff": retry.backoff.total_seconds(),
        "maxBackoff": retry.max_backoff.total_seconds(),
    }


def _gates_data(job: Job, gates: Gates | None) -> dict[str, Any] | None:
    if gates is None:
        return None
    return {
        "wait": gates.wait.total_seconds(),
        "interval": gates.interval.total_seconds(),
        "onTimeout": gates.on_timeout.value,
        "require": [
            {
                "gate": gate.kind,
                "label": gate.label,
                "connection": job.gate_connection(gate) if gate.kind != "custom" else gate.type or "shell",
            }
            for gate in gates.require
        ],
    }


def _retry_text(retry: Retry | None) -> str:
    if retry is None:
        return ""
    errors = ", ".join(retry.on) if retry.on else "exit codes " + ", ".join(str(c) for c in retry.exit_codes)
    return (
        f"; retried on {errors} ({retry.attempts} attempts, waiting from"
        f" {durations.format(retry.backoff)} up to {durations.format(retry.max_backoff)})"
    )


def _gate_lines(job: Job, gates: Gates, indent: str, title: str = "gates") -> list[str]:
    wait = (
        f"waiting up to {durations.format(gates.wait)}, every {durations.format(gates.interval)}"
        if gates.wait.total_seconds()
        else "evaluated once"
    )
    then = "skip" if gates.on_timeout.value == "skip" else "fail"
    lines = [f"{indent}{title} ({wait}; if still closed: {then}):"]
    for gate in gates.require:
        where = job.gate_connection(gate) if gate.kind != "custom" else gate.type or "shell"
        lines.append(f"{indent}  - {gate.label} (on {where!r})")
    return lines


def _command_line(job: Job, command: Command) -> str:
    return f"      - {command.label!r} ({command.type}){_retry_text(job.retry_of(command))}"


def describe(name: str, plan: Plan) -> list[str]:
    job = plan.job
    timeout = f", timeout {job.timeout}" if job.timeout else ", no timeout"
    lines = [f"job {name}: parallel {job.parallel}{timeout}"]
    if job.etcd_config is not None:
        lines.append(
            f"lock: etcd key {job.etcd_config.lock_key or name!r} on"
            f" {', '.join(job.etcd_config.endpoints)} (TTL {job.etcd_config.lock_timeout})"
        )
        budget = job.etcd_config.budget
        if budget is not None:
            keyed = (
                f"key {budget.key!r}"
                if budget.key is not None
                else f"keyed by the database cluster of connection {job.budget_connection()!r}"
            )
            lines.append(f"budget: {budget.slots} at once, {keyed}; a slot is taken once the lock is held")
    for connection_name, connection in job.connections.items():
        lines.append(
            f"connection {connection_name!r}: role {connection.role.value}, on failover:"
            f" {connection.failover_policy.value}{_retry_text(connection.retry)}"
        )
    if job.gates is not None:
        held = ", once the lock is held," if job.etcd_config is not None else ""
        lines += _gate_lines(job, job.gates, "", f"gates{held} before the first step")
    lines.append("")
    lines.append("steps (in the order they can start):")
    for step_name in plan.order:
        step = plan.steps[step_name]
        count = len(step.instances)
        lines.append(
            f"  {step_name!r}: {count} instance{'s' if count != 1 else ''},"
            f" {len(step.step.commands)} command{'s' if len(step.step.commands) != 1 else ''}"
        )
        if step.depends:
            lines.append(f"      after: {', '.join(repr(d) for d in step.depends)}")
        if step.implied:
            lines.append(
                f"      after (read by its rules, added automatically):"
                f" {', '.join(repr(d) for d in step.implied)}"
            )
        for rule in step.rules:
            lines.append(f"      runs only if [{rule.syntax.value}]: {rule.source}")
        if step.step.gates is not None:
            lines += _gate_lines(job, step.step.gates, "      ")
        for args in step.instances[:SHOWN_INSTANCES]:
            if args:
                lines.append(f"      instance {matrix.label(args)}")
        if count > SHOWN_INSTANCES and step.instances[0]:
            lines.append(f"      … and {count - SHOWN_INSTANCES} more instances")
        for command in step.step.commands:
            lines.append(_command_line(job, command))
    if plan.checks:
        lines.append("")
        lines.append("checks (after the steps, one at a time):")
        for check in plan.checks:
            expect = [f"rc {check.check.rc}"]
            if check.check.expected is not None:
                expect.append(f"expects {check.check.expected!r}")
            if check.check.unexpected is not None:
                expect.append(f"refuses {check.check.unexpected!r}")
            many = f" × {len(check.instances)}" if len(check.instances) > 1 else ""
            lines.append(
                f"  {check.check.label!r} ({check.check.type}){many}: {', '.join(expect)}"
                f"{_retry_text(job.retry_of(check.check))}"
            )
    return lines
