"""PgQuartz's ``when`` rules: a safe interpreter for the Go ``text/template`` subset they use.

PgQuartz evaluates a rule with Go's ``text/template``: a rule without ``{{``
is wrapped as ``{{if RULE}}True{{end}}``, and the rule holds when the template
renders ``True``. Existing job files use these forms, and all of them work here:

- ``eq .Steps["step 1"].Instances.Rc 0`` (PgQuartz's documented, bracketed form,
  which Go itself cannot parse), ``.Steps.["x"]`` (a typo in PgQuartz's manual),
- ``eq (index .Steps "step 1").Instances.Rc 0`` (the form Go runs),
- ``{{ if … }}True{{ else }}…{{ end }}`` templates, pipelines with ``|``,
- the functions ``eq ne lt le gt ge and or not index len`` and the result
  methods ``Contains``, ``ContainsLine``, ``RegExpContains``.

This is an interpreter over an allow-list of names, never ``eval``: a rule can
read step results and nothing else. :func:`parse` fails early (at load time)
with a message naming the position; :func:`steps_read` tells the planner which
steps a rule reads, so they become dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pgquartz.runner.conditions import limits
from pgquartz.runner.conditions.views import RuleError, Snapshot, go_root
from pgquartz.runner.model import records


class RuleSyntaxError(ValueError):
    """A rule that cannot be parsed, or reads something that does not exist."""


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<field>\.[A-Za-z_][A-Za-z0-9_]*)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()\[\]|])
    """,
    re.VERBOSE,
)


class _Token(records.Record, kw_only=False):
    kind: str
    text: str
    position: int
    spaced: bool  # whitespace before it: ends a field chain


def _tokenize(source: str, offset: int) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    spaced = True
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise RuleSyntaxError(f"unexpected {source[position]!r} at column {offset + position + 1}")
        kind = match.lastgroup or ""
        if kind == "space":
            spaced = True
        else:
            tokens.append(_Token(kind, match.group(), offset + position, spaced))
            spaced = False
        position = match.end()
    return tokens


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "0": "\0"}


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


# ----------------------------------------------------------------------------------------------
# Syntax tree
# ----------------------------------------------------------------------------------------------


class Literal(records.Record, kw_only=False):
    value: Any


class Dot(records.Record, kw_only=False):
    """The template's data: ``.``."""


class Field(records.Record, kw_only=False):
    name: str


class Index(records.Record, kw_only=False):
    key: Node


class Chain(records.Record, kw_only=False):
    """A value followed by ``.Field`` and ``[key]`` accessors, e.g. ``.Steps["a"].Rc``."""

    base: Node
    accessors: tuple[Field | Index, ...]


class Command(records.Record, kw_only=False):
    """Words separated by spaces: a function call, a method call with arguments, or a value."""

    words: tuple[Node, ...]
    position: int


class Function(records.Record, kw_only=False):
    name: str


class Pipeline(records.Record, kw_only=False):
    commands: tuple[Command, ...]


Node = Literal | Dot | Chain | Command | Function | Pipeline


class Text(records.Record, kw_only=False):
    text: str


class Print(records.Record, kw_only=False):
    pipeline: Pipeline


class If(records.Record, kw_only=False):
    condition: Pipeline
    then: tuple[TemplateNode, ...]
    otherwise: tuple[TemplateNode, ...]


TemplateNode = Text | Print | If


class Template(records.Record, kw_only=False):
    """A parsed rule. ``nodes`` render to text; the rule holds when that text is ``True``."""

    source: str
    nodes: tuple[TemplateNode, ...]


# ----------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------

