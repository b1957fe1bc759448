"""What consumers read: per published table and day, the authoritative side's output, or the
other side's, flagged, when the authoritative side has none for the day.

The ledger stage of the task behind a table decides the authoritative side: legacy at
``legacy`` and ``shadow``, the new side at ``migrated`` and ``retired``. It is read at run time,
so a rollback takes effect at the next run. A fallback keeps consumers from a hole (a legacy
night that died on a bad record, say); with neither side's output nothing is written, so the
previous publication stays.

Publications are CSV files under ``<data_root>/published/<day>/<name>.csv``, in legacy's
format whichever side they come from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from figstream.migration import legacy_files, views
from figstream.migration.ledger import Stage
from figstream.storage.objects import LocalObjectStore
from figstream.streaming.stores import Stores, day_partitions

NEW = "new"
LEGACY = "legacy"
# What users consume, and the legacy task whose stage decides who is authoritative for it.
PUBLISHED: dict[str, str] = {
    "search_index": "ActiveJobs",
    "board_stats": "BoardStats",
    "seo_redirects": "SeoRedirects",
}

T = TypeVar("T")


class NothingToPublish(LookupError):
    """Neither side has an output for the day."""


def authoritative(stage: Stage) -> str:
    """The side consumers read at ``stage``: ``new`` once migrated, ``legacy`` before."""
    return NEW if stage in (Stage.MIGRATED, Stage.RETIRED) else LEGACY


def read_order(stage: Stage) -> tuple[str, str]:
    """The sides in the order they are read at ``stage``: the authoritative one first."""
    first = authoritative(stage)
    return first, LEGACY if first == NEW else NEW


def choose(stage: Stage, readers: Mapping[str, Callable[[], T | None]]) -> tuple[str, T] | None:
    """The first side, in :func:`read_order`, whose reader returns an output, and that output;
    None if neither has one. A side is read only if the sides before it have nothing."""
    for side in read_order(stage):
        output = readers[side]()
        if output is not None:
            return side, output
    return None


def new_has_day(stores: Stores, day: str) -> bool:
    """The new side has seen ``day`` when some hour of it holds ingested events."""
    return any(stores.objects.list(f"tables/raw_events/{hour}/") for hour in day_partitions(day))


def published_key(name: str, day: str) -> str:
    return f"published/{day}/{name}.csv"


def published_path(data_root: Path, name: str, day: str) -> Path:
    return Path(data_root) / published_key(name, day)


@dataclass(frozen=True)
class Publication:
    name: str
    day: str
    stage: Stage
    side: str
    table: pa.Table
    path: Path

    @property
    def fallback(self) -> bool:
        """True when the authoritative side had nothing and the other side was published."""
        return self.side != authoritative(self.stage)

    def describe_fallback(self) -> str:
        return (
            f"{authoritative(self.stage)} side (authoritative at {self.stage.value}) has no "
            f"output for {self.day}; published the {self.side} side instead"
        )


def publish(
    name: str, day: str, stage: Stage, stores: Stores, data_root: Path, epoch_day: str
) -> Publication:
    """Write the day's ``name`` from the side :func:`choose` picks at ``stage``; raises
    :class:`NothingToPublish` (writing nothing) when neither side has an output."""
    task = PUBLISHED[name]

    def new_side() -> pa.Table | None:
        if not views.supports(task) or not new_has_day(stores, day):
            return None
        return views.render_new(task, day, stores, epoch_day).table

    found = choose(
        stage, {NEW: new_side, LEGACY: lambda: legacy_files.read_legacy(task, day, data_root)}
    )
    if found is None:
        raise NothingToPublish(
            f"neither legacy {task} nor the new side has an output for {day}: "
            "nothing to publish (the previous publication stays)"
        )
    side, table = found
    LocalObjectStore(data_root).put(published_key(name, day), legacy_files.csv_bytes(table))
    return Publication(name, day, stage, side, table, published_path(data_root, name, day))
