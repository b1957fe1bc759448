"""Upcasters: turn ``data`` of (type, version N) into version N+1, chained up to the latest.

Consumers only ever see the latest registered version of each event type. An upcaster is a
vectorised function over an Arrow table of ``data`` fields, one row per event and one column
per field of version N, returning the table of version N+1. Working on tables, not dicts,
keeps a rollout fast: while producers still emit the old version, every old event goes
through the upcaster, so it must cost what a column operation costs.

:class:`Upcasters` holds the steps and the schema registry they serve. ``UPCASTERS`` is the
default instance over :data:`figstream.events.schemas.REGISTRY`; tests (or a migration rehearsal)
build their own with :meth:`Upcasters.extended` without touching it::

    upcasters = UPCASTERS.extended({("job.expired", 2): JobExpiredV2})

    @upcasters.register("job.expired", 1)
    def _expired_v1_to_v2(data: pa.Table) -> pa.Table: ...

After each step the table is conformed to the Arrow schema of version N+1 (columns selected in
schema order and cast), so a step that forgets a field fails loudly instead of leaking a
wrong shape downstream. :func:`check_registry` is the deploy-time guard: every registered
version but the latest must have an upcaster, and versions must be contiguous.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from figstream.events.envelope import Envelope
from figstream.events.schemas import REGISTRY

DataUpcaster = Callable[[pa.Table], pa.Table]

_SCALARS: dict[type, pa.DataType] = {str: pa.string(), int: pa.int64(), bool: pa.bool_()}


class UpcastError(LookupError):
    """A version cannot be brought to the latest one: a step or a version is missing."""


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of a pydantic field annotation made of str/int/bool/Literal."""
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
    raise TypeError(f"no Arrow type for {annotation!r}; give the model a flat scalar shape")


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


class Upcasters:
    """A registry of upcasters and the schema registry whose versions they connect."""

    def __init__(
        self,
        registry: Mapping[tuple[str, int], type[BaseModel]] | None = None,
        steps: Mapping[tuple[str, int], DataUpcaster] | None = None,
    ) -> None:
        self.registry: dict[tuple[str, int], type[BaseModel]] = dict(
            REGISTRY if registry is None else registry
        )
        self.steps: dict[tuple[str, int], DataUpcaster] = dict(steps or {})
        self._latest = {t: max(v for (u, v) in self.registry if u == t) for (t, _) in self.registry}
        self._schemas: dict[tuple[str, int], pa.Schema] = {}

    def extended(
        self, registry: Mapping[tuple[str, int], type[BaseModel]] | None = None
    ) -> Upcasters:
        """A copy with more schema versions registered; this instance is left untouched."""
        return Upcasters({**self.registry, **(registry or {})}, self.steps)

    def register(
        self, event_type: str, from_version: int
    ) -> Callable[[DataUpcaster], DataUpcaster]:
        """Decorator: register the step from ``from_version`` to ``from_version + 1``."""

        def decorate(fn: DataUpcaster) -> DataUpcaster:
            key = (event_type, from_version)
            if key in self.steps:
                raise ValueError(f"{event_type} v{from_version} already has an upcaster")
            self.steps[key] = fn
            return fn

        return decorate

    def latest(self, event_type: str) -> int:
        try:
            return self._latest[event_type]
        except KeyError:
            raise UpcastError(f"event type {event_type!r} is not registered") from None

    def schema(self, event_type: str, version: int) -> pa.Schema:
        """Arrow schema of ``data`` for a registered (type, version)."""
        key = (event_type, version)
        if key not in self._schemas:
            if key not in self.registry:
                raise UpcastError(f"{event_type} version {version} is not registered")
            self._schemas[key] = arrow_schema(self.registry[key])
        return self._schemas[key]

    def upcast(self, event_type: str, version: int, data: pa.Table) -> tuple[int, pa.Table]:
        """(latest version, data at the latest version) for ``data`` of ``version``."""
        latest = self.latest(event_type)
        if version > latest or (event_type, version) not in self.registry:
            raise UpcastError(f"{event_type} version {version} is not registered")
        while version < latest:
            step = self.steps.get((event_type, version))
            if step is None:
                raise UpcastError(f"no upcaster from {event_type} v{version} to v{version + 1}")
            data = conform(step(data), self.schema(event_type, version + 1))
            version += 1
        return version, data

    def upcast_envelope(self, envelope: Envelope) -> Envelope:
        """One envelope at the latest version (a one-row table: for single events, not bulk)."""
        if envelope.version == self.latest(envelope.type):
            return envelope
        model = self.registry[(envelope.type, envelope.version)]
        row = {**field_defaults(model), **envelope.data}
        table = pa.Table.from_pylist([row], schema=self.schema(envelope.type, envelope.version))
        version, table = self.upcast(envelope.type, envelope.version, table)
        return replace(envelope, version=version, data=table.to_pylist()[0])

    def check(self) -> None:
        """Raise :class:`RegistryError` unless every type's versions are 1..latest, each with a
        step to the next."""
        problems = []
        for event_type, latest in sorted(self._latest.items()):
            for version in range(1, latest + 1):
                if (event_type, version) not in self.registry:
                    problems.append(f"{event_type} v{version} is not registered (gap)")
                elif version < latest and (event_type, version) not in self.steps:
                    problems.append(f"{event_type} v{version} has no upcaster to v{version + 1}")
        for event_type, version in sorted(self.steps):
            if (event_type, version + 1) not in self.registry:
                problems.append(
                    f"upcaster from {event_type} v{version} targets unregistered v{version + 1}"
                )
        if problems:
            raise RegistryError("schema registry: " + "; ".join(problems))


class RegistryError(ValueError):
    """The registered schema versions and upcasters do not form a chain to the latest."""


UPCASTERS = Upcasters()


def check_registry(upcasters: Upcasters = UPCASTERS) -> None:
    """Refuse a registry whose versions do not chain to the latest; the code location runs it
    when it loads, so a broken chain stops the load with the message."""
    upcasters.check()