_FUNCTIONS = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "index", "len"})
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def parse(rule: str) -> Template:
    """Parse a PgQuartz ``when`` rule (bare expression or ``{{ }}`` template), within the limits of
    pgquartz.runner.conditions.limits."""
    too_complex = limits.problem(rule)
    if too_complex is not None:
        raise RuleSyntaxError(too_complex)
    try:
        if "{{" not in rule or "}}" not in rule:
            pipeline = _parse_action(rule, 0)
            return Template(rule, (If(pipeline, (Text("True"),), ()),))
        parts = _actions(rule)
        actions = [part for part in parts if part[0] == "action"]
        if len(actions) > limits.MAX_ACTIONS:
            raise RuleSyntaxError(f"a rule may have at most {limits.MAX_ACTIONS} {{{{ }}}} actions")
        blocks = sum(1 for part in actions if part[1].split(None, 1)[:1] == ["if"])
        if blocks > limits.MAX_NESTING:
            raise RuleSyntaxError(f"a rule may have at most {limits.MAX_NESTING} {{{{if}}}} blocks")
        nodes, _ = _parse_nodes(parts, inside_if=False)
    except RecursionError:
        raise RuleSyntaxError("the rule is too complex to parse") from None
    return Template(rule, nodes)


_Part = tuple[str, str, int]


def _actions(source: str) -> list[_Part]:
    """Split a template into ('text', text, pos) and ('action', body, pos) parts, with trimming."""
    parts: list[_Part] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            parts.append(("text", text, position))
        parts.append(("action", match.group(2), match.start(2)))
        trim_next = bool(match.group(3))
        position = match.end()
    rest = source[position:]
    if trim_next:
        rest = rest.lstrip()
    if "{{" in rest or "}}" in rest:
        raise RuleSyntaxError(f"unbalanced '{{{{' or '}}}}' after column {position + 1}")
    if rest:
        parts.append(("text", rest, position))
    return parts


def _parse_nodes(parts: list[_Part], *, inside_if: bool) -> tuple[tuple[TemplateNode, ...], _Part | None]:
    """Parse until the parts end, or (inside an ``if``) until its ``else``/``end``, returned too."""
    nodes: list[TemplateNode] = []
    while parts:
        kind, body, position = parts.pop(0)
        if kind == "text":
            nodes.append(Text(body))
            continue
        stripped = body.strip()
        head, _, rest = stripped.partition(" ")
        if head in ("end", "else"):
            if not inside_if:
                raise RuleSyntaxError(f"unexpected {{{{{head}}}}} at column {position + 1}")
            return tuple(nodes), (head, rest, position)
        if head == "if":
            nodes.append(_parse_if(parts, rest, position))
        elif head in ("range", "with", "define", "template", "block", "break", "continue"):
            raise RuleSyntaxError(f"{{{{{head}}}}} is not supported in rules (column {position + 1})")
        else:
            nodes.append(Print(_parse_action(body, position)))
    return tuple(nodes), None


def _parse_if(parts: list[_Part], condition_text: str, position: int) -> If:
    condition = _parse_action(condition_text, position + 3)
    then, terminator = _parse_nodes(parts, inside_if=True)
    if terminator is None:
        raise RuleSyntaxError(f"{{{{if}}}} at column {position + 1} has no {{{{end}}}}")
    head, rest, where = terminator
    if head == "end":
        return If(condition, then, ())
    rest = rest.strip()
    if rest.startswith("if") and (len(rest) == 2 or rest[2].isspace()):
        # `{{else if X}}` nests an `if` that shares the outer `{{end}}`.
        return If(condition, then, (_parse_if(parts, rest[2:], where),))
    if rest:
        raise RuleSyntaxError(f"unexpected {rest!r} after {{{{else}}}} at column {where + 1}")
    otherwise, terminator = _parse_nodes(parts, inside_if=True)
    if terminator is None or terminator[0] != "end":
        raise RuleSyntaxError(f"{{{{else}}}} at column {where + 1} has no {{{{end}}}}")
    return If(condition, then, otherwise)


