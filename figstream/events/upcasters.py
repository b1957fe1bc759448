"""Upcasters and downcasters between versions, the registry's load-time check, its snapshot.

Consumers only ever see the latest registered version of each event type. An upcaster is a
vectorised function over an Arrow table of ``data`` fields, one row per event and one column
per field of version N (a nested model is a struct column), returning the table of version N+1.
Working on tables, not dicts, keeps a rollout fast: while producers still emit the old version,
every old event goes through the upcaster, so it must cost what a column operation costs.

A downcaster goes the other way, N+1 to N, for consumers that stay on an old version (legacy
Luigi reads v1). A flattener turns the latest version's columns into the events table's flat
columns (``figstream.events.postings.flatten_v2``); without one the columns are already flat.

:class:`Upcasters` holds the steps and the schema registry they serve. ``UPCASTERS`` is the
default instance over :data:`figstream.events.schemas.REGISTRY`; tests (or a migration rehearsal)
build their own with :meth:`Upcasters.extended` without touching it::

    upcasters = UPCASTERS.extended({("job.expired", 2): JobExpiredV2})

    @upcasters.register("job.expired", 1)
    def _expired_v1_to_v2(data: pa.Table) -> pa.Table: ...

After each step the table is conformed to the Arrow schema of the target version (columns
selected in schema order and cast), so a step that forgets a field fails loudly instead of
leaking a wrong shape downstream. :meth:`Upcasters.check` is the deploy-time guard, run when the
code location loads (:func:`check_registry`): versions contiguous from 1, a step from each to the
next, every step run once on an empty table of its version (a step that drops or mistypes a
field fails there, naming it), and each version compatible with the previous under its type's
mode (:mod:`figstream.events.compatibility`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from figstream.events import compatibility, postings
from figstream.events.arrow import UpcastError, arrow_schema, conform, field_defaults
from figstream.events.envelope import Envelope
from figstream.events.schemas import COMPATIBILITY, DEFAULT_COMPATIBILITY, REGISTRY

__all__ = [
    "UPCASTERS",
    "RegistryError",
    "UpcastError",
    "Upcasters",
    "arrow_schema",
    "check_registry",
    "conform",
    "field_defaults",
]

DataUpcaster = Callable[[pa.Table], pa.Table]


class Upcasters:
    """A registry of upcasters (and downcasters) and the schema registry they connect."""

    def __init__(
        self,
        registry: Mapping[tuple[str, int], type[BaseModel]] | None = None,
        steps: Mapping[tuple[str, int], DataUpcaster] | None = None,
        downsteps: Mapping[tuple[str, int], DataUpcaster] | None = None,
        flatteners: Mapping[tuple[str, int], DataUpcaster] | None = None,
        modes: Mapping[str, str] | None = None,
    ) -> None:
        self.registry: dict[tuple[str, int], type[BaseModel]] = dict(
            REGISTRY if registry is None else registry
        )
        self.steps: dict[tuple[str, int], DataUpcaster] = dict(steps or {})
        # (type, N) -> the step from N down to N - 1
        self.downsteps: dict[tuple[str, int], DataUpcaster] = dict(downsteps or {})
        self.flatteners: dict[tuple[str, int], DataUpcaster] = dict(flatteners or {})
        self.modes: dict[str, str] = dict(COMPATIBILITY if modes is None else modes)
        self._latest = {t: max(v for (u, v) in self.registry if u == t) for (t, _) in self.registry}
        self._schemas: dict[tuple[str, int], pa.Schema] = {}

    def extended(
        self,
        registry: Mapping[tuple[str, int], type[BaseModel]] | None = None,
        modes: Mapping[str, str] | None = None,
    ) -> Upcasters:
        """A copy with more schema versions (or other modes); this instance is left untouched."""
        return Upcasters(
            {**self.registry, **(registry or {})},
            self.steps,
            self.downsteps,
            self.flatteners,
            {**self.modes, **(modes or {})},
        )

    def _register(self, table: dict, what: str, event_type: str, version: int):
        def decorate(fn: DataUpcaster) -> DataUpcaster:
            if (event_type, version) in table:
                raise ValueError(f"{event_type} v{version} already has {what}")
            table[(event_type, version)] = fn
            return fn

        return decorate

    def register(
        self, event_type: str, from_version: int
    ) -> Callable[[DataUpcaster], DataUpcaster]:
        """Decorator: register the step from ``from_version`` to ``from_version + 1``."""
        return self._register(self.steps, "an upcaster", event_type, from_version)

    def register_downcaster(
        self, event_type: str, from_version: int
    ) -> Callable[[DataUpcaster], DataUpcaster]:
        """Decorator: register the step from ``from_version`` down to ``from_version - 1``."""
        return self._register(self.downsteps, "a downcaster", event_type, from_version)

    def register_flattener(
        self, event_type: str, version: int
    ) -> Callable[[DataUpcaster], DataUpcaster]:
        """Decorator: register how ``version``'s columns become the events table's flat ones."""
        return self._register(self.flatteners, "a flattener", event_type, version)

    def mode(self, event_type: str) -> str:
        return self.modes.get(event_type, DEFAULT_COMPATIBILITY)

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

    def downcast(self, event_type: str, version: int, data: pa.Table, to: int) -> pa.Table:
        """``data`` of ``version`` brought down to version ``to`` (for consumers left on it)."""
        if (event_type, version) not in self.registry or (event_type, to) not in self.registry:
            raise UpcastError(f"{event_type} v{version} -> v{to}: a version is not registered")
        while version > to:
            step = self.downsteps.get((event_type, version))
            if step is None:
                raise UpcastError(f"no downcaster from {event_type} v{version} to v{version - 1}")
            data = conform(step(data), self.schema(event_type, version - 1))
            version -= 1
        return data

    def flatten(self, event_type: str, version: int, data: pa.Table) -> pa.Table:
        """The flat columns of ``data`` (the events table's), by the version's flattener."""
        flattener = self.flatteners.get((event_type, version))
        return data if flattener is None else flattener(data)

    def upcast_envelope(self, envelope: Envelope) -> Envelope:
        """One envelope at the latest version (a one-row table: for single events, not bulk)."""
        if envelope.version == self.latest(envelope.type):
            return envelope
        model = self.registry[(envelope.type, envelope.version)]
        row = {**field_defaults(model), **envelope.data}
        table = pa.Table.from_pylist([row], schema=self.schema(envelope.type, envelope.version))
        version, table = self.upcast(envelope.type, envelope.version, table)
        return replace(envelope, version=version, data=table.to_pylist()[0])

    def flat_data(self, envelope: Envelope) -> tuple[int, dict[str, Any]]:
        """(latest version, the flat columns of its ``data``) of one envelope: what a row of
        the events table holds for it (one event at a time; parsing does it per column)."""
        upcast = self.upcast_envelope(envelope)
        model = self.registry[(upcast.type, upcast.version)]
        row = {**field_defaults(model), **upcast.data}
        table = pa.Table.from_pylist([row], schema=self.schema(upcast.type, upcast.version))
        return upcast.version, self.flatten(upcast.type, upcast.version, table).to_pylist()[0]

    def _dry_run(self, event_type: str, version: int, step: DataUpcaster, to: int) -> str | None:
        """Run a step on an empty table of ``version``; the problem, naming the field, or None."""
        target = self.schema(event_type, to)
        try:
            out = step(self.schema(event_type, version).empty_table())
        except Exception as exc:  # a broken step: report it, whatever it raised
            return f"{event_type} v{version} -> v{to}: the step fails ({exc!r})"
        for field in target:
            if field.name not in out.column_names:
                return f"{event_type} v{version} -> v{to}: the output lacks field {field.name!r}"
            have = out.schema.field(field.name).type
            try:
                out.column(field.name).cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                return (
                    f"{event_type} v{version} -> v{to}: field {field.name!r} comes out as {have},"
                    f" v{to} has {field.type}"
                )
        return None

    def violations(self) -> list[compatibility.Violation]:
        """Each version against the previous one under its type's mode."""
        found = []
        for event_type, latest in sorted(self._latest.items()):
            for version in range(2, latest + 1):
                old, new = (event_type, version - 1), (event_type, version)
                if old not in self.registry or new not in self.registry:
                    continue
                found += compatibility.check_step(
                    event_type,
                    version,
                    compatibility.describe(self.registry[old]),
                    compatibility.describe(self.registry[new]),
                    self.mode(event_type),
                    upcaster=old in self.steps,
                    downcaster=new in self.downsteps,
                )
        return found

    def problems(self) -> list[str]:
        """Everything :meth:`check` refuses, one message each."""
        problems = []
        for event_type, latest in sorted(self._latest.items()):
            if self.mode(event_type) not in compatibility.MODES:
                problems.append(
                    f"{event_type}: unknown compatibility mode {self.mode(event_type)!r} "
                    f"(one of {', '.join(compatibility.MODES)})"
                )
            for version in range(1, latest + 1):
                if (event_type, version) not in self.registry:
                    problems.append(f"{event_type} v{version} is not registered (gap)")
                elif version < latest and (event_type, version) not in self.steps:
                    problems.append(f"{event_type} v{version} has no upcaster to v{version + 1}")
        for (event_type, version), step in sorted(self.steps.items()):
            if (event_type, version + 1) not in self.registry:
                problems.append(
                    f"upcaster from {event_type} v{version} targets unregistered v{version + 1}"
                )
            elif (event_type, version) in self.registry:
                problems.append(self._dry_run(event_type, version, step, version + 1))
        for (event_type, version), step in sorted(self.downsteps.items()):
            if (event_type, version - 1) not in self.registry:
                problems.append(
                    f"downcaster from {event_type} v{version} targets unregistered v{version - 1}"
                )
            elif (event_type, version) in self.registry:
                problems.append(self._dry_run(event_type, version, step, version - 1))
        problems += [str(v) for v in self.violations()]
        return [p for p in problems if p]

    def check(self) -> None:
        """Raise :class:`RegistryError` unless the versions chain to the latest, every step
        runs, and every version is compatible with the previous one under its mode."""
        problems = self.problems()
        if problems:
            raise RegistryError("schema registry: " + "; ".join(problems))

    def snapshot(self) -> dict[str, Any]:
        """The registry as data: per type its mode and per version its fields and whether an
        upcaster leaves it and a downcaster reaches it (``figstream schema export``)."""
        types: dict[str, Any] = {}
        for (event_type, version), model in sorted(self.registry.items()):
            entry = types.setdefault(event_type, {"mode": self.mode(event_type), "versions": {}})
            entry["versions"][str(version)] = {
                "fields": compatibility.describe(model),
                "upcaster": (event_type, version) in self.steps,
                "downcaster": (event_type, version) in self.downsteps,
            }
        return {"format": 1, "types": types}


class RegistryError(ValueError):
    """The registered schema versions and their steps do not form a compatible chain."""


def _default() -> Upcasters:
    upcasters = Upcasters()
    for event_type in postings.POSTING_TYPES:
        upcasters.register(event_type, 1)(postings.upcast_v1)
        upcasters.register_downcaster(event_type, 2)(postings.downcast_v2)
        upcasters.register_flattener(event_type, 2)(postings.flatten_v2)
    return upcasters


UPCASTERS = _default()


def check_registry(upcasters: Upcasters = UPCASTERS) -> None:
    """Refuse a registry whose versions do not chain to the latest or break a consumer; the
    code location runs it when it loads, so the load stops with the message."""
    upcasters.check()
