from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pgquartz.runner.model import Job
from pgquartz.runner.plan import graph


def job_with(steps: dict[str, dict[str, Any]]) -> Job:
    return Job.from_data(
        {"steps": {name: {"commands": [{"inline": "true"}], **spec} for name, spec in steps.items()}}
    )


def test_steps_read_by_rules_become_dependencies() -> None:
    plan, problems = graph.build(
        job_with(
            {
                "step 1": {},
                "step 2": {},
                "step 3": {"depends": ["step 1"], "when": ['.Steps["step 2"].Instances.StdOut.Contains "x"']},
            }
        )
    )
    assert not problems and plan is not None
    assert plan.steps["step 3"].depends == ("step 1",)
    assert plan.steps["step 3"].implied == ("step 2",)
    assert plan.order.index("step 3") > plan.order.index("step 2")


def test_jinja_rules_also_add_dependencies() -> None:
    plan, _ = graph.build(job_with({"a": {}, "b": {"when": ['steps["a"].rc == 0 and steps.a.stdout']}}))
    assert plan is not None and plan.steps["b"].implied == ("a",)


def test_order_follows_file_order_between_independent_steps() -> None:
    plan, _ = graph.build(job_with({"c": {}, "a": {"depends": ["b"]}, "b": {}}))
    assert plan is not None and plan.order == ("c", "b", "a")


def test_cycles_through_rules_are_found() -> None:
    _, problems = graph.build(job_with({"a": {"when": ['eq .Steps["b"].Rc 0']}, "b": {"depends": ["a"]}}))
    assert [p.message for p in problems] == ["dependency cycle: 'a' → 'b' → 'a'"]


def test_self_reference_and_unknown_steps() -> None:
    _, problems = graph.build(
        job_with({"a": {"depends": ["a", "bb"], "when": ['eq .Steps["a"].Rc 0']}, "b": {}})
    )
    messages = [p.message for p in problems]
    assert "step 'a' cannot depend on itself" in messages
    assert "unknown step 'bb' (did you mean 'b'?)" in messages
    assert "a rule of step 'a' cannot read its own results" in messages


def test_dependants_lists_who_waits_for_whom() -> None:
    plan, _ = graph.build(job_with({"a": {}, "b": {"depends": ["a"]}, "c": {"when": ['steps["a"].rc']}}))
    assert plan is not None and plan.dependants() == {"a": ("b", "c"), "b": (), "c": ()}


@st.composite
def dags(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=8))
    names = [f"s{i}" for i in range(count)]
    steps: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(names):
        earlier = names[:index]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        steps[name] = {"depends": deps}
    order = draw(st.permutations(names))
    return {name: steps[name] for name in order}


@settings(max_examples=60)
@given(dags())
def test_any_acyclic_graph_gets_a_valid_topological_order(steps: dict[str, dict[str, Any]]) -> None:
    plan, problems = graph.build(job_with(steps))
    assert not problems and plan is not None
    assert sorted(plan.order) == sorted(steps)
    position = {name: index for index, name in enumerate(plan.order)}
    for name, spec in steps.items():
        assert all(position[dep] < position[name] for dep in spec["depends"])