def _parse_action(body: str, offset: int) -> Pipeline:
    tokens = _tokenize(body, offset)
    if not tokens:
        raise RuleSyntaxError("empty rule")
    parser = _Parser(tokens)
    pipeline = parser.pipeline()
    if parser.position < len(tokens):
        token = tokens[parser.position]
        raise RuleSyntaxError(f"unexpected {token.text!r} at column {token.position + 1}")
    return pipeline


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise RuleSyntaxError("the rule ends too early")
        self.position += 1
        return token

    def pipeline(self) -> Pipeline:
        commands = [self.command()]
        while (token := self.peek()) is not None and token.text == "|":
            self.take()
            commands.append(self.command())
        return Pipeline(tuple(commands))

    def command(self) -> Command:
        words: list[Node] = []
        start = self.peek()
        while (token := self.peek()) is not None and token.text not in ("|", ")"):
            words.append(self.operand())
        if not words:
            where = f"column {start.position + 1}" if start else "the end"
            raise RuleSyntaxError(f"expected a value or function at {where}")
        return Command(tuple(words), start.position if start else 0)

    def operand(self) -> Node:
        token = self.take()
        base: Node
        accessors: list[Field | Index] = []
        if token.kind == "ident":
            if token.text in ("true", "false"):
                base = Literal(token.text == "true")
            elif token.text == "nil":
                base = Literal(None)
            elif token.text in _FUNCTIONS:
                return Function(token.text)
            else:
                raise RuleSyntaxError(
                    f"unknown function {token.text!r} at column {token.position + 1}"
                    f" (known: {', '.join(sorted(_FUNCTIONS))})"
                )
        elif token.kind in ("string", "raw"):
            base = Literal(_unquote(token.text))
        elif token.kind == "number":
            text = token.text
            base = Literal(float(text) if any(c in text for c in ".eE") else int(text))
        elif token.kind == "field":
            base = Dot()
            accessors.append(Field(token.text[1:]))
        elif token.kind == "dot":
            base = Dot()
        elif token.text == "(":
            base = self.pipeline()
            closing = self.take()
            if closing.text != ")":
                raise RuleSyntaxError(f"expected ')' at column {closing.position + 1}")
        else:
            raise RuleSyntaxError(f"unexpected {token.text!r} at column {token.position + 1}")
        while (following := self.peek()) is not None and not following.spaced:
            if following.kind == "field":
                self.take()
                accessors.append(Field(following.text[1:]))
            elif following.text == "[" or (following.kind == "dot" and self._bracket_after_dot()):
                if following.kind == "dot":
                    self.take()  # `.Steps.["x"]`, as PgQuartz's manual writes it
                self.take()
                key = self.operand()
                closing = self.take()
                if closing.text != "]":
                    raise RuleSyntaxError(f"expected ']' at column {closing.position + 1}")
                accessors.append(Index(key))
            else:
                break
        if not accessors:
            return base
        return Chain(base, tuple(accessors))

    def _bracket_after_dot(self) -> bool:
        nxt = self.position + 1
        return nxt < len(self.tokens) and self.tokens[nxt].text == "[" and not self.tokens[nxt].spaced


# ----------------------------------------------------------------------------------------------
# Static analysis: which steps a rule reads
# ----------------------------------------------------------------------------------------------


def steps_read(template: Template) -> frozenset[str]:
    """The names of the steps a rule reads.

    Raises :class:`RuleSyntaxError` when the rule reads ``.Steps`` in a way whose
    step cannot be known before running (a computed name), or reads a field of
    the data other than ``.Steps``.
    """
    names: set[str] = set()
    for node in template.nodes:
        _visit_template(node, names)
    return frozenset(names)


def _visit_template(node: TemplateNode, names: set[str]) -> None:
    if isinstance(node, Print):
        _visit(node.pipeline, names)
    elif isinstance(node, If):
        _visit(node.condition, names)
        for child in (*node.then, *node.otherwise):
            _visit_template(child, names)


