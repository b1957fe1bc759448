"""The landing-zone key scheme, shared by every producer and by the sensors that read it.

A micro-batch lands as ``landing/{arrival YYYY-MM-DD}/{batch_id}.jsonl``. A batch id starts
with the arrival time ``%Y%m%dT%H%M%S%fZ`` (UTC, microseconds), so keys sort by arrival:

* generator batches (``figstream generate``): ``{stamp}-{seq:06d}``;
* live producers (``Publisher``): ``{stamp}-{producer}-{seq:06d}``, producer ``[a-z0-9-]+``.

Producers name a batch from the time of its *commit* (just before the atomic put), so keys sort
in visibility order as closely as clocks allow. "As closely as" matters to a reader that keeps
a cursor: a slow put, or another producer's clock running behind, can make a batch visible
after a key that sorts later. A cursor should therefore re-list a short look-back window
(``list(LANDING_PREFIX, start_after=key_floor(cursor_time - lookback))``) and skip the keys it
has already processed, rather than trust ``start_after=last_key`` alone.

Bad inputs tried (see tests/figstream/test_landing.py): naive datetimes, producer names with
upper case, underscores, slashes or nothing at all, negative sequence numbers, keys with the
wrong prefix, suffix, date directory (including one that disagrees with the stamp), impossible
dates (``20261301``), short or long stamps, extra path segments, and (``tests/test_security.py``)
traversal, absolute paths, NUL, backslashes, newlines and non-ASCII digits.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple

LANDING_PREFIX = "landing/"
BATCH_SUFFIX = ".jsonl"
PRODUCER_PATTERN = re.compile(r"[a-z0-9-]{1,64}")

_KEY = re.compile(
    r"landing/(?P<day>\d{4}-\d{2}-\d{2})/"
    r"(?P<batch_id>(?P<stamp>\d{8}T\d{12}Z)-(?:(?P<producer>[a-z0-9-]{1,64})-)?(?P<seq>\d{6,}))"
    r"\.jsonl",
    re.ASCII,  # \d is [0-9]: other scripts' digits would parse as a time but sort elsewhere
)
_EXPECTED = "landing/YYYY-MM-DD/YYYYMMDDTHHMMSSffffffZ-[producer-]NNNNNN.jsonl"


class BatchId(NamedTuple):
    arrival: datetime
    producer: str | None  # None for generator batches
    seq: int


def format_stamp(arrival: datetime) -> str:
    """``%Y%m%dT%H%M%S%fZ`` of an aware datetime, zero-padded for every year (unlike strftime)."""
    if arrival.tzinfo is None or arrival.utcoffset() is None:
        raise ValueError(f"arrival time {arrival.isoformat()} is naive; give it a UTC offset")
    t = arrival.astimezone(UTC)
    return (
        f"{t.year:04d}{t.month:02d}{t.day:02d}T"
        f"{t.hour:02d}{t.minute:02d}{t.second:02d}{t.microsecond:06d}Z"
    )


def _parse_stamp(stamp: str) -> datetime:
    return datetime(
        int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]),
        int(stamp[9:11]), int(stamp[11:13]), int(stamp[13:15]), int(stamp[15:21]),
        tzinfo=UTC,
    )  # fmt: skip


def batch_key(arrival: datetime, producer: str | None, seq: int) -> str:
    """The landing key of a batch committed at ``arrival`` (aware) by ``producer``."""
    if producer is not None and not PRODUCER_PATTERN.fullmatch(producer):
        raise ValueError(
            f"producer {producer!r} must be 1..64 characters of lower-case letters, digits and '-'"
        )
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError(f"batch sequence number must be an int >= 0, got {seq!r}")
    stamp = format_stamp(arrival)
    day = f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}"
    middle = f"{producer}-" if producer is not None else ""
    return f"{LANDING_PREFIX}{day}/{stamp}-{middle}{seq:06d}{BATCH_SUFFIX}"


def _match(key: str) -> re.Match[str]:
    if not isinstance(key, str):
        raise ValueError(f"landing key must be a str, got {type(key).__name__}")
    match = _KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"not a landing batch key: {key!r} (expected {_EXPECTED})")
    return match


def parse_batch_id(key: str) -> BatchId:
    """Arrival time (UTC), producer (``None`` for generator batches) and sequence of a key."""
    match = _match(key)
    try:
        arrival = _parse_stamp(match["stamp"])
    except ValueError as exc:
        raise ValueError(f"landing key {key!r}: impossible arrival time: {exc}") from None
    if arrival.date().isoformat() != match["day"]:
        raise ValueError(
            f"landing key {key!r}: date directory {match['day']} does not match the arrival "
            f"time {arrival.date().isoformat()} in the batch id"
        )
    return BatchId(arrival, match["producer"], int(match["seq"]))


def parse_batch_key(key: str) -> tuple[datetime, str]:
    """``(arrival time in UTC, batch_id)`` of a landing key, or ``ValueError`` saying why not."""
    parsed = parse_batch_id(key)
    return parsed.arrival, _match(key)["batch_id"]


def key_floor(arrival: datetime) -> str:
    """A ``start_after`` that lists exactly the batches that arrived at or after ``arrival``."""
    stamp = format_stamp(arrival)
    return f"{LANDING_PREFIX}{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}/{stamp}"
