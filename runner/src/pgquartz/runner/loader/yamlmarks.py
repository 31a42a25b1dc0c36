"""YAML → plain Python data, remembering where every key and value was written.

PyYAML's safe loader gives data but forgets positions; the model gives errors by
key path. This module keeps a map from key path to the parser's mark of it (a
(line, column) is made only for a problem's path), so any problem, whether the
schema's or the planner's, can name the file and line the user must edit. It
also refuses duplicate keys, which YAML loaders silently resolve by keeping the
last one, and documents that expand to more than
:data:`MAX_VALUES` values: YAML aliases can repeat a node without repeating its
text, so ten aliases on each of nine levels make a billion values out of a few
hundred bytes (the "billion laughs").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import yaml

from pgquartz.runner.model.problems import Path, Problem


class Position(NamedTuple):
    """Where a key or value was written (a tuple: a big job file has one per value)."""

    line: int  # 1-based
    column: int  # 1-based


class MarkedData(NamedTuple):
    data: Any
    marks: dict[Path, Marked]
    """Where each key path was written, as the parser's own marks: a big job file has one per value,
    and only a problem's is ever turned into a :class:`Position`."""

    def locate(self, path: Path) -> Position | None:
        """The position of the longest prefix of ``path`` that was written in the file."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark is not None:
                return _position(mark)
        return None


class Marked(Protocol):
    """A parser's mark (0-based), yaml.Mark or libyaml's."""

    line: int
    column: int


# libyaml's parser when PyYAML was built with it (the wheels are): ~10x faster on big job files.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader, with its per-node resolver calls made cheap.

    The composer asks the resolver about every node: a tag for each scalar (the implicit
    resolvers' regular expressions, tried in turn) and a descent into and out of each node
    for path resolvers, which the safe loader has none of. On a job file of thousands of
    commands that is a third of the loading time; the same keys (``type``, ``inline``) come
    back on every command, so a plain scalar's tag is looked up once per distinct text.
    (Should a program add path resolvers to PyYAML's loaders, the loader's own methods run.)
    """

    _PLAIN_TAGS_KEPT = 4096

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._plain_tags: dict[str, str] = {}
        if not self.yaml_path_resolvers:
            # libyaml's composer calls these three for every node, through the instance: C
            # callables that do nothing, and a closure over what resolving needs, instead of
            # methods that look it all up again (a sixth of composing a big job file).
            nothing: dict[Any, Any] = {}
            self.descend_resolver = nothing.get  # (node, index): nothing to do
            self.ascend_resolver = nothing.clear  # (): nothing to do
            self.resolve = _plain_resolver(self._plain_tags, super().resolve)

    def dispose(self) -> None:
        super().dispose()
        self.__dict__.pop("resolve", None)  # it holds the loader: no cycle outlives the load


