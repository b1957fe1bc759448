"""One month of traffic for the cost model: measured from the platform's own stores over a
window of event time, or a what-if from a few figures.

Measured (:func:`measure`) reads only through the store interfaces, so it works on both
profiles: the landing index gives, per stream and event-time hour, the batches and their
record counts; the dead-letter store the rejects per hour; a sample of the landed batches (the
landing object or its archived copy) the bytes per line; the object store's listing the bytes
held under ``landing/``, ``archive/`` and ``tables/`` (sizes of at most :data:`SIZE_SAMPLE`
keys per area, scaled by the key count, since an S3 size is a HEAD each); the state store the
jobs and registry rows held (on DynamoDB two scans of those tables, which the daemon's role
may make; DescribeTable's sizes would be cheaper but only the deployer may call it). The
window's traffic is scaled to a month of ``hours_per_month`` hours; what is held (bytes, rows)
is taken as it is now.

The what-if (:func:`what_if`) derives the same figures from events per day, their size and the
bad rate, with the ratios it needs for stored bytes stated in :data:`WHAT_IF_RATIOS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from figstream.cost.model import Workload
from figstream.ingest.archive import read_batch
from figstream.ingest.generate import POSTED_SHARE
from figstream.streaming.stores import HOUR_FORMAT, Stores

SIZE_SAMPLE = 500  # object sizes read per area
BATCH_SAMPLE = 50  # landed batches read for the bytes per line
AREAS = {"landing": "landing/", "archive": "archive/", "tables": "tables/"}


@dataclass(frozen=True)
class Ratios:
    """What-if only: how landed bytes turn into stored bytes (estimates, not measured)."""

    archive_ratio: float = 0.2  # zstd-compressed archive of a day's batches / raw bytes
    tables_ratio: float = 0.5  # Parquet output tables of an event / its landed bytes
    archive_months: float = 1.0  # archive held: the month's days (it grows month by month)


WHAT_IF_RATIOS = Ratios()


def hours(start: datetime, end: datetime) -> list[str]:
    """The hourly partition keys overlapping ``[start, end)``."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the window's times must be aware (UTC)")
    if end <= start:
        raise ValueError(f"the window is empty: --to {end.isoformat()} is not after --from")
    moment = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    keys = []
    while moment < end:
        keys.append(moment.strftime(HOUR_FORMAT))
        moment += timedelta(hours=1)
    return keys


def _stored_bytes(stores: Stores) -> dict[str, float]:
    held = {}
    for area, prefix in AREAS.items():
        keys = stores.objects.list(prefix)
        if not keys:
            held[area] = 0.0
            continue
        step = max(1, len(keys) // SIZE_SAMPLE)
        sample = keys[::step][:SIZE_SAMPLE]
        held[area] = sum(stores.objects.size(k) for k in sample) * len(keys) / len(sample)
    return held


def _bytes_per_line(stores: Stores, batch_keys: list[str]) -> float | None:
    if not batch_keys:
        return None
    step = max(1, len(batch_keys) // BATCH_SAMPLE)
    size = lines = 0
    for key in batch_keys[::step][:BATCH_SAMPLE]:
        try:
            data = read_batch(stores.objects, key)
        except FileNotFoundError:
            continue  # retention removed it: the others speak for it
        size += len(data)
        lines += data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return size / lines if lines else None


def measure(
    stores: Stores,
    start: datetime,
    end: datetime,
    hours_per_month: float = 730,
    claim_ttl_days: int = 14,
) -> Workload:
    """The platform's traffic over event-time hours ``[start, end)``, scaled to a month."""
    keys = hours(start, end)
    streams = sorted(stores.router.streams)
    events = rejected = batch_hours = 0
    batches: set[str] = set()
    for stream in streams:
        for hour in keys:
            counts = stores.state.batch_counts(stream, hour)
            if not counts:
                continue
            events += sum(counts.values())
            batch_hours += len(counts)
            batches.update(counts)
            rejected += stores.dead_letters.count(stream=stream, partition_key=hour)
    scale = hours_per_month / len(keys)
    per_line = _bytes_per_line(stores, sorted(batches))
    state = stores.state.counts()
    per_day = events / len(keys) * 24
    return Workload(
        events=events * scale,
        avg_event_bytes=per_line or 0.0,
        bad_rate=min(1.0, rejected / events) if events else 0.0,
        batches=len(batches) * scale,
        batch_hours=batch_hours * scale,
        stored_bytes=_stored_bytes(stores),
        state_items={
            "jobs": float(state.get("jobs", 0)),
            "registry": float(state.get("registered", 0)),
            "claims": per_day * claim_ttl_days,
        },
        streams=len(streams),
        basis=(
            f"measured: {events:,} records in {len(batches):,} batches over {len(keys)} "
            f"event-time hours ({keys[0]} to {keys[-1]}), scaled x{scale:,.2f} to a month"
        ),
    )


def what_if(
    events_per_day: float,
    avg_event_bytes: float,
    bad_rate: float = 0.0,
    *,
    batches_per_day: float | None = None,
    streams: int = 2,
    sensor_tick_seconds: float = 5.0,
    hours_per_month: float = 730,
    claim_ttl_days: int = 14,
    archive_after_days: int = 3,
    ratios: Ratios = WHAT_IF_RATIOS,
) -> Workload:
    """A month at ``events_per_day``. Batches default to one per stream and sensor tick (the
    aws profile drains each stream's queue into one batch a tick), fewer when events are fewer;
    each batch holds one hour of its stream."""
    for name, value in (("events per day", events_per_day), ("event bytes", avg_event_bytes)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    days = hours_per_month / 24
    if batches_per_day is None:
        batches_per_day = min(events_per_day, 86_400 / sensor_tick_seconds * streams)
    raw_per_day = events_per_day * avg_event_bytes
    return Workload(
        events=events_per_day * days,
        avg_event_bytes=avg_event_bytes,
        bad_rate=bad_rate,
        batches=batches_per_day * days,
        batch_hours=batches_per_day * days,
        stored_bytes={
            "landing": raw_per_day * archive_after_days,
            "archive": raw_per_day * days * ratios.archive_months * ratios.archive_ratio,
            "tables": raw_per_day * days * ratios.tables_ratio,
        },
        state_items={
            "jobs": events_per_day * days * POSTED_SHARE,
            "registry": events_per_day * days * POSTED_SHARE,
            "claims": events_per_day * claim_ttl_days,
        },
        streams=streams,
        basis=(
            f"what-if: {events_per_day:,.0f} events a day of {avg_event_bytes:,.0f} bytes, "
            f"{bad_rate:.1%} bad, {batches_per_day:,.0f} batches a day; stored bytes assume an "
            f"archive at {ratios.archive_ratio:g} and tables at {ratios.tables_ratio:g} of the "
            f"landed bytes, jobs at {POSTED_SHARE:g} of the events"
        ),
    )
