"""The runner's job model as pydantic field types, for the PgQuartzJob resource.

The runner's model is declared with its own small field layer
(:mod:`pgquartz.runner.model.fields`), not pydantic, so a run starts fast. The
resource is a pydantic model; these adapters let its spec hold runner models
(the job body, a connection's retry) that are validated by the runner's own
rules, with each problem at its own location under the field, and described by
the runner's own schema, so the CRD and job files cannot disagree.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import pydantic
import pydantic_core
from pydantic_core import core_schema

from pgquartz.runner.model import durations, fields


class RunnerModel:
    """``Annotated`` metadata: validate, write and describe a field as the runner's ``model``."""

    def __init__(self, model: type[fields.Model]) -> None:
        self.model = model

    def __get_pydantic_core_schema__(self, source: Any, handler: pydantic.GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.to_data(exclude_defaults=True)
            ),
        )

    def __get_pydantic_json_schema__(self, schema: Any, handler: pydantic.GetJsonSchemaHandler) -> Any:
        described = fields.json_schema(self.model)
        return inlined(described, described.pop("$defs", {}))

    def validate(self, value: Any) -> fields.Model:
        try:
            return self.model.from_data(value)
        except fields.ModelError as error:
            raise pydantic_core.ValidationError.from_exception_data(
                self.model.__name__,
                [
                    {
                        "type": pydantic_core.PydanticCustomError(
                            "job", "{message}", {"message": problem.message}
                        ),
                        "loc": problem.path,
                        "input": value,
                    }
                    for problem in error.problems
                ],
            ) from None


def inlined(node: Any, definitions: dict[str, Any]) -> Any:
    """A JSON Schema with every ``$ref`` replaced by the definition it names."""
    if isinstance(node, list):
        return [inlined(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        rest = {key: value for key, value in node.items() if key != "$ref"}
        target = definitions[node["$ref"].rsplit("/", 1)[1]]
        return inlined({**target, **rest}, definitions)
    return {key: inlined(value, definitions) for key, value in node.items()}


Duration = Annotated[
    datetime.timedelta,
    pydantic.BeforeValidator(durations.parse),
    pydantic.PlainSerializer(durations.format, return_type=str),
    pydantic.WithJsonSchema(durations.SCHEMA),
]
"""A duration in PgQuartz's syntax (``75s``, ``1h30m``), as a pydantic field type."""