def _visit(node: Node, names: set[str]) -> None:
    if isinstance(node, Pipeline):
        for command in node.commands:
            _visit(command, names)
    elif isinstance(node, Command):
        words = node.words
        if len(words) >= 3 and words[0] == Function("index") and _is_steps(words[1]):
            names.add(_literal_step(words[2]))
            for word in words[3:]:
                _visit(word, names)
            return
        for word in words:
            _visit(word, names)
    elif isinstance(node, Chain):
        if isinstance(node.base, Dot):
            first = node.accessors[0]
            if not isinstance(first, Field) or first.name != "Steps":
                shown = f".{first.name}" if isinstance(first, Field) else "[…]"
                raise RuleSyntaxError(f"unknown field {shown} (rules read .Steps)")
            if len(node.accessors) < 2 or not isinstance(node.accessors[1], Index):
                raise RuleSyntaxError('.Steps must be followed by a step name, as in .Steps["step 1"]')
            names.add(_literal_step(node.accessors[1].key))
        else:
            _visit(node.base, names)
        for accessor in node.accessors:
            if isinstance(accessor, Index):
                _visit(accessor.key, names)
    elif isinstance(node, Dot):
        raise RuleSyntaxError("a bare '.' cannot be used in a rule; read .Steps[\"name\"]")


def _is_steps(node: Node) -> bool:
    return isinstance(node, Chain) and isinstance(node.base, Dot) and node.accessors == (Field("Steps"),)


def _literal_step(node: Node) -> str:
    if isinstance(node, Literal) and isinstance(node.value, str):
        return node.value
    raise RuleSyntaxError('a step name in a rule must be a quoted string, as in .Steps["step 1"]')


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def render(template: Template, snapshot: Snapshot) -> str:
    """Render the template against the steps' results."""
    dot = go_root(snapshot)
    return "".join(_render(node, dot) for node in template.nodes)


def holds(template: Template, snapshot: Snapshot) -> bool:
    """Whether the rule holds: the template renders ``True`` (surrounding spaces ignored)."""
    return render(template, snapshot).strip() == "True"


def _render(node: TemplateNode, dot: Any) -> str:
    if isinstance(node, Text):
        return node.text
    if isinstance(node, Print):
        return _print(_evaluate(node.pipeline, dot))
    branch = node.then if truth(_evaluate(node.condition, dot)) else node.otherwise
    return "".join(_render(child, dot) for child in branch)


def _print(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    return str(value)


def truth(value: Any) -> bool:
    """Go template truthiness: false, 0, nil and empty values are false."""
    if hasattr(value, "go_truth"):
        return bool(value.go_truth())
    return bool(value)


def _evaluate(node: Node, dot: Any, piped: tuple[Any, ...] = ()) -> Any:
    if isinstance(node, Pipeline):
        result: tuple[Any, ...] = ()
        for command in node.commands:
            result = (_evaluate(command, dot, result),)
        return result[0]
    if isinstance(node, Command):
        return _command(node, dot, piped)
    if piped:
        raise RuleError("only functions and methods can take a piped value")
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Dot):
        return dot
    if isinstance(node, Chain):
        return _chain(node, dot, ())
    raise RuleError(f"{node.name} is a function: call it with arguments")  # Function as a value


def _command(node: Command, dot: Any, piped: tuple[Any, ...]) -> Any:
    first, rest = node.words[0], node.words[1:]
    if isinstance(first, Function):
        function = _IMPLEMENTATIONS[first.name]
        if first.name in ("and", "or"):
            return function(dot, [*rest], piped)
        return function([_evaluate(word, dot) for word in rest] + list(piped))
    if not rest and not piped:
        return _evaluate(first, dot)
    if isinstance(first, Chain) and isinstance(first.accessors[-1], Field):
        return _chain(first, dot, tuple(_evaluate(word, dot) for word in rest) + piped)
    raise RuleError(f"can't give arguments to a value (column {node.position + 1})")


def _chain(node: Chain, dot: Any, last_args: tuple[Any, ...]) -> Any:
    value = _evaluate(node.base, dot)
    for number, accessor in enumerate(node.accessors):
        last = number == len(node.accessors) - 1
        if isinstance(accessor, Field):
            value = _attr(value, accessor.name, last_args if last else ())
        else:
            value = _index_one(value, _evaluate(accessor.key, dot))
    return value


