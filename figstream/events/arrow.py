"""The Arrow form of a ``data`` model: its schema, its defaults, and conforming a table to it.

Upcasters, downcasters and the compatibility rules all speak Arrow: one column per model field,
a nested model (v2's ``salary`` and ``location``) as a struct column. This module owns that
mapping, so the registry's checks and the parser derive the same shapes from the same models.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

_SCALARS: dict[type, pa.DataType] = {str: pa.string(), int: pa.int64(), bool: pa.bool_()}


class UpcastError(LookupError):
    """A version cannot be brought to the latest one: a step or a version is missing."""


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of a field annotation of str/int/bool/Literal or a nested model."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _arrow_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"no Arrow type for the union {annotation!r}")
        arrow_type, _ = _arrow_type(members[0])
        return arrow_type, len(members) < len(typing.get_args(annotation))
    if origin is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        if len(kinds) == 1 and (kind := kinds.pop()) in _SCALARS:
            return _SCALARS[kind], False
        raise TypeError(f"no Arrow type for {annotation!r}")
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(list(arrow_schema(annotation))), False
    raise TypeError(f"no Arrow type for {annotation!r}; use scalars, literals or nested models")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a ``data`` model: one field per model field, in declaration order.

    A field is nullable only when ``None`` is a valid value; a field with a default (such as
    ``currency``) is not nullable, because a reader fills the default in.
    """
    fields = []
    for name, info in model.model_fields.items():
        arrow_type, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return pa.schema(fields)


def field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Field name -> default for the optional fields of a model (required fields are absent)."""
    return {
        name: info.default
        for name, info in model.model_fields.items()
        if not info.is_required() and info.default is not PydanticUndefined
    }


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """``data`` with exactly the columns of ``schema``, in order and cast; missing ones fail."""
    missing = [name for name in schema.names if name not in data.column_names]
    if missing:
        raise UpcastError(f"upcast output lacks fields {missing}")
    return data.select(schema.names).cast(schema)
