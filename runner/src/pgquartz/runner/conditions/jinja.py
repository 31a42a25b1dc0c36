"""Jinja2 ``when`` rules: pgquartz's native rule syntax, evaluated in Jinja2's sandbox.

A rule is one Jinja2 expression over ``steps``, e.g.
``steps["step 1"].rc == 0 and "{datname}={mydb}" in steps["step 2"].stdout``.
Each step offers ``rc``, ``stdout``, ``stderr`` (text with ``contains``,
``contains_line`` and ``matches``), ``state``, ``skipped``, ``failed`` and
``instances``. The sandbox refuses private attributes and anything that could
execute code; an unknown name is an error, never silently empty.

A rule costs little, whoever writes it: the operator compiles every rule of
every tenant's PgQuartzJob, and a rule like ``"x" * 800000000 == …`` or
``rc == 99999999 ** 99999999`` must not exhaust its memory or hold its GIL.
So rules are compiled without Jinja2's constant folding (which would evaluate
such expressions while compiling), are at most 4096
characters and 32 brackets deep (``limits``), arithmetic is on numbers only
(plus joining two strings) with integers of at most :data:`MAX_INT_BITS` bits,
and only a short list of filters and string methods that never build more than
they are given is reachable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pgquartz.runner.conditions import limits
from pgquartz.runner.conditions.gotemplate import RuleSyntaxError
from pgquartz.runner.conditions.views import RuleError, Snapshot, step_views

MAX_INT_BITS = 4096
MAX_TEXT = 64 * 1024
"""The longest string a rule may build by joining two with ``+``."""

SAFE_FILTERS = (
    "abs", "count", "default", "first", "float", "int", "last", "length", "list", "lower", "max", "min",
    "reject", "rejectattr", "reverse", "round", "select", "selectattr", "sort", "sum", "trim", "unique",
    "upper", "map",
)  # fmt: skip
"""Filters whose result is never larger than their input (``center``, ``join``, ``string``,
``format``, ``indent``, ``wordwrap`` … are not)."""

SAFE_STRING_METHODS = frozenset(
    {"startswith", "endswith", "lower", "upper", "strip", "lstrip", "rstrip", "count", "find", "isdigit"}
)
SAFE_VIEW_ATTRIBUTES = frozenset(
    {"state", "rc", "stdout", "stderr", "skipped", "failed", "instances", "args", "text", "lines",
     "contains", "contains_line", "matches", "get", "keys", "values", "items"}
)  # fmt: skip


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with every way to build a large value closed or bounded."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"-", "+"})

    def __init__(self) -> None:
        # optimized=False: Jinja2's optimizer folds constant expressions, i.e. evaluates them while
        # compiling, outside every check below.
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, optimized=False)
        self.filters = {name: self.filters[name] for name in SAFE_FILTERS}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > MAX_TEXT:
                raise RuleError(f"a rule may not build text longer than {MAX_TEXT} characters")
            return left + right
        for operand in (left, right):
            if not isinstance(operand, int | float):
                raise RuleError(f"{operator!r} works on numbers in rules, not on {type(operand).__name__}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and _too_big(left, right):
            raise RuleError(f"a rule's numbers are limited to {MAX_INT_BITS} bits")
        result = super().call_binop(context, operator, left, right)
        _check_number(result)
        return result

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        if not isinstance(arg, int | float):
            raise RuleError(f"{operator!r} works on numbers in rules, not on {type(arg).__name__}")
        return super().call_unop(context, operator, arg)

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format and format_map are not among the allowed methods at all

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str):
            return attr in SAFE_STRING_METHODS
        return attr in SAFE_VIEW_ATTRIBUTES and super().is_safe_attribute(obj, attr, value)


def _too_big(base: int, exponent: int) -> bool:
    """Whether ``base ** exponent`` has more than MAX_INT_BITS bits (known before computing it)."""
    return exponent > MAX_INT_BITS or abs(base).bit_length() * max(exponent, 0) > MAX_INT_BITS + exponent


def _check_number(value: Any) -> None:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise RuleError(f"a rule's numbers are limited to {MAX_INT_BITS} bits")


_ENVIRONMENT = BoundedEnvironment()


@dataclasses.dataclass(frozen=True)
class Expression:
    source: str
    compiled: Any
    reads: frozenset[str]


def parse(rule: str) -> Expression:
    """Compile a Jinja2 rule; raise :class:`RuleSyntaxError` with the parser's message."""
    too_complex = limits.problem(rule)
    if too_complex is not None:
        raise RuleSyntaxError(too_complex)
    try:
        tree = _ENVIRONMENT.parse("{{ (" + rule + ") }}")
        reads = _steps_read(tree)
        _check_constant_operands(tree)
        compiled = _ENVIRONMENT.compile_expression(rule, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as error:
        raise RuleSyntaxError(f"not a valid expression: {error.message}") from None
    except (RecursionError, MemoryError, SyntaxError):
        raise RuleSyntaxError("the rule is too complex to compile") from None
    return Expression(rule, compiled, reads)


_ARITHMETIC = (nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow)


def _check_constant_operands(tree: nodes.Template) -> None:
    """Refuse at load time what would fail at run time anyway: arithmetic on literal text or lists
    (``"x" * 800000000``), and powers of literals beyond the integer limit."""
    for node in tree.find_all(_ARITHMETIC):
        assert isinstance(node, nodes.BinExpr)
        operands = [side.value for side in (node.left, node.right) if isinstance(side, nodes.Const)]
        texts = [value for value in operands if isinstance(value, str)]
        if isinstance(node, nodes.Add) and len(texts) == 2:
            continue
        if any(not isinstance(value, int | float) for value in operands) or any(
            isinstance(side, nodes.List | nodes.Tuple | nodes.Dict) for side in (node.left, node.right)
        ):
            raise RuleSyntaxError(f"{node.operator!r} works on numbers in rules")
        if isinstance(node, nodes.Pow) and len(operands) == 2:
            base, exponent = operands
            if isinstance(base, int) and isinstance(exponent, int) and _too_big(base, exponent):
                raise RuleSyntaxError(f"a rule's numbers are limited to {MAX_INT_BITS} bits")


def _steps_read(tree: nodes.Template) -> frozenset[str]:
    names: set[str] = set()
    allowed: set[int] = set()
    for node in tree.find_all((nodes.Getitem, nodes.Getattr)):
        assert isinstance(node, nodes.Getitem | nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                if not isinstance(node.arg.value, str):
                    raise RuleSyntaxError("a step name in a rule must be a quoted string")
                names.add(node.arg.value)
            elif isinstance(node, nodes.Getattr):
                names.add(node.attr)
            else:
                raise RuleSyntaxError('a step name in a rule must be a quoted string, as in steps["step 1"]')
            allowed.add(id(node.node))
    for name in tree.find_all(nodes.Name):
        if name.name != "steps":
            raise RuleSyntaxError(f'unknown name {name.name!r} (rules read steps["name"])')
        if id(name) not in allowed:
            raise RuleSyntaxError('steps must be followed by a step name, as in steps["step 1"]')
    return frozenset(names)


def holds(expression: Expression, snapshot: Snapshot) -> bool:
    try:
        value = expression.compiled(steps=step_views(snapshot))
    except RuleError:
        raise
    except jinja2.UndefinedError as error:
        raise RuleError(str(error)) from None
    except Exception as error:  # a sandbox refusal, a type error, …: the rule is wrong, not the run
        raise RuleError(f"{type(error).__name__}: {error}") from None
    return bool(value)