def _plain_resolver(
    plain_tags: dict[str, str], resolve: Callable[[type[yaml.Node], Any, Any], str]
) -> Callable[[type[yaml.Node], Any, Any], str]:
    """The composer's ``resolve`` for a loader without path resolvers, as one closure."""
    scalar, collection_tags, text, kept = yaml.ScalarNode, _COLLECTION_TAGS, _STR, _Loader._PLAIN_TAGS_KEPT

    def resolved(kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        if kind is not scalar:
            return collection_tags[kind]
        if not implicit[0]:  # quoted, or a block scalar: a string
            return text
        tag = plain_tags.get(value)
        if tag is None:
            tag = str(resolve(kind, value, implicit))
            if len(plain_tags) < kept:
                plain_tags[value] = tag
        return tag

    return resolved


_STR = yaml.SafeLoader.DEFAULT_SCALAR_TAG
_COLLECTION_TAGS: dict[type[yaml.Node], str] = {
    yaml.MappingNode: yaml.SafeLoader.DEFAULT_MAPPING_TAG,
    yaml.SequenceNode: yaml.SafeLoader.DEFAULT_SEQUENCE_TAG,
}

MAX_VALUES = 250_000
"""Values (mappings, lists and scalars) a job file may expand to, aliases counted each time used."""


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_VALUES

    def exceeded(self, node: yaml.Node) -> None:
        """Stop a document that expands to more than :data:`MAX_VALUES` values at ``node``."""
        raise yaml.constructor.ConstructorError(
            None, None, f"the document expands to more than {MAX_VALUES} values (aliases?)", node.start_mark
        )


class YamlProblem(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


def load(text: str) -> MarkedData:
    """Parse one YAML document; raise :class:`YamlProblem` with line numbers on bad YAML."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        marks: dict[Path, Marked] = {}
        problems: list[Problem] = []
        if node is None:
            return MarkedData(None, {(): yaml.Mark("", 0, 0, 0, "", 0)})
        marks[()] = node.start_mark
        data = _construct(loader, node, (), marks, problems, budget=_Budget())
    except RecursionError:
        raise YamlProblem([Problem((), "invalid YAML: it nests too deeply")]) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = " ".join(part for part in (error.context, error.problem) if part) or str(error)
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise YamlProblem([Problem((), f"invalid YAML: {message}", line=line, column=column)]) from None
    except yaml.YAMLError as error:
        raise YamlProblem([Problem((), f"invalid YAML: {error}")]) from None
    finally:
        loader.dispose()
    if problems:
        raise YamlProblem(problems)
    return MarkedData(data, marks)


def _position(mark: Marked) -> Position:
    return Position(mark.line + 1, mark.column + 1)


_MAPPING, _SEQUENCE, _SCALAR = yaml.MappingNode, yaml.SequenceNode, yaml.ScalarNode
_FLATTENED = frozenset({"tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"})
"""Tags of the keys the safe loader's ``flatten_mapping`` acts on: ``<<`` (merge) and ``=`` (value)."""


def _construct(
    loader: Any,
    node: yaml.Node,
    path: Path,
    marks: dict[Path, Marked],
    problems: list[Problem],
    *,
    budget: _Budget,
) -> Any:
    budget.left -= 1
    if budget.left < 0:
        budget.exceeded(node)
    kind = type(node)
    if kind is _SCALAR and node.tag == _STR:  # most values of a job file: as written
        return node.value
    if kind is _MAPPING:
        for key_node, _ in node.value:
            if key_node.tag in _FLATTENED:
                loader.flatten_mapping(node)  # resolves `<<` merge keys (and `=` value keys)
                break
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if type(key_node) is not _SCALAR:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                )
            # Keys are names (steps, arguments, connections): keep them as written, so a
            # step called `1` or `on` is the string the user typed, not an int or a bool.
            key = key_node.value
            key_path = (*path, key)
            if key in result:
                problems.append(
                    Problem(
                        key_path,
                        f"duplicate key {key!r} (YAML would silently keep only the last one)",
                        line=key_node.start_mark.line + 1,
                        column=key_node.start_mark.column + 1,
                    )
                )
            marks[key_path] = key_node.start_mark
            result[key] = _construct(loader, value_node, key_path, marks, problems, budget=budget)
        return result
    if kind is _SEQUENCE:
        items = []
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            marks[item_path] = item.start_mark
            items.append(_construct(loader, item, item_path, marks, problems, budget=budget))
        return items
    constructor = _SCALARS.get(node.tag) if kind is _SCALAR else None
    if constructor is not None:  # a plain value: skip the loader's bookkeeping for graphs
        return constructor(loader, node)
    return loader.construct_object(node, deep=True)


_SCALARS = {
    tag: constructor
    for tag, constructor in yaml.SafeLoader.yaml_constructors.items()
    if tag is not None
    and tag.rsplit(":", 1)[-1] in ("null", "bool", "int", "float", "str", "timestamp", "binary")
}
"""The safe loader's constructors of scalar types: each returns its value at once."""
