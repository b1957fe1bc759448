"""Which lines of a landed batch belong to which (stream, event-time hour).

The stream sensors record it in the landing index before their cursor moves, so a run, a
backfill or a replay of an hour finds exactly the batches that hold its events.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from figstream.events.envelope import parse_time
from figstream.events.validation import EARLIEST, LATEST
from figstream.ingest.archive import read_batch
from figstream.ingest.landing import LANDING_PREFIX, parse_batch_key
from figstream.ingest.routing import Router
from figstream.streaming.stores import Stores, hour_key

# --- assignment: which lines of a batch belong to which (stream, partition) -------------------


# The wire form figstream writes (events.format_time): UTC, "Z", no or 3 or 6 fraction digits.
# Such a time's hour is its first 13 characters, so only those need parsing, once per hour.
_CANONICAL_TIME = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d):[0-5]\d:[0-5]\d(?:\.\d{3}|\.\d{6})?Z", re.ASCII
)


@functools.lru_cache(maxsize=4096)
def _hour_of_prefix(prefix: str) -> str | None:
    return _hour_of_time(f"{prefix}:00:00Z")


def _hour_of_time(value: str) -> str | None:
    try:
        moment = parse_time(value)
    except (TypeError, ValueError):
        return None
    return hour_key(moment) if EARLIEST <= moment < LATEST else None


def _event_hour(record: object) -> str | None:
    """The hour of a record's usable event time (within [EARLIEST, LATEST)), else None."""
    if not isinstance(record, dict):
        return None
    value = record.get("time")
    if not isinstance(value, str):
        return None
    canonical = _CANONICAL_TIME.fullmatch(value)
    if canonical:  # EARLIEST and LATEST are whole hours, so the hour decides the window too
        return _hour_of_prefix(canonical.group(1))
    return _hour_of_time(value)


def split_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def assign(
    data: bytes, batch_key: str, router: Router, first_partition: str = "2000-01-01-00:00"
) -> dict[tuple[str, str], list[int]]:
    """(stream, hourly partition) -> indexes of the batch's lines that belong there.

    A record goes to the hour of its event time. A record without a usable time, or with one
    outside [first partition, arrival hour] (before history began, or from a clock ahead of
    the bus), goes to the hour its batch arrived in, and ingest dead-letters it there. The rule
    depends only on the batch, never on the wall clock, and the sensor and the assets both call
    this, so they can never disagree about where a line belongs.
    """
    arrival, _ = parse_batch_key(batch_key)
    arrival_hour = hour_key(arrival)
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, line in enumerate(split_lines(data)):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        partition = _event_hour(record)
        if partition is None or not first_partition <= partition <= arrival_hour:
            partition = arrival_hour
        for stream in router.route_record(record):
            out[(stream, partition)].append(index)
    return dict(out)


NO_PARTITION = ""  # index entry of a batch that holds none of a stream's records


def split_batch_keys(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """(landing batch keys, the other keys) of a listing of the landing zone. An object there
    that is not named as a batch (a stray file, a compressed copy, a tool's marker) is no
    batch: reading it as one would raise on every tick. Callers report the others."""
    batches, others = [], []
    for key in keys:
        try:
            parse_batch_key(key)
        except ValueError:
            others.append(key)
        else:
            batches.append(key)
    return batches, others


def index_landing(stores: Stores, stream: str, keys: Sequence[str]) -> dict[str, list[str]]:
    """Record in the landing index which hours of ``stream`` each batch touches.

    Returns partition -> batch keys. A batch with none of the stream's records is indexed under
    ``NO_PARTITION`` so that it counts as seen. Idempotent: batches are immutable.
    """
    touched: dict[str, list[str]] = defaultdict(list)
    entries = []
    for key in keys:
        data = read_batch(stores.objects, key)  # the landing object, or its archived copy
        assigned = assign(data, key, stores.router, stores.first_partition)
        mine = [(p, len(lines)) for (s, p), lines in assigned.items() if s == stream]
        for partition, count in mine:
            touched[partition].append(key)
            entries.append((partition, key, count))
        if not mine:
            entries.append((NO_PARTITION, key, 0))
    stores.state.index_batches(stream, entries)
    return dict(touched)


class Sweep(NamedTuple):
    found: list[str]  # landed batches the index has never seen for the stream, sorted
    resume_after: str  # where the next slice lists from; "" when the sweep reached its end


def reconcile_slice(
    stores: Stores, stream: str, start_after: str, end: str, *, limit: int, max_found: int
) -> Sweep:
    """One bounded slice of a reconciliation of the landing listing against the landing index.

    Lists at most ``limit`` landed batches after ``start_after`` and below ``end`` (where the
    sensor's own listing starts) and returns those the index has never seen for ``stream``,
    stopping early at ``max_found`` of them. Costs one listing and one point read of the index
    per listed batch, whatever the size of the landing zone or of the index; reads no batch.
    """
    listed = stores.objects.list(LANDING_PREFIX, start_after=start_after, limit=limit)
    found: list[str] = []
    batches = set(split_batch_keys(listed)[0])
    for key in listed:
        if key >= end:
            return Sweep(found, "")
        if key in batches and not stores.state.partitions_for(stream, key):
            found.append(key)
            if len(found) >= max_found:
                return Sweep(found, key)
    return Sweep(found, listed[-1] if len(listed) >= limit else "")


def catch_up_index(stores: Stores, stream: str) -> int:
    """Index every landed batch the index has not seen (a backfill before any sensor tick,
    or a batch that became visible later than the sensors' look-back). Returns how many.
    Objects under ``landing/`` that are not batches are left alone (the sensors report them)."""
    seen = stores.state.indexed_batches(stream)
    batches, _ = split_batch_keys(stores.objects.list(LANDING_PREFIX))
    missing = [k for k in batches if k not in seen]
    if missing:
        index_landing(stores, stream, missing)
    return len(missing)