def _attr(value: Any, name: str, args: Sequence[Any]) -> Any:
    if not hasattr(value, "go_attr"):
        raise RuleError(f"can't read .{name} of {_describe(value)}")
    return value.go_attr(name, args)


def _index_one(value: Any, key: Any) -> Any:
    if hasattr(value, "go_index"):
        return value.go_index(key)
    if isinstance(value, str | list | tuple) and isinstance(key, int) and not isinstance(key, bool):
        try:
            return value[key]
        except IndexError:
            raise RuleError(f"index {key} out of range") from None
    raise RuleError(f"can't index {_describe(value)} with {key!r}")


def _describe(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__.removeprefix("Go")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    kinds = (_kind(left), _kind(right))
    if kinds[0] == kinds[1] and kinds[0] != "other":
        return left, right
    if hasattr(left, "text") and kinds[1] == "string":
        return left.text, right
    raise RuleError(f"can't compare {_describe(left)} with {_describe(right)}")


def _eq(args: list[Any]) -> bool:
    if len(args) < 2:
        raise RuleError("eq takes at least 2 arguments")
    left = args[0]
    return any(a == b for a, b in (_comparable(left, other) for other in args[1:]))


def _ordered(name: str, test: Callable[[Any, Any], bool]) -> Callable[[list[Any]], bool]:
    def compare(args: list[Any]) -> bool:
        if len(args) != 2:
            raise RuleError(f"{name} takes 2 arguments")
        left, right = _comparable(args[0], args[1])
        if isinstance(left, bool):
            raise RuleError(f"{name} can't order booleans")
        return bool(test(left, right))

    return compare


def _not(args: list[Any]) -> bool:
    if len(args) != 1:
        raise RuleError("not takes 1 argument")
    return not truth(args[0])


def _operands(dot: Any, words: list[Node], piped: tuple[Any, ...]) -> Iterator[Any]:
    """Evaluate ``and``/``or`` operands lazily, so they short-circuit (as Go 1.18+ does)."""
    for word in words:
        yield _evaluate(word, dot)
    yield from piped


def _and(dot: Any, words: list[Node], piped: tuple[Any, ...]) -> Any:
    if not words and not piped:
        raise RuleError("and takes at least 1 argument")
    result: Any = None
    for result in _operands(dot, words, piped):
        if not truth(result):
            return result
    return result


def _or(dot: Any, words: list[Node], piped: tuple[Any, ...]) -> Any:
    if not words and not piped:
        raise RuleError("or takes at least 1 argument")
    result: Any = None
    for result in _operands(dot, words, piped):
        if truth(result):
            return result
    return result


def _index(args: list[Any]) -> Any:
    if not args:
        raise RuleError("index takes at least 1 argument")
    value = args[0]
    for key in args[1:]:
        value = _index_one(value, key)
    return value


def _len(args: list[Any]) -> int:
    if len(args) != 1:
        raise RuleError("len takes 1 argument")
    value = args[0]
    if hasattr(value, "lines"):
        return len(value.lines)
    try:
        return len(value)
    except TypeError:
        raise RuleError(f"can't take len of {_describe(value)}") from None


_IMPLEMENTATIONS: dict[str, Any] = {
    "eq": _eq,
    "ne": lambda args: not _eq(args) if len(args) == 2 else _raise("ne takes 2 arguments"),
    "lt": _ordered("lt", lambda a, b: a < b),
    "le": _ordered("le", lambda a, b: a <= b),
    "gt": _ordered("gt", lambda a, b: a > b),
    "ge": _ordered("ge", lambda a, b: a >= b),
    "not": _not,
    "and": _and,
    "or": _or,
    "index": _index,
    "len": _len,
}


def _raise(message: str) -> Any:
    raise RuleError(message)
