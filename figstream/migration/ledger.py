"""The migration ledger: one strangler-fig stage per legacy task, kept in a YAML file.

Loading is strict. A malformed ledger stops Definitions from loading with a message that
names the file and the entry at fault, because a silently misread ledger could run (or stop
running) the wrong pipeline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from figstream.settings import YamlSyntaxError, load_yaml


class Stage(StrEnum):
    LEGACY = "legacy"
    SHADOW = "shadow"
    MIGRATED = "migrated"
    RETIRED = "retired"

    @property
    def runs_legacy(self) -> bool:
        return self is not Stage.RETIRED

    @property
    def runs_new(self) -> bool:
        return self is not Stage.LEGACY


Normaliser = Literal["strip", "squash", "casefold", "empty_as_null", "number", "timestamp"]


class ParitySpec(BaseModel):
    """How the parity check compares a legacy task's output with the new implementation's.

    Both sides are rendered as the legacy output's columns; rows are matched on ``key``. Each
    normaliser in ``normalise`` is applied, in order, to that column on both sides before
    comparing; ``tolerances`` is the absolute numeric tolerance per column. ``known_flaws``
    names rules (``figstream.migration.flaws.KNOWN_FLAWS``) that explain differences a legacy flaw
    causes, so they are reported as such and do not count as mismatches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Annotated[list[str], Field(min_length=1)]
    ignore: list[str] = []
    tolerances: dict[str, Annotated[float, Field(ge=0)]] = {}
    normalise: dict[str, list[Normaliser]] = {}
    known_flaws: list[str] = []
    sample_rows: Annotated[int, Field(ge=0, le=100)] = 5


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: Stage
    replaced_by: str | None = None
    parity_partitions_required: Annotated[int, Field(ge=1, le=365)] = 3
    parity: ParitySpec | None = None


class Ledger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[int, Field(ge=1, le=1)]
    legacy_epoch: dt.date
    tasks: dict[str, TaskEntry]

    def stage(self, task: str) -> Stage:
        return self.tasks[task].stage


class LedgerError(ValueError):
    """The ledger file cannot be used; the message names the file and the entry."""


def _where(loc: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_ledger(text: str, path: Path | str, known_tasks: Iterable[str] | None = None) -> Ledger:
    try:
        raw = load_yaml(text)
    except YamlSyntaxError as exc:
        raise LedgerError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise LedgerError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        ledger = Ledger.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"entry {_where(err['loc'])}: {err['msg']}"
            + (f" (got {err['input']!r})" if not isinstance(err["input"], dict) else "")
            for err in exc.errors(include_url=False)
        )
        raise LedgerError(f"{path}: {problems}") from None
    if known_tasks is not None:
        known = list(known_tasks)
        unknown = sorted(set(ledger.tasks) - set(known))
        if unknown:
            raise LedgerError(
                f"{path}: entry tasks.{unknown[0]}: not a legacy task (known: {', '.join(known)})"
            )
        missing = [name for name in known if name not in ledger.tasks]
        if missing:
            raise LedgerError(
                f"{path}: entry tasks.{missing[0]}: legacy task has no stage in the ledger"
            )
    return ledger


def load_ledger(path: Path | str, known_tasks: Iterable[str] | None = None) -> Ledger:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the migration ledger: {exc.strerror}") from None
    return parse_ledger(text, path, known_tasks)
