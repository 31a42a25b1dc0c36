import math

from hypothesis import given
from hypothesis import strategies as st

from pgquartz.runner.plan import matrix


def test_manual_example_expands_in_stable_cartesian_order() -> None:
    instances = matrix.expand({"arg1": ["1", "2"], "arg2": ["A", "B"]})
    assert instances == [
        {"arg1": "1", "arg2": "A"},
        {"arg1": "1", "arg2": "B"},
        {"arg1": "2", "arg2": "A"},
        {"arg1": "2", "arg2": "B"},
    ]


def test_no_matrix_is_one_instance_without_arguments() -> None:
    assert matrix.expand({}) == [{}]


def test_arguments_become_pgq_instance_variables() -> None:
    assert matrix.environment({"arg1": "1", "tbl_Name": "x"}) == {
        "PGQ_INSTANCE_ARG1": "1",
        "PGQ_INSTANCE_TBL_NAME": "x",
    }


names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
matrices = st.dictionaries(names, st.lists(st.text(max_size=3), min_size=1, max_size=4), max_size=4)


@given(matrices)
def test_expansion_is_the_full_product_without_duplicates(spec: dict[str, list[str]]) -> None:
    instances = matrix.expand(spec)
    assert len(instances) == math.prod(len(values) for values in spec.values()) == matrix.count(spec)
    for instance in instances:
        assert list(instance) == list(spec)
        assert all(instance[name] in spec[name] for name in spec)
    unique_spec = {name: list(dict.fromkeys(values)) for name, values in spec.items()}
    assert len({tuple(i.items()) for i in matrix.expand(unique_spec)}) == matrix.count(unique_spec)


@given(matrices)
def test_expansion_is_deterministic(spec: dict[str, list[str]]) -> None:
    assert matrix.expand(spec) == matrix.expand(spec)
